//! Per-device state is released once a session can no longer change: many short
//! sessions that all end leave the behaviour operator's state bounded by the sessions
//! live at one time, not by the number of sessions seen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sightflow_config::Config;
use sightflow_dataflows::{Progress, RunOptions, Source, SourceError, start};
use sightflow_operators::Params;
use sightflow_operators::event::tick_ceil;
use sightflow_operators::stats::{StateSize, StateStats};
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::*;

struct Sessions {
    next: usize,
    total: usize,
    tick: u64,
    stats: Arc<Mutex<Option<StateStats>>>,
    peak: Arc<Mutex<StateSize>>,
    /// Peak records of the arrangements behind page_stats (distinct visitors).
    arranged: Arc<Mutex<usize>>,
}

const BASE: i64 = 1_795_300_000_000;
const SPACING: i64 = 10_000;

impl Source for Sessions {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        if let Some(stats) = self.stats.lock().unwrap().as_ref() {
            let views = stats.per_view();
            if let Some(s) = views.get("behaviour") {
                let mut peak = self.peak.lock().unwrap();
                peak.records = peak.records.max(s.records);
                peak.bytes = peak.bytes.max(s.bytes);
            }
            if let Some(s) = views.get("page_stats") {
                let mut a = self.arranged.lock().unwrap();
                *a = (*a).max(s.records);
            }
        }
        if self.next == self.total {
            return Ok(Progress::Done);
        }
        // One short session per poll: a page view, clicks, scrolls and moves over 2 s.
        let start = BASE + self.next as i64 * SPACING;
        let device = format!("d{}", self.next);
        let kinds = [
            Kind::PageView(PageView {
                url: "http://s.test/a".into(),
                viewport_width: 1280,
                viewport_height: 800,
                ..Default::default()
            }),
            Kind::Click(Click { x: 10, y: 10, selector: "button#go".into(), ..Default::default() }),
            Kind::Scroll(Scroll { node: 1, x: 0, y: 300 }),
            Kind::MouseMove(MouseMove {
                positions: vec![Position { x: 1, y: 1, time_offset: -100 }, Position { x: 9, y: 1, time_offset: 0 }],
            }),
            Kind::Click(Click { x: 12, y: 10, selector: "button#go".into(), ..Default::default() }),
            Kind::Mutation(DomMutation::default()),
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let ts = start + i as i64 * 400;
            out.push((
                tick_ceil(ts, self.tick),
                Envelope {
                    project: "p".into(),
                    device_id: device.clone(),
                    tab_id: "t".into(),
                    seq: i as u64,
                    ts,
                    kind: Some(kind),
                    ..Default::default()
                },
            ));
        }
        self.next += 1;
        Ok(Progress::At { frontier: tick_ceil(start + 2_000, self.tick), busy: true })
    }
}

fn run(total: usize) -> (StateSize, usize, usize, StateSize) {
    let cfg = Config::from_toml_str("[session]\nidle_gap_ms = 20000\n[engine]\nstate_grace_ms = 4000\n").unwrap();
    let params = Arc::new(Params::from_config(&cfg));
    let stats_slot = Arc::new(Mutex::new(None));
    let peak = Arc::new(Mutex::new(StateSize::default()));
    let arranged = Arc::new(Mutex::new(0));
    let (slot, pk, ar) = (stats_slot.clone(), peak.clone(), arranged.clone());
    let tick = params.tick;
    let running = start(
        RunOptions { workers: 1, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: false },
        move |_, _| {
            Box::new(Sessions { next: 0, total, tick, stats: slot.clone(), peak: pk.clone(), arranged: ar.clone() })
        },
    )
    .unwrap();
    *stats_slot.lock().unwrap() = Some(running.stats.clone());
    let snapshots = running.snapshots.clone();
    let stats = running.stats.clone();
    running.join().unwrap();
    let snap = snapshots.wait_complete();
    let sessions = snap.table("sessions").unwrap().num_rows();
    assert_eq!(stats.per_view()["behaviour"].records, 0, "all device state is released at the end");
    let peak = *peak.lock().unwrap();
    let arranged = *arranged.lock().unwrap();
    (peak, sessions, arranged, stats.per_view()["page_stats"])
}

#[test]
fn state_stays_bounded_as_sessions_end() {
    let (small, n_small, _, _) = run(200);
    let (large, n_large, arranged, visitors) = run(1_000);
    // Distinct visitors are view state, attributed to page_stats (and they do grow).
    assert!(arranged > 200, "page_stats arrangement records seen: {arranged}");
    assert_eq!((n_small, n_large), (200, 1_000));
    // Sessions overlap for (gap + grace) / spacing = 2.4 spacings: a handful are held.
    assert!(large.records <= 8, "peak devices held: {}", large.records);
    assert!(large.records <= small.records + 2, "state grew with sessions: {small:?} -> {large:?}");
    assert!(large.bytes <= small.bytes * 2 + 16_384, "state bytes grew with sessions: {small:?} -> {large:?}");
    // The visitors arrangement is measured from its batches: one (url, device) record per
    // device, each at least its 24-byte key and a 4-byte offset, and not many times that.
    assert_eq!(visitors.records, 1_000, "{visitors:?}");
    assert!((28_000..=100_000).contains(&visitors.bytes), "{visitors:?}");
}
