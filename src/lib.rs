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

/// The web console's files (`ui/dist`), listed by `build.rs`.
mod console {
    include!(concat!(env!("OUT_DIR"), "/console.rs"));
}

/// The files `serve` hands out without a credential, embedded at build time by
/// `build.rs`: the browser SDK at `/sdk.js` and the web console at `/` (each absent when
/// `sdk/` or `ui/` was not built). The console's data all comes from the API, behind a
/// login.
pub fn assets() -> sightflow_query::assets::Assets {
    use sightflow_query::assets::{Asset, Assets};
    static SDK_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sdk.js"));
    // Five minutes: a snippet picks up a new SDK soon after an upgrade.
    let mut a = Assets::default().with("/sdk.js", Asset::new(SDK_JS, "application/javascript; charset=utf-8", 300));
    for (path, body) in console::CONSOLE {
        // Hashed names never change content: a year. The page itself: ask every time.
        let max_age = if path.starts_with("/assets/") { 31_536_000 } else { 0 };
        a = a.with(path, Asset::new(body, content_type(path), max_age));
    }
    a
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}
