//! Fuzzing of every decoder that reads what a client or a disk hands us: arbitrary
//! bytes, and real events with bytes flipped, cut or spliced. The property is that
//! nothing panics and every answer is a value or a reason; `make test` runs a few
//! hundred cases of each (`PROPTEST_CASES` raises it).

use std::io::Write;

use proptest::prelude::*;

use crate::ingest::{BodyLimits, decode_rrweb, decode_track};
use crate::json::{Defaults, Sizes, decode_event};
use crate::log::{FsyncPolicy, Log, LogOptions};
use crate::rrweb::Decoders;
use crate::validate::Limits;

/// Real rrweb events (from the fixture recordings) to mutate.
fn corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rrweb");
    let mut out = Vec::new();
    for name in ["02-rage.json", "04-error.json", "06-quickback_scroll.json"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
        let events: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a recording");
        out.extend(events.iter().map(|e| e.to_string()));
    }
    out
}

/// A real event with a mutation: a byte replaced, a cut, or a splice of two events.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    let n = corpus.len();
    (0..n, 0..n, any::<usize>(), any::<u8>(), 0..4u8).prop_map(move |(a, b, at, byte, how)| {
        let mut x = corpus[a].clone().into_bytes();
        let i = at % x.len().max(1);
        match how {
            0 => x[i] = byte,
            1 => x.truncate(i),
            2 => {
                let y = corpus[b].as_bytes();
                x.truncate(i);
                x.extend_from_slice(&y[at % y.len().max(1)..]);
            }
            _ => x.insert(i, byte),
        }
        x
    })
}

fn body_limits() -> BodyLimits {
    BodyLimits { max_decompressed_bytes: 1 << 20, max_events: 100, sizes: Sizes::default() }
}

fn limits() -> Limits {
    Limits::any_age(1_800_000_000_000)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn track(body: &[u8], content_type: Option<&str>) {
    let d = Defaults { project: "p".into(), device_id: "d".into() };
    let _ = decode_track(body, content_type, &d, &body_limits(), &limits(), &Decoders::default());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300)
    ))]

    #[test]
    fn the_rrweb_decoder_takes_any_text(bytes in prop_oneof![mutated(), proptest::collection::vec(any::<u8>(), 0..512)]) {
        let text = String::from_utf8_lossy(&bytes);
        let d = Decoders::default();
        // A snapshot first, so that mutations and clicks meet a node map.
        for e in corpus().iter().take(3) {
            let _ = d.decode("p", "d", "t", 0, e);
        }
        let _ = d.decode("p", "d", "t", 1, &text);
        let arr = format!("[{text}, {text}]");
        let _ = decode_rrweb(arr.as_bytes(), "p", "d", "t", 0, &body_limits(), &limits(), &d);
    }

    #[test]
    fn the_json_event_decoder_takes_any_text(bytes in prop_oneof![
        mutated().prop_map(|e| {
            let mut w = br#"{"type": "rrweb", "device_id": "d", "event": "#.to_vec();
            w.extend(e);
            w.push(b'}');
            w
        }),
        proptest::collection::vec(any::<u8>(), 0..512),
        "[a-z_{}\\[\\]\":,0-9 .-]{0,200}".prop_map(String::into_bytes),
    ]) {
        let text = String::from_utf8_lossy(&bytes);
        let d = Defaults { project: "p".into(), device_id: "d".into() };
        let _ = decode_event(&text, &d, 0, &Decoders::default(), &Sizes::default());
        track(&bytes, Some("application/json"));
        track(&gzip(&bytes), None);
    }

    #[test]
    fn the_protobuf_batch_decoder_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        track(&bytes, Some("application/x-protobuf"));
        track(&gzip(&bytes), Some("application/x-protobuf"));
    }

    #[test]
    fn the_log_reader_takes_any_segment(garbage in proptest::collection::vec(any::<u8>(), 0..2048), keep in any::<u16>()) {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogOptions {
            dir: dir.path().to_path_buf(),
            partitions: 1,
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Never,
            retention_bytes: u64::MAX,
            retention_ms: i64::MAX,
            tick_ms: 100,
            lateness_ms: 1000,
            clamp_late: true,
            idle_timeout_ms: 1000,
            max_skew_ms: 500,
        };
        {
            let log = Log::open(opts.clone()).unwrap();
            let e = sightflow_proto::v1::Envelope {
                project: "p".into(),
                device_id: "d".into(),
                ts: 1_795_000_000_000,
                kind: Some(sightflow_proto::v1::envelope::Kind::Activity(Default::default())),
                ..Default::default()
            };
            log.append("b", vec![e], 1_795_000_000_000).unwrap();
        }
        // Keep part of the segment and append the garbage: a torn or corrupt tail, or a
        // sealed segment of nonsense.
        let seg = dir.path().join("p0").join(format!("{:020}.seg", 0));
        let mut data = std::fs::read(&seg).unwrap();
        data.truncate(keep as usize % (data.len() + 1));
        data.extend_from_slice(&garbage);
        std::fs::write(&seg, &data).unwrap();
        std::fs::write(dir.path().join("p0").join(format!("{:020}.seg", 1)), &garbage).unwrap();
        if let Ok(log) = Log::open(opts) {
            let mut r = log.reader(&[(0, 0)]);
            for _ in 0..8 {
                match r.read(100) {
                    Ok(b) if b.caught_up => break,
                    Ok(_) => {}
                    Err(crate::log::LogError::Damaged { partition, .. }) => {
                        r.skip_damaged(partition);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
