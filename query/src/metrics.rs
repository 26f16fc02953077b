//! `/metrics` through the `prometheus-client` crate (OpenMetrics text): the long-lived
//! histograms of the HTTP layer ([`HttpMetrics`]), and a [`Scrape`] that each scrape
//! fills with the current values the rest of the system keeps as plain atomics.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

/// Labels as name/value pairs.
pub type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the HTTP layer measures over time.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Request latency by route, method and status.
    pub requests: Family<Labels, Histogram, fn() -> Histogram>,
    /// Query latency (SQL, REST reads, live-feed evaluations), by outcome.
    pub queries: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::new_with_constructor(latency_histogram),
            queries: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl HttpMetrics {
    /// Notes a query's latency and outcome (`ok`, `error`, `timeout`, `overloaded`).
    pub fn query(&self, seconds: f64, outcome: &str) {
        self.queries.get_or_create(&vec![("outcome".into(), outcome.into())]).observe(seconds);
    }
}

/// Times every request by its route (the matched pattern, so ids do not make labels).
pub(crate) async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels =
        vec![("route".into(), route), ("method".into(), method), ("status".into(), resp.status().as_u16().to_string())];
    m.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp
}

/// One scrape: metrics registered with their current values, encoded once.
#[derive(Default)]
pub struct Scrape {
    registry: Registry,
}

impl Scrape {
    /// A counter (its name without `_total`: the encoding adds it).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// A float counter (its name without `_total`).
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) {
        let c: Counter<f64, AtomicU64> = Counter::default();
        c.inc_by(value);
        self.registry.register(name, help, c);
    }

    /// A counter per label value.
    pub fn counters(&mut self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = (String, u64)>) {
        let f: Family<Labels, Counter> = Family::default();
        for (v, n) in values {
            f.get_or_create(&vec![(label.to_string(), v)]).inc_by(n);
        }
        self.registry.register(name, help, f);
    }

    /// An integer gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let g: Gauge = Gauge::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// A float gauge.
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.registry.register(name, help, g);
    }

    /// An integer gauge per label value.
    pub fn gauges(&mut self, name: &str, help: &str, label: &str, values: impl IntoIterator<Item = (String, i64)>) {
        let f: Family<Labels, Gauge> = Family::default();
        for (v, n) in values {
            f.get_or_create(&vec![(label.to_string(), v)]).set(n);
        }
        self.registry.register(name, help, f);
    }

    /// A long-lived metric (shared with whoever updates it).
    pub fn metric(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The OpenMetrics text.
    pub fn encode(self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Scrape::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
