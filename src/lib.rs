//! The composition root of sightflow: the only place that wires connectors (formats,
//! files, transports) to the dataflow and the dataflow to the query layer. The binary
//! (`src/main.rs`) is a thin CLI over these functions.

pub mod accounts;
pub mod backfill;
pub mod batch;
pub mod client;
pub mod demo;
pub mod kafka;
pub mod serve;

/// The files `serve` hands out without a credential, embedded at build time by
/// `build.rs`: the browser SDK at `/sdk.js` (absent when `sdk/` was not built).
pub fn assets() -> sightflow_query::assets::Assets {
    use sightflow_query::assets::{Asset, Assets};
    static SDK_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sdk.js"));
    // Five minutes: a snippet picks up a new SDK soon after an upgrade.
    Assets::default().with("/sdk.js", Asset::new(SDK_JS, "application/javascript; charset=utf-8", 300))
}
