//! Typed configuration for sightflow.
//!
//! One TOML document declares everything a dataflow needs: session rules, every signal
//! threshold, heatmap and scroll-depth geometry, funnels, ticks and lateness, workers.
//! Configuration is layered: the embedded `default.toml` < a file < environment
//! variables `SIGHTFLOW__<SECTION>__<KEY>`. Unknown keys and bad values are errors that
//! name the key, the value and what was expected.
//!
//! ```
//! use sightflow_config::Config;
//!
//! let cfg = Config::from_toml_str("[signals.rage]\nmin_clicks = 4\n").unwrap();
//! assert_eq!(cfg.signals.rage.min_clicks, 4);
//! assert_eq!(cfg.session.idle_gap_ms, 1_800_000); // from the defaults
//!
//! let err = Config::from_toml_str("[session]\nidle_gap = 5\n").unwrap_err();
//! assert!(err.to_string().contains("session.idle_gap"));
//! ```

use std::path::Path;

pub mod time;

use serde::{Deserialize, Serialize};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SIGHTFLOW__";

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error("config key `{key}` has value {value}, expected {expected}")]
    Value { key: String, value: String, expected: String },
}

impl ConfigError {
    fn value(key: &str, value: impl std::fmt::Display, expected: &str) -> Self {
        ConfigError::Value { key: key.into(), value: value.to_string(), expected: expected.into() }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: Engine,
    pub session: Session,
    pub signals: Signals,
    pub heatmap: Heatmap,
    pub scroll_depth: ScrollDepth,
    #[serde(default)]
    pub funnels: Vec<Funnel>,
    pub server: Server,
    pub ingest: Ingest,
    pub log: LogConfig,
    pub replay: Replay,
    pub query: QueryConfig,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, Project>,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub data_dir: String,
    pub max_body_bytes: usize,
    pub per_ip_requests_per_s: f64,
    /// A client must send its request headers within this long (ms).
    pub header_timeout_ms: u64,
    /// ... and its whole request body within this long (ms).
    pub body_timeout_ms: u64,
    /// Open connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Peers (IP addresses or CIDR blocks) whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// Limits on ingested events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    pub max_decompressed_bytes: usize,
    pub max_events_per_batch: usize,
    pub max_past_ms: i64,
    pub max_future_ms: i64,
    /// Largest SDK event (not raw rrweb) in JSON.
    pub max_event_bytes: usize,
    /// Largest raw rrweb event in JSON (a FullSnapshot is the big one).
    pub max_rrweb_event_bytes: usize,
    /// Raw rrweb bytes stored for replay per tab while the tab is known; beyond it the
    /// events still count in the views but are not stored.
    pub max_replay_bytes_per_tab: u64,
    /// DOM nodes remembered per tab (to give clicks their target).
    pub max_nodes_per_tab: usize,
    /// DOM nodes remembered over all tabs; the least recently used tabs are forgotten
    /// beyond it.
    pub max_nodes_total: usize,
}

/// The embedded event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub partitions: u32,
    pub segment_bytes: u64,
    pub fsync: Fsync,
    pub fsync_interval_ms: u64,
    pub retention_bytes: u64,
    pub retention_ms: i64,
}

/// When the log syncs appended records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Batch,
    Interval,
    Never,
}

/// Kafka as the event log (instead of the embedded one) when `brokers` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; empty: use the embedded log.
    pub brokers: String,
    pub topic: String,
    /// Where a fresh engine starts reading: see [`StartAt`].
    pub start: String,
    /// How long ingest waits for the broker's acknowledgement before answering 503.
    pub produce_timeout_ms: u64,
    /// Bound on the consumer's prefetched messages per worker (backpressure beyond it).
    pub queue_max_kbytes: u64,
    /// An idempotent producer (`enable.idempotence`); readers drop retried batches by
    /// their batch id either way.
    pub idempotence: bool,
    /// Extra librdkafka properties for producer and consumers (for example
    /// `"security.protocol" = "SSL"`).
    #[serde(default)]
    pub client: std::collections::BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Whether Kafka replaces the embedded log.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }
}

/// Where reading a topic (or the embedded log) starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained record of every partition.
    Earliest,
    /// Only what arrives from now on.
    Latest,
    /// The first record appended at or after this time (ms since the epoch).
    Time(i64),
    /// Explicit offsets per partition; partitions not named start at the earliest.
    Offsets(Vec<(u32, u64)>),
}

/// Why a text is not a start position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStart {
    #[error("{part:?}: the partition {partition:?} is not a number")]
    Partition { part: String, partition: String },
    #[error("{part:?}: the offset {offset:?} is not a number")]
    Offset { part: String, offset: String },
    #[error("partition {0} is named twice")]
    Twice(u32),
    #[error(
        "{0:?} is not a start position: expected earliest, latest, an RFC 3339 time like 2026-11-22T10:00:00Z, or partition:offset pairs like 0:120,1:0"
    )]
    Unknown(String),
}

impl std::str::FromStr for StartAt {
    type Err = BadStart;

    /// `earliest`, `latest`, an RFC 3339 time (`2026-11-22T10:00:00Z`), or
    /// `partition:offset,...` (`0:120,3:4`).
    fn from_str(s: &str) -> Result<StartAt, BadStart> {
        let s = s.trim();
        match s {
            "earliest" => return Ok(StartAt::Earliest),
            "latest" => return Ok(StartAt::Latest),
            _ => {}
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(StartAt::Time(t.timestamp_millis()));
        }
        if s.contains(':')
            && s.split(',').all(|p| p.split_once(':').is_some_and(|(a, b)| !a.contains('-') && !b.contains('T')))
        {
            let mut out = Vec::new();
            for part in s.split(',') {
                let (p, o) = part.split_once(':').unwrap_or_default();
                let p: u32 =
                    p.trim().parse().map_err(|_| BadStart::Partition { part: part.into(), partition: p.into() })?;
                let o: u64 = o.trim().parse().map_err(|_| BadStart::Offset { part: part.into(), offset: o.into() })?;
                if out.iter().any(|(q, _)| *q == p) {
                    return Err(BadStart::Twice(p));
                }
                out.push((p, o));
            }
            return Ok(StartAt::Offsets(out));
        }
        Err(BadStart::Unknown(s.into()))
    }
}

/// The replay store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    pub retention_ms: i64,
    /// Raw bytes of rrweb events in one replay answer; longer sessions are paged.
    pub max_page_bytes: u64,
}

/// Limits on SQL queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub timeout_ms: u64,
    pub memory_bytes: usize,
    pub max_rows: usize,
    pub max_wait_ms: u64,
    /// Longest SQL text.
    pub max_sql_bytes: usize,
    /// Largest answer (Arrow bytes of the result).
    pub max_result_bytes: usize,
    /// Queries executed at once (each on its own low-priority thread).
    pub concurrency: usize,
    /// Queries waiting for a slot; more are refused with 503.
    pub queue: usize,
    /// Requests waiting for `min_as_of` at once; more are refused with 503.
    pub max_waiters: usize,
}

/// One project key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub rate_limit_per_s: f64,
}

/// How the dataflow runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    pub workers: usize,
    pub tick_ms: u64,
    pub allowed_lateness_ms: u64,
    pub late_policy: LatePolicy,
    pub idle_timeout_ms: u64,
    pub state_grace_ms: u64,
    pub late_verdict_ms: u64,
    /// An event dated after the server clock plus this (ms) counts as if it were dated
    /// then: it neither moves the frontier nor gets a logical time beyond it. Used as at
    /// most `allowed_lateness_ms` (see [`Engine::clock_skew_ms`]).
    pub max_clock_skew_ms: u64,
}

impl Engine {
    /// The skew allowance in effect: never more than the allowed lateness, so that an
    /// event dated ahead never makes present events late.
    pub fn clock_skew_ms(&self) -> u64 {
        self.max_clock_skew_ms.min(self.allowed_lateness_ms)
    }
}

/// What happens to events older than the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicy {
    Clamp,
    Drop,
}

/// When sessions start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub idle_gap_ms: u64,
    pub max_age_ms: u64,
    pub time_zone: String,
    pub split_at_midnight: bool,
}

/// Every signal threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    pub rage: Rage,
    pub dead: Dead,
    pub error_click: ErrorClick,
    pub quick_back: QuickBack,
    pub excessive_scroll: ExcessiveScroll,
    pub thrashed_cursor: ThrashedCursor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rage {
    pub min_clicks: u32,
    pub max_gap_ms: u64,
    pub radius_px: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dead {
    pub mutation_window_ms: u64,
    pub navigation_window_ms: u64,
    pub scroll_window_ms: u64,
    pub input_window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorClick {
    pub window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickBack {
    pub max_dwell_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcessiveScroll {
    pub min_direction_changes: u32,
    pub window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrashedCursor {
    pub min_reversals: u32,
    pub window_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heatmap {
    pub cell_px: u32,
    pub viewport_breakpoints: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollDepth {
    pub band_pct: u32,
}

/// A funnel: ordered steps reached within one session and a conversion window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funnel {
    pub name: String,
    pub steps: Vec<FunnelStep>,
    /// All steps must be reached within this long of the first one.
    #[serde(default = "default_funnel_window")]
    pub window_ms: u64,
    #[serde(default)]
    pub count: FunnelCount,
}

fn default_funnel_window() -> u64 {
    86_400_000
}

/// What a funnel counts at each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunnelCount {
    #[default]
    Sessions,
    Devices,
}

/// One funnel step; exactly one of `page`, `event` and `click` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelStep {
    /// Page-view URL path pattern; `*` matches any run of characters. A pattern that
    /// starts with `http` is matched against the whole URL (without query and fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// Custom event name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Click target: a selector, matched exactly or as a suffix (`button#buy` matches
    /// `main > button#buy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click: Option<String>,
    /// Label shown in `funnel_steps.step_name`; defaults to the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl FunnelStep {
    /// The step's label.
    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (&self.page, &self.event, &self.click) {
            (Some(p), _, _) => p.clone(),
            (_, Some(e), _) => format!("event:{e}"),
            (_, _, Some(c)) => format!("click:{c}"),
            _ => String::new(),
        }
    }
}

impl Config {
    /// The embedded defaults.
    pub fn defaults() -> Config {
        Config::load(None, std::iter::empty()).expect("embedded default.toml is valid")
    }

    /// Defaults overlaid with a TOML document (no environment).
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::load(Some(("string", text)), std::iter::empty())
    }

    /// Defaults < file < the process environment.
    pub fn from_file_and_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?,
            ),
            None => None,
        };
        let origin = path.map(|p| p.display().to_string()).unwrap_or_default();
        Config::load(text.as_deref().map(|t| (origin.as_str(), t)), std::env::vars())
    }

    /// Defaults < `file` (origin name and text) < `env` (only `SIGHTFLOW__` variables
    /// are looked at).
    pub fn load(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value = parse_toml("default.toml", DEFAULT_TOML)?;
        if let Some((origin, text)) = file {
            let overlay = parse_toml(origin, text)?;
            // A file that declares projects declares all of them.
            if let (toml::Value::Table(v), toml::Value::Table(o)) = (&mut value, &overlay)
                && o.contains_key("projects")
            {
                v.remove("projects");
            }
            merge(&mut value, overlay);
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::Key {
                    key: name.clone(),
                    message: "environment override has an empty path segment".into(),
                });
            }
            set_path(&mut value, &path, env_value(&raw), &name)?;
        }
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key { key, message: e.into_inner().to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        positive("engine.workers", e.workers as u64)?;
        if e.workers > 256 {
            return Err(ConfigError::value("engine.workers", e.workers, "at most 256"));
        }
        positive("engine.tick_ms", e.tick_ms)?;
        if e.tick_ms > 60_000 {
            return Err(ConfigError::value("engine.tick_ms", e.tick_ms, "at most 60000"));
        }
        positive("engine.idle_timeout_ms", e.idle_timeout_ms)?;
        let s = &self.session;
        positive("session.idle_gap_ms", s.idle_gap_ms)?;
        positive("session.max_age_ms", s.max_age_ms)?;
        if s.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ConfigError::value(
                "session.time_zone",
                format!("{:?}", s.time_zone),
                "an IANA time zone name such as \"UTC\" or \"Europe/Paris\"",
            ));
        }
        let g = &self.signals;
        if g.rage.min_clicks < 2 {
            return Err(ConfigError::value("signals.rage.min_clicks", g.rage.min_clicks, "at least 2"));
        }
        positive("signals.rage.max_gap_ms", g.rage.max_gap_ms)?;
        positive("signals.error_click.window_ms", g.error_click.window_ms)?;
        positive("signals.quick_back.max_dwell_ms", g.quick_back.max_dwell_ms)?;
        positive("signals.excessive_scroll.min_direction_changes", g.excessive_scroll.min_direction_changes as u64)?;
        positive("signals.excessive_scroll.window_ms", g.excessive_scroll.window_ms)?;
        positive("signals.thrashed_cursor.min_reversals", g.thrashed_cursor.min_reversals as u64)?;
        positive("signals.thrashed_cursor.window_ms", g.thrashed_cursor.window_ms)?;
        positive("heatmap.cell_px", self.heatmap.cell_px as u64)?;
        let bps = &self.heatmap.viewport_breakpoints;
        if bps.windows(2).any(|w| w[0] >= w[1]) || bps.first() == Some(&0) {
            return Err(ConfigError::value(
                "heatmap.viewport_breakpoints",
                format!("{bps:?}"),
                "strictly increasing positive widths",
            ));
        }
        positive("log.partitions", self.log.partitions as u64)?;
        if self.log.partitions > 1024 {
            return Err(ConfigError::value("log.partitions", self.log.partitions, "at most 1024"));
        }
        if self.log.segment_bytes < 4096 {
            return Err(ConfigError::value("log.segment_bytes", self.log.segment_bytes, "at least 4096"));
        }
        positive("log.fsync_interval_ms", self.log.fsync_interval_ms)?;
        let k = &self.kafka;
        if k.enabled() {
            for b in k.brokers.split(',') {
                let b = b.trim();
                if b.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(ConfigError::value(
                        "kafka.brokers",
                        format!("{b:?}"),
                        "host:port pairs separated by commas",
                    ));
                }
            }
            if k.topic.is_empty()
                || k.topic.len() > 249
                || !k.topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(ConfigError::value(
                    "kafka.topic",
                    format!("{:?}", k.topic),
                    "a topic name of ASCII letters, digits, '.', '_' and '-' (at most 249)",
                ));
            }
            positive("kafka.produce_timeout_ms", k.produce_timeout_ms)?;
            positive("kafka.queue_max_kbytes", k.queue_max_kbytes)?;
        }
        k.start
            .parse::<StartAt>()
            .map_err(|m| ConfigError::Key { key: "kafka.start".into(), message: m.to_string() })?;
        positive("server.max_body_bytes", self.server.max_body_bytes as u64)?;
        positive("ingest.max_events_per_batch", self.ingest.max_events_per_batch as u64)?;
        positive("query.timeout_ms", self.query.timeout_ms)?;
        let q = &self.query;
        positive("query.max_sql_bytes", q.max_sql_bytes as u64)?;
        positive("query.max_result_bytes", q.max_result_bytes as u64)?;
        positive("query.concurrency", q.concurrency as u64)?;
        if q.concurrency > 64 {
            return Err(ConfigError::value("query.concurrency", q.concurrency, "at most 64"));
        }
        positive("query.max_waiters", q.max_waiters as u64)?;
        let sv = &self.server;
        positive("server.header_timeout_ms", sv.header_timeout_ms)?;
        positive("server.body_timeout_ms", sv.body_timeout_ms)?;
        positive("server.max_connections", sv.max_connections as u64)?;
        for (i, p) in sv.trusted_proxies.iter().enumerate() {
            parse_cidr(p).map_err(|why| {
                ConfigError::value(
                    &format!("server.trusted_proxies[{i}]"),
                    format!("{p:?}"),
                    &format!("an IP address or CIDR block such as \"10.0.0.0/8\" ({why})"),
                )
            })?;
        }
        let ig = &self.ingest;
        positive("ingest.max_event_bytes", ig.max_event_bytes as u64)?;
        positive("ingest.max_rrweb_event_bytes", ig.max_rrweb_event_bytes as u64)?;
        positive("ingest.max_nodes_per_tab", ig.max_nodes_per_tab as u64)?;
        if ig.max_nodes_total < ig.max_nodes_per_tab {
            return Err(ConfigError::value(
                "ingest.max_nodes_total",
                ig.max_nodes_total,
                "at least ingest.max_nodes_per_tab",
            ));
        }
        positive("replay.max_page_bytes", self.replay.max_page_bytes)?;
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::value(
                "server.listen",
                format!("{:?}", self.server.listen),
                "an address like 127.0.0.1:8080",
            ));
        }
        for (key, p) in &self.projects {
            if key.is_empty() || key.len() > 200 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::value(
                    "projects",
                    format!("{key:?}"),
                    "project keys without whitespace, at most 200 bytes",
                ));
            }
            for o in &p.allowed_origins {
                if o != "*" && !o.contains("://") {
                    return Err(ConfigError::value(
                        &format!("projects.{key}.allowed_origins"),
                        format!("{o:?}"),
                        "origins like \"https://shop.test\", \"https://*.shop.test\", \"http://localhost:*\" or \"*\"",
                    ));
                }
            }
        }
        let b = self.scroll_depth.band_pct;
        if b == 0 || b > 100 || 100 % b != 0 {
            return Err(ConfigError::value("scroll_depth.band_pct", b, "a divisor of 100 between 1 and 100"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, f) in self.funnels.iter().enumerate() {
            let key = format!("funnels[{i}]");
            if f.name.trim().is_empty() {
                return Err(ConfigError::value(&format!("{key}.name"), "\"\"", "a non-empty name"));
            }
            if !names.insert(f.name.as_str()) {
                return Err(ConfigError::value(
                    &format!("{key}.name"),
                    format!("{:?}", f.name),
                    "a name no other funnel has",
                ));
            }
            if f.steps.is_empty() {
                return Err(ConfigError::value(&format!("{key}.steps"), "[]", "at least one step"));
            }
            positive(&format!("{key}.window_ms"), f.window_ms)?;
            for (j, s) in f.steps.iter().enumerate() {
                let set = [&s.page, &s.event, &s.click].iter().filter(|x| x.is_some()).count();
                if set != 1 {
                    return Err(ConfigError::value(
                        &format!("{key}.steps[{j}]"),
                        format!("{} of page/event/click", set),
                        "exactly one of `page`, `event` or `click`",
                    ));
                }
                for (what, v) in [("page", &s.page), ("event", &s.event), ("click", &s.click)] {
                    if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                        return Err(ConfigError::value(
                            &format!("{key}.steps[{j}].{what}"),
                            "\"\"",
                            "a non-empty pattern",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// The effective configuration as TOML with secrets replaced by `"<redacted>"`: the
    /// values of Kafka client properties that hold passwords, keys or tokens. This is
    /// what may be printed or logged.
    pub fn to_toml_redacted(&self) -> String {
        let mut c = self.clone();
        for (k, v) in c.kafka.client.iter_mut() {
            if is_secret_key(k) {
                *v = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&c).expect("config serialises")
    }

    /// The configured session time zone.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.session.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// Whether a client property names a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.jaas.config`, ...).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "credential", ".key.pem", "private"].iter().any(|n| k.contains(n))
        || k.ends_with(".key")
}

/// Why a text is not an IP address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCidr {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("/{bits} is not a prefix length up to {max}")]
    Prefix { bits: String, max: u8 },
}

/// Parses an IP address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`) into the
/// network address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), BadCidr> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr.trim().parse().map_err(|_| BadCidr::Address(addr.into()))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => {
            b.trim().parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| BadCidr::Prefix { bits: b.into(), max })?
        }
    };
    Ok((ip, bits))
}

/// Whether `ip` lies in the block `(net, bits)` from [`parse_cidr`].
pub fn cidr_contains(net: (std::net::IpAddr, u8), ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if net.1 == 0 { 0 } else { u32::MAX << (32 - net.1 as u32) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if net.1 == 0 { 0 } else { u128::MAX << (128 - net.1 as u32) };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::value(key, 0, "a positive number"));
    }
    Ok(())
}

fn parse_toml(origin: &str, text: &str) -> Result<toml::Value, ConfigError> {
    text.parse::<toml::Table>()
        .map(toml::Value::Table)
        .map_err(|e| ConfigError::Syntax { origin: origin.into(), message: e.to_string().trim_end().into() })
}

/// Deep-merges tables; anything else in `overlay` replaces what `base` had.
fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Environment values are TOML values when they parse as one (`3`, `true`, `[1, 2]`),
/// and strings otherwise.
fn env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn set_path(value: &mut toml::Value, path: &[String], v: toml::Value, var: &str) -> Result<(), ConfigError> {
    let mut cur = value;
    for (i, seg) in path.iter().enumerate() {
        let toml::Value::Table(t) = cur else {
            return Err(ConfigError::Key {
                key: path[..i].join("."),
                message: format!("{var} overrides inside a value that is not a table"),
            });
        };
        if i + 1 == path.len() {
            t.insert(seg.clone(), v);
            return Ok(());
        }
        cur = t.entry(seg.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(toml: &str, needles: &[&str]) {
        let err = Config::from_toml_str(toml).expect_err("config should be rejected").to_string();
        for n in needles {
            assert!(err.contains(n), "error {err:?} should mention {n:?}");
        }
    }

    #[test]
    fn defaults_match_the_design_definitions() {
        let c = Config::defaults();
        assert_eq!(c.session.idle_gap_ms, 1_800_000);
        assert_eq!(c.signals.rage.min_clicks, 3);
        assert_eq!(c.signals.rage.max_gap_ms, 1000);
        assert_eq!(c.signals.rage.radius_px, 30);
        assert_eq!(c.signals.dead.mutation_window_ms, 2500);
        assert_eq!(c.signals.dead.scroll_window_ms, 100);
        assert_eq!(c.signals.error_click.window_ms, 1000);
        assert_eq!(c.signals.quick_back.max_dwell_ms, 5000);
        assert_eq!(c.signals.excessive_scroll.min_direction_changes, 6);
        assert_eq!(c.signals.thrashed_cursor.min_reversals, 4);
        assert_eq!(c.heatmap.cell_px, 16);
        assert_eq!(c.funnels[0].steps.len(), 4);
        assert!(c.projects.contains_key("demo"));
    }

    #[test]
    fn projects_in_a_file_replace_the_defaults() {
        let c = Config::from_toml_str("[projects.shop]\nallowed_origins = [\"https://shop.test\"]\n").unwrap();
        assert_eq!(c.projects.keys().collect::<Vec<_>>(), vec!["shop"]);
        check_err(
            "[projects.shop]\nallowed_origins = [\"shop.test\"]\n",
            &["projects.shop.allowed_origins", "shop.test"],
        );
        check_err("[server]\nlisten = \"everywhere\"\n", &["server.listen", "everywhere"]);
        check_err("[log]\nfsync = \"sometimes\"\n", &["log.fsync", "sometimes"]);
    }

    #[test]
    fn kafka_settings_and_start_positions() {
        assert!(!Config::defaults().kafka.enabled());
        let c = Config::from_toml_str("[kafka]\nbrokers = \"127.0.0.1:9092\"\nstart = \"0:5,2:7\"\n").unwrap();
        assert!(c.kafka.enabled());
        assert_eq!(c.kafka.start.parse::<StartAt>(), Ok(StartAt::Offsets(vec![(0, 5), (2, 7)])));
        assert_eq!("latest".parse::<StartAt>(), Ok(StartAt::Latest));
        assert_eq!("2026-11-22T10:00:00Z".parse::<StartAt>(), Ok(StartAt::Time(1_795_341_600_000)));
        assert_eq!("0:5,0:6".parse::<StartAt>(), Err(BadStart::Twice(0)));
        assert!(matches!("x:5".parse::<StartAt>(), Err(BadStart::Partition { partition, .. }) if partition == "x"));
        check_err("[kafka]\nstart = \"yesterday\"\n", &["kafka.start", "yesterday", "earliest"]);
        check_err("[kafka]\nbrokers = \"localhost\"\n", &["kafka.brokers", "localhost", "host:port"]);
        check_err("[kafka]\nbrokers = \"h:1\"\ntopic = \"a b\"\n", &["kafka.topic", "a b"]);
    }

    #[test]
    fn unknown_keys_name_the_key() {
        check_err("[session]\nidle_gap = 5\n", &["session", "idle_gap"]);
        check_err("[nope]\n", &["nope"]);
        check_err("[signals.rage]\nmin_click = 3\n", &["signals.rage", "min_click"]);
    }

    #[test]
    fn bad_values_name_key_value_and_expectation() {
        check_err("[session]\nidle_gap_ms = -5\n", &["session.idle_gap_ms"]);
        check_err("[session]\nidle_gap_ms = \"soon\"\n", &["session.idle_gap_ms", "soon"]);
        check_err("[session]\ntime_zone = \"Mars/Olympus\"\n", &["session.time_zone", "Mars/Olympus", "IANA"]);
        check_err("[engine]\ntick_ms = 0\n", &["engine.tick_ms", "positive"]);
        check_err("[engine]\nlate_policy = \"ignore\"\n", &["engine.late_policy", "ignore"]);
        check_err("[heatmap]\nviewport_breakpoints = [1024, 768]\n", &["heatmap.viewport_breakpoints", "increasing"]);
        check_err(
            "[[funnels]]\nname = \"f\"\nsteps = [{ page = \"/\", event = \"x\" }]\n",
            &["funnels[0].steps[0]", "exactly one"],
        );
        check_err("[[funnels]]\nname = \"f\"\nsteps = []\n", &["funnels[0].steps", "at least one"]);
        check_err("[engine\n", &["not valid TOML"]);
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let env = vec![
            ("SIGHTFLOW__ENGINE__WORKERS".to_string(), "2".to_string()),
            ("SIGHTFLOW__SESSION__TIME_ZONE".to_string(), "Europe/Paris".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(Some(("f", "[engine]\nworkers = 4\ntick_ms = 50\n")), env).unwrap();
        assert_eq!(c.engine.workers, 2);
        assert_eq!(c.engine.tick_ms, 50);
        assert_eq!(c.session.time_zone, "Europe/Paris");
        assert_eq!(c.signals.rage.min_clicks, 3);
    }

    #[test]
    fn env_overrides_are_checked_too() {
        let env = vec![("SIGHTFLOW__ENGINE__WORKRS".to_string(), "2".to_string())];
        let err = Config::load(None, env).unwrap_err().to_string();
        assert!(err.contains("workrs"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_and_proxies_checked() {
        let c = Config::from_toml_str(
            "[kafka.client]\n\"sasl.password\" = \"hunter2\"\n\"ssl.key.password\" = \"k\"\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .unwrap();
        let text = c.to_toml_redacted();
        assert!(!text.contains("hunter2") && !text.contains("\"k\""), "{text}");
        assert!(text.contains("SASL_SSL"));
        check_err("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", &["server.trusted_proxies[0]", "/33"]);
        check_err("[server]\ntrusted_proxies = [\"proxy\"]\n", &["server.trusted_proxies[0]", "proxy"]);
        let net = parse_cidr("10.1.0.0/16").unwrap();
        assert!(cidr_contains(net, "10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(net, "10.2.0.1".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("127.0.0.1").unwrap(), "::ffff:127.0.0.1".parse().unwrap()));
        assert!(cidr_contains(parse_cidr("fd00::/8").unwrap(), "fd12::1".parse().unwrap()));
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::defaults();
        let again = Config::from_toml_str(&c.to_toml()).unwrap();
        assert_eq!(c, again);
    }
}
