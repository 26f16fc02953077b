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

#![warn(missing_docs, unreachable_pub)]

use std::path::Path;

pub mod access;
pub mod time;

use serde::{Deserialize, Serialize};

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SIGHTFLOW__";

/// Everything that can be wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file's path as given.
        path: String,
        /// The I/O error reading it.
        source: std::io::Error,
    },
    /// A document (the defaults, a file or a string) does not parse as TOML.
    #[error("config {origin} is not valid TOML: {message}")]
    Syntax {
        /// Where the document came from: `default.toml`, a file path, or `string`.
        origin: String,
        /// The TOML parser's message.
        message: String,
    },
    /// A key is unknown, has the wrong type, or is a malformed environment override.
    #[error("config key `{key}`: {message}")]
    Key {
        /// The dotted key path (`signals.rage.min_clicks`) or the environment variable.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key has a value of the right type that validation refuses.
    #[error("config key `{key}` has value {value}, expected {expected}")]
    Value {
        /// The dotted key path.
        key: String,
        /// The refused value, as written in messages.
        value: String,
        /// What the key accepts.
        expected: String,
    },
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
    /// `[engine]`: workers, ticks and lateness.
    pub engine: Engine,
    /// `[session]`: when sessions start and end.
    pub session: Session,
    /// `[signals.*]`: the thresholds of every behaviour signal.
    pub signals: Signals,
    /// `[heatmap]`: grid cell size and viewport buckets.
    pub heatmap: Heatmap,
    /// `[scroll_depth]`: depth band width.
    pub scroll_depth: ScrollDepth,
    /// `[[funnels]]`: the funnels to compute, in order; none when absent.
    #[serde(default)]
    pub funnels: Vec<Funnel>,
    /// `[server]`: the HTTP server.
    pub server: Server,
    /// `[ingest]`: limits on ingested events.
    pub ingest: Ingest,
    /// `[log]`: the embedded event log.
    pub log: LogConfig,
    /// `[replay]`: the replay store.
    pub replay: Replay,
    /// `[query]`: limits on SQL queries.
    pub query: QueryConfig,
    /// `[kafka]`: Kafka as the event log, when `brokers` is set.
    pub kafka: KafkaConfig,
    /// `[metadata]`: where projects, accounts and tokens are kept.
    pub metadata: Metadata,
    /// `[auth]`: console sessions and logins.
    pub auth: Auth,
    /// `[projects.<key>]`: the accepted project keys; a file that declares any replaces
    /// the defaults' table.
    #[serde(default)]
    pub projects: std::collections::BTreeMap<String, Project>,
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Socket address `sightflow serve` listens on (`127.0.0.1:8080`).
    pub listen: String,
    /// Socket address of the Postgres-wire endpoint (`127.0.0.1:5433`); empty: off.
    pub pg_listen: String,
    /// Directory for the log, replay chunks and checkpoints.
    pub data_dir: String,
    /// Largest request body as sent (compressed), in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Requests per second per client IP on the ingest endpoints (0: unlimited).
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
    /// Largest body after gzip decompression, in bytes (a gzip bomb stops here).
    pub max_decompressed_bytes: usize,
    /// Most events one ingest request may carry.
    pub max_events_per_batch: usize,
    /// `/track` refuses events dated more than this long before the server clock (ms);
    /// raw rrweb imports accept any age from the year 2000.
    pub max_past_ms: i64,
    /// `/track` refuses events dated more than this long after the server clock (ms).
    pub max_future_ms: i64,
    /// Largest SDK event (not raw rrweb) in JSON, in bytes.
    pub max_event_bytes: usize,
    /// Largest raw rrweb event in JSON, in bytes (a FullSnapshot is the big one).
    pub max_rrweb_event_bytes: usize,
    /// Raw rrweb bytes stored for replay per tab while the tab is known; beyond it the
    /// events still count in the views but are not stored.
    pub max_replay_bytes_per_tab: u64,
    /// DOM nodes remembered per tab (to give clicks their target).
    pub max_nodes_per_tab: usize,
    /// DOM nodes remembered over all tabs; the least recently used tabs are forgotten
    /// beyond it.
    pub max_nodes_total: usize,
    /// Ingest requests decoded and committed at once (0: 16 per CPU core). As many
    /// more wait in line, in order of arrival; one that finds the line full is
    /// answered 503 with `Retry-After` at once.
    pub max_in_flight: usize,
    /// How long a request may wait in that line (ms) before it is answered 503 with
    /// `Retry-After`: above the rate the server holds, it sheds instead of slowing down.
    pub max_queue_ms: u64,
}

/// The embedded event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Partitions of the log (1 to 1024); devices are spread over them by hash.
    pub partitions: u32,
    /// A segment file is closed once it holds this many bytes (at least 4096).
    pub segment_bytes: u64,
    /// When appended records are synced to disk.
    pub fsync: Fsync,
    /// Sync period with `fsync = "interval"` (ms).
    pub fsync_interval_ms: u64,
    /// Oldest segments are deleted once a partition holds more than this many bytes.
    pub retention_bytes: u64,
    /// Segments whose newest record is older than this are deleted (ms).
    pub retention_ms: i64,
}

/// When the log syncs appended records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// `"batch"`: sync before every acknowledgement.
    Batch,
    /// `"interval"`: sync every `fsync_interval_ms`.
    Interval,
    /// `"never"`: leave it to the operating system.
    Never,
}

/// Kafka as the event log (instead of the embedded one) when `brokers` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`; empty: use the embedded log.
    pub brokers: String,
    /// The topic ingest produces to and the dataflow consumes.
    pub topic: String,
    /// Where a fresh engine starts reading: see [`StartAt`].
    pub start: String,
    /// How long ingest waits for the broker's acknowledgement before answering 503 (ms).
    pub produce_timeout_ms: u64,
    /// Bound on the consumer's prefetched messages per worker, in KiB (backpressure
    /// beyond it).
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
    /// A `partition:offset` pair whose partition is not a number.
    #[error("{part:?}: the partition {partition:?} is not a number")]
    Partition {
        /// The whole pair.
        part: String,
        /// Its partition text.
        partition: String,
    },
    /// A `partition:offset` pair whose offset is not a number.
    #[error("{part:?}: the offset {offset:?} is not a number")]
    Offset {
        /// The whole pair.
        part: String,
        /// Its offset text.
        offset: String,
    },
    /// The same partition appears in two pairs.
    #[error("partition {0} is named twice")]
    Twice(u32),
    /// Neither a keyword, a time nor offset pairs.
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
    /// Raw rrweb chunks older than this are deleted (ms).
    pub retention_ms: i64,
    /// Raw bytes of rrweb events in one replay answer; longer sessions are paged (next
    /// cursor).
    pub max_page_bytes: u64,
}

/// Limits on SQL queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// A query running longer than this is cancelled (ms).
    pub timeout_ms: u64,
    /// Memory one query may use for execution, in bytes.
    pub memory_bytes: usize,
    /// Most rows one answer may hold.
    pub max_rows: usize,
    /// How long `min_as_of` may wait for the views to catch up (ms).
    pub max_wait_ms: u64,
    /// Longest SQL text, in bytes.
    pub max_sql_bytes: usize,
    /// Largest answer (Arrow bytes of the result); 413 above.
    pub max_result_bytes: usize,
    /// Queries executed at once (each on its own low-priority thread).
    pub concurrency: usize,
    /// The query threads' nice value, 0 (ingest's priority) to 19: higher leaves more
    /// of a busy machine to ingest and the dataflow, lower answers sooner under load.
    pub nice: u8,
    /// Queries waiting for a slot; more are refused with 503.
    pub queue: usize,
    /// Requests waiting for `min_as_of` at once (they hold no thread); more are refused
    /// with 503.
    pub max_waiters: usize,
    /// Live-feed subscriptions at once; more are refused with 503.
    pub max_subscriptions: usize,
    /// Least time between two evaluations of one live query, shared by its clients (ms).
    pub subscribe_interval_ms: u64,
    /// Rows a subscribed result may have.
    pub subscribe_max_rows: usize,
}

/// The metadata store: projects, users, memberships, API tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Empty: an SQLite database at `<data_dir>/meta.sqlite`; `sqlite://PATH` for another
    /// file; `postgres://...` for a PostgreSQL database that several servers share.
    pub url: String,
}

/// Console sessions and logins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// How long a console login lasts (s).
    pub session_ttl_s: u64,
    /// Login attempts per minute from one client address.
    pub login_attempts_per_min_per_ip: u32,
    /// Login attempts per minute for one email address.
    pub login_attempts_per_min_per_email: u32,
}

/// One project, by name (`[projects.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The public ingest key browsers send; the project's name when absent.
    #[serde(default)]
    pub ingest_key: Option<String>,
    /// The project's time zone (IANA name) as shown to people; UTC when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Days the project's recordings are kept for replay (0: the server's
    /// `replay.retention_ms`); older ones are gone from every read at once.
    #[serde(default)]
    pub retention_days: u32,
    /// Browser origins allowed to send events (`https://shop.test`, `https://*.shop.test`,
    /// `http://localhost:*`, or `*`); none when absent.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Events per second accepted for the project (0: unlimited).
    #[serde(default)]
    pub rate_limit_per_s: f64,
}

/// How the dataflow runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    /// Timely worker threads in this process (1 to 256).
    pub workers: usize,
    /// Logical time is event time rounded up to a multiple of this (ms, at most 60000).
    pub tick_ms: u64,
    /// A partition's frontier is the largest event time seen minus this (ms); older
    /// events are late.
    pub allowed_lateness_ms: u64,
    /// What happens to late events.
    pub late_policy: LatePolicy,
    /// An idle partition's frontier follows the wall clock after this long without
    /// events (ms).
    pub idle_timeout_ms: u64,
    /// A device's per-tab state is kept this long (ms of logical time) after its last
    /// event, so a recording imported in chunks continues its session.
    pub state_grace_ms: u64,
    /// A click waits this long (ms of logical time) after it arrived, and at least until
    /// its window closes, before a quiet device's click is judged dead: its reactions may
    /// come in the device's next batch.
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
    /// `"clamp"`: keep late events at the frontier's logical time (their exact time
    /// stays in the data).
    Clamp,
    /// `"drop"`: discard late events (they are counted).
    Drop,
}

/// When sessions start and end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// A new session starts after more than this many ms without events.
    pub idle_gap_ms: u64,
    /// ... or when a session has lasted this long (ms).
    pub max_age_ms: u64,
    /// IANA time zone whose midnight splits sessions (`UTC`, `Europe/Paris`).
    pub time_zone: String,
    /// Whether sessions are split at midnight in `time_zone`.
    pub split_at_midnight: bool,
    /// A closed session, with its rows in every per-session view, leaves the views this
    /// long (ms of logical time) after its last change; the aggregates keep counting it.
    /// 0 keeps every session.
    pub retention_ms: u64,
}

/// Every signal threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signals {
    /// `[signals.rage]`: rage clicks.
    pub rage: Rage,
    /// `[signals.dead]`: dead clicks.
    pub dead: Dead,
    /// `[signals.error_click]`: clicks followed by an error.
    pub error_click: ErrorClick,
    /// `[signals.quick_back]`: quick returns to the previous page.
    pub quick_back: QuickBack,
    /// `[signals.excessive_scroll]`: scrolling up and down.
    pub excessive_scroll: ExcessiveScroll,
    /// `[signals.thrashed_cursor]`: the mouse shaken left and right.
    pub thrashed_cursor: ThrashedCursor,
}

/// Rage clicks: a burst of clicks close in time and space on one page view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rage {
    /// At least this many consecutive clicks (at least 2) ...
    pub min_clicks: u32,
    /// ... each at most this long after the previous one (ms) ...
    pub max_gap_ms: u64,
    /// ... and within this Euclidean distance of the burst's first click (CSS px).
    pub radius_px: u32,
}

/// Dead clicks: a click that none of these follow within their windows (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dead {
    /// Window for a DOM mutation after the click (ms).
    pub mutation_window_ms: u64,
    /// Window for a navigation (page view) after the click (ms).
    pub navigation_window_ms: u64,
    /// Window for a scroll after the click (ms).
    pub scroll_window_ms: u64,
    /// Window for an input after the click (ms).
    pub input_window_ms: u64,
}

/// Error clicks: an uncaught error soon after a click.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorClick {
    /// An uncaught error within this long after a click, on the same page view (ms).
    pub window_ms: u64,
}

/// Quick backs: page views A, B, A where B was short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickBack {
    /// B lasted at most this long (ms).
    pub max_dwell_ms: u64,
}

/// Excessive scrolling: many changes of scroll direction in a short time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExcessiveScroll {
    /// At least this many vertical direction changes of one node's scroll ...
    pub min_direction_changes: u32,
    /// ... within this long, on one page view (ms).
    pub window_ms: u64,
}

/// Thrashed cursor: the mouse moved left and right repeatedly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrashedCursor {
    /// At least this many horizontal direction reversals of the mouse ...
    pub min_reversals: u32,
    /// ... within this long (ms).
    pub window_ms: u64,
}

/// Heatmap geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heatmap {
    /// Grid cell size in CSS px, in page (document) coordinates.
    pub cell_px: u32,
    /// Viewport width buckets (strictly increasing, CSS px): a viewport belongs to the
    /// bucket of the largest breakpoint not above its width (0 below the first one).
    pub viewport_breakpoints: Vec<u32>,
}

/// Scroll-depth geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollDepth {
    /// Width of a depth band in percent of the page height (a divisor of 100).
    pub band_pct: u32,
}

/// A funnel: ordered steps reached within one session and a conversion window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Funnel {
    /// The funnel's name in the views; unique and non-empty.
    pub name: String,
    /// The steps in order; at least one.
    pub steps: Vec<FunnelStep>,
    /// All steps must be reached within this long of the first one (ms; a day when
    /// absent).
    #[serde(default = "default_funnel_window")]
    pub window_ms: u64,
    /// What each step counts; sessions when absent.
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
    /// `"sessions"`: sessions that reached the step.
    #[default]
    Sessions,
    /// `"devices"`: distinct devices that reached the step.
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
        // A session that left the views must not change again: its device's state (and a
        // late click's verdict) is gone by then.
        let settled = e.state_grace_ms.saturating_add(e.late_verdict_ms);
        if s.retention_ms != 0 && s.retention_ms < settled {
            return Err(ConfigError::value(
                "session.retention_ms",
                s.retention_ms,
                &format!(
                    "0 (keep every session) or at least engine.state_grace_ms + engine.late_verdict_ms ({settled})"
                ),
            ));
        }
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
        positive("ingest.max_queue_ms", self.ingest.max_queue_ms)?;
        if self.ingest.max_in_flight > 4096 {
            return Err(ConfigError::value("ingest.max_in_flight", self.ingest.max_in_flight, "at most 4096"));
        }
        positive("query.timeout_ms", self.query.timeout_ms)?;
        let q = &self.query;
        positive("query.max_sql_bytes", q.max_sql_bytes as u64)?;
        positive("query.max_result_bytes", q.max_result_bytes as u64)?;
        positive("query.concurrency", q.concurrency as u64)?;
        if q.concurrency > 64 {
            return Err(ConfigError::value("query.concurrency", q.concurrency, "at most 64"));
        }
        if q.nice > 19 {
            return Err(ConfigError::value("query.nice", q.nice, "0 to 19"));
        }
        positive("query.max_waiters", q.max_waiters as u64)?;
        positive("query.max_subscriptions", q.max_subscriptions as u64)?;
        positive("query.subscribe_max_rows", q.subscribe_max_rows as u64)?;
        let a = &self.auth;
        positive("auth.session_ttl_s", a.session_ttl_s)?;
        positive("auth.login_attempts_per_min_per_ip", a.login_attempts_per_min_per_ip as u64)?;
        positive("auth.login_attempts_per_min_per_email", a.login_attempts_per_min_per_email as u64)?;
        let url = &self.metadata.url;
        if !(url.is_empty()
            || url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            // Only the scheme: the rest may hold a password.
            let scheme = url.split_once("://").map_or("(no scheme)", |(s, _)| s);
            return Err(ConfigError::value(
                "metadata.url",
                format!("with scheme {scheme:?}"),
                "empty (SQLite under the data directory), sqlite://PATH or postgres://USER@HOST/DB",
            ));
        }
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
        if !self.server.pg_listen.is_empty() && self.server.pg_listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::value(
                "server.pg_listen",
                format!("{:?}", self.server.pg_listen),
                "an address like 127.0.0.1:5433, or \"\" for no Postgres endpoint",
            ));
        }
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
            if let Some(k) = &p.ingest_key
                && (k.is_empty() || k.len() > 200 || !k.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(ConfigError::value(
                    &format!("projects.{key}.ingest_key"),
                    format!("{k:?}"),
                    "1 to 200 printable ASCII characters without spaces",
                ));
            }
            if let Some(tz) = &p.time_zone
                && tz.parse::<chrono_tz::Tz>().is_err()
            {
                return Err(ConfigError::value(
                    &format!("projects.{key}.time_zone"),
                    format!("{tz:?}"),
                    "an IANA time zone such as \"Europe/Paris\" or \"UTC\"",
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
        c.metadata.url = redact_url_password(&c.metadata.url);
        toml::to_string_pretty(&c).expect("config serialises")
    }

    /// The configured session time zone.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.session.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// A URL with the password of its user info replaced (`postgres://u:<redacted>@h/db`).
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    let redacted = if userinfo.contains(':') { format!("{user}:<redacted>") } else { user.to_string() };
    match path {
        Some(p) => format!("{scheme}://{redacted}@{host}/{p}"),
        None => format!("{scheme}://{redacted}@{host}"),
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
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The part after `/` is not a number up to the address's bit length.
    #[error("/{bits} is not a prefix length up to {max}")]
    Prefix {
        /// The prefix text after `/`.
        bits: String,
        /// The largest prefix the address allows: 32 (IPv4) or 128 (IPv6).
        max: u8,
    },
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
    fn the_metadata_url_password_is_redacted() {
        assert_eq!(redact_url_password("postgres://sf:hunter2@db:5432/meta"), "postgres://sf:<redacted>@db:5432/meta");
        assert_eq!(redact_url_password("postgres://sf@db/meta"), "postgres://sf@db/meta");
        assert_eq!(redact_url_password("sqlite:///var/lib/meta.sqlite"), "sqlite:///var/lib/meta.sqlite");
        let c = Config::from_toml_str("[metadata]\nurl = \"postgres://sf:hunter2@db/meta\"\n").unwrap();
        assert!(!c.to_toml_redacted().contains("hunter2"));
        let e = Config::from_toml_str("[metadata]\nurl = \"mysql://sf:hunter2@db/meta\"\n").unwrap_err().to_string();
        assert!(e.contains("metadata.url") && !e.contains("hunter2"), "{e}");
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
        check_err("[session]\nretention_ms = 1000\n", &["session.retention_ms", "1000", "state_grace_ms"]);
        Config::from_toml_str("[session]\nretention_ms = 0\n").expect("0 keeps every session");
        check_err("[engine]\ntick_ms = 0\n", &["engine.tick_ms", "positive"]);
        check_err("[query]\nnice = 20\n", &["query.nice", "20", "0 to 19"]);
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
