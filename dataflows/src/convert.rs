//! Wire envelopes to compact operator events: done once, at the dataflow's edge.

use sightflow_operators::event::{self, Click, DOCUMENT_NODE, Kind, MAX_MOVE_OFFSET_MS, PageView};
use sightflow_operators::{DeviceKey, Event, Sym};
use sightflow_proto::v1::envelope::Kind as WireKind;
use sightflow_proto::v1::{Envelope, PointerType};

/// Appends the events an envelope stands for (a mouse-move batch is one event per
/// position; an envelope without a kind is an activity). Raw rrweb envelopes must have
/// been decoded at ingest and are skipped here.
pub fn envelope_events(env: &Envelope, out: &mut Vec<Event>) {
    let device = DeviceKey { project: Sym::keep(&env.project), device: Sym::new(&env.device_id) };
    let tab = Sym::new(if env.tab_id.is_empty() { &env.device_id } else { &env.tab_id });
    let url = if env.url.is_empty() { Sym::EMPTY } else { Sym::new(&event::normalize_url(&env.url)) };
    let base = Event { ts: env.ts, device, tab, seq: env.seq, sub: 0, url, kind: Kind::Activity };
    let kind = match &env.kind {
        None => Kind::Activity,
        Some(WireKind::PageView(pv)) => {
            let raw = if pv.url.is_empty() { env.url.as_str() } else { pv.url.as_str() };
            let ua = classify_user_agent(&pv.user_agent);
            let device_type =
                if ua.device_type.is_empty() { device_type_from_width(pv.viewport_width) } else { ua.device_type };
            Kind::PageView(PageView {
                url: Sym::new(&event::normalize_url(raw)),
                path: Sym::new(event::url_path(raw)),
                width: pv.viewport_width,
                height: pv.viewport_height,
                page_height: pv.page_height,
                browser: Sym::new(ua.browser),
                os: Sym::new(ua.os),
                device_type: Sym::new(device_type),
                country: Sym::new(&pv.country.to_ascii_uppercase()),
            })
        }
        Some(WireKind::Click(c)) => Kind::Click(Click {
            x: c.x,
            y: c.y,
            page_x: c.page_x.unwrap_or(0),
            page_y: c.page_y.unwrap_or(0),
            has_page: c.page_x.is_some() && c.page_y.is_some(),
            has_position: !c.no_position,
            selector: Sym::new(&c.selector),
            tag: Sym::new(&c.tag.to_ascii_lowercase()),
            interactive: c.interactive,
            text_field: c.text_field,
            touch: c.pointer == PointerType::Touch as i32,
        }),
        Some(WireKind::Scroll(s)) => {
            Kind::Scroll { node: if s.node == 0 { DOCUMENT_NODE } else { s.node }, x: s.x, y: s.y }
        }
        Some(WireKind::MouseMove(m)) => {
            for (i, p) in m.positions.iter().enumerate() {
                out.push(Event {
                    sub: i as u32,
                    kind: Kind::Move {
                        x: p.x,
                        y: p.y,
                        offset: p.time_offset.clamp(-MAX_MOVE_OFFSET_MS, 0),
                        first: i == 0,
                    },
                    ..base
                });
            }
            if m.positions.is_empty() {
                out.push(base);
            }
            return;
        }
        Some(WireKind::TouchMove(_)) => Kind::TouchMove,
        Some(WireKind::Input(i)) => Kind::Input { node: i.node },
        Some(WireKind::Resize(r)) => Kind::Resize { width: r.width, height: r.height },
        Some(WireKind::Mutation(_)) => Kind::Mutation,
        Some(WireKind::Snapshot(s)) => Kind::Snapshot { scroll_x: s.scroll_x, scroll_y: s.scroll_y },
        Some(WireKind::Error(e)) => {
            let fp = if e.fingerprint.is_empty() {
                error_fingerprint(&e.message, &e.source)
            } else {
                fingerprint_value(&e.fingerprint)
            };
            Kind::Error { message: Sym::new(&e.message), fingerprint: fp }
        }
        Some(WireKind::Exit(_)) => Kind::Exit,
        Some(WireKind::Custom(c)) => Kind::Custom { name: Sym::new(&c.name) },
        Some(WireKind::Activity(_)) => Kind::Activity,
        Some(WireKind::Identify(i)) => Kind::Identify { user: Sym::new(&i.user_id) },
        Some(WireKind::Vitals(v)) => {
            // Validation bounds every metric; rounding keeps events `Copy` and ordered.
            let ms = |x: Option<f64>| x.map(|x| x.round().clamp(0.0, u32::MAX as f64) as u32);
            Kind::Vitals(event::Vitals::new(
                ms(v.lcp_ms),
                ms(v.cls.map(|c| c * 1000.0)),
                ms(v.inp_ms),
                ms(v.ttfb_ms),
                ms(v.fcp_ms),
            ))
        }
        Some(WireKind::Rrweb(_)) => return,
    };
    out.push(Event { kind, ..base });
}

/// Groups errors that are the same bug: the message with numbers blanked, and the script (without line and column) it came from.
pub fn error_fingerprint(message: &str, source: &str) -> u64 {
    let mut norm = String::with_capacity(message.len());
    for ch in message.chars() {
        if ch.is_ascii_digit() {
            if !norm.ends_with('#') {
                norm.push('#');
            }
        } else {
            norm.push(ch);
        }
    }
    let script = source.split(['?', '#']).next().unwrap_or("");
    let script = script.trim_end_matches(|c: char| c.is_ascii_digit() || c == ':');
    let script = script.rsplit('(').next().unwrap_or(script);
    xxhash_rust::xxh3::xxh3_64(format!("{norm}\u{0}{script}").as_bytes())
}

/// A fingerprint given as text: hex when it is hex, else hashed.
pub fn fingerprint_value(s: &str) -> u64 {
    if s.len() == 16
        && let Ok(v) = u64::from_str_radix(s, 16)
    {
        return v;
    }
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Browser, OS and device type from a user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAgent {
    /// `Chrome`, `Safari`, `Firefox`, `Edge`, `Bot`, ... or `Other`; empty for an empty
    /// user agent.
    pub browser: &'static str,
    /// `Windows`, `macOS`, `iOS`, `Android`, ... or `Other`; empty for an empty user agent.
    pub os: &'static str,
    /// `desktop`, `tablet`, `mobile` or `bot`; empty for an empty user agent.
    pub device_type: &'static str,
}

/// A small, dependency-free classifier covering the browsers that make up nearly all
/// traffic; anything else is "Other".
pub fn classify_user_agent(ua: &str) -> UserAgent {
    if ua.is_empty() {
        return UserAgent { browser: "", os: "", device_type: "" };
    }
    let has = |s: &str| ua.contains(s);
    let browser = if has("Edg/") || has("EdgA/") || has("EdgiOS/") {
        "Edge"
    } else if has("OPR/") || has("Opera") {
        "Opera"
    } else if has("SamsungBrowser/") {
        "Samsung Internet"
    } else if has("Firefox/") || has("FxiOS/") {
        "Firefox"
    } else if has("CriOS/") || has("Chrome/") || has("Chromium/") {
        if has("HeadlessChrome/") { "Headless Chrome" } else { "Chrome" }
    } else if has("Safari/") {
        "Safari"
    } else if has("bot") || has("Bot") || has("crawler") || has("Spider") {
        "Bot"
    } else {
        "Other"
    };
    let os = if has("Windows") {
        "Windows"
    } else if has("iPhone") || has("iPad") || has("iPod") {
        "iOS"
    } else if has("Android") {
        "Android"
    } else if has("CrOS") {
        "ChromeOS"
    } else if has("Mac OS X") || has("Macintosh") {
        "macOS"
    } else if has("Linux") {
        "Linux"
    } else {
        "Other"
    };
    let device_type = if has("iPad") || has("Tablet") || (has("Android") && !has("Mobile")) {
        "tablet"
    } else if has("Mobi") || has("iPhone") || has("iPod") {
        "mobile"
    } else if browser == "Bot" {
        "bot"
    } else {
        "desktop"
    };
    UserAgent { browser, os, device_type }
}

/// Device type from the viewport when there is no user agent (rrweb recordings).
pub fn device_type_from_width(width: u32) -> &'static str {
    match width {
        0 => "",
        1..=767 => "mobile",
        768..=1023 => "tablet",
        _ => "desktop",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightflow_proto::v1::{MouseMove, Position};

    #[test]
    fn mouse_batches_expand_to_positions() {
        let env = Envelope {
            project: "p".into(),
            device_id: "d".into(),
            ts: 1000,
            kind: Some(WireKind::MouseMove(MouseMove {
                positions: vec![
                    Position { x: 1, y: 2, time_offset: -300 },
                    Position { x: 5, y: 2, time_offset: -9000 },
                ],
            })),
            ..Default::default()
        };
        let mut out = Vec::new();
        envelope_events(&env, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].counts_as_event() && !out[1].counts_as_event());
        assert!(matches!(out[1].kind, Kind::Move { offset: -5000, .. }));
        assert_eq!(out[0].tab, Sym::new("d"), "tab defaults to the device");
    }

    #[test]
    fn user_agents() {
        let mac_chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert_eq!(
            classify_user_agent(mac_chrome),
            UserAgent { browser: "Chrome", os: "macOS", device_type: "desktop" }
        );
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(classify_user_agent(iphone), UserAgent { browser: "Safari", os: "iOS", device_type: "mobile" });
        let ff = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0";
        assert_eq!(classify_user_agent(ff).browser, "Firefox");
    }

    #[test]
    fn fingerprints_ignore_numbers_and_positions() {
        let a =
            error_fingerprint("Cannot read properties of undefined (reading 'rules') at 12", "http://x/app.js:26:25");
        let b =
            error_fingerprint("Cannot read properties of undefined (reading 'rules') at 99", "http://x/app.js:30:1");
        assert_eq!(a, b);
        assert_ne!(a, error_fingerprint("Other", "http://x/app.js:26:25"));
    }
}
