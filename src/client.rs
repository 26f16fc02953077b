//! The HTTP client side of the CLI: `sightflow import` and `sightflow query --url`.

use std::time::{Duration, Instant};

use sightflow_connectors::files::{SplitError, split_json_array};
use sightflow_query::{QueryResult, format};

/// Why a request to a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Input(#[from] SplitError),
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: Box<ureq::Error> },
    #[error("cannot read the answer: {0}")]
    Read(Box<ureq::Error>),
    /// The server refused the request, with its reason.
    #[error("server answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the server's answer is not an Arrow stream: {0}")]
    Answer(#[from] datafusion::arrow::error::ArrowError),
}

impl ClientError {
    /// Whether asking again later may succeed (the server was down, busy or not there
    /// yet).
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Read(_) => true,
            ClientError::Status { status, .. } => *status == 429 || *status >= 500,
            ClientError::Input(_) | ClientError::Answer(_) => false,
        }
    }
}

/// The `error` of a JSON answer, or the answer itself.
fn message(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| text.to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Totals of an import.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub chunks: usize,
    pub accepted: usize,
    /// `(index in the file, reason)`.
    pub rejected: Vec<(usize, String)>,
    pub late: usize,
    pub retries: usize,
    /// Read your writes: the views reflect every imported event once they reach this
    /// `as_of` (query with `min_as_of` set to it).
    pub min_as_of: Option<u64>,
}

/// Posts a raw rrweb recording in chunks of `chunk` events. Each chunk carries its
/// first event's index (so sequence numbers continue across chunks) and a batch id
/// derived from its content, so a chunk retried after a server restart is not counted
/// twice. Transport errors, 429 and 5xx answers are retried for up to `retry_for`.
pub fn import(
    url: &str,
    project: &str,
    device: &str,
    tab: &str,
    text: &str,
    chunk: usize,
    retry_for: Duration,
) -> Result<ImportSummary, ClientError> {
    let parts = split_json_array(text, usize::MAX)?;
    let mut summary = ImportSummary::default();
    let mut valid: Vec<(usize, &str)> = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        match p {
            Ok(s) => valid.push((i, s)),
            Err(reason) => summary.rejected.push((i, reason.to_string())),
        }
    }
    let agent = agent();
    let tab = if tab.is_empty() { device } else { tab };
    let base = url.trim_end_matches('/');
    for group in valid.chunks(chunk.max(1)) {
        let seq_start = group[0].0;
        let body = format!("[{}]", group.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(","));
        let batch_id = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(
                format!("{project}\u{0}{device}\u{0}{tab}\u{0}{seq_start}\u{0}{body}").as_bytes()
            )
        );
        let target = format!(
            "{base}/api/v1/projects/{}/devices/{}/rrweb?tab={}&seq_start={seq_start}",
            urlencode(project),
            urlencode(device),
            urlencode(tab)
        );
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let report: serde_json::Value = loop {
            let attempt = agent
                .post(&target)
                .header("x-batch-id", &batch_id)
                .content_type("application/json")
                .send(body.as_str());
            let failed = match attempt {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        // A report, also when some events were refused.
                        Ok(v) if status < 400 || (status < 500 && v.get("rejected").is_some()) => break v,
                        _ => ClientError::Status { status, message: message(&text) },
                    }
                }
                Err(e) => ClientError::Unreachable { url: base.to_string(), source: Box::new(e) },
            };
            if !failed.retryable() || started.elapsed() > retry_for {
                return Err(failed);
            }
            summary.retries += 1;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        summary.chunks += 1;
        summary.accepted += report["accepted"].as_u64().unwrap_or(0) as usize;
        summary.late += report["late"].as_u64().unwrap_or(0) as usize;
        if let Some(t) = report["min_as_of"].as_u64() {
            summary.min_as_of = Some(summary.min_as_of.unwrap_or(0).max(t));
        }
        if let Some(rej) = report["rejected"].as_array() {
            for r in rej {
                let i = r["index"].as_u64().unwrap_or(0) as usize;
                let file_index = group.get(i).map_or(i, |(fi, _)| *fi);
                summary.rejected.push((file_index, r["reason"].as_str().unwrap_or("").to_string()));
            }
        }
    }
    summary.rejected.sort();
    Ok(summary)
}

/// Waits until the server's views reach `as_of` (an import's `min_as_of`), asking again
/// while the server answers that they have not yet, for up to `wait_for`.
pub fn wait_visible(url: &str, token: &str, as_of: u64, wait_for: Duration) -> Result<(), ClientError> {
    let started = Instant::now();
    loop {
        match query(url, token, "select 1", Some(as_of)) {
            Ok(_) => return Ok(()),
            Err(ClientError::Status { status: 504, .. }) if started.elapsed() < wait_for => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Runs SQL on a server with an API token and returns its result (fetched as an Arrow
/// stream, so it prints as batch mode's does).
pub fn query(url: &str, token: &str, sql: &str, min_as_of: Option<u64>) -> Result<QueryResult, ClientError> {
    let target = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let body = serde_json::json!({ "sql": sql, "min_as_of": min_as_of }).to_string();
    let mut resp = agent()
        .post(&target)
        .header("authorization", &format!("Bearer {token}"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .content_type("application/json")
        .send(body.as_str())
        .map_err(|e| ClientError::Unreachable { url: url.to_string(), source: Box::new(e) })?;
    let status = resp.status().as_u16();
    let as_of = resp.headers().get("x-sightflow-as-of").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    // Results are bounded by the server (query.max_result_bytes); this bounds the client.
    let bytes =
        resp.body_mut().with_config().limit(1 << 30).read_to_vec().map_err(|e| ClientError::Read(Box::new(e)))?;
    if status >= 400 {
        return Err(ClientError::Status { status, message: message(&String::from_utf8_lossy(&bytes)) });
    }
    Ok(format::from_arrow_ipc(&bytes, as_of)?)
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
