//! The rows of every view, and the difference types of the aggregated ones.
//!
//! Row views (sessions, signals, page views) hold each row with multiplicity 1; an
//! update retracts the old row and inserts the new one. Counting views (heatmap cells,
//! scroll depth, funnel steps) hold a key whose multiplicity *is* the count. Page stats
//! and errors accumulate a small aggregate as their difference type ([`PageAgg`],
//! [`ErrAgg`]), so no operator ever re-reads all page views of a URL.

use std::collections::BTreeMap;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Semigroup};
use serde::{Deserialize, Serialize};

use crate::sym::Sym;

/// Session ids are 64-bit, derived from project, device and start time.
pub type SessionId = u64;

/// Formats a session id the way every view and URL shows it.
pub fn session_id_string(id: SessionId) -> String {
    format!("{id:016x}")
}

/// Parses [`session_id_string`] output.
pub fn parse_session_id(s: &str) -> Option<SessionId> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

macro_rules! row {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
    };
}

row!(
    /// One session.
    SessionRow {
        session: SessionId,
        project: Sym,
        device: Sym,
        started_at: i64,
        ended_at: i64,
        is_live: bool,
        page_views: u32,
        events: u32,
        clicks: u32,
        /// Rage bursts.
        rage_clicks: u32,
        dead_clicks: u32,
        error_clicks: u32,
        /// Uncaught errors.
        errors: u32,
        quick_backs: u32,
        excessive_scrolls: u32,
        thrashed_cursors: u32,
        entry_url: Sym,
        exit_url: Sym,
        browser: Sym,
        os: Sym,
        device_type: Sym,
        country: Sym,
        tabs: u32,
    }
);

row!(
    /// One page view.
    PageViewRow {
        session: SessionId,
        project: Sym,
        device: Sym,
        tab: Sym,
        url: Sym,
        ts: i64,
        /// From this page view to the tab's next one, or to the page's last event.
        duration_ms: i64,
        max_scroll_y: i32,
        deepest_visible_y: i32,
        viewport_width: u32,
        viewport_height: u32,
        clicks: u32,
    }
);

row!(
    /// A rage-click burst, reported once with its click count.
    RageRow {
        session: SessionId,
        project: Sym,
        url: Sym,
        /// First click.
        ts: i64,
        /// Last click.
        end_ts: i64,
        x: i32,
        y: i32,
        clicks: u32,
        selector: Sym,
    }
);

row!(
    /// A click nothing reacted to.
    DeadRow {
        session: SessionId,
        project: Sym,
        url: Sym,
        ts: i64,
        x: i32,
        y: i32,
        selector: Sym,
        tag: Sym,
    }
);

row!(
    /// A click followed by an uncaught error.
    ErrorClickRow {
        session: SessionId,
        project: Sym,
        url: Sym,
        ts: i64,
        x: i32,
        y: i32,
        selector: Sym,
        message: Sym,
        error_ts: i64,
    }
);

row!(
    /// Page views A, B, A with a short B; reported against B.
    QuickBackRow {
        session: SessionId,
        project: Sym,
        /// B.
        url: Sym,
        /// B's start.
        ts: i64,
        dwell_ms: i64,
        /// A.
        from_url: Sym,
    }
);

row!(
    /// An excessive-scrolling or thrashed-cursor episode: merged qualifying windows.
    EpisodeRow {
        session: SessionId,
        project: Sym,
        url: Sym,
        /// First direction change (or reversal) of the episode.
        ts: i64,
        /// Last one.
        end_ts: i64,
        reversals: u32,
    }
);

/// What a heatmap cell counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HeatKind {
    Click,
    Move,
    Scroll,
}

impl HeatKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HeatKind::Click => "click",
            HeatKind::Move => "move",
            HeatKind::Scroll => "scroll",
        }
    }
}

row!(
    /// A heatmap cell; its multiplicity is the count. Scroll cells have `cell_x` 0 and
    /// count sessions whose deepest visible y reaches band `cell_y`.
    HeatRow {
        project: Sym,
        url: Sym,
        kind: HeatKind,
        viewport_bucket: u32,
        cell_x: i32,
        cell_y: i32,
    }
);

row!(
    /// One session's deepest visible y on one URL (px, rounded down to a cell), and the
    /// page height when the sender knew it (else 0).
    DepthObs {
        project: Sym,
        url: Sym,
        deepest: u32,
        page_height: u32,
    }
);

row!(
    /// A scroll-depth band; its multiplicity is the number of sessions reaching it.
    DepthRow {
        project: Sym,
        url: Sym,
        depth_pct: u32,
    }
);

row!(
    /// How many leading steps of a funnel a session reached.
    FunnelRow {
        session: SessionId,
        project: Sym,
        device: Sym,
        funnel: u32,
        steps: u32,
    }
);

row!(
    /// A funnel step; its multiplicity is the number of sessions (or devices) reaching it.
    FunnelStepRow {
        project: Sym,
        funnel: u32,
        step: u32,
    }
);

row!(
    /// Key of page stats.
    PageKey {
        project: Sym,
        url: Sym,
    }
);

row!(
    /// A device that viewed a URL (made distinct for page_stats.visitors).
    PageVisitor {
        project: Sym,
        url: Sym,
        device: Sym,
    }
);

row!(
    /// Key of the errors view.
    ErrKey {
        project: Sym,
        fingerprint: u64,
    }
);

row!(
    /// A session in which an error occurred (made distinct for errors.sessions).
    ErrSession {
        project: Sym,
        fingerprint: u64,
        session: SessionId,
    }
);

/// Page-stats aggregate, accumulated as a difference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PageAgg {
    pub views: i64,
    /// Sum of page-view durations.
    pub duration_ms: i64,
    /// Page views that are their session's last.
    pub exits: i64,
    /// Sessions whose only page view is here.
    pub bounces: i64,
    pub visitors: i64,
}

impl IsZero for PageAgg {
    fn is_zero(&self) -> bool {
        *self == PageAgg::default()
    }
}

impl Semigroup for PageAgg {
    fn plus_equals(&mut self, r: &Self) {
        self.views += r.views;
        self.duration_ms += r.duration_ms;
        self.exits += r.exits;
        self.bounces += r.bounces;
        self.visitors += r.visitors;
    }
}

impl Monoid for PageAgg {
    fn zero() -> Self {
        PageAgg::default()
    }
}

impl Abelian for PageAgg {
    fn negate(&mut self) {
        self.views = -self.views;
        self.duration_ms = -self.duration_ms;
        self.exits = -self.exits;
        self.bounces = -self.bounces;
        self.visitors = -self.visitors;
    }
}

/// Errors aggregate. Errors are only ever added, so first/last seen combine by min/max.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ErrAgg {
    pub occurrences: i64,
    pub sessions: i64,
    pub first_ts: i64,
    /// Message of the first occurrence.
    pub first_message: Sym,
    pub last_ts: i64,
}

impl ErrAgg {
    pub fn occurrence(ts: i64, message: Sym) -> ErrAgg {
        ErrAgg { occurrences: 1, sessions: 0, first_ts: ts, first_message: message, last_ts: ts }
    }

    pub fn sessions(n: i64) -> ErrAgg {
        ErrAgg { occurrences: 0, sessions: n, first_ts: i64::MAX, first_message: Sym::EMPTY, last_ts: i64::MIN }
    }
}

impl IsZero for ErrAgg {
    fn is_zero(&self) -> bool {
        self.occurrences == 0 && self.sessions == 0
    }
}

impl Semigroup for ErrAgg {
    fn plus_equals(&mut self, r: &Self) {
        self.occurrences += r.occurrences;
        self.sessions += r.sessions;
        if (r.first_ts, r.first_message) < (self.first_ts, self.first_message) {
            self.first_ts = r.first_ts;
            self.first_message = r.first_message;
        }
        self.last_ts = self.last_ts.max(r.last_ts);
    }
}

/// Every view as plain ordered maps: what the batch reference computes, and what the
/// published snapshots are compared against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Views {
    pub sessions: BTreeMap<SessionRow, isize>,
    pub page_views: BTreeMap<PageViewRow, isize>,
    pub rage_clicks: BTreeMap<RageRow, isize>,
    pub dead_clicks: BTreeMap<DeadRow, isize>,
    pub error_clicks: BTreeMap<ErrorClickRow, isize>,
    pub quick_backs: BTreeMap<QuickBackRow, isize>,
    pub excessive_scrolls: BTreeMap<EpisodeRow, isize>,
    pub thrashed_cursors: BTreeMap<EpisodeRow, isize>,
    pub heatmap_cells: BTreeMap<HeatRow, isize>,
    pub scroll_depth: BTreeMap<DepthRow, isize>,
    pub session_funnels: BTreeMap<FunnelRow, isize>,
    pub funnel_steps: BTreeMap<FunnelStepRow, isize>,
    pub page_stats: BTreeMap<PageKey, PageAgg>,
    pub errors: BTreeMap<ErrKey, ErrAgg>,
}

/// Adds `r` to `map[k]`, dropping the entry when it becomes zero.
pub fn accumulate<K: Ord, R: Semigroup>(map: &mut BTreeMap<K, R>, k: K, r: R) {
    use std::collections::btree_map::Entry;
    match map.entry(k) {
        Entry::Occupied(mut e) => {
            e.get_mut().plus_equals(&r);
            if e.get().is_zero() {
                e.remove();
            }
        }
        Entry::Vacant(e) => {
            if !r.is_zero() {
                e.insert(r);
            }
        }
    }
}

impl Views {
    /// A readable diff of two view sets, for test failures.
    pub fn diff(&self, other: &Views) -> String {
        fn one<K: Ord + std::fmt::Debug, R: PartialEq + std::fmt::Debug>(
            name: &str,
            a: &BTreeMap<K, R>,
            b: &BTreeMap<K, R>,
            out: &mut String,
        ) {
            use std::fmt::Write;
            for (k, v) in a {
                if b.get(k) != Some(v) {
                    let _ = writeln!(out, "{name}: left has {k:?} => {v:?}, right has {:?}", b.get(k));
                }
            }
            for (k, v) in b {
                if !a.contains_key(k) {
                    let _ = writeln!(out, "{name}: right only {k:?} => {v:?}");
                }
            }
        }
        let mut s = String::new();
        one("sessions", &self.sessions, &other.sessions, &mut s);
        one("page_views", &self.page_views, &other.page_views, &mut s);
        one("rage_clicks", &self.rage_clicks, &other.rage_clicks, &mut s);
        one("dead_clicks", &self.dead_clicks, &other.dead_clicks, &mut s);
        one("error_clicks", &self.error_clicks, &other.error_clicks, &mut s);
        one("quick_backs", &self.quick_backs, &other.quick_backs, &mut s);
        one("excessive_scrolls", &self.excessive_scrolls, &other.excessive_scrolls, &mut s);
        one("thrashed_cursors", &self.thrashed_cursors, &other.thrashed_cursors, &mut s);
        one("heatmap_cells", &self.heatmap_cells, &other.heatmap_cells, &mut s);
        one("scroll_depth", &self.scroll_depth, &other.scroll_depth, &mut s);
        one("session_funnels", &self.session_funnels, &other.session_funnels, &mut s);
        one("funnel_steps", &self.funnel_steps, &other.funnel_steps, &mut s);
        one("page_stats", &self.page_stats, &other.page_stats, &mut s);
        one("errors", &self.errors, &other.errors, &mut s);
        s
    }
}
