//! The Postgres wire protocol (`server.pg_listen`) for psql, Grafana and any Postgres
//! client, on `datafusion-postgres` (pgwire, and the `pg_catalog` tables those clients
//! ask about).
//!
//! Each connection has its own DataFusion session whose tables are the live views: the
//! password is an API token (any user name), or a user's password with their email as
//! the user name; the credential's project scope applies to every table, as on the
//! HTTP API. Before each statement runs, the connection pins the newest snapshot, so a
//! statement reads one snapshot whatever tables it joins. Only reading statements run
//! (queries, `EXPLAIN`, `SHOW`, `SET`, transactions, cursors, `PREPARE`/`EXECUTE`);
//! results are produced on the query pool's low-priority threads with the query API's
//! deadline, row and byte limits.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::DfSessionService;
use datafusion_postgres::auth::AuthManager;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, LoginInfo, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{QueryResponse, Response};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use sightflow_config::access::{Principal, Role, Scope};
use sightflow_dataflows::Snapshot;
use tokio::net::TcpListener;

use crate::http::{AppState, Backend};
use crate::pool::PoolError;

/// Counters of the Postgres port.
#[derive(Debug, Default)]
pub struct PgCounters {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections refused (a bad password, the connection limit).
    pub refused: AtomicU64,
    /// Statements run.
    pub statements: AtomicU64,
}

/// What a connection's tables read: the snapshot pinned for the running statement, and
/// the caller's projects (none until authenticated).
struct Pinned {
    snapshot: Mutex<Arc<Snapshot>>,
    scope: Mutex<Scope>,
}

/// A live view as a table of one connection.
#[derive(Debug)]
struct LiveTable {
    name: &'static str,
    schema: SchemaRef,
    pinned: Arc<PinnedRef>,
}

/// `Pinned` behind a `Debug` wall (TableProvider needs `Debug`).
struct PinnedRef(Arc<Pinned>);

impl Debug for PinnedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinned")
    }
}

#[async_trait]
impl TableProvider for LiveTable {
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
        let p = &self.pinned.0;
        let snap = p.snapshot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let scope = p.scope.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let batches = snap.tables.iter().find(|(n, ..)| *n == self.name).map(|(_, _, b)| b.clone()).unwrap_or_default();
        let rows = crate::sql::scoped_rows(&self.schema, &batches, &scope)?;
        MemTable::try_new(self.schema.clone(), vec![rows])?.scan(state, projection, filters, limit).await
    }
}

/// `current_setting(name)`: the server settings clients ask for (Grafana's version
/// check and search-path lookup, psql's).
fn current_setting(timeout_ms: u64) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, ArrayRef, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
    let f = move |args: &[ColumnarValue]| -> Result<ColumnarValue, DataFusionError> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let names = arrays
            .first()
            .and_then(|a| a.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| DataFusionError::Plan("current_setting takes a setting's name".into()))?;
        let mut out = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            let name = names.value(i).to_ascii_lowercase();
            let v = match name.as_str() {
                "server_version_num" => "160006".to_string(),
                "server_version" => "16.6".to_string(),
                "search_path" => "public".to_string(),
                "standard_conforming_strings" | "integer_datetimes" => "on".to_string(),
                "client_encoding" | "server_encoding" => "UTF8".to_string(),
                "datestyle" => "ISO, MDY".to_string(),
                "timezone" => "UTC".to_string(),
                "max_identifier_length" => "63".to_string(),
                "transaction_read_only" | "default_transaction_read_only" => "on".to_string(),
                "statement_timeout" => format!("{timeout_ms}ms"),
                _ => return Err(DataFusionError::Plan(format!("unrecognized configuration parameter \"{name}\""))),
            };
            out.push(v);
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out)) as ArrayRef))
    };
    create_udf("current_setting", vec![DataType::Utf8], DataType::Utf8, Volatility::Stable, Arc::new(f))
}

/// Grafana's table picker looks the schemas up in `search_path` with a subquery that
/// DataFusion cannot plan (and that the compatibility parser replaces by nothing, so
/// the picker would list no table): it is replaced by the one schema there is.
fn rewrite_for_clients(sql: &str) -> std::borrow::Cow<'_, str> {
    const SEARCH_PATH: &str = "SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END FROM generate_series( array_lower(string_to_array(current_setting('search_path'),','),1), array_upper(string_to_array(current_setting('search_path'),','),1) ) as i, string_to_array(current_setting('search_path'),',') s";
    if !sql.contains("current_setting('search_path')") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let squash = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let (text, pattern) = (squash(sql), squash(SEARCH_PATH));
    if text.contains(&pattern) {
        std::borrow::Cow::Owned(text.replace(&pattern, "SELECT 'public'"))
    } else {
        std::borrow::Cow::Borrowed(sql)
    }
}

/// The compatibility parser, after [`rewrite_for_clients`].
struct Rewriting(Arc<<DfSessionService as ExtendedQueryHandler>::QueryParser>);

#[async_trait]
impl pgwire::api::stmt::QueryParser for Rewriting {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<pgwire::api::Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.0.parse_sql(client, &rewrite_for_clients(sql), types).await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<pgwire::api::Type>> {
        self.0.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&pgwire::api::portal::Format>,
    ) -> PgWireResult<Vec<pgwire::api::results::FieldInfo>> {
        self.0.get_result_schema(stmt, column_format)
    }
}

/// Whether a statement only reads (or sets up the session, a transaction, a cursor).
fn reads_only(s: &Statement) -> bool {
    match s {
        Statement::Query(q) => !format!("{q}").to_ascii_uppercase().contains(" INTO "),
        Statement::Explain { statement, analyze, .. } => !analyze || reads_only(statement),
        Statement::ExplainTable { .. }
        | Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Execute { .. } => true,
        Statement::Prepare { statement, .. } => reads_only(statement),
        _ => false,
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

/// Refuses text with a statement that writes. The text is parsed as the session will
/// parse it (the compatibility parser, rewrites included), so what is checked is what
/// would run; text that does not parse does not run either.
fn check_read_only(sql: &str) -> PgWireResult<()> {
    let parser = datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new();
    let statements = match parser.parse(sql) {
        Ok(s) => s,
        Err(e) => return Err(user_error("42601", format!("syntax error: {e}"))),
    };
    for s in &statements {
        if !reads_only(s) {
            let kind = format!("{s}").split_whitespace().next().unwrap_or("").to_ascii_uppercase();
            return Err(user_error(
                "25006",
                format!("sightflow is read-only: {kind} statements are refused (queries, EXPLAIN, SHOW and SET run)"),
            ));
        }
    }
    Ok(())
}

/// One connection: its session, its pinned snapshot and scope, its handlers.
struct Conn<B: Backend> {
    state: Arc<AppState<B>>,
    pinned: Arc<Pinned>,
    service: Arc<DfSessionService>,
}

impl<B: Backend> Conn<B> {
    fn new(state: Arc<AppState<B>>) -> Result<Conn<B>, DataFusionError> {
        let snap = state.snapshots.latest();
        let pinned =
            Arc::new(Pinned { snapshot: Mutex::new(snap.clone()), scope: Mutex::new(Scope::Projects(vec![])) });
        let limits = &state.limits.query;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes)))
            .build_arc()?;
        let config = SessionConfig::new().with_target_partitions(2).with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for (name, schema, _) in &snap.tables {
            let t = LiveTable { name, schema: schema.clone(), pinned: Arc::new(PinnedRef(pinned.clone())) };
            ctx.register_table(*name, Arc::new(t))?;
        }
        crate::bounds::install(&ctx, crate::bounds::FunctionLimits::for_memory(limits.memory_bytes));
        setup_pg_catalog(&ctx, "datafusion", Arc::new(AuthManager::default())).map_err(|e| *e)?;
        ctx.register_udf(current_setting(limits.timeout.as_millis() as u64));
        let service = Arc::new(DfSessionService::new(Arc::new(ctx)));
        Ok(Conn { state, pinned, service })
    }

    /// Pins the newest snapshot for the next statement.
    fn pin(&self) {
        *self.pinned.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = self.state.snapshots.latest();
        self.state.pg.statements.fetch_add(1, Ordering::Relaxed);
    }

    /// Produces a query's rows on the query pool, within the deadline and the limits.
    async fn bounded(&self, resp: Response) -> PgWireResult<Response> {
        let Response::Query(q) = resp else { return Ok(resp) };
        let QueryResponse { command_tag, row_schema, mut data_rows, .. } = q;
        let limits = self.state.limits.query.clone();
        let (max_rows, max_bytes, timeout) = (limits.max_rows, limits.max_result_bytes, limits.timeout);
        let run = self
            .state
            .pool
            .run(timeout, move || async move {
                let (mut rows, mut bytes) = (Vec::new(), 0usize);
                while let Some(row) = data_rows.next().await {
                    let row = row?;
                    bytes += row.data.len();
                    rows.push(row);
                    if rows.len() > max_rows {
                        return Err(user_error(
                            "54000",
                            format!("the result exceeds {max_rows} rows; add a LIMIT or aggregate"),
                        ));
                    }
                    if bytes > max_bytes {
                        return Err(user_error("54000", format!("the result exceeds {max_bytes} bytes")));
                    }
                }
                Ok(rows)
            })
            .await;
        let rows = match run {
            Ok((r, _)) => r?,
            Err(PoolError::Timeout(_)) => {
                return Err(user_error(
                    "57014",
                    format!("canceling statement due to statement timeout ({} ms)", timeout.as_millis()),
                ));
            }
            Err(e @ (PoolError::Busy { .. } | PoolError::Saturated { .. })) => {
                return Err(user_error("53300", format!("too many queries: {e}")));
            }
            Err(e) => return Err(user_error("XX000", e.to_string())),
        };
        let mut out = QueryResponse::new(row_schema, futures::stream::iter(rows.into_iter().map(Ok)));
        out.set_command_tag(&command_tag);
        Ok(Response::Query(out))
    }
}

/// Password authentication against the accounts: an API token, or an email's password.
struct Auth<B: Backend> {
    conn: Arc<Conn<B>>,
}

#[async_trait]
impl<B: Backend> StartupHandler for Auth<B> {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let password = pwd.into_password()?.password;
                let user = LoginInfo::from_client_info(client).user().unwrap_or("").to_string();
                let gate = &self.conn.state.gate;
                let found: Option<Principal> = if user.contains('@') {
                    // A user's password: the console's login limits apply (an API token
                    // has 192 random bits, nothing to guess).
                    let email = user.trim().to_ascii_lowercase();
                    if let Err(wait) = gate.throttle(client.socket_addr().ip(), &email) {
                        self.conn.state.pg.refused.fetch_add(1, Ordering::Relaxed);
                        return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                            "FATAL".into(),
                            "28000".into(),
                            format!("too many login attempts for {email}; retry in {wait} s"),
                        ))));
                    }
                    let (u, p) = (email, password.clone());
                    gate.blocking(move |a| a.verify(&u, &p)).await.ok().flatten()
                } else {
                    let t = password.clone();
                    gate.blocking(move |a| a.token(&t)).await.ok().flatten()
                };
                let scope = found.as_ref().map(|p| p.projects(Role::Viewer));
                match (found, scope) {
                    (Some(principal), Some(scope)) if scope != Scope::Projects(vec![]) => {
                        tracing::info!(principal = %principal.id, "pgwire login");
                        *self.conn.pinned.scope.lock().unwrap_or_else(|e| e.into_inner()) = scope;
                        finish_authentication(client, &DefaultServerParameterProvider::default()).await?;
                    }
                    _ => {
                        self.conn.state.pg.refused.fetch_add(1, Ordering::Relaxed);
                        gate.counters.login_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(user = %user, addr = %client.socket_addr(), "pgwire login refused");
                        return Err(PgWireError::InvalidPassword(user));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The statement handlers: check, pin, run, bound.
struct Statements<B: Backend> {
    conn: Arc<Conn<B>>,
    parser: Arc<Rewriting>,
}

#[async_trait]
impl<B: Backend> SimpleQueryHandler for Statements<B> {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if query.len() > self.conn.state.limits.query.max_sql_bytes {
            return Err(user_error("54000", "the SQL text is too long".into()));
        }
        check_read_only(query)?;
        self.conn.pin();
        let query = rewrite_for_clients(query);
        let responses = SimpleQueryHandler::do_query(self.conn.service.as_ref(), client, &query).await?;
        let mut out = Vec::with_capacity(responses.len());
        for r in responses {
            out.push(self.conn.bounded(r).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl<B: Backend> ExtendedQueryHandler for Statements<B> {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Rewriting;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let (_, Some((statement, _))) = &portal.statement.statement
            && !reads_only(statement)
        {
            return Err(user_error("25006", "sightflow is read-only: only reading statements run".into()));
        }
        self.conn.pin();
        let r = ExtendedQueryHandler::do_query(self.conn.service.as_ref(), client, portal, max_rows).await?;
        self.conn.bounded(r).await
    }
}

struct Handlers<B: Backend> {
    auth: Arc<Auth<B>>,
    statements: Arc<Statements<B>>,
}

impl<B: Backend> PgWireServerHandlers for Handlers<B> {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.statements.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.statements.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.auth.clone()
    }
}

/// Connections at once on the Postgres port.
const MAX_CONNECTIONS: usize = 128;

/// Serves the Postgres protocol on `listener` until the process ends.
pub async fn serve<B: Backend>(listener: TcpListener, state: Arc<AppState<B>>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pgwire accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state.pg.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%addr, "pgwire connection refused: {MAX_CONNECTIONS} are open");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match Conn::new(state.clone()) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up a pgwire session");
                    return;
                }
            };
            state.pg.accepted.fetch_add(1, Ordering::Relaxed);
            state.pg.connections.fetch_add(1, Ordering::AcqRel);
            let handlers = Arc::new(Handlers {
                auth: Arc::new(Auth { conn: conn.clone() }),
                statements: Arc::new(Statements { parser: Arc::new(Rewriting(conn.service.query_parser())), conn }),
            });
            if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                tracing::debug!(%addr, error = %e, "pgwire connection ended");
            }
            state.pg.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_statements_pass() {
        for sql in [
            "select 1",
            "SELECT * FROM sessions WHERE started_at > now() - interval '1 day'",
            "explain select 1",
            "set datestyle = 'ISO'",
            "show search_path",
            "begin",
            "commit",
            "prepare q(text) as select $1",
            "execute q('a')",
        ] {
            assert!(check_read_only(sql).is_ok(), "{sql}");
        }
        for sql in [
            "create table t (a int)",
            "insert into sessions values (1)",
            "drop table sessions",
            "copy sessions to '/tmp/x'",
            "delete from sessions",
            "update sessions set clicks = 0",
            "select 1; drop table sessions",
            "prepare w as insert into sessions values (1)",
            "explain analyze insert into t values (1)",
            "select * into t2 from sessions",
            "selec 1",
        ] {
            assert!(check_read_only(sql).is_err(), "{sql}");
        }
    }
}
