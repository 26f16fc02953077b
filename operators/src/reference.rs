//! Batch reference implementations of every view: each definition computed from
//! scratch over the whole input, with no incremental state. The oracle tests compare
//! the dataflow's published views with these at every published `as_of`.
//!
//! Input is the set of `(logical time, event)` pairs; the views at `as_of` are a function
//! of the events with logical time `<= as_of`. The shared conventions (stated once here
//! and implemented independently by [`crate::device`]):
//! - a device's events are ordered by (logical time, event time, tab, seq, sub); the
//!   effective time of an event is `max(event time, previous effective time)`;
//! - a device's state is released when the next event's logical time is beyond
//!   `max(session close, last arrival + grace)`; the next event then starts afresh;
//! - a dead-click verdict is given once the device has an event past the click's longest
//!   window, or at the click's deadline (the tick `click + window` for a click that arrived
//!   on time, `late_verdict` after its arrival for a late one), or when a new session starts
//!   or the state is released; only events that arrived by the deadline count as reactions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::device::{depth_round, session_id, verdict_deadline};
use crate::event::{DOCUMENT_NODE, DeviceKey, Event, Kind, MAX_MOVE_OFFSET_MS, tick_after, tick_ceil};
use crate::params::{Params, StepMatcher, glob_match, selector_match};
use crate::rows::*;
use crate::sym::Sym;
use crate::views::depth_bands;

/// Every view as of `as_of`, from scratch.
pub fn reference(events: &[(u64, Event)], as_of: u64, p: &Params) -> Views {
    let mut by_device: BTreeMap<DeviceKey, Vec<(u64, Event)>> = BTreeMap::new();
    for (t, e) in events {
        if *t <= as_of {
            by_device.entry(e.device).or_default().push((*t, *e));
        }
    }
    let mut v = Views::default();
    let mut visitors: BTreeSet<PageVisitor> = BTreeSet::new();
    let mut err_sessions: BTreeSet<ErrSession> = BTreeSet::new();
    let mut depth_obs: BTreeMap<DepthObs, isize> = BTreeMap::new();
    for (key, mut evs) in by_device {
        evs.sort_by_key(|(t, e)| (*t, e.order_key()));
        device(key, &evs, as_of, p, &mut v, &mut visitors, &mut err_sessions, &mut depth_obs);
    }
    for pv in visitors {
        accumulate(
            &mut v.page_stats,
            PageKey { project: pv.project, url: pv.url },
            PageAgg { visitors: 1, ..Default::default() },
        );
    }
    for es in err_sessions {
        accumulate(&mut v.errors, ErrKey { project: es.project, fingerprint: es.fingerprint }, ErrAgg::sessions(1));
    }
    type Observations = Vec<(u32, u32, isize)>;
    let mut per_url: BTreeMap<(Sym, Sym), Observations> = BTreeMap::new();
    for (o, n) in depth_obs {
        per_url.entry((o.project, o.url)).or_default().push((o.deepest, o.page_height, n));
    }
    for ((project, url), obs) in per_url {
        for (depth_pct, n) in depth_bands(&obs, p.band_pct) {
            v.scroll_depth.insert(DepthRow { project, url, depth_pct }, n);
        }
    }
    // Funnel steps from per-session progress (or per-device best progress).
    let mut device_best: BTreeMap<(Sym, u32, Sym), u32> = BTreeMap::new();
    for f in v.session_funnels.keys() {
        if p.funnels[f.funnel as usize].per_device {
            let e = device_best.entry((f.project, f.funnel, f.device)).or_insert(0);
            *e = (*e).max(f.steps);
        } else {
            for step in 1..=f.steps {
                *v.funnel_steps.entry(FunnelStepRow { project: f.project, funnel: f.funnel, step }).or_insert(0) += 1;
            }
        }
    }
    for ((project, funnel, _), steps) in device_best {
        for step in 1..=steps {
            *v.funnel_steps.entry(FunnelStepRow { project, funnel, step }).or_insert(0) += 1;
        }
    }
    v
}

/// One event with what the timeline scan derived for it.
#[derive(Clone, Copy, Debug)]
struct Ann {
    t: u64,
    ev: Event,
    eff: i64,
    session: usize,
    /// The tab's page instance after the event (its own for a page view).
    page: Option<usize>,
    /// Page number within the tab (page views of the tab in this epoch).
    page_no: u32,
    /// The page's viewport width and document scroll just before the event.
    width: u32,
    doc: (i32, i32),
}

#[derive(Clone, Debug)]
struct Sess {
    id: SessionId,
    start: i64,
    last: i64,
    next_midnight: i64,
    /// A later session of the same device exists (split or release).
    superseded: bool,
    /// The epoch's release time has passed (`as_of` beyond it).
    released: bool,
}

#[derive(Clone, Debug)]
struct PageInst {
    session: usize,
    tab: Sym,
    counted: bool,
    url: Sym,
    start: i64,
    last: i64,
    start_width: u32,
    width: u32,
    height: u32,
    page_height: u32,
    base: (i32, i32),
    deepest: i32,
    max_scroll_y: i32,
    /// Document scroll records (event index, effective time, x, y).
    scrolls: Vec<(usize, i64, i32, i32)>,
}

fn close_of(s: &Sess, p: &Params) -> u64 {
    tick_after(s.last + p.gap, p.tick)
        .min(tick_ceil(s.start.saturating_add(p.max_age), p.tick))
        .min(tick_ceil(s.next_midnight.min(i64::MAX / 2), p.tick))
}

#[allow(clippy::too_many_arguments)]
fn device(
    key: DeviceKey,
    evs: &[(u64, Event)],
    as_of: u64,
    p: &Params,
    v: &mut Views,
    visitors: &mut BTreeSet<PageVisitor>,
    err_sessions: &mut BTreeSet<ErrSession>,
    depth_obs: &mut BTreeMap<DepthObs, isize>,
) {
    // 1. Timeline: effective times, sessions, releases.
    let mut sessions: Vec<Sess> = Vec::new();
    let mut anns: Vec<Ann> = Vec::new();
    let mut last_eff: Option<i64> = None;
    let mut last_t = 0u64;
    let mut cur: Option<usize> = None;
    let mut new_epoch_at: BTreeSet<usize> = BTreeSet::new();
    for &(t, ev) in evs {
        if let Some(c) = cur {
            let release = close_of(&sessions[c], p).max(tick_ceil(last_t as i64 + p.grace as i64, p.tick));
            if t > release {
                sessions[c].superseded = true;
                cur = None;
                last_eff = None;
                new_epoch_at.insert(anns.len());
            }
        }
        let eff = last_eff.map_or(ev.ts, |l| ev.ts.max(l));
        let split = match cur {
            None => true,
            Some(c) => {
                let s = &sessions[c];
                eff - s.last > p.gap || eff - s.start >= p.max_age || eff >= s.next_midnight
            }
        };
        if split {
            if let Some(c) = cur {
                sessions[c].superseded = true;
            }
            sessions.push(Sess {
                id: session_id(key, eff),
                start: eff,
                last: eff,
                next_midnight: p.next_midnight(eff),
                superseded: false,
                released: false,
            });
            cur = Some(sessions.len() - 1);
        }
        let c = cur.expect("session");
        sessions[c].last = eff;
        last_eff = Some(eff);
        last_t = t;
        anns.push(Ann { t, ev, eff, session: c, page: None, page_no: 0, width: 0, doc: (0, 0) });
    }
    if let Some(c) = cur {
        let release = close_of(&sessions[c], p).max(tick_ceil(last_t as i64 + p.grace as i64, p.tick));
        if release <= as_of {
            sessions[c].released = true;
        }
    }

    // 2. Pages: per tab, the current page instance; pages carry over a session split.
    let mut pages: Vec<PageInst> = Vec::new();
    struct TabCtx {
        page: Option<usize>,
        pages: u32,
    }
    let mut tabs: HashMap<Sym, TabCtx> = HashMap::new();
    let mut prev_session: Option<usize> = None;
    #[allow(clippy::needless_range_loop)] // `anns[i]` is written back below
    for i in 0..anns.len() {
        let a = anns[i];
        if new_epoch_at.contains(&i) {
            tabs.clear();
        } else if prev_session.is_some_and(|s| s != a.session) {
            // Split: each tab on a page stays there, as an uncounted page of the new session.
            let mut ts: Vec<Sym> = tabs.keys().copied().collect();
            ts.sort();
            for tab in ts {
                let ctx = tabs.get_mut(&tab).expect("tab");
                match ctx.page {
                    Some(pi) => {
                        let old = pages[pi].clone();
                        let (dx, dy) = doc_now(&old);
                        pages.push(PageInst {
                            session: a.session,
                            tab,
                            counted: false,
                            url: old.url,
                            start: a.eff,
                            last: a.eff,
                            start_width: old.width,
                            width: old.width,
                            height: old.height,
                            page_height: old.page_height,
                            base: (dx, dy),
                            deepest: dy + old.height as i32,
                            max_scroll_y: 0,
                            scrolls: Vec::new(),
                        });
                        ctx.page = Some(pages.len() - 1);
                    }
                    None => {
                        tabs.remove(&tab);
                    }
                }
            }
        }
        prev_session = Some(a.session);
        let ctx = tabs.entry(a.ev.tab).or_insert(TabCtx { page: None, pages: 0 });
        if let Some(pi) = ctx.page {
            pages[pi].last = a.eff;
            anns[i].width = pages[pi].width;
            anns[i].doc = doc_now(&pages[pi]);
        }
        match a.ev.kind {
            Kind::PageView(pv) => {
                ctx.pages += 1;
                pages.push(PageInst {
                    session: a.session,
                    tab: a.ev.tab,
                    counted: true,
                    url: pv.url,
                    start: a.eff,
                    last: a.eff,
                    start_width: pv.width,
                    width: pv.width,
                    height: pv.height,
                    page_height: pv.page_height,
                    base: (0, 0),
                    deepest: pv.height as i32,
                    max_scroll_y: 0,
                    scrolls: Vec::new(),
                });
                ctx.page = Some(pages.len() - 1);
            }
            Kind::Snapshot { scroll_x, scroll_y } => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    pg.scrolls.push((i, a.eff, scroll_x, scroll_y));
                    pg.deepest = pg.deepest.max(scroll_y + pg.height as i32);
                }
            }
            Kind::Scroll { node, x, y } if node == DOCUMENT_NODE => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    pg.scrolls.push((i, a.eff, x, y));
                    pg.max_scroll_y = pg.max_scroll_y.max(y);
                    pg.deepest = pg.deepest.max(y + pg.height as i32);
                }
            }
            Kind::Resize { width, height } => {
                if let Some(pi) = ctx.page {
                    let pg = &mut pages[pi];
                    let (_, dy) = doc_now(pg);
                    pg.width = width;
                    pg.height = height;
                    pg.deepest = pg.deepest.max(dy + height as i32);
                }
            }
            _ => {}
        }
        anns[i].page = ctx.page;
        anns[i].page_no = ctx.pages;
    }

    // 3. Definitions.
    let project = key.project;
    let mut rows: Vec<SessionRow> = sessions
        .iter()
        .map(|s| SessionRow {
            session: s.id,
            project,
            device: key.device,
            started_at: s.start,
            ended_at: s.last,
            is_live: !s.superseded && as_of < close_of(s, p),
            page_views: 0,
            events: 0,
            clicks: 0,
            rage_clicks: 0,
            dead_clicks: 0,
            error_clicks: 0,
            errors: 0,
            quick_backs: 0,
            excessive_scrolls: 0,
            thrashed_cursors: 0,
            entry_url: Sym::EMPTY,
            exit_url: Sym::EMPTY,
            browser: Sym::EMPTY,
            os: Sym::EMPTY,
            device_type: Sym::EMPTY,
            country: Sym::EMPTY,
            tabs: 0,
        })
        .collect();
    let url_of = |a: &Ann| a.page.map_or(a.ev.url, |pi| pages[pi].url);

    // Session counters.
    let mut session_tabs: Vec<BTreeSet<Sym>> = vec![BTreeSet::new(); sessions.len()];
    for a in &anns {
        let r = &mut rows[a.session];
        if a.ev.counts_as_event() {
            r.events += 1;
        }
        session_tabs[a.session].insert(a.ev.tab);
        let url = url_of(a);
        if !url.is_empty() {
            if r.entry_url.is_empty() {
                r.entry_url = url;
            }
            r.exit_url = url;
        }
        match a.ev.kind {
            Kind::PageView(pv) => {
                r.page_views += 1;
                for (field, val) in [
                    (&mut r.browser, pv.browser),
                    (&mut r.os, pv.os),
                    (&mut r.device_type, pv.device_type),
                    (&mut r.country, pv.country),
                ] {
                    if field.is_empty() && !val.is_empty() {
                        *field = val;
                    }
                }
            }
            Kind::Click(_) => r.clicks += 1,
            Kind::Error { message, fingerprint } => {
                r.errors += 1;
                accumulate(&mut v.errors, ErrKey { project, fingerprint }, ErrAgg::occurrence(a.eff, message));
                err_sessions.insert(ErrSession { project, fingerprint, session: r.session });
            }
            _ => {}
        }
    }
    for (r, tabs) in rows.iter_mut().zip(&session_tabs) {
        r.tabs = tabs.len() as u32;
    }

    // Events of each page instance, in order.
    let mut on_page: Vec<Vec<usize>> = vec![Vec::new(); pages.len()];
    for (i, a) in anns.iter().enumerate() {
        if let Some(pi) = a.page {
            on_page[pi].push(i);
        }
    }

    // Page views, page stats, depth.
    let mut depth: BTreeMap<(usize, Sym, u32), (i32, u32)> = BTreeMap::new();
    let mut last_counted: BTreeMap<usize, usize> = BTreeMap::new();
    for (pi, pg) in pages.iter().enumerate() {
        if !pg.counted {
            continue;
        }
        let sid = rows[pg.session].session;
        let clicks = on_page[pi].iter().filter(|&&i| matches!(anns[i].ev.kind, Kind::Click(_))).count() as u32;
        *v.page_views
            .entry(PageViewRow {
                session: sid,
                project,
                device: key.device,
                tab: pg.tab,
                url: pg.url,
                ts: pg.start,
                duration_ms: pg.last - pg.start,
                max_scroll_y: pg.max_scroll_y,
                deepest_visible_y: pg.deepest,
                viewport_width: pg.width,
                viewport_height: pg.height,
                clicks,
            })
            .or_insert(0) += 1;
        accumulate(
            &mut v.page_stats,
            PageKey { project, url: pg.url },
            PageAgg { views: 1, duration_ms: pg.last - pg.start, ..Default::default() },
        );
        visitors.insert(PageVisitor { project, url: pg.url, device: key.device });
        let e = depth.entry((pg.session, pg.url, p.viewport_bucket(pg.start_width))).or_insert((0, 0));
        e.0 = e.0.max(pg.deepest.max(0));
        if pg.page_height > 0 {
            e.1 = e.1.max(pg.page_height);
        }
        last_counted.insert(pg.session, pi);
    }
    for (s, pi) in &last_counted {
        let url = pages[*pi].url;
        accumulate(&mut v.page_stats, PageKey { project, url }, PageAgg { exits: 1, ..Default::default() });
        if rows[*s].page_views == 1 {
            accumulate(&mut v.page_stats, PageKey { project, url }, PageAgg { bounces: 1, ..Default::default() });
        }
    }
    for ((_, url, bucket), (deepest, page_height)) in depth {
        for band in 0..(deepest as u32).div_ceil(p.cell as u32) {
            *v.heatmap_cells
                .entry(HeatRow {
                    project,
                    url,
                    kind: HeatKind::Scroll,
                    viewport_bucket: bucket,
                    cell_x: 0,
                    cell_y: band as i32,
                })
                .or_insert(0) += 1;
        }
        *depth_obs.entry(DepthObs { project, url, deepest: depth_round(deepest, p.cell), page_height }).or_insert(0) +=
            1;
    }

    // Click and move heatmaps.
    for (i, a) in anns.iter().enumerate() {
        let Some(pi) = a.page else { continue };
        let pg = &pages[pi];
        let bucket = p.viewport_bucket(a.width);
        match a.ev.kind {
            Kind::Click(c) if c.has_position => {
                let (px, py) = if c.has_page { (c.page_x, c.page_y) } else { (c.x + a.doc.0, c.y + a.doc.1) };
                *v.heatmap_cells
                    .entry(HeatRow {
                        project,
                        url: pg.url,
                        kind: HeatKind::Click,
                        viewport_bucket: bucket,
                        cell_x: px.div_euclid(p.cell),
                        cell_y: py.div_euclid(p.cell),
                    })
                    .or_insert(0) += 1;
            }
            Kind::Move { x, y, offset, .. } => {
                let at = a.eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64;
                // The document's scroll at `at`: the last record at or before it among
                // those that came before this event.
                let mut doc = pg.base;
                for &(_, t, sx, sy) in pg.scrolls.iter().take_while(|(j, ..)| *j < i) {
                    if t <= at {
                        doc = (sx, sy);
                    }
                }
                *v.heatmap_cells
                    .entry(HeatRow {
                        project,
                        url: pg.url,
                        kind: HeatKind::Move,
                        viewport_bucket: bucket,
                        cell_x: (x + doc.0).div_euclid(p.cell),
                        cell_y: (y + doc.1).div_euclid(p.cell),
                    })
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }

    // Rage bursts, excessive scrolling and thrashed cursors, per page instance.
    for (pi, pg) in pages.iter().enumerate() {
        let sid = rows[pg.session].session;
        let clicks: Vec<(i64, crate::event::Click)> = on_page[pi]
            .iter()
            .filter_map(|&i| match anns[i].ev.kind {
                Kind::Click(c) => Some((anns[i].eff, c)),
                _ => None,
            })
            .collect();
        let mut k = 0;
        while k < clicks.len() {
            let (first_t, first) = clicks[k];
            let mut end = k + 1;
            while end < clicks.len() {
                let (t, c) = clicks[end];
                let near = c.has_position
                    && first.has_position
                    && (c.x as i64 - first.x as i64).pow(2) + (c.y as i64 - first.y as i64).pow(2) <= p.rage_radius2;
                if t - clicks[end - 1].0 <= p.rage_gap && near {
                    end += 1;
                } else {
                    break;
                }
            }
            let n = (end - k) as u32;
            if n >= p.rage_min {
                rows[pg.session].rage_clicks += 1;
                *v.rage_clicks
                    .entry(RageRow {
                        session: sid,
                        project,
                        url: pg.url,
                        ts: first_t,
                        end_ts: clicks[end - 1].0,
                        x: first.x,
                        y: first.y,
                        clicks: n,
                        selector: first.selector,
                    })
                    .or_insert(0) += 1;
            }
            k = end;
        }

        // Direction changes of scroll y, per node.
        let mut last: BTreeMap<u32, (i32, i8)> = BTreeMap::new();
        let mut changes = Vec::new();
        for &i in &on_page[pi] {
            if let Kind::Scroll { node, y, .. } = anns[i].ev.kind {
                match last.get_mut(&node) {
                    None => {
                        last.insert(node, (y, 0));
                    }
                    Some((ly, ld)) => {
                        let d = (y - *ly).signum() as i8;
                        if d != 0 {
                            if *ld != 0 && d != *ld {
                                changes.push(anns[i].eff);
                            }
                            *ld = d;
                        }
                        *ly = y;
                    }
                }
            }
        }
        for (start, end, n) in episodes(&changes, p.scroll_changes, p.scroll_window) {
            rows[pg.session].excessive_scrolls += 1;
            *v.excessive_scrolls
                .entry(EpisodeRow { session: sid, project, url: pg.url, ts: start, end_ts: end, reversals: n })
                .or_insert(0) += 1;
        }

        // Horizontal reversals of the mouse, at their turning point.
        let mut lx: Option<(i32, i64)> = None;
        let mut ld = 0i8;
        let mut reversals = Vec::new();
        for &i in &on_page[pi] {
            if let Kind::Move { x, offset, .. } = anns[i].ev.kind {
                let at = anns[i].eff + offset.clamp(-MAX_MOVE_OFFSET_MS, 0) as i64;
                if let Some((px, turn)) = lx {
                    let d = (x - px).signum() as i8;
                    if d != 0 {
                        if ld != 0 && d != ld {
                            reversals.push(turn);
                        }
                        ld = d;
                    }
                }
                lx = Some((x, at));
            }
        }
        for (start, end, n) in episodes(&reversals, p.thrash_reversals, p.thrash_window) {
            rows[pg.session].thrashed_cursors += 1;
            *v.thrashed_cursors
                .entry(EpisodeRow { session: sid, project, url: pg.url, ts: start, end_ts: end, reversals: n })
                .or_insert(0) += 1;
        }
    }

    // Quick backs: consecutive counted page views A, B, A of one tab in one session.
    let mut by_tab: BTreeMap<(usize, Sym), Vec<usize>> = BTreeMap::new();
    for (pi, pg) in pages.iter().enumerate() {
        if pg.counted {
            by_tab.entry((pg.session, pg.tab)).or_default().push(pi);
        }
    }
    for ((s, _), list) in &by_tab {
        // A counted page directly after an uncounted (carried) one has no predecessor.
        for w in list.windows(3) {
            let (a, b, c) = (&pages[w[0]], &pages[w[1]], &pages[w[2]]);
            if a.url == c.url && b.url != c.url && c.start - b.start <= p.quick_back_max {
                rows[*s].quick_backs += 1;
                *v.quick_backs
                    .entry(QuickBackRow {
                        session: rows[*s].session,
                        project,
                        url: b.url,
                        ts: b.start,
                        dwell_ms: c.start - b.start,
                        from_url: a.url,
                    })
                    .or_insert(0) += 1;
            }
        }
    }

    // Dead and error clicks.
    let dead_window = p.dead_window();
    for (i, a) in anns.iter().enumerate() {
        let Kind::Click(c) = a.ev.kind else { continue };
        let url = url_of(a);
        let sid = rows[a.session].session;
        let later = anns[i + 1..].iter().take_while(|b| b.session == a.session).filter(|b| b.ev.tab == a.ev.tab);
        // Error: the first uncaught error on the same page view within the window.
        if let Some(err) = later.clone().find(|b| {
            matches!(b.ev.kind, Kind::Error { .. }) && b.page_no == a.page_no && b.eff - a.eff <= p.error_window
        }) && let Kind::Error { message, .. } = err.ev.kind
        {
            rows[a.session].error_clicks += 1;
            *v.error_clicks
                .entry(ErrorClickRow {
                    session: sid,
                    project,
                    url,
                    ts: a.eff,
                    x: c.x,
                    y: c.y,
                    selector: c.selector,
                    message,
                    error_ts: err.eff,
                })
                .or_insert(0) += 1;
        }
        if c.text_field {
            continue;
        }
        let deadline = verdict_deadline(a.t, a.ev.ts, a.eff, p);
        let s = &sessions[a.session];
        // Judged once the device has an event past the window, at the deadline when it
        // goes quiet, or when its session or state ends.
        let moved_past =
            anns[i + 1..].iter().take_while(|b| b.session == a.session).any(|b| b.eff - a.eff > dead_window);
        let judged = moved_past || deadline <= as_of || s.superseded || s.released;
        if !judged {
            continue;
        }
        let reacted = later.clone().filter(|b| b.t <= deadline).any(|b| {
            let dt = b.eff - a.eff;
            match b.ev.kind {
                Kind::Mutation => dt <= p.dead_mutation,
                Kind::PageView(_) => dt <= p.dead_navigation,
                Kind::Scroll { .. } => dt <= p.dead_scroll,
                Kind::Input { .. } => dt <= p.dead_input,
                _ => false,
            }
        });
        if !reacted {
            rows[a.session].dead_clicks += 1;
            *v.dead_clicks
                .entry(DeadRow {
                    session: sid,
                    project,
                    url,
                    ts: a.eff,
                    x: c.x,
                    y: c.y,
                    selector: c.selector,
                    tag: c.tag,
                })
                .or_insert(0) += 1;
        }
    }

    // Funnels: the longest chain of steps in order, all within the window of its start.
    for (s_index, row) in rows.iter().enumerate() {
        for (fi, spec) in p.funnels.iter().enumerate() {
            let n = spec.steps.len();
            let mut best: Vec<Option<i64>> = vec![None; n];
            for a in anns.iter().filter(|a| a.session == s_index) {
                let is = |m: &StepMatcher| match (m, a.ev.kind) {
                    (StepMatcher::Page { pattern, whole_url }, Kind::PageView(pv)) => {
                        glob_match(pattern, &if *whole_url { pv.url } else { pv.path }.as_string())
                    }
                    (StepMatcher::Event(name), Kind::Custom { name: n }) => *name == n,
                    (StepMatcher::Click(sel), Kind::Click(c)) => selector_match(sel, &c.selector.as_string()),
                    _ => false,
                };
                for k in (0..n).rev() {
                    if !is(&spec.steps[k]) {
                        continue;
                    }
                    if k == 0 {
                        best[0] = Some(a.eff);
                    } else if let Some(st) = best[k - 1]
                        && a.eff - st <= spec.window
                    {
                        best[k] = Some(best[k].map_or(st, |b| b.max(st)));
                    }
                }
            }
            let steps = best.iter().rposition(|b| b.is_some()).map_or(0, |k| k as u32 + 1);
            *v.session_funnels
                .entry(FunnelRow { session: row.session, project, device: key.device, funnel: fi as u32, steps })
                .or_insert(0) += 1;
        }
    }

    for r in rows {
        *v.sessions.entry(r).or_insert(0) += 1;
    }
}

fn doc_now(pg: &PageInst) -> (i32, i32) {
    pg.scrolls.last().map_or(pg.base, |&(_, _, x, y)| (x, y))
}

/// Episodes of at least `min` changes within `window`, overlapping windows merged:
/// `(first change, last change, changes)`.
fn episodes(changes: &[i64], min: u32, window: i64) -> Vec<(i64, i64, u32)> {
    let m = min.max(1) as usize;
    let mut out: Vec<(i64, i64, usize, usize)> = Vec::new(); // start, end, first index, last index
    for j in (m - 1)..changes.len() {
        let first = j + 1 - m;
        if changes[j] - changes[first] > window {
            continue;
        }
        match out.last_mut() {
            Some(ep) if changes[first] <= ep.1 => {
                ep.1 = changes[j];
                ep.3 = j;
            }
            _ => out.push((changes[first], changes[j], first, j)),
        }
    }
    out.into_iter().map(|(s, e, a, b)| (s, e, (b - a + 1) as u32)).collect()
}

#[cfg(test)]
mod tests {
    use super::episodes;

    #[test]
    fn episodes_merge_overlapping_windows() {
        // 8 changes within 4 s: one episode of 8.
        let c = [0, 500, 1000, 1500, 2000, 2500, 3000, 3500];
        assert_eq!(episodes(&c, 6, 10_000), vec![(0, 3500, 8)]);
        // Two separate bursts.
        let c = [0, 100, 200, 300, 5000, 5100, 5200, 5300];
        assert_eq!(episodes(&c, 4, 1000), vec![(0, 300, 4), (5000, 5300, 4)]);
        // Too slow.
        assert!(episodes(&[0, 2000, 4000, 6000], 4, 1000).is_empty());
    }
}
