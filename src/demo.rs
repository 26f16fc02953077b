//! Demo traffic for `sightflow serve --demo`: the bundled real recordings replayed as
//! live visitors, each with a new device id and its events sent at their (shifted)
//! times, so dashboards move as they would on a real site.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use sightflow_connectors::files::split_json_array;
use sightflow_query::http::RrwebImport;

use crate::serve::{Server, now_ms};

/// The recordings shipped with the binary.
const RECORDINGS: &[&str] = &[
    include_str!("../tests/fixtures/rrweb/01-calm.json"),
    include_str!("../tests/fixtures/rrweb/02-rage.json"),
    include_str!("../tests/fixtures/rrweb/03-dead.json"),
    include_str!("../tests/fixtures/rrweb/04-error.json"),
    include_str!("../tests/fixtures/rrweb/05-funnel.json"),
    include_str!("../tests/fixtures/rrweb/06-quickback_scroll.json"),
    include_str!("../tests/fixtures/rrweb/07-mobile.json"),
];

/// Starts a new visitor every `every`, forever.
pub fn spawn(server: Arc<Server>, every: Duration) {
    tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            let rec = RECORDINGS[n % RECORDINGS.len()];
            tokio::spawn(visit(server.clone(), rec, format!("demo-{:x}-{n}", now_ms())));
            n += 1;
            tokio::time::sleep(every).await;
        }
    });
}

/// Replays one recording as a live visit: event times shifted to start now, sent in
/// half-second batches as their time comes.
async fn visit(server: Arc<Server>, rec: &'static str, device: String) {
    let Ok(parts) = split_json_array(rec, usize::MAX) else { return };
    let mut events: Vec<serde_json::Value> =
        parts.into_iter().filter_map(|p| p.ok()).filter_map(|p| serde_json::from_str(p).ok()).collect();
    let Some(first) = events.first().and_then(|e| e["timestamp"].as_i64()) else { return };
    let shift = now_ms() - first;
    for e in &mut events {
        if let Some(ts) = e["timestamp"].as_i64() {
            e["timestamp"] = (ts + shift).into();
        }
    }
    let mut i = 0;
    while i < events.len() {
        let due = events[i]["timestamp"].as_i64().unwrap_or(0);
        let wait = due - now_ms();
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let horizon = now_ms() + 500;
        let start = i;
        while i < events.len() && events[i]["timestamp"].as_i64().unwrap_or(0) <= horizon {
            i += 1;
        }
        let body = serde_json::Value::Array(events[start..i].to_vec()).to_string();
        let import = RrwebImport {
            project: "demo".into(),
            device: device.clone(),
            tab: device.clone(),
            seq_start: start as u64,
            batch_id: String::new(),
        };
        if let Err(e) = server.import_local(import, Bytes::from(body)).await {
            tracing::warn!(error = ?e, "demo traffic could not be ingested");
            return;
        }
        if i < events.len() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
