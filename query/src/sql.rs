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
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use sightflow_dataflows::Snapshot;

/// Bounds on one query.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    /// Longest run before the query is cancelled.
    pub timeout: Duration,
    /// Memory the query may use for execution, in bytes.
    pub memory_bytes: usize,
    /// Most rows in a result.
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

/// Why a query failed. Errors from DataFusion are kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a read-only query.
    #[error(
        "only read-only queries are allowed (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE); `{statement}` statements are refused"
    )]
    NotReadOnly {
        /// The kind of statement (`INSERT`, `CREATE TABLE`, ...).
        statement: String,
    },
    /// The text does not parse, or planning or execution failed (unknown table or
    /// column, a type error, ...).
    #[error("{0}")]
    Sql(#[source] DataFusionError),
    /// The query ran past its time limit (the limit).
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The result has more rows than allowed (the limit).
    #[error("query result exceeds the limit of {0} rows; add a LIMIT or aggregate")]
    TooManyRows(usize),
    /// The SQL text is longer than allowed.
    #[error("the SQL text is {len} bytes long, at most {max} are accepted")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The result (or its rendering) is larger than allowed (the limit in bytes).
    #[error("query result exceeds the limit of {0} bytes; select fewer columns or rows")]
    TooLarge(usize),
    /// The query needs more memory (or work) than it may use.
    #[error("query refused: {0}")]
    Resources(#[source] DataFusionError),
}

impl From<DataFusionError> for QueryError {
    /// Sorted by what the client can do: ask for less, or fix the query.
    fn from(e: DataFusionError) -> QueryError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(_) => QueryError::Resources(e),
            _ => QueryError::Sql(e),
        }
    }
}

/// A query's result.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The rows, in order.
    pub batches: Vec<RecordBatch>,
    /// The `as_of` of the snapshot the query read.
    pub as_of: u64,
}

impl QueryResult {
    /// Rows in the result.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// A session over a snapshot: every view is a table, and the expansive functions are
/// bounded ([`crate::bounds`]).
pub fn context(snapshot: &Snapshot, limits: &QueryLimits) -> Result<SessionContext, QueryError> {
    let runtime =
        RuntimeEnvBuilder::new().with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes))).build_arc()?;
    let config = SessionConfig::new().with_target_partitions(2).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for (name, schema, batches) in &snapshot.tables {
        let table = MemTable::try_new(schema.clone(), vec![batches.clone()])?;
        ctx.register_table(*name, Arc::new(table))?;
    }
    crate::bounds::install(&ctx, crate::bounds::FunctionLimits::for_memory(limits.memory_bytes));
    Ok(ctx)
}

/// Refuses anything but a query before planning, by the parsed statement: a query,
/// `EXPLAIN` of one, `SHOW` and `DESCRIBE`. Text that does not parse gets the parser's
/// error.
fn check_read_only(sql: &str) -> Result<(), QueryError> {
    let statements = DFParser::parse_sql(sql).map_err(QueryError::Sql)?;
    for s in &statements {
        if !read_only(s) {
            let statement = sql
                .trim_start()
                .trim_start_matches('(')
                .split(|c: char| c.is_whitespace() || c == '(')
                .next()
                .unwrap_or("")
                .to_uppercase();
            return Err(QueryError::NotReadOnly { statement });
        }
    }
    Ok(())
}

fn read_only(s: &DFStatement) -> bool {
    match s {
        DFStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_)
            | SqlStatement::ExplainTable { .. }
            | SqlStatement::ShowTables { .. }
            | SqlStatement::ShowColumns { .. }
            | SqlStatement::ShowFunctions { .. }
            | SqlStatement::ShowVariable { .. }
            | SqlStatement::ShowVariables { .. } => true,
            SqlStatement::Explain { statement, analyze, .. } => {
                !analyze && read_only(&DFStatement::Statement(statement.clone()))
            }
            _ => false,
        },
        // EXPLAIN ANALYZE runs the statement, which is fine for a query.
        DFStatement::Explain(e) => read_only(&e.statement),
        DFStatement::CreateExternalTable(_) | DFStatement::CopyTo(_) | DFStatement::Reset(_) => false,
    }
}

/// Runs `sql` against `snapshot`.
pub async fn execute(snapshot: &Snapshot, sql: &str, limits: &QueryLimits) -> Result<QueryResult, QueryError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(QueryError::TooLong { len: sql.len(), max: limits.max_sql_bytes });
    }
    check_read_only(sql)?;
    let ctx = context(snapshot, limits)?;
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let run = async {
        let df = ctx.sql_with_options(sql, options).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        while let Some(b) = stream.next().await {
            let b = b?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Snapshot {
        Snapshot { as_of: 0, complete: true, tables: Vec::new(), state: Default::default() }
    }

    /// Errors are classified by DataFusion's variant and keep it as their source.
    #[tokio::test]
    async fn errors_keep_datafusion_as_their_source() {
        let limits = QueryLimits { memory_bytes: 1 << 20, ..QueryLimits::default() };
        let e = execute(&empty(), "select * from nope", &limits).await.unwrap_err();
        assert!(matches!(e, QueryError::Sql(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<DataFusionError>()));
        let e = execute(&empty(), "select v from range(3000000) t(v) order by v desc", &limits).await.unwrap_err();
        assert!(matches!(e, QueryError::Resources(_)), "{e:?}");
        assert!(e.to_string().starts_with("query refused: "), "{e}");
    }

    #[test]
    fn writes_are_refused_before_planning() {
        for sql in [
            "COPY sessions TO '/tmp/x.csv'",
            "create external table t stored as csv location '/etc/passwd'",
            "INSERT INTO sessions VALUES (1)",
            "drop table sessions",
            "set x = 1",
            "explain insert into sessions values (1)",
            "select 1; drop table sessions",
            "reset datafusion.execution.batch_size",
        ] {
            assert!(matches!(check_read_only(sql), Err(super::QueryError::NotReadOnly { .. })), "{sql}");
        }
        assert!(matches!(check_read_only("selec 1"), Err(super::QueryError::Sql(_))), "a syntax error");
        for sql in [
            "select 1",
            "  WITH a AS (select 1) select * from a",
            "(select 1)",
            "explain select 1",
            "explain analyze select 1",
            "show tables",
            "describe sessions",
            "values (1)",
        ] {
            assert!(check_read_only(sql).is_ok(), "{sql}");
        }
    }
}
