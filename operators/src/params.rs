//! Definitions compiled from the configuration into the form operators use.

use chrono::{Offset, TimeZone};
use sightflow_config::{Config, FunnelCount};

use crate::sym::Sym;

/// Every threshold of every definition, in the units operators compare.
#[derive(Clone, Debug)]
pub struct Params {
    /// Tick of logical time (ms, `engine.tick_ms`).
    pub tick: u64,
    /// Logical ms a device's state outlives its last arrival (see `engine.state_grace_ms`).
    pub grace: u64,
    /// Logical ms a late click waits for its verdict (see `engine.late_verdict_ms`).
    pub late_verdict: u64,
    /// Idle gap that ends a session (ms, `session.idle_gap_ms`).
    pub gap: i64,
    /// Longest session (ms, `session.max_age_ms`).
    pub max_age: i64,
    /// Logical ms a closed session stays in the views after its last change (0: always;
    /// `session.retention_ms`).
    pub retention: u64,
    /// Time zone whose midnight splits sessions (`session.time_zone`).
    pub tz: chrono_tz::Tz,
    /// Whether sessions split at midnight (`session.split_at_midnight`).
    pub split_at_midnight: bool,
    /// Clicks in a rage burst, at least (`signals.rage.min_clicks`).
    pub rage_min: u32,
    /// Largest gap between a burst's clicks (ms, `signals.rage.max_gap_ms`).
    pub rage_gap: i64,
    /// Square of the burst radius (px², from `signals.rage.radius_px`).
    pub rage_radius2: i64,
    /// Dead-click window for a DOM mutation (ms, `signals.dead.mutation_window_ms`).
    pub dead_mutation: i64,
    /// Dead-click window for a navigation (ms, `signals.dead.navigation_window_ms`).
    pub dead_navigation: i64,
    /// Dead-click window for a scroll (ms, `signals.dead.scroll_window_ms`).
    pub dead_scroll: i64,
    /// Dead-click window for an input (ms, `signals.dead.input_window_ms`).
    pub dead_input: i64,
    /// Error-click window (ms, `signals.error_click.window_ms`).
    pub error_window: i64,
    /// Longest dwell of a quick back's middle page (ms, `signals.quick_back.max_dwell_ms`).
    pub quick_back_max: i64,
    /// Direction changes of excessive scrolling, at least
    /// (`signals.excessive_scroll.min_direction_changes`).
    pub scroll_changes: u32,
    /// Excessive-scrolling window (ms, `signals.excessive_scroll.window_ms`).
    pub scroll_window: i64,
    /// Reversals of a thrashed cursor, at least (`signals.thrashed_cursor.min_reversals`).
    pub thrash_reversals: u32,
    /// Thrashed-cursor window (ms, `signals.thrashed_cursor.window_ms`).
    pub thrash_window: i64,
    /// Heatmap cell size (px, `heatmap.cell_px`).
    pub cell: i32,
    /// Viewport width breakpoints, increasing (px, `heatmap.viewport_breakpoints`).
    pub breakpoints: Vec<u32>,
    /// Scroll-depth band width (percent, `scroll_depth.band_pct`).
    pub band_pct: u32,
    /// The configured funnels, in order (their index is the funnel id in rows).
    pub funnels: Vec<FunnelSpec>,
    /// Logical ms an interned string outlives its last use (see [`crate::sym`]): a
    /// device's state re-publishes what it holds at least once per session gap, and is
    /// released within the state grace of its last event; five minutes more for the
    /// verdict windows and the publisher's lag.
    pub strings_keep: u64,
}

/// A funnel ready to match events.
#[derive(Clone, Debug)]
pub struct FunnelSpec {
    /// The funnel's name.
    pub name: String,
    /// How each step is recognised, in order.
    pub steps: Vec<StepMatcher>,
    /// Each step's label (`funnel_steps.step_name`).
    pub labels: Vec<String>,
    /// All steps within this long of the first (ms).
    pub window: i64,
    /// Steps count distinct devices (else sessions).
    pub per_device: bool,
}

/// How a funnel step recognises an event.
#[derive(Clone, Debug)]
pub enum StepMatcher {
    /// Page-view URL path (or whole URL) glob.
    Page {
        /// The glob; `*` matches any run of characters.
        pattern: String,
        /// Matched against the whole URL (the pattern starts with `http`), else the path.
        whole_url: bool,
    },
    /// Custom event name.
    Event(Sym),
    /// Click selector, exact or suffix.
    Click(String),
}

impl Params {
    /// Compiles the definitions of a configuration.
    pub fn from_config(c: &Config) -> Params {
        let s = &c.signals;
        let funnels = c
            .funnels
            .iter()
            .map(|f| FunnelSpec {
                name: f.name.clone(),
                steps: f
                    .steps
                    .iter()
                    .map(|st| {
                        if let Some(p) = &st.page {
                            StepMatcher::Page { pattern: p.clone(), whole_url: p.starts_with("http") }
                        } else if let Some(e) = &st.event {
                            StepMatcher::Event(Sym::new(e))
                        } else {
                            StepMatcher::Click(st.click.clone().unwrap_or_default())
                        }
                    })
                    .collect(),
                labels: f.steps.iter().map(|s| s.label()).collect(),
                window: f.window_ms as i64,
                per_device: f.count == FunnelCount::Devices,
            })
            .collect();
        Params {
            tick: c.engine.tick_ms,
            grace: c.engine.state_grace_ms,
            late_verdict: c.engine.late_verdict_ms,
            gap: c.session.idle_gap_ms as i64,
            max_age: c.session.max_age_ms as i64,
            retention: c.session.retention_ms,
            tz: c.time_zone(),
            split_at_midnight: c.session.split_at_midnight,
            rage_min: s.rage.min_clicks,
            rage_gap: s.rage.max_gap_ms as i64,
            rage_radius2: (s.rage.radius_px as i64).pow(2),
            dead_mutation: s.dead.mutation_window_ms as i64,
            dead_navigation: s.dead.navigation_window_ms as i64,
            dead_scroll: s.dead.scroll_window_ms as i64,
            dead_input: s.dead.input_window_ms as i64,
            error_window: s.error_click.window_ms as i64,
            quick_back_max: s.quick_back.max_dwell_ms as i64,
            scroll_changes: s.excessive_scroll.min_direction_changes,
            scroll_window: s.excessive_scroll.window_ms as i64,
            thrash_reversals: s.thrashed_cursor.min_reversals,
            thrash_window: s.thrashed_cursor.window_ms as i64,
            cell: c.heatmap.cell_px as i32,
            breakpoints: c.heatmap.viewport_breakpoints.clone(),
            band_pct: c.scroll_depth.band_pct,
            funnels,
            strings_keep: [c.engine.state_grace_ms, c.engine.late_verdict_ms, c.engine.allowed_lateness_ms, 300_000]
                .into_iter()
                .fold(c.session.idle_gap_ms, u64::saturating_add),
        }
    }

    /// The longest of the dead-click windows: a click is judged this long after it.
    pub fn dead_window(&self) -> i64 {
        self.dead_mutation.max(self.dead_navigation).max(self.dead_scroll).max(self.dead_input)
    }

    /// Viewport bucket of a width: the largest breakpoint not above it, else 0.
    pub fn viewport_bucket(&self, width: u32) -> u32 {
        self.breakpoints.iter().copied().filter(|b| *b <= width).max().unwrap_or(0)
    }

    /// The first midnight (in the session time zone) strictly after `ms`, or
    /// `i64::MAX` when sessions do not split at midnight.
    pub fn next_midnight(&self, ms: i64) -> i64 {
        if !self.split_at_midnight {
            return i64::MAX;
        }
        let Some(utc) = chrono::DateTime::from_timestamp_millis(ms) else {
            return i64::MAX;
        };
        let offset = self.tz.offset_from_utc_datetime(&utc.naive_utc()).fix().local_minus_utc() as i64 * 1000;
        let local = ms + offset;
        let next_local = (local.div_euclid(86_400_000) + 1) * 86_400_000;
        // The offset at the next midnight may differ (DST); re-evaluate there.
        let guess = next_local - offset;
        let Some(g) = chrono::DateTime::from_timestamp_millis(guess) else {
            return i64::MAX;
        };
        let offset2 = self.tz.offset_from_utc_datetime(&g.naive_utc()).fix().local_minus_utc() as i64 * 1000;
        let t = next_local - offset2;
        if t > ms { t } else { guess.max(ms + 1) }
    }
}

/// Glob match where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    let first = parts[0];
    if !rest.starts_with(first) {
        return false;
    }
    rest = &rest[first.len()..];
    let last = parts[parts.len() - 1];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Click-selector match: exact, or `pattern` is a suffix starting a selector segment.
pub fn selector_match(pattern: &str, selector: &str) -> bool {
    if pattern == selector {
        return true;
    }
    selector.ends_with(pattern) && {
        let before = &selector[..selector.len() - pattern.len()];
        before.ends_with(' ') || before.ends_with('>')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("/", "/"));
        assert!(!glob_match("/", "/pricing"));
        assert!(glob_match("/blog/*", "/blog/a/b"));
        assert!(glob_match("*/thanks", "/signup/thanks"));
        assert!(glob_match("/a*c*e", "/abcde"));
        assert!(!glob_match("/a*c*e", "/abcd"));
    }

    #[test]
    fn selectors() {
        assert!(selector_match("button#buy", "main > button#buy"));
        assert!(selector_match("button#buy", "button#buy"));
        assert!(!selector_match("button#buy", "main > xbutton#buy"));
    }

    #[test]
    fn midnight_in_a_time_zone() {
        let mut p = Params::from_config(&Config::defaults());
        // 2026-11-22T10:00:00Z
        let ms = 1_795_342_400_000 - (1_795_342_400_000 % 86_400_000) + 10 * 3_600_000;
        assert_eq!(p.next_midnight(ms), ms - 10 * 3_600_000 + 86_400_000);
        p.tz = "America/New_York".parse().unwrap();
        // New York is UTC-5 in November: local midnight is 05:00Z.
        assert_eq!(p.next_midnight(ms), ms - 10 * 3_600_000 + 86_400_000 + 5 * 3_600_000);
        p.split_at_midnight = false;
        assert_eq!(p.next_midnight(ms), i64::MAX);
    }
}
