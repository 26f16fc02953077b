//! Checks every accepted envelope must pass, with a reason that names the field.

use sightflow_proto::v1::Envelope;
use sightflow_proto::v1::envelope::Kind;

/// Bounds on acceptable events.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Earliest acceptable event time (ms).
    pub min_ts: i64,
    /// Latest acceptable event time (ms).
    pub max_ts: i64,
    /// Longest identifier (project, device, tab).
    pub max_id_len: usize,
    /// Longest URL, message or selector.
    pub max_text_len: usize,
}

/// 2000-01-01T00:00:00Z.
pub const YEAR_2000_MS: i64 = 946_684_800_000;

impl Limits {
    /// For files of any age: from the year 2000 to a day after `now_ms`.
    pub fn any_age(now_ms: i64) -> Limits {
        Limits { min_ts: YEAR_2000_MS, max_ts: now_ms + 86_400_000, max_id_len: 200, max_text_len: 8192 }
    }

    /// Relative to the server clock.
    pub fn around(now_ms: i64, max_past_ms: i64, max_future_ms: i64) -> Limits {
        Limits {
            min_ts: (now_ms - max_past_ms).max(YEAR_2000_MS),
            max_ts: now_ms + max_future_ms,
            max_id_len: 200,
            max_text_len: 8192,
        }
    }
}

fn id(name: &str, v: &str, limits: &Limits, required: bool) -> Result<(), String> {
    if required && v.trim().is_empty() {
        return Err(format!("`{name}` is missing"));
    }
    if v.len() > limits.max_id_len {
        return Err(format!("`{name}` is {} bytes long, at most {} allowed", v.len(), limits.max_id_len));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(format!("`{name}` contains control characters"));
    }
    Ok(())
}

fn text(name: &str, v: &str, limits: &Limits) -> Result<(), String> {
    if v.len() > limits.max_text_len {
        return Err(format!("`{name}` is {} bytes long, at most {} allowed", v.len(), limits.max_text_len));
    }
    Ok(())
}

/// Validates one envelope.
pub fn validate(e: &Envelope, limits: &Limits) -> Result<(), String> {
    id("project", &e.project, limits, true)?;
    id("device_id", &e.device_id, limits, true)?;
    id("tab_id", &e.tab_id, limits, false)?;
    if e.ts < limits.min_ts || e.ts > limits.max_ts {
        return Err(format!(
            "`ts` {} is outside the accepted range {}..={} (ms since the Unix epoch)",
            e.ts, limits.min_ts, limits.max_ts
        ));
    }
    text("url", &e.url, limits)?;
    match &e.kind {
        None => return Err("the event has no kind".into()),
        Some(Kind::PageView(p)) => {
            text("url", &p.url, limits)?;
            text("referrer", &p.referrer, limits)?;
            text("user_agent", &p.user_agent, limits)?;
            if p.url.is_empty() && e.url.is_empty() {
                return Err("a page view needs a `url`".into());
            }
            if p.viewport_width > 100_000 || p.viewport_height > 100_000 {
                return Err(format!("viewport {}x{} is not plausible", p.viewport_width, p.viewport_height));
            }
        }
        Some(Kind::Click(c)) => {
            text("selector", &c.selector, limits)?;
            text("text", &c.text, limits)?;
        }
        Some(Kind::Error(err)) => {
            text("message", &err.message, limits)?;
            text("source", &err.source, limits)?;
            if err.stack.len() > 8 * limits.max_text_len {
                return Err(format!(
                    "`stack` is {} bytes long, at most {} allowed",
                    err.stack.len(),
                    8 * limits.max_text_len
                ));
            }
        }
        Some(Kind::Custom(c)) => {
            id("name", &c.name, limits, true)?;
            text("properties", &c.properties_json, limits)?;
        }
        Some(Kind::MouseMove(m)) if m.positions.len() > 10_000 => {
            return Err(format!("{} positions in one mouse-move batch, at most 10000 allowed", m.positions.len()));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightflow_proto::v1::Click;

    fn env(device: &str, ts: i64) -> Envelope {
        Envelope {
            project: "p".into(),
            device_id: device.into(),
            ts,
            kind: Some(Kind::Click(Click::default())),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_missing_device_and_absurd_times() {
        let l = Limits::any_age(1_795_000_000_000);
        assert!(validate(&env("d", 1_795_000_000_000), &l).is_ok());
        assert!(validate(&env("", 1_795_000_000_000), &l).unwrap_err().contains("device_id"));
        assert!(validate(&env("d", 12), &l).unwrap_err().contains("`ts` 12"));
        assert!(validate(&env("d", 9_999_999_999_999), &l).unwrap_err().contains("outside"));
    }
}
