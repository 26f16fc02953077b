//! Checks every accepted envelope must pass, with a reason that names the field.

use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::{
    Activity, Click, CustomEvent, DomMutation, DomSnapshot, Envelope, Identify, Input, JsError, MouseMove, PageExit,
    PageView, RawRrweb, Scroll, TouchMove, ViewportResize, WebVitals,
};

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

/// Why an envelope is refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A required identifier (`project`, `device_id`) is empty.
    #[error("`{field}` is missing")]
    Missing {
        /// The field's name.
        field: &'static str,
    },
    /// A text field is longer than allowed.
    #[error("`{field}` is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// An identifier holds control characters.
    #[error("`{field}` contains control characters")]
    ControlCharacters {
        /// The field's name.
        field: &'static str,
    },
    /// The event time is outside [`Limits`].
    #[error("`ts` {ts} is outside the accepted range {min}..={max} (ms since the Unix epoch)")]
    Time {
        /// The event time (ms since the epoch).
        ts: i64,
        /// Earliest accepted time (ms).
        min: i64,
        /// Latest accepted time (ms).
        max: i64,
    },
    /// The envelope has no `kind`.
    #[error("the event has no kind")]
    NoKind,
    /// A page view's viewport is wider or taller than 100000 px.
    #[error("viewport {width}x{height} is not plausible")]
    Viewport {
        /// Viewport width (CSS px).
        width: u32,
        /// Viewport height (CSS px).
        height: u32,
    },
    /// A mouse or touch batch has more than [`MAX_POSITIONS`] positions.
    #[error("{n} positions in one batch, at most {max} allowed")]
    Positions {
        /// Positions in the batch.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// A web-vitals metric is negative, not a number, or beyond an hour (a day of
    /// layout shift).
    #[error("web vital `{field}` is {value}, not a plausible measurement")]
    Vital {
        /// The metric (`lcp_ms`, `cls`, ...).
        field: &'static str,
        /// The value sent.
        value: String,
    },
    /// A `RawRrweb` kind reached validation undecoded.
    #[error("a raw rrweb event must be decoded first")]
    RawRrweb,
}

fn id(field: &'static str, v: &str, limits: &Limits, required: bool) -> Result<(), Invalid> {
    if required && v.trim().is_empty() {
        return Err(Invalid::Missing { field });
    }
    text(field, v, limits.max_id_len)?;
    if v.chars().any(|c| c.is_control()) {
        return Err(Invalid::ControlCharacters { field });
    }
    Ok(())
}

fn text(field: &'static str, v: &str, max: usize) -> Result<(), Invalid> {
    if v.len() > max {
        return Err(Invalid::TooLong { field, len: v.len(), max });
    }
    Ok(())
}

/// Longest short label: a tag, a country code, a fingerprint, an event or activity name.
pub const MAX_LABEL_BYTES: usize = 256;
/// Longest page title or user agent.
pub const MAX_TITLE_BYTES: usize = 2048;
/// Most positions in one mouse or touch batch.
pub const MAX_POSITIONS: usize = 10_000;

fn positions(n: usize) -> Result<(), Invalid> {
    if n > MAX_POSITIONS {
        return Err(Invalid::Positions { n, max: MAX_POSITIONS });
    }
    Ok(())
}

/// Validates one envelope. Every string field of every kind is bounded: the
/// destructuring below names each field, so a field added to the schema does not
/// compile until it is bounded here too.
pub fn validate(e: &Envelope, limits: &Limits) -> Result<(), Invalid> {
    let Envelope { project, device_id, tab_id, seq: _, ts, url, logical_time: _, kind } = e;
    id("project", project, limits, true)?;
    id("device_id", device_id, limits, true)?;
    id("tab_id", tab_id, limits, false)?;
    if *ts < limits.min_ts || *ts > limits.max_ts {
        return Err(Invalid::Time { ts: *ts, min: limits.min_ts, max: limits.max_ts });
    }
    let long = limits.max_text_len;
    text("url", url, long)?;
    match kind {
        None => return Err(Invalid::NoKind),
        Some(Kind::PageView(p)) => {
            let PageView { url, referrer, viewport_width, viewport_height, user_agent, page_height: _, country, title } =
                p;
            text("url", url, long)?;
            text("referrer", referrer, long)?;
            text("user_agent", user_agent, MAX_TITLE_BYTES)?;
            text("title", title, MAX_TITLE_BYTES)?;
            text("country", country, MAX_LABEL_BYTES)?;
            if *viewport_width > 100_000 || *viewport_height > 100_000 {
                return Err(Invalid::Viewport { width: *viewport_width, height: *viewport_height });
            }
        }
        Some(Kind::Click(c)) => {
            let Click {
                x: _,
                y: _,
                page_x: _,
                page_y: _,
                selector,
                tag,
                interactive: _,
                text_field: _,
                text: t,
                pointer: _,
                no_position: _,
            } = c;
            text("selector", selector, long)?;
            text("tag", tag, MAX_LABEL_BYTES)?;
            text("text", t, long)?;
        }
        Some(Kind::Error(err)) => {
            let JsError { message, source, stack, fingerprint } = err;
            text("message", message, long)?;
            text("source", source, long)?;
            text("stack", stack, 8 * long)?;
            text("fingerprint", fingerprint, MAX_LABEL_BYTES)?;
        }
        Some(Kind::Custom(c)) => {
            let CustomEvent { name, properties_json } = c;
            id("name", name, limits, true)?;
            text("name", name, MAX_LABEL_BYTES)?;
            text("properties", properties_json, long)?;
        }
        Some(Kind::Activity(a)) => {
            let Activity { name } = a;
            text("name", name, MAX_LABEL_BYTES)?;
        }
        Some(Kind::Identify(i)) => {
            let Identify { user_id, traits_json } = i;
            id("user_id", user_id, limits, true)?;
            text("user_id", user_id, MAX_LABEL_BYTES)?;
            text("traits", traits_json, long)?;
        }
        Some(Kind::Vitals(v)) => {
            let WebVitals { lcp_ms, cls, inp_ms, ttfb_ms, fcp_ms } = v;
            for (field, value, max) in [
                ("lcp_ms", lcp_ms, 3_600_000.0),
                ("cls", cls, 86_400.0),
                ("inp_ms", inp_ms, 3_600_000.0),
                ("ttfb_ms", ttfb_ms, 3_600_000.0),
                ("fcp_ms", fcp_ms, 3_600_000.0),
            ] {
                if let Some(value) = *value
                    && !(value.is_finite() && (0.0..=max).contains(&value))
                {
                    return Err(Invalid::Vital { field, value: value.to_string() });
                }
            }
        }
        Some(Kind::MouseMove(MouseMove { positions: p })) => positions(p.len())?,
        Some(Kind::TouchMove(TouchMove { positions: p })) => positions(p.len())?,
        Some(Kind::Rrweb(RawRrweb { json: _ })) => return Err(Invalid::RawRrweb),
        Some(
            Kind::Scroll(Scroll { .. })
            | Kind::Input(Input { .. })
            | Kind::Resize(ViewportResize { .. })
            | Kind::Mutation(DomMutation { .. })
            | Kind::Exit(PageExit { .. })
            | Kind::Snapshot(DomSnapshot { .. }),
        ) => {}
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
        assert_eq!(validate(&env("", 1_795_000_000_000), &l), Err(Invalid::Missing { field: "device_id" }));
        assert!(validate(&env("d", 12), &l).unwrap_err().to_string().contains("`ts` 12"));
        assert!(matches!(validate(&env("d", 9_999_999_999_999), &l), Err(Invalid::Time { .. })));
    }

    #[test]
    fn every_text_field_is_bounded() {
        let l = Limits::any_age(1_795_000_000_000);
        let big = "x".repeat(1 << 20);
        let with = |kind: Kind| Envelope { kind: Some(kind), ..env("d", 1_795_000_000_000) };
        for (e, field) in [
            (with(Kind::PageView(PageView { url: "/".into(), country: big.clone(), ..Default::default() })), "country"),
            (with(Kind::PageView(PageView { url: "/".into(), title: big.clone(), ..Default::default() })), "title"),
            (with(Kind::Click(Click { tag: big.clone(), ..Default::default() })), "tag"),
            (with(Kind::Error(JsError { fingerprint: big.clone(), ..Default::default() })), "fingerprint"),
            (with(Kind::Custom(CustomEvent { name: big.clone(), ..Default::default() })), "name"),
            (with(Kind::Activity(Activity { name: big.clone() })), "name"),
        ] {
            let err = validate(&e, &l).unwrap_err();
            assert!(matches!(err, Invalid::TooLong { field: f, .. } if f == field), "{field}: {err}");
        }
    }
}
