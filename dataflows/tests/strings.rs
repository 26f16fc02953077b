//! The string table is bounded by what is in use: waves of distinct, short-lived devices
//! (each wave's sessions end and are released) leave it holding a few waves' strings,
//! not every wave's, while every published row keeps its strings and a device that
//! stays live across all the waves keeps the strings its rows still show.
//!
//! Its own test binary: the table's epoch is process-wide, and this test moves it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, StringArray};
use sightflow_config::Config;
use sightflow_dataflows::{Progress, RunOptions, Snapshots, Source, SourceError, start};
use sightflow_operators::Params;
use sightflow_operators::event::tick_ceil;
use sightflow_operators::stats::StateStats;
use sightflow_proto::v1::envelope::Kind;
use sightflow_proto::v1::*;

const BASE: i64 = 1_795_300_000_000;
/// Logical time between waves: less than the session gap, so the long-lived device's
/// session spans every wave.
const WAVE_MS: i64 = 12 * 60_000;
const WAVES: usize = 16;
const DEVICES: usize = 100;

struct Waves {
    wave: usize,
    /// Waiting for the views to pass this time before the next wave.
    waiting_for: Option<u64>,
    tick: u64,
    handles: Arc<Mutex<Option<(Snapshots, StateStats)>>>,
    /// Entries of the string table after each wave's views were published.
    sizes: Arc<Mutex<Vec<usize>>>,
}

fn envelope(device: &str, seq: u64, ts: i64, kind: Kind) -> Envelope {
    Envelope {
        project: "p".into(),
        device_id: device.into(),
        tab_id: format!("{device}-tab"),
        seq,
        ts,
        kind: Some(kind),
        ..Default::default()
    }
}

fn page(url: String) -> Kind {
    Kind::PageView(PageView { url, viewport_width: 1280, viewport_height: 800, ..Default::default() })
}

impl Source for Waves {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        if let Some(t) = self.waiting_for {
            let h = self.handles.lock().unwrap();
            let Some((snapshots, stats)) = h.as_ref() else { return Ok(Progress::At { frontier: t, busy: false }) };
            if snapshots.latest().as_of + 1 < t {
                return Ok(Progress::At { frontier: t, busy: false });
            }
            self.sizes.lock().unwrap().push(stats.per_view().get("strings").map_or(0, |s| s.records));
            self.waiting_for = None;
        }
        if self.wave == WAVES {
            return Ok(Progress::Done);
        }
        let start = BASE + self.wave as i64 * WAVE_MS;
        let mut push = |e: Envelope| out.push((tick_ceil(e.ts, self.tick), e));
        if self.wave == 0 {
            push(envelope("long", 0, start, page("http://s.test/long-entry".into())));
        }
        // The long-lived device stays active; its events carry no URL.
        push(envelope("long", 1 + self.wave as u64, start, Kind::Activity(Activity::default())));
        for i in 0..DEVICES {
            let device = format!("w{}-d{i}", self.wave);
            let url = format!("http://s.test/{device}/page");
            push(envelope(&device, 0, start + 10, page(url)));
            push(envelope(
                &device,
                1,
                start + 500,
                Kind::Click(Click { x: 10, y: 10, selector: format!("button#{device}"), ..Default::default() }),
            ));
            push(envelope(
                &device,
                2,
                start + 900,
                Kind::Error(JsError { message: format!("TypeError: {device} is undefined"), ..Default::default() }),
            ));
        }
        self.wave += 1;
        let next = tick_ceil(BASE + self.wave as i64 * WAVE_MS - 1, self.tick);
        self.waiting_for = Some(next);
        Ok(Progress::At { frontier: tick_ceil(start + 1_000, self.tick), busy: true })
    }
}

fn strings(batch: &arrow::array::RecordBatch, column: &str) -> Vec<Option<String>> {
    let a = batch.column_by_name(column).unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect()
}

#[test]
fn the_string_table_holds_what_is_in_use() {
    let cfg = Config::from_toml_str(
        "[session]\nidle_gap_ms = 900000\nsplit_at_midnight = false\n[engine]\nstate_grace_ms = 4000\n",
    )
    .unwrap();
    let params = Arc::new(Params::from_config(&cfg));
    assert!(params.strings_keep < 3 * WAVE_MS as u64, "the test spans many keep times");
    let tick = params.tick;
    let handles = Arc::new(Mutex::new(None));
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let (h, s) = (handles.clone(), sizes.clone());
    let running = start(
        RunOptions { workers: 1, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: false },
        move |_, _| {
            Box::new(Waves { wave: 0, waiting_for: None, tick, handles: h.clone(), sizes: s.clone() })
                as Box<dyn Source>
        },
    )
    .unwrap();
    *handles.lock().unwrap() = Some((running.snapshots.clone(), running.stats.clone()));
    let snapshots = running.snapshots.clone();
    running.join().unwrap();
    let snap = snapshots.wait_complete();
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.len(), WAVES);
    eprintln!("string table entries after each wave: {sizes:?}");

    // Each wave brings 6 new strings per device (device, tab, URL, path, selector, error
    // message); the table holds a few waves of them.
    let per_wave = 6 * DEVICES;
    let fed = WAVES * per_wave;
    let settled = sizes[5];
    assert!(sizes[4..].iter().all(|&n| n <= settled + per_wave), "bounded after the first waves: {sizes:?}");
    assert!(*sizes.last().unwrap() < fed / 2, "fed {fed} strings, holding {sizes:?}");
    assert!(settled >= per_wave, "the live waves' strings are held: {sizes:?}");

    // Every published row still shows its strings.
    let sessions = snap.table("sessions").unwrap();
    let devices: BTreeSet<String> = strings(&sessions, "device_id").into_iter().map(Option::unwrap).collect();
    assert_eq!(devices.len(), WAVES * DEVICES + 1);
    assert!(devices.contains("w0-d0") && devices.contains(&format!("w{}-d{}", WAVES - 1, DEVICES - 1)));
    let entries = strings(&sessions, "entry_url");
    let ids = strings(&sessions, "device_id");
    for (d, e) in ids.iter().zip(&entries) {
        let d = d.as_deref().unwrap();
        let want = if d == "long" { "http://s.test/long-entry".to_string() } else { format!("http://s.test/{d}/page") };
        assert_eq!(e.as_deref(), Some(want.as_str()), "entry URL of {d}");
    }
    let pages = snap.table("page_views").unwrap();
    assert!(strings(&pages, "url").iter().all(|u| u.as_deref().is_some_and(|u| u.starts_with("http://s.test/"))));
    // The messages differ only in an identifier: one error group, whose first message
    // (a value no later event brings again) is still the first wave's.
    let errors = snap.table("errors").unwrap();
    let messages = strings(&errors, "message");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].as_deref().is_some_and(|m| m.starts_with("TypeError: w0-")), "{messages:?}");
}
