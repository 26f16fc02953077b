//! Read-only SQL over one snapshot with DataFusion.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;
use futures::StreamExt;
use sightflow_dataflows::Snapshot;

/// Bounds on one query.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub max_rows: usize,
    /// Longest SQL text.
    pub max_sql_bytes: usize,
    /// Largest result (Arrow bytes).
    pub max_result_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(30),
            memory_bytes: 512 << 20,
            max_rows: 100_000,
            max_sql_bytes: 64 << 10,
            max_result_bytes: 64 << 20,
        }
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a read-only query.
    #[error("{0}")]
    NotAllowed(String),
    /// Planning or execution failed (syntax, unknown table or column, ...).
    #[error("{0}")]
    Sql(String),
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    #[error("query result exceeds the limit of {0} rows; add a LIMIT or aggregate")]
    TooManyRows(usize),
    #[error("the SQL text is {len} bytes long, at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    #[error("query result exceeds the limit of {0} bytes; select fewer columns or rows")]
    TooLarge(usize),
    /// The query needs more memory (or work) than it may use.
    #[error("query refused: {0}")]
    Resources(String),
}

/// A query's result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub as_of: u64,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// A session over a snapshot: every view is a table, and the expansive functions are
/// bounded ([`crate::bounds`]).
pub fn context(snapshot: &Snapshot, limits: &QueryLimits) -> Result<SessionContext, QueryError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes)))
        .build_arc()
        .map_err(|e| QueryError::Sql(e.to_string()))?;
    let config = SessionConfig::new().with_target_partitions(2).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for (name, schema, batches) in &snapshot.tables {
        let table =
            MemTable::try_new(schema.clone(), vec![batches.clone()]).map_err(|e| QueryError::Sql(e.to_string()))?;
        ctx.register_table(*name, Arc::new(table)).map_err(|e| QueryError::Sql(e.to_string()))?;
    }
    crate::bounds::install(&ctx, crate::bounds::FunctionLimits::for_memory(limits.memory_bytes));
    Ok(ctx)
}

/// Refuses anything but a query before planning, with a message that says why.
fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let first =
        sql.trim_start().split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("").to_ascii_lowercase();
    let allowed = ["select", "with", "values", "explain", "show", "describe", "desc", ""];
    if !allowed.contains(&first.as_str()) {
        return Err(QueryError::NotAllowed(format!(
            "only read-only queries are allowed (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE); `{}` statements are refused",
            first.to_uppercase()
        )));
    }
    Ok(())
}

/// Runs `sql` against `snapshot`.
pub async fn execute(snapshot: &Snapshot, sql: &str, limits: &QueryLimits) -> Result<QueryResult, QueryError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(QueryError::TooLong { len: sql.len(), max: limits.max_sql_bytes });
    }
    if let Err(refused) = check_read_only(sql) {
        // Text that does not parse gets DataFusion's syntax error, not a refusal.
        DFParser::parse_sql(sql).map_err(|e| QueryError::Sql(e.to_string()))?;
        return Err(refused);
    }
    let ctx = context(snapshot, limits)?;
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let run = async {
        let df = ctx.sql_with_options(sql, options).await.map_err(classify)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await.map_err(classify)?;
        let mut batches = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(b) = stream.next().await {
            let b = b.map_err(classify)?;
            rows += b.num_rows();
            bytes += b.get_array_memory_size();
            if rows > limits.max_rows {
                return Err(QueryError::TooManyRows(limits.max_rows));
            }
            if bytes > limits.max_result_bytes {
                return Err(QueryError::TooLarge(limits.max_result_bytes));
            }
            batches.push(b);
        }
        Ok(QueryResult { schema, batches, as_of: snapshot.as_of })
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(QueryError::Timeout(limits.timeout)),
    }
}

/// Sorts DataFusion's errors by what the client can do about them.
fn classify(e: DataFusionError) -> QueryError {
    let root = e.find_root();
    let msg = e.to_string();
    match root {
        DataFusionError::ResourcesExhausted(m) => QueryError::Resources(m.clone()),
        DataFusionError::Plan(m)
            if ["DDL", "DML", "Statement"].iter().any(|k| m.starts_with(&format!("{k} not supported"))) =>
        {
            QueryError::NotAllowed(format!("only read-only queries are allowed: {msg}"))
        }
        _ => QueryError::Sql(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::check_read_only;

    #[test]
    fn writes_are_refused_before_planning() {
        for sql in [
            "COPY sessions TO '/tmp/x.csv'",
            "create external table t stored as csv location '/etc/passwd'",
            "INSERT INTO sessions VALUES (1)",
            "drop table sessions",
            "set x = 1",
        ] {
            assert!(check_read_only(sql).is_err(), "{sql}");
        }
        for sql in ["select 1", "  WITH a AS (select 1) select * from a", "(select 1)", "explain select 1"] {
            assert!(check_read_only(sql).is_ok(), "{sql}");
        }
    }
}
