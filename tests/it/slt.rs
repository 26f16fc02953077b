//! The sqllogictest files in `tests/slt/`, run against the in-process API: `ingest
//! PROJECT` statements feed events through `/api/v1/track`, queries go through
//! `/api/v1/query` with the last ingest's `min_as_of`, so every query sees what was fed
//! before it; a `wait` statement waits for the views to reach now (for verdicts that
//! need time to pass, such as a dead click's).

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};
use tower::ServiceExt;

use crate::api::api;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SltError(String);

struct Live {
    router: axum::Router,
    token: String,
    min_as_of: Option<u64>,
}

impl Live {
    async fn post(&self, uri: &str, body: String) -> Result<Value, SltError> {
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Body::from(body))
            .map_err(|e| SltError(e.to_string()))?;
        let resp = self.router.clone().oneshot(req).await.map_err(|e| SltError(e.to_string()))?;
        let ok = resp.status().is_success();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.map_err(|e| SltError(e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| SltError(e.to_string()))?;
        if ok { Ok(v) } else { Err(SltError(v["error"].as_str().unwrap_or("error").to_string())) }
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Live {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        if let Some(rest) = sql.trim_start().strip_prefix("ingest ") {
            let (project, events) = rest.split_once('\n').unwrap_or((rest, "[]"));
            let mut events: Vec<Value> = serde_json::from_str(events).map_err(|e| SltError(format!("ingest: {e}")))?;
            let now = crate::common::now_ms() as i64;
            for e in &mut events {
                if let Some(ago) = e.get("ago_ms").and_then(Value::as_i64) {
                    e["ts"] = Value::from(now - ago);
                    e.as_object_mut().map(|o| o.remove("ago_ms"));
                }
            }
            let r =
                self.post(&format!("/api/v1/track?key={}", project.trim()), Value::from(events).to_string()).await?;
            if let Some(t) = r["min_as_of"].as_u64() {
                self.min_as_of = Some(self.min_as_of.unwrap_or(0).max(t));
            }
            return Ok(DBOutput::StatementComplete(r["accepted"].as_u64().unwrap_or(0)));
        }
        if sql.trim() == "wait" {
            // Verdicts that need later time (dead clicks, session ends) are in once the
            // views have caught up with now.
            self.min_as_of = Some(crate::common::now_ms());
            return Ok(DBOutput::StatementComplete(0));
        }
        let body = serde_json::json!({"sql": sql, "min_as_of": self.min_as_of}).to_string();
        let r = self.post("/api/v1/query", body).await?;
        let columns = r["columns"].as_array().map_or(0, Vec::len);
        let rows: Vec<Vec<String>> = r["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| row.as_array().into_iter().flatten().map(cell).collect())
            .collect();
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; columns], rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "sightflow"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_live_views_as_sqllogictest_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        // A fresh server per file.
        let a = api("[projects.demo]\nallowed_origins = []\n");
        let (router, token) = (a.started.router.clone(), a.token.clone());
        let mut runner = sqllogictest::Runner::new(move || {
            let (router, token) = (router.clone(), token.clone());
            async move { Ok(Live { router, token, min_as_of: None }) }
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {}", file.display(), e.display(true));
        }
    }
}
