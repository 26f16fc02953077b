//! Sessions and page views: the rows of the timeline itself.
//!
//! A session is per (project, device): a new one starts on the first event, after more
//! than `session.idle_gap_ms` without events, at `session.max_age_ms` of age, or at
//! midnight in the project's time zone. The [`Device`](crate::device::Device) keeps the
//! timeline; this module owns the rows and their reference.

use crate::event::{DeviceKey, Kind, Vitals};
use crate::params::Params;
use crate::reference::Timeline;
use crate::row;
use crate::signals::Kept;
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

row! {
    /// One session.
    SessionRow {
        session: SessionId as session_id Session,
        project: Sym as project Str,
        device: Sym as device_id Str,
        started_at: i64 as started_at Ts,
        ended_at: i64 as ended_at Ts,
        + duration_ms I64 (r => r.ended_at - r.started_at),
        is_live: bool as is_live Bool,
        page_views: u32 as page_views I64,
        events: u32 as events I64,
        clicks: u32 as clicks I64,
        /// Rage bursts.
        rage_clicks: u32 as rage_clicks I64,
        dead_clicks: u32 as dead_clicks I64,
        error_clicks: u32 as error_clicks I64,
        /// Uncaught errors.
        errors: u32 as errors I64,
        entry_url: Sym as entry_url OptStr,
        exit_url: Sym as exit_url OptStr,
        browser: Sym as browser OptStr,
        os: Sym as os OptStr,
        device_type: Sym as device_type OptStr,
        country: Sym as country OptStr,
        quick_backs: u32 as quick_backs I64,
        excessive_scrolls: u32 as excessive_scrolls I64,
        thrashed_cursors: u32 as thrashed_cursors I64,
        tabs: u32 as tabs I64,
        /// The user id of the session's latest `identify`.
        user_id: Sym as user_id OptStr,
    }
}

row! {
    /// One page view.
    PageViewRow {
        session: SessionId as session_id Session,
        project: Sym as project Str,
        device: Sym as device_id Str,
        tab: Sym as tab_id Str,
        url: Sym as url Str,
        ts: i64 as ts Ts,
        /// From this page view to the tab's next one, or to the page's last event.
        duration_ms: i64 as duration_ms I64,
        max_scroll_y: i32 as max_scroll_y I32,
        deepest_visible_y: i32 as deepest_visible_y I32,
        viewport_width: u32 as viewport_width I32,
        viewport_height: u32 as viewport_height I32,
        clicks: u32 as clicks I64,
        lcp_ms: Option<u32> as lcp_ms OptI32,
        /// Cumulative layout shift in thousandths.
        cls_milli: Option<u32>,
        + cls OptF64 (r => r.cls_milli.map(|m| m as f64 / 1000.0)),
        inp_ms: Option<u32> as inp_ms OptI32,
        ttfb_ms: Option<u32> as ttfb_ms OptI32,
        fcp_ms: Option<u32> as fcp_ms OptI32,
    }
}

impl PageViewRow {
    /// The page view's web vitals.
    pub fn vitals(&self) -> Vitals {
        Vitals::new(self.lcp_ms, self.cls_milli, self.inp_ms, self.ttfb_ms, self.fcp_ms)
    }

    /// The row with these web vitals.
    pub fn with_vitals(self, v: Vitals) -> PageViewRow {
        PageViewRow {
            lcp_ms: v.get(0),
            cls_milli: v.get(1),
            inp_ms: v.get(2),
            ttfb_ms: v.get(3),
            fcp_ms: v.get(4),
            ..self
        }
    }
}

impl SessionRow {
    /// A session that starts now.
    pub fn new(session: SessionId, key: DeviceKey, start: i64) -> SessionRow {
        SessionRow {
            session,
            project: key.project,
            device: key.device,
            started_at: start,
            ended_at: start,
            is_live: true,
            page_views: 0,
            events: 0,
            clicks: 0,
            rage_clicks: 0,
            dead_clicks: 0,
            error_clicks: 0,
            errors: 0,
            entry_url: Sym::EMPTY,
            exit_url: Sym::EMPTY,
            browser: Sym::EMPTY,
            os: Sym::EMPTY,
            device_type: Sym::EMPTY,
            country: Sym::EMPTY,
            quick_backs: 0,
            excessive_scrolls: 0,
            thrashed_cursors: 0,
            tabs: 0,
            user_id: Sym::EMPTY,
        }
    }

    /// Takes the first page view's browser, OS, device type and country.
    pub fn fill_client(&mut self, pv: &crate::event::PageView) {
        for (field, v) in [
            (&mut self.browser, pv.browser),
            (&mut self.os, pv.os),
            (&mut self.device_type, pv.device_type),
            (&mut self.country, pv.country),
        ] {
            if field.is_empty() && !v.is_empty() {
                *field = v;
            }
        }
    }
}

impl Kept for PageViewRow {
    /// Duration, scroll, viewport, clicks and web vitals.
    type Part = (i64, i32, i32, u32, u32, u32, Vitals);
    fn part(&self) -> Self::Part {
        (
            self.duration_ms,
            self.max_scroll_y,
            self.deepest_visible_y,
            self.viewport_width,
            self.viewport_height,
            self.clicks,
            self.vitals(),
        )
    }
    fn with(self, p: Self::Part) -> Self {
        let (duration_ms, max_scroll_y, deepest_visible_y, viewport_width, viewport_height, clicks, vitals) = p;
        PageViewRow { duration_ms, max_scroll_y, deepest_visible_y, viewport_width, viewport_height, clicks, ..self }
            .with_vitals(vitals)
    }
}

/// Session ids are content-defined: project, device and start time.
pub fn session_id(key: DeviceKey, start: i64) -> SessionId {
    let mut buf = [0u8; 24];
    buf[..8].copy_from_slice(&key.project.0.to_le_bytes());
    buf[8..16].copy_from_slice(&key.device.0.to_le_bytes());
    buf[16..].copy_from_slice(&start.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// Reference: the session id of a session starting at `start` (the same definition,
/// written apart: the xxh3 of project, device and start, little-endian).
pub(crate) fn reference_session_id(key: DeviceKey, start: i64) -> SessionId {
    let bytes: Vec<u8> = [key.project.0.to_le_bytes(), key.device.0.to_le_bytes(), start.to_le_bytes()].concat();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Reference: each session's row with the counters this module owns (events, tabs,
/// entry and exit, page views, client, clicks); the other signals add theirs.
pub(crate) fn reference_rows(tl: &Timeline, p: &Params) -> Vec<SessionRow> {
    let mut rows: Vec<SessionRow> = tl
        .sessions
        .iter()
        .map(|s| {
            let mut r = SessionRow::new(s.id, tl.key, s.start);
            r.ended_at = s.last;
            r.is_live = !s.superseded && tl.as_of < tl.close_of(s, p);
            r
        })
        .collect();
    let mut tabs: Vec<std::collections::BTreeSet<Sym>> = vec![Default::default(); rows.len()];
    for a in &tl.anns {
        let r = &mut rows[a.session];
        if a.ev.counts_as_event() {
            r.events += 1;
        }
        tabs[a.session].insert(a.ev.tab);
        let url = tl.url_of(a);
        if !url.is_empty() {
            if r.entry_url.is_empty() {
                r.entry_url = url;
            }
            r.exit_url = url;
        }
        match a.ev.kind {
            Kind::PageView(pv) => {
                r.page_views += 1;
                r.fill_client(&pv);
            }
            Kind::Click(_) => r.clicks += 1,
            Kind::Identify { user } => r.user_id = user,
            _ => {}
        }
    }
    for (r, t) in rows.iter_mut().zip(&tabs) {
        r.tabs = t.len() as u32;
    }
    rows
}

/// Reference: one row per counted page view.
pub(crate) fn reference_page_views(tl: &Timeline, rows: &[SessionRow], v: &mut crate::Views) {
    for (pi, pg) in tl.pages.iter().enumerate() {
        if !pg.counted {
            continue;
        }
        let clicks = tl.on_page[pi].iter().filter(|&&i| matches!(tl.anns[i].ev.kind, Kind::Click(_))).count() as u32;
        // Each metric as the page's last report that carried it.
        let mut vitals: [Option<u32>; 5] = [None; 5];
        for &i in &tl.on_page[pi] {
            if let Kind::Vitals(w) = tl.anns[i].ev.kind {
                for (m, mine) in vitals.iter_mut().enumerate() {
                    *mine = w.get(m).or(*mine);
                }
            }
        }
        let [lcp_ms, cls_milli, inp_ms, ttfb_ms, fcp_ms] = vitals;
        *v.page_views
            .entry(PageViewRow {
                session: rows[pg.session].session,
                project: tl.key.project,
                device: tl.key.device,
                tab: pg.tab,
                url: pg.url,
                ts: pg.start,
                duration_ms: pg.last - pg.start,
                max_scroll_y: pg.max_scroll_y,
                deepest_visible_y: pg.deepest,
                viewport_width: pg.width,
                viewport_height: pg.height,
                clicks,
                lcp_ms,
                cls_milli,
                inp_ms,
                ttfb_ms,
                fcp_ms,
            })
            .or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn sessions_split_on_gap_and_count_what_happened() {
        let s = |v: &crate::Views| {
            v.sessions.keys().map(|r| (r.page_views, r.events, r.clicks, r.tabs)).collect::<Vec<_>>()
        };
        check("0 pv /a; 100 click 1 1; 200 mut", |v| assert_eq!(s(v), vec![(1, 3, 1, 1)]));
        check("0 pv /a; 100 t2 pv /b", |v| assert_eq!(s(v), vec![(2, 2, 0, 2)]));
        // More than the idle gap (30 min) apart: two sessions.
        check("0 pv /a; 1800001 pv /a", |v| assert_eq!(v.sessions.len(), 2));
        check("0 pv /a; 1800000 pv /a", |v| assert_eq!(v.sessions.len(), 1));
        check("0 pv /a; 500 pv /b; 900 click 1 1", |v| {
            let mut urls: Vec<_> = v.page_views.keys().map(|r| (r.url.as_string(), r.duration_ms, r.clicks)).collect();
            urls.sort();
            assert_eq!(urls, vec![("/a".into(), 500, 0), ("/b".into(), 400, 1)]);
        });
    }

    #[test]
    fn identify_names_the_session_and_the_latest_name_wins() {
        let users = |v: &crate::Views| v.sessions.keys().map(|r| r.user_id.as_string()).collect::<Vec<_>>();
        check("0 pv /a; 100 click 1 1", |v| assert_eq!(users(v), vec![String::new()]));
        check("0 pv /a; 100 identify alice", |v| assert_eq!(users(v), vec!["alice".to_string()]));
        check("0 pv /a; 100 identify alice; 200 t2 identify bob", |v| assert_eq!(users(v), vec!["bob".to_string()]));
        // A new session starts without one.
        check("0 identify alice; 1800001 pv /a", |v| {
            let mut u = users(v);
            u.sort();
            assert_eq!(u, vec![String::new(), "alice".to_string()]);
        });
    }

    #[test]
    fn web_vitals_belong_to_their_page_view_and_later_reports_replace_earlier() {
        let vitals = |v: &crate::Views| {
            let mut r: Vec<_> =
                v.page_views.keys().map(|r| (r.url.as_string(), r.lcp_ms, r.cls_milli, r.inp_ms, r.ttfb_ms)).collect();
            r.sort();
            r
        };
        check("0 pv /a; 100 vitals 900 - - 120; 300 vitals 1200 50 80; 400 pv /b; 500 vitals - 10", |v| {
            assert_eq!(
                vitals(v),
                vec![
                    ("/a".into(), Some(1200), Some(50), Some(80), Some(120)),
                    ("/b".into(), None, Some(10), None, None)
                ]
            )
        });
        // Before any page view there is no page to measure.
        check("0 vitals 900; 100 pv /a", |v| assert_eq!(vitals(v), vec![("/a".into(), None, None, None, None)]));
    }
}
