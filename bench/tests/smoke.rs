//! A small pass of the generator and every measurement, with exact checks: the views
//! computed from generated traffic equal the planted ground truth, from the embedded
//! log with 1 and 2 workers, and state shrinks once sessions close.

use sightflow_bench::harness;
use sightflow_bench::traffic::{GenOptions, generate};
use sightflow_config::Config;

#[test]
fn generation_is_deterministic_and_plants_every_behaviour() {
    let opts = GenOptions { devices: 60, seed: 7, ..Default::default() };
    let (a, ta) = generate(&opts);
    let (b, tb) = generate(&opts);
    assert_eq!(ta, tb);
    assert_eq!(a.len(), 60);
    assert!(a.iter().zip(&b).all(|(x, y)| x.events == y.events));
    for (name, n) in [
        ("rage", ta.rage_bursts),
        ("dead", ta.dead_clicks),
        ("error clicks", ta.error_clicks),
        ("quick backs", ta.quick_backs),
        ("excessive scrolls", ta.excessive_scrolls),
        ("thrashed cursors", ta.thrashed_cursors),
        ("funnel conversions", ta.funnel_conversions),
    ] {
        assert!(n > 0, "no {name} planted in 60 devices");
    }
    // Snapshots are tens of KB.
    let snapshot = a[0].events.iter().find(|e| e["type"] == 2).unwrap();
    let size = snapshot.to_string().len();
    assert!((10_000..200_000).contains(&size), "snapshot of {size} bytes");
}

#[test]
fn backfill_from_the_log_gives_the_planted_truth_with_one_and_two_workers() {
    let config = Config::defaults();
    let t = harness::traffic(&GenOptions { devices: 40, seed: 11, ..Default::default() }).unwrap();
    for shape in [harness::Shape::Chunks, harness::Shape::Sdk] {
        let requests = harness::requests(&t.envelopes, shape);
        assert_eq!(requests.iter().map(|(_, r)| r.len()).sum::<usize>(), t.envelopes.len(), "{shape:?}");
        assert!(requests.windows(2).all(|w| w[0].0 <= w[1].0), "{shape:?}: appends in time order");
        let dir = tempfile::tempdir().unwrap();
        let late = harness::write_log(&config, dir.path(), &requests).unwrap();
        if shape == harness::Shape::Sdk {
            // One tab per request, a tab's events sent once its 5 s are over.
            assert!(requests.len() * 5 < t.envelopes.len(), "{} requests", requests.len());
            for (due, r) in &requests {
                assert!(r.iter().all(|e| e.tab_id == r[0].tab_id && e.ts <= *due));
                assert!(r.last().unwrap().ts - r[0].ts < 5000);
            }
        } else {
            assert_eq!(late, 0, "nothing is late");
        }
        // Late events (a request arrives after other tabs moved the clock) are kept:
        // the views equal the planted truth either way.
        for workers in [1, 2] {
            let f = harness::backfill(&config, dir.path(), workers, &t).unwrap();
            assert_eq!(f.stats.events, t.envelopes.len() as u64);
        }
    }
}

#[test]
fn state_per_session_shrinks_once_sessions_close() {
    let config = Config::defaults();
    let m = harness::memory(&config, &GenOptions { devices: 30, seed: 3, ..Default::default() }, 10).unwrap();
    assert_eq!(m.sessions, 30);
    assert!(m.live_state_bytes > 0);
    assert!(m.closed_state_bytes < m.live_state_bytes, "{m:?}");
    // The per-device state of the behaviour operator is released once sessions close.
    let of = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == "behaviour").map_or(0, |x| x.1);
    assert!(of(&m.per_view_live) > 0, "{m:?}");
    assert!(of(&m.per_view_closed) < of(&m.per_view_live) / 4, "{m:?}");
}

#[test]
fn dashboard_queries_run_over_light_sessions() {
    let envelopes = harness::light_sessions(500, 1_795_161_600_000).unwrap();
    let snap = sightflow::batch::run(&Config::defaults(), envelopes).unwrap();
    assert_eq!(snap.table("sessions").unwrap().num_rows(), 500);
    assert_eq!(snap.table("rage_clicks").unwrap().num_rows(), 50);
    let lat = harness::query_latency(&snap, 3).unwrap();
    assert_eq!(lat.len(), harness::DASHBOARD_QUERIES.len());
    // The query bench's way: each worker generates its share as it reads it, in time
    // order; the shares add up to the same sessions and views.
    let share = |i| harness::LightSessions::new(500, 1_795_161_600_000, i, 2).map(Result::unwrap);
    let shares: Vec<Vec<_>> = (0..2).map(|i| share(i).collect()).collect();
    assert!(shares.iter().all(|s| s.windows(2).all(|w| w[0].ts <= w[1].ts)), "a share out of time order");
    assert_eq!(
        shares.iter().map(Vec::len).sum::<usize>(),
        harness::light_sessions(500, 1_795_161_600_000).unwrap().len()
    );
    let mut config = Config::defaults();
    config.engine.workers = 2;
    let streamed = sightflow::batch::run_streams(&config, move |i| Box::new(share(i))).unwrap();
    for t in ["sessions", "rage_clicks", "page_views", "page_stats"] {
        assert_eq!(streamed.num_rows(t), snap.num_rows(t), "{t}");
    }
}

/// The freshness bench's two ways of sending, for a moment at a low rate: closed loop
/// (each sender waits for its answer) and open loop (requests go out when due, on
/// connections opened as needed). Every request is answered and its events become visible.
#[test]
fn freshness_senders_in_closed_and_open_loop() {
    let config = Config::defaults();
    for open_loop in [None, Some(4)] {
        let f = harness::freshness(&config, 2_000, 2, 2, false, open_loop).unwrap();
        assert_eq!((f.failed, f.unseen), (0, 0), "{open_loop:?}");
        assert!(f.requests > 100, "{open_loop:?}: {} requests", f.requests);
        // 2 senders, a request every 10 ms each, for 2 s: all of it, give or take the
        // requests at the edges of the run.
        assert!(f.achieved > 1_500.0 && f.achieved <= 2_100.0, "{open_loop:?}: {} events/s", f.achieved);
    }
}
