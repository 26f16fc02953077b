//! The compact analytic event the dataflow runs on, and how event time becomes
//! logical time.
//!
//! An [`Event`] is `Copy` and holds no heap data: strings are [`Sym`]s. Edges
//! (`sightflow-dataflows::convert`) build events from the wire envelopes once; operators
//! never parse or allocate per event.

use serde::{Deserialize, Serialize};

use crate::sym::Sym;

/// Which device an event belongs to: sessions and all sequence logic are per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The project key.
    pub project: Sym,
    /// The device id, unique within the project.
    pub device: Sym,
}

impl DeviceKey {
    /// A well-mixed hash used to route a device to a worker.
    pub fn route(&self) -> u64 {
        let mut x = self.project.0 ^ self.device.0.rotate_left(17);
        // splitmix64 finaliser
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58476d1ce4e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d049bb133111eb);
        x ^ (x >> 31)
    }
}

/// One analytic event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time in ms (as sent). Operators use the device's *effective* time,
    /// `max(ts, latest effective time of the device)`, so a device's timeline never
    /// runs backwards even when late events arrive.
    pub ts: i64,
    /// The device that sent it.
    pub device: DeviceKey,
    /// The browser tab (the device id when the sender named none).
    pub tab: Sym,
    /// Per-tab sequence number: orders events of one tab within one millisecond.
    pub seq: u64,
    /// Position within an envelope that expanded into several events (mouse positions).
    pub sub: u32,
    /// Normalised URL the sender attached (used until the tab's first page view).
    pub url: Sym,
    /// What happened.
    pub kind: Kind,
}

/// The analytic kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A new page view. `url` is normalised (no query, no fragment).
    PageView(PageView),
    /// A DOM snapshot; carries the document's scroll offset at that moment.
    Snapshot {
        /// Horizontal scroll offset of the document (px).
        scroll_x: i32,
        /// Vertical scroll offset of the document (px).
        scroll_y: i32,
    },
    /// A click or tap.
    Click(Click),
    /// A scroll position; `node` 1 is the document.
    Scroll {
        /// The scrolled node's rrweb id ([`DOCUMENT_NODE`] for the document).
        node: u32,
        /// Horizontal scroll offset (px).
        x: i32,
        /// Vertical scroll offset (px).
        y: i32,
    },
    /// One mouse position, `offset` ms relative to `ts` (<= 0). `first` marks the first
    /// position of its batch (one recorded event).
    Move {
        /// Client (viewport) x (px).
        x: i32,
        /// Client (viewport) y (px).
        y: i32,
        /// Time relative to the event's `ts` (ms, `-MAX_MOVE_OFFSET_MS..=0`).
        offset: i32,
        /// Whether this is the first position of its batch.
        first: bool,
    },
    /// Finger movement: counted, never treated as mouse movement.
    TouchMove,
    /// Input into a form field.
    Input {
        /// The field's rrweb node id.
        node: u32,
    },
    /// The viewport was resized.
    Resize {
        /// New viewport width (CSS px).
        width: u32,
        /// New viewport height (CSS px).
        height: u32,
    },
    /// The DOM changed.
    Mutation,
    /// An uncaught JavaScript error.
    Error {
        /// The error message.
        message: Sym,
        /// Groups occurrences of one error: given by the sender, or hashed from message
        /// and source.
        fingerprint: u64,
    },
    /// The page was left or hidden.
    Exit,
    /// A custom event the site sent.
    Custom {
        /// The event's name.
        name: Sym,
    },
    /// Anything else recorded: keeps the session alive and is counted.
    Activity,
    /// The site said who the visitor is: the session's user id from now on.
    Identify {
        /// The user id the site gave.
        user: Sym,
    },
    /// Web performance of the tab's current page view.
    Vitals(Vitals),
}

/// Web vitals as the browser measured them, in the order LCP (ms), CLS (thousandths),
/// INP (ms), TTFB (ms), FCP (ms); [`Vitals::NONE`] where a report left a metric out. A
/// later report replaces the metrics it carries. Kept as five `u32`s (20 bytes) since
/// every live page holds one twice (its state and its emitted row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vitals(pub [u32; 5]);

impl Default for Vitals {
    fn default() -> Vitals {
        Vitals([Vitals::NONE; 5])
    }
}

impl Vitals {
    /// A metric that was not measured.
    pub const NONE: u32 = u32::MAX;

    /// From optional metrics (a measurement of `u32::MAX` saturates to one less).
    pub fn new(
        lcp_ms: Option<u32>,
        cls_milli: Option<u32>,
        inp_ms: Option<u32>,
        ttfb_ms: Option<u32>,
        fcp_ms: Option<u32>,
    ) -> Vitals {
        let v = |x: Option<u32>| x.map_or(Vitals::NONE, |x| x.min(Vitals::NONE - 1));
        Vitals([v(lcp_ms), v(cls_milli), v(inp_ms), v(ttfb_ms), v(fcp_ms)])
    }

    /// Metric `i` (see the type), if measured.
    pub fn get(&self, i: usize) -> Option<u32> {
        Some(self.0[i]).filter(|&x| x != Vitals::NONE)
    }

    /// Takes the metrics `later` carries.
    pub fn update(&mut self, later: &Vitals) {
        for (mine, theirs) in self.0.iter_mut().zip(later.0) {
            if theirs != Vitals::NONE {
                *mine = theirs;
            }
        }
    }
}

/// A page view: the page and what is known of the browser showing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageView {
    /// The normalised URL (no query, no fragment).
    pub url: Sym,
    /// The URL path, used by funnel page patterns.
    pub path: Sym,
    /// Viewport width (CSS px), 0 when unknown.
    pub width: u32,
    /// Viewport height (CSS px), 0 when unknown.
    pub height: u32,
    /// Document height when known, else 0.
    pub page_height: u32,
    /// Browser name from the user agent (`Chrome`, `Safari`, ...); empty when unknown.
    pub browser: Sym,
    /// Operating system from the user agent; empty when unknown.
    pub os: Sym,
    /// `desktop`, `tablet` or `mobile`, from the user agent or else the viewport width;
    /// empty when unknown.
    pub device_type: Sym,
    /// Upper-case ISO 3166-1 alpha-2 country code; empty when unknown.
    pub country: Sym,
}

/// A click or tap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Click {
    /// Client (viewport) x (px).
    pub x: i32,
    /// Client (viewport) y (px).
    pub y: i32,
    /// Page coordinates when the sender knew them (`has_page`), else derived from the
    /// tab's scroll position.
    pub page_x: i32,
    /// Page y, as `page_x`.
    pub page_y: i32,
    /// Whether the sender gave `page_x` and `page_y`.
    pub has_page: bool,
    /// Where the click was is known (rrweb's x/y are optional): a click without a
    /// position adds no heat cell and joins no rage burst.
    pub has_position: bool,
    /// CSS selector of the target (`section#hero > div.cta`); empty when unknown.
    pub selector: Sym,
    /// Lower-case tag name of the target.
    pub tag: Sym,
    /// The target (or an ancestor) is a link, button, form control or has a click role.
    pub interactive: bool,
    /// The target is a text field (input, textarea, select, contenteditable).
    pub text_field: bool,
    /// The pointer was a finger.
    pub touch: bool,
}

/// The document's scroll node in rrweb.
pub const DOCUMENT_NODE: u32 = 1;

/// Mouse-position offsets are clamped to this many ms before their batch; the heatmap's
/// scroll-position lookup relies on it.
pub const MAX_MOVE_OFFSET_MS: i32 = 5000;

impl Event {
    /// The order in which a device's events are processed at one logical time.
    pub fn order_key(&self) -> (i64, Sym, u64, u32) {
        (self.ts, self.tab, self.seq, self.sub)
    }

    /// Whether this event is one recorded event (a mouse-move batch counts once).
    pub fn counts_as_event(&self) -> bool {
        !matches!(self.kind, Kind::Move { first: false, .. })
    }
}

pub use sightflow_config::time::{Clock, Stamp, tick_after, tick_ceil};

/// Normalises a page URL for grouping: drops query and fragment, lower-cases scheme
/// and host, keeps the path as is (`/` when empty).
pub fn normalize_url(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            let host_end = after.find('/').unwrap_or(after.len());
            let (host, path) = after.split_at(host_end);
            let path = if path.is_empty() { "/" } else { path };
            format!("{}://{}{}", url[..i].to_ascii_lowercase(), host.to_ascii_lowercase(), path)
        }
        None => {
            if url.is_empty() {
                String::new()
            } else {
                url.to_string()
            }
        }
    }
}

/// The path of a (normalised or not) URL: `/pricing` for `https://x.test/pricing?a=1`.
pub fn url_path(url: &str) -> &str {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            match after.find('/') {
                Some(p) => &after[p..],
                None => "/",
            }
        }
        None => {
            if url.is_empty() {
                "/"
            } else {
                url
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise() {
        assert_eq!(normalize_url("HTTP://Lumen.TEST:8731/pricing?x=1#top"), "http://lumen.test:8731/pricing");
        assert_eq!(normalize_url("http://a.test"), "http://a.test/");
        assert_eq!(url_path("http://a.test:1/signup?x"), "/signup");
        assert_eq!(url_path("http://a.test"), "/");
    }
}
