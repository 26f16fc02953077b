//! Read-only SQL over one snapshot with DataFusion.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::StreamExt;
use sightflow_config::access::Scope;
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

/// A session over a snapshot: every view is a table, holding only the rows of the
/// projects in `scope`, and the expansive functions are bounded ([`crate::bounds`]).
///
/// The scope is applied here, where the tables are handed to DataFusion, so no SQL can
/// read a row outside it: a table scoped to projects P yields only rows whose `project`
/// is in P (and a table without a `project` column, such as `sightflow_state`, none).
pub fn context(snapshot: &Snapshot, limits: &QueryLimits, scope: &Scope) -> Result<SessionContext, QueryError> {
    let runtime =
        RuntimeEnvBuilder::new().with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes))).build_arc()?;
    // One partition: a query runs on one thread of the query pool (its own
    // current-thread runtime), so more partitions would not run side by side; they only
    // add a repartition and a final merge to every aggregate. Queries run side by side.
    let config = SessionConfig::new().with_target_partitions(1).with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    // Every table is registered; only those a query scans are made into DataFusion's
    // tables (a view of 10M sessions is a thousand segments: checking each one's
    // schema for every table, read or not, was a millisecond of every query).
    for (name, schema, batches) in &snapshot.tables {
        let table = ViewTable { schema: schema.clone(), batches: batches.clone(), scope: scope.clone() };
        ctx.register_table(*name, Arc::new(table))?;
    }
    crate::bounds::install(&ctx, crate::bounds::FunctionLimits::for_memory(limits.memory_bytes));
    Ok(ctx)
}

/// A view as the scope shows it: its rows, or only some projects' rows, filtered when
/// the table is scanned (only the tables a query reads pay for it).
#[derive(Debug)]
struct ViewTable {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    scope: Scope,
}

/// The rows of a view's batches that belong to the projects in `scope` (none for a
/// table without a `project` column, unless the scope is every project).
pub(crate) fn scoped_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    scope: &Scope,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let Some(projects) = scope.names() else { return Ok(batches.to_vec()) };
    let Ok(col) = schema.index_of("project") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let Some(values) = b.column(col).as_string_opt::<i32>() else {
            return Err(DataFusionError::Internal("the project column is not text".into()));
        };
        let keep: BooleanArray =
            values.iter().map(|p| Some(p.is_some_and(|p| projects.iter().any(|n| n == p)))).collect();
        let kept = filter_record_batch(b, &keep)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let rows = scoped_rows(&self.schema, &self.batches, &self.scope)?;
        let table = MemTable::try_new(self.schema.clone(), vec![rows])?;
        table.scan(state, projection, filters, limit).await
    }
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

/// Runs `sql` against every project's rows of `snapshot`.
pub async fn execute(snapshot: &Snapshot, sql: &str, limits: &QueryLimits) -> Result<QueryResult, QueryError> {
    execute_scoped(snapshot, sql, limits, &Scope::All).await
}

/// Runs `sql` against the rows of `snapshot` that belong to the projects in `scope`.
pub async fn execute_scoped(
    snapshot: &Snapshot,
    sql: &str,
    limits: &QueryLimits,
    scope: &Scope,
) -> Result<QueryResult, QueryError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(QueryError::TooLong { len: sql.len(), max: limits.max_sql_bytes });
    }
    check_read_only(sql)?;
    let ctx = context(snapshot, limits, scope)?;
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
        Snapshot {
            as_of: 0,
            complete: true,
            tables: Vec::new(),
            state: Default::default(),
            build_us: 0,
            sessions_left: 0,
        }
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

    fn two_projects() -> Snapshot {
        use datafusion::arrow::array::{Int64Array, StringArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("project", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = |p: Vec<&str>, n: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(p)), Arc::new(Int64Array::from(n))])
                .unwrap()
        };
        let state = Arc::new(Schema::new(vec![Field::new("rows", DataType::Int64, false)]));
        let state_batch = RecordBatch::try_new(state.clone(), vec![Arc::new(Int64Array::from(vec![3]))]).unwrap();
        Snapshot {
            as_of: 7,
            complete: true,
            tables: vec![
                (
                    "sessions",
                    schema.clone(),
                    vec![batch(vec!["a", "b"], vec![1, 2]), batch(vec!["b", "c"], vec![4, 8])],
                ),
                ("sightflow_state", state, vec![state_batch]),
            ],
            state: Default::default(),
            build_us: 0,
            sessions_left: 0,
        }
    }

    async fn sum(snap: &Snapshot, sql: &str, scope: &Scope) -> String {
        let r = execute_scoped(snap, sql, &QueryLimits::default(), scope).await.unwrap();
        let rows = crate::format::to_json_answer(&r, 1 << 20).unwrap();
        String::from_utf8(rows).unwrap()
    }

    /// A scoped catalog holds only the scope's rows, whatever the SQL asks for.
    #[tokio::test]
    async fn a_scope_limits_every_table_to_its_projects() {
        let snap = two_projects();
        let b = Scope::Projects(vec!["b".into()]);
        let all = sum(&snap, "select sum(n) s from sessions", &Scope::All).await;
        assert!(all.contains("[15]"), "{all}");
        let only_b = sum(&snap, "select sum(n) s from sessions", &b).await;
        assert!(only_b.contains("[6]"), "{only_b}");
        let asks_for_a = sum(&snap, "select count(*) c from sessions where project = 'a'", &b).await;
        assert!(asks_for_a.contains("[0]"), "{asks_for_a}");
        let state = sum(&snap, "select count(*) c from sightflow_state", &b).await;
        assert!(state.contains("[0]"), "a table that is not per project shows nothing: {state}");
        let union = sum(&snap, "select count(*) c from (select project from sessions union all select 'x')", &b).await;
        assert!(union.contains("[3]"), "{union}");
        let none = sum(&snap, "select count(*) c from sessions", &Scope::Projects(vec![])).await;
        assert!(none.contains("[0]"), "{none}");
        let tables =
            sum(&snap, "select count(*) c from information_schema.tables where table_name = 'sessions'", &b).await;
        assert!(tables.contains("[1]"), "the schema stays visible: {tables}");
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
