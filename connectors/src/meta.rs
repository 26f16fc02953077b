//! The metadata store: projects, users, memberships, API tokens and console logins.
//!
//! An SQLite database under the data directory by default; the schema is created and
//! upgraded by numbered migrations recorded in `schema_migrations`, so a newer binary
//! upgrades an older store and an older binary refuses a newer one. Every statement is
//! written once, with `?N` parameters, against a small [`Db`] interface, so that another
//! SQL backend needs only its adapter.
//!
//! Secrets are never stored: passwords as argon2id hashes, API tokens and console
//! session cookies as SHA-256 of their random text. A token is `sf_<id>_<secret>`: the
//! id (the visible prefix) names it in lists and in `token revoke`, and 192 random bits
//! of secret follow.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sightflow_config::access::{AccountError, Grant, Principal, Role};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database could not be opened or created.
    #[error("cannot open the metadata store {location}: {reason}")]
    Open {
        /// Where it is (a path; never a password).
        location: String,
        /// Why.
        reason: String,
    },
    /// A statement failed.
    #[error("metadata store: {0}")]
    Db(String),
    /// The store was written by a newer sightflow.
    #[error("the metadata store is at schema version {found}; this sightflow knows up to {known}: upgrade sightflow")]
    TooNew {
        /// The store's version.
        found: i64,
        /// The newest this binary knows.
        known: i64,
    },
    /// A value given is not acceptable (names the field).
    #[error("{0}")]
    Invalid(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing named exists already.
    #[error("{0}")]
    Exists(String),
}

impl From<MetaError> for AccountError {
    fn from(e: MetaError) -> AccountError {
        match e {
            MetaError::Invalid(m) => AccountError::Invalid(m),
            MetaError::NotFound(m) => AccountError::NotFound(m),
            MetaError::Exists(m) => AccountError::Exists(m),
            other => AccountError::Failing(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> MetaError {
        MetaError::Db(e.to_string())
    }
}

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Null => String::new(),
        }
    }
    fn opt_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            v => Some(v.text()),
        }
    }
    fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Real(f) => *f as i64,
            _ => 0,
        }
    }
    fn opt_int(&self) -> Option<i64> {
        match self {
            Value::Null => None,
            v => Some(v.int()),
        }
    }
    fn real(&self) -> f64 {
        match self {
            Value::Real(f) => *f,
            Value::Int(i) => *i as f64,
            _ => 0.0,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Real(f)
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Value {
        v.map_or(Value::Null, Value::Text)
    }
}

/// The few operations the store needs from an SQL database. Statements use `?1`, `?2`
/// ... parameters and portable SQL.
trait Db: Send {
    /// Runs a statement, returning the rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, MetaError>;
    /// Runs a query, returning every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, MetaError>;
    /// Starts a transaction that takes the write lock at once.
    fn begin(&mut self) -> Result<(), MetaError>;
    /// Within a transaction: waits until no other process migrates the schema.
    fn lock_schema(&mut self) -> Result<(), MetaError> {
        Ok(())
    }
}

/// A PostgreSQL database several servers share. The `postgres` client runs its own
/// runtime, so it lives on a thread of its own and statements are handed to it: the
/// store can then be used from any thread, async or not.
struct Postgres {
    jobs: std::sync::mpsc::Sender<PgJob>,
}

/// A statement handed to the PostgreSQL thread.
type PgJob = Box<dyn FnOnce(&mut postgres::Client) + Send>;

impl Postgres {
    fn connect(url: &str) -> Result<Postgres, String> {
        let (jobs, rx) = std::sync::mpsc::channel::<PgJob>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("metadata-pg".into())
            .spawn(move || {
                let mut client = match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(|e| e.to_string())?;
        ready.recv().map_err(|e| e.to_string())??;
        Ok(Postgres { jobs })
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, MetaError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.jobs
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| MetaError::Db("the connection to PostgreSQL is gone".into()))?;
        rx.recv()
            .map_err(|_| MetaError::Db("the connection to PostgreSQL is gone".into()))?
            .map_err(|e| MetaError::Db(e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())))
    }
}

/// `?N` parameters as PostgreSQL's `$N`.
fn dollar_params(sql: &str) -> String {
    sql.replace('?', "$")
}

fn pg_params(params: &[Value]) -> Vec<Box<dyn postgres::types::ToSql + Sync + Send>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync + Send> {
            match v {
                Value::Null => Box::new(None::<String>),
                Value::Int(i) => Box::new(*i),
                Value::Real(f) => Box::new(*f),
                Value::Text(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

fn pg_value(row: &postgres::Row, i: usize) -> Value {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let v = if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).ok().flatten().map(Value::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i).ok().flatten().map(|v| Value::Int(v.into()))
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i).ok().flatten().map(|v| Value::Int(v.into()))
    } else if ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i).ok().flatten().map(Value::Real)
    } else {
        row.try_get::<_, Option<String>>(i).ok().flatten().map(Value::Text)
    };
    v.unwrap_or(Value::Null)
}

impl Db for Postgres {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, MetaError> {
        let (sql, params) = (dollar_params(sql), pg_params(params));
        self.call(move |c| {
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
            c.execute(sql.as_str(), &refs)
        })
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, MetaError> {
        let (sql, params) = (dollar_params(sql), pg_params(params));
        self.call(move |c| {
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
            let rows = c.query(sql.as_str(), &refs)?;
            Ok(rows.iter().map(|r| (0..r.len()).map(|i| pg_value(r, i)).collect()).collect())
        })
    }

    fn begin(&mut self) -> Result<(), MetaError> {
        self.call(|c| c.batch_execute("BEGIN"))
    }

    fn lock_schema(&mut self) -> Result<(), MetaError> {
        // Two servers starting at once migrate one after the other.
        self.call(|c| c.batch_execute("SELECT pg_advisory_xact_lock(7317001)"))
    }
}

struct Sqlite(rusqlite::Connection);

impl Db for Sqlite {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, MetaError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, MetaError> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter().map(to_sqlite)), |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Null,
                        rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                        rusqlite::types::ValueRef::Real(v) => Value::Real(v),
                        rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                            Value::Text(String::from_utf8_lossy(t).into_owned())
                        }
                    })
                })
                .collect::<Result<Vec<Value>, rusqlite::Error>>()
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn begin(&mut self) -> Result<(), MetaError> {
        self.0.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

/// The schema, one migration per version, in order. Never edit a released one: add.
const MIGRATIONS: &[&str] = &["
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    ingest_key TEXT NOT NULL UNIQUE,
    allowed_origins TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    retention_days BIGINT NOT NULL,
    rate_limit_per_s DOUBLE PRECISION NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE memberships (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    project TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, project)
);
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    project TEXT,
    created_by TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    revoked_ms BIGINT
);
CREATE TABLE login_sessions (
    secret_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX login_sessions_expiry ON login_sessions (expires_ms);
"];

/// The `project` of a membership on every project.
const EVERY_PROJECT: &str = "*";

pub use sightflow_config::access::{NewProject, ProjectRow, ProjectUpdate, TokenRow, UserRow};

/// A console login, as the cookie finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginSession {
    /// The user and their grants.
    pub principal: Principal,
    /// The token state-changing requests must echo (`X-CSRF-Token`).
    pub csrf: String,
    /// When it ends (ms since the epoch).
    pub expires_ms: i64,
}

/// The metadata store.
pub struct MetaStore {
    db: Mutex<Box<dyn Db>>,
    location: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a secret, as hex.
pub fn secret_hash(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Whether `name` can name a project: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_email(email: &str) -> Result<String, MetaError> {
    let e = email.trim().to_ascii_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(user, host)| !user.is_empty() && !host.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(e) } else { Err(MetaError::Invalid(format!("{email:?} is not an email address"))) }
}

fn check_password(password: &str) -> Result<(), MetaError> {
    let n = password.chars().count();
    if n < 8 {
        return Err(MetaError::Invalid(format!("the password has {n} characters; at least 8 are needed")));
    }
    if password.len() > 1024 {
        return Err(MetaError::Invalid("the password is longer than 1024 bytes".into()));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of a password.
fn hash_password(password: &str) -> Result<String, MetaError> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| MetaError::Db(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MetaError::Db(format!("cannot hash the password: {e}")))
}

/// A hash to verify against when the email is unknown, so that a wrong email costs as
/// long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

fn grant_of(project: &str, role: &str) -> Option<Grant> {
    let role: Role = role.parse().ok()?;
    Some(Grant { project: (project != EVERY_PROJECT).then(|| project.to_string()), role })
}

impl MetaStore {
    /// Opens (creating and migrating) the store named by `metadata.url`: empty for
    /// `<data_dir>/meta.sqlite`, `sqlite://PATH` for another file.
    pub fn open(url: &str, data_dir: &Path) -> Result<MetaStore, MetaError> {
        if url.is_empty() {
            return Self::open_sqlite(&data_dir.join("meta.sqlite"));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Self::open_sqlite(Path::new(path));
        }
        let scheme = url.split_once("://").map_or("(none)", |(s, _)| s);
        if scheme == "postgres" || scheme == "postgresql" {
            return Self::open_postgres(url);
        }
        Err(MetaError::Open {
            location: format!("of scheme {scheme:?}"),
            reason: "metadata.url is empty (SQLite under the data directory), sqlite://PATH or postgres://...".into(),
        })
    }

    /// Opens (migrating) a store in a PostgreSQL database.
    pub fn open_postgres(url: &str) -> Result<MetaStore, MetaError> {
        let location = sightflow_config::redact_url_password(url);
        let db = Postgres::connect(url).map_err(|reason| MetaError::Open { location: location.clone(), reason })?;
        let store = MetaStore { db: Mutex::new(Box::new(db)), location };
        store.migrate()?;
        Ok(store)
    }

    /// Opens (creating and migrating) an SQLite store at `path`.
    pub fn open_sqlite(path: &Path) -> Result<MetaStore, MetaError> {
        let location = path.display().to_string();
        let open_err =
            |e: &dyn std::fmt::Display| MetaError::Open { location: location.clone(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(&e))?;
        }
        let conn = rusqlite::Connection::open(path).map_err(|e| open_err(&e))?;
        // Another process (an operator command while `serve` runs) may hold the write
        // lock for a moment: wait for it rather than fail.
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(|e| open_err(&e))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| open_err(&e))?;
        let store = MetaStore { db: Mutex::new(Box::new(Sqlite(conn))), location };
        store.migrate()?;
        Ok(store)
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, MetaError>) -> Result<T, MetaError> {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        f(db.as_mut())
    }

    /// Runs `f` in one write transaction: all of it or nothing.
    fn transaction<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T, MetaError>) -> Result<T, MetaError> {
        self.with(|db| {
            db.begin()?;
            match f(db) {
                Ok(v) => {
                    db.execute("COMMIT", &[])?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = db.execute("ROLLBACK", &[]);
                    Err(e)
                }
            }
        })
    }

    fn migrate(&self) -> Result<(), MetaError> {
        self.transaction(|db| {
            db.lock_schema()?;
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
                &[],
            )?;
            let found = db.query("SELECT MAX(version) FROM schema_migrations", &[])?;
            let version = found.first().and_then(|r| r.first()).and_then(Value::opt_int).unwrap_or(0);
            let known = MIGRATIONS.len() as i64;
            if version > known {
                return Err(MetaError::TooNew { found: version, known });
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                for stmt in m.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    db.execute(stmt, &[]).map_err(|e| MetaError::Db(format!("migration {}: {e}", i + 1)))?;
                }
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES (?1, ?2)",
                    &[(i as i64 + 1).into(), now_ms().into()],
                )?;
            }
            Ok(())
        })
    }

    /// The schema version of the store.
    pub fn schema_version(&self) -> Result<i64, MetaError> {
        self.with(|db| {
            let r = db.query("SELECT MAX(version) FROM schema_migrations", &[])?;
            Ok(r.first().and_then(|r| r.first()).and_then(Value::opt_int).unwrap_or(0))
        })
    }

    // ----- projects -----

    fn project_of(row: &[Value]) -> ProjectRow {
        ProjectRow {
            name: row[0].text(),
            ingest_key: row[1].text(),
            allowed_origins: serde_json::from_str(&row[2].text()).unwrap_or_default(),
            time_zone: row[3].text(),
            retention_days: row[4].int().clamp(0, u32::MAX as i64) as u32,
            rate_limit_per_s: row[5].real(),
            created_ms: row[6].int(),
        }
    }

    const PROJECT_COLUMNS: &'static str =
        "name, ingest_key, allowed_origins, time_zone, retention_days, rate_limit_per_s, created_ms";

    /// Creates a project; an error names a taken name or key.
    pub fn project_add(&self, name: &str, p: NewProject) -> Result<ProjectRow, MetaError> {
        if !valid_project_name(name) || name == EVERY_PROJECT {
            return Err(MetaError::Invalid(format!(
                "{name:?} cannot name a project: use 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let key = p.ingest_key.clone().unwrap_or_else(|| format!("sf_pk_{}", random_hex(12)));
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MetaError::Invalid("an ingest key has 1 to 200 printable ASCII characters".into()));
        }
        let tz = p.time_zone.clone().unwrap_or_else(|| "UTC".into());
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(MetaError::Invalid(format!("{tz:?} is not an IANA time zone")));
        }
        let origins = serde_json::to_string(&p.allowed_origins).unwrap_or_else(|_| "[]".into());
        self.transaction(|db| {
            if !db.query("SELECT 1 FROM projects WHERE name = ?1", &[name.into()])?.is_empty() {
                return Err(MetaError::Exists(format!("a project named {name:?} exists already")));
            }
            if !db.query("SELECT 1 FROM projects WHERE ingest_key = ?1", &[key.as_str().into()])?.is_empty() {
                return Err(MetaError::Exists("another project has that ingest key".into()));
            }
            db.execute(
                &format!("INSERT INTO projects ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", Self::PROJECT_COLUMNS),
                &[
                    name.into(),
                    key.as_str().into(),
                    origins.into(),
                    tz.into(),
                    (p.retention_days as i64).into(),
                    p.rate_limit_per_s.into(),
                    now_ms().into(),
                ],
            )?;
            Ok(())
        })?;
        self.project(name)?.ok_or_else(|| MetaError::NotFound(format!("no project {name:?}")))
    }

    /// Creates the project unless one of that name exists; whether it was created.
    pub fn project_seed(&self, name: &str, p: NewProject) -> Result<bool, MetaError> {
        if self.project(name)?.is_some() {
            return Ok(false);
        }
        match self.project_add(name, p) {
            Ok(_) => Ok(true),
            // Another server seeded it in the meantime.
            Err(MetaError::Exists(_)) if self.project(name)?.is_some() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every project, by name.
    pub fn projects(&self) -> Result<Vec<ProjectRow>, MetaError> {
        self.with(|db| {
            let rows = db.query(&format!("SELECT {} FROM projects ORDER BY name", Self::PROJECT_COLUMNS), &[])?;
            Ok(rows.iter().map(|r| Self::project_of(r)).collect())
        })
    }

    /// The project named `name`.
    pub fn project(&self, name: &str) -> Result<Option<ProjectRow>, MetaError> {
        self.with(|db| {
            let rows =
                db.query(&format!("SELECT {} FROM projects WHERE name = ?1", Self::PROJECT_COLUMNS), &[name.into()])?;
            Ok(rows.first().map(|r| Self::project_of(r)))
        })
    }

    /// Changes a project's settings (what is `None` stays).
    pub fn project_update(&self, name: &str, u: ProjectUpdate) -> Result<ProjectRow, MetaError> {
        let Some(mut p) = self.project(name)? else {
            return Err(MetaError::NotFound(format!("no project {name:?}")));
        };
        if let Some(tz) = &u.time_zone
            && tz.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(MetaError::Invalid(format!("{tz:?} is not an IANA time zone")));
        }
        if let Some(o) = u.allowed_origins.as_ref().and_then(|o| o.iter().find(|o| *o != "*" && !o.contains("://"))) {
            return Err(MetaError::Invalid(format!(
                "{o:?} is not an origin like \"https://shop.test\", \"https://*.shop.test\" or \"*\""
            )));
        }
        if u.rate_limit_per_s.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
            return Err(MetaError::Invalid("rate_limit_per_s must be a number of events per second, 0 or more".into()));
        }
        p.allowed_origins = u.allowed_origins.unwrap_or(p.allowed_origins);
        p.time_zone = u.time_zone.unwrap_or(p.time_zone);
        p.retention_days = u.retention_days.unwrap_or(p.retention_days);
        p.rate_limit_per_s = u.rate_limit_per_s.unwrap_or(p.rate_limit_per_s);
        let origins = serde_json::to_string(&p.allowed_origins).unwrap_or_else(|_| "[]".into());
        self.with(|db| {
            db.execute(
                "UPDATE projects SET allowed_origins = ?2, time_zone = ?3, retention_days = ?4, rate_limit_per_s = ?5 \
                 WHERE name = ?1",
                &[
                    name.into(),
                    origins.into(),
                    p.time_zone.as_str().into(),
                    (p.retention_days as i64).into(),
                    p.rate_limit_per_s.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(p)
    }

    /// Deletes a project's metadata: its memberships go, its tokens are revoked.
    pub fn project_delete(&self, name: &str) -> Result<(), MetaError> {
        self.transaction(|db| {
            if db.execute("DELETE FROM projects WHERE name = ?1", &[name.into()])? == 0 {
                return Err(MetaError::NotFound(format!("no project {name:?}")));
            }
            db.execute("DELETE FROM memberships WHERE project = ?1", &[name.into()])?;
            db.execute(
                "UPDATE api_tokens SET revoked_ms = ?2 WHERE project = ?1 AND revoked_ms IS NULL",
                &[name.into(), now_ms().into()],
            )?;
            Ok(())
        })
    }

    // ----- users -----

    fn grants_of(db: &mut dyn Db, user_id: &str) -> Result<Vec<Grant>, MetaError> {
        let rows =
            db.query("SELECT project, role FROM memberships WHERE user_id = ?1 ORDER BY project", &[user_id.into()])?;
        Ok(rows.iter().filter_map(|r| grant_of(&r[0].text(), &r[1].text())).collect())
    }

    /// Adds a user with a role on one project (or every project); the password is hashed.
    pub fn user_add(&self, email: &str, password: &str, grant: Grant) -> Result<UserRow, MetaError> {
        let email = check_email(email)?;
        check_password(password)?;
        if let Some(p) = &grant.project {
            self.require_project(p)?;
        }
        let hash = hash_password(password)?;
        let id = random_hex(8);
        self.transaction(|db| {
            if !db.query("SELECT 1 FROM users WHERE email = ?1", &[email.as_str().into()])?.is_empty() {
                return Err(MetaError::Exists(format!("a user {email:?} exists already")));
            }
            db.execute(
                "INSERT INTO users (id, email, password_hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                &[id.as_str().into(), email.as_str().into(), hash.into(), now_ms().into()],
            )?;
            db.execute(
                "INSERT INTO memberships (user_id, project, role) VALUES (?1, ?2, ?3)",
                &[
                    id.as_str().into(),
                    grant.project.clone().unwrap_or_else(|| EVERY_PROJECT.into()).into(),
                    grant.role.as_str().into(),
                ],
            )?;
            Ok(())
        })?;
        self.user(&email)?.ok_or_else(|| MetaError::NotFound(format!("no user {email:?}")))
    }

    fn require_project(&self, name: &str) -> Result<(), MetaError> {
        match self.project(name)? {
            Some(_) => Ok(()),
            None => Err(MetaError::NotFound(format!("no project {name:?} (see `sightflow project list`)"))),
        }
    }

    /// Sets a user's password; their console logins end.
    pub fn user_passwd(&self, email: &str, password: &str) -> Result<(), MetaError> {
        let email = check_email(email)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        self.transaction(|db| {
            let rows = db.query("SELECT id FROM users WHERE email = ?1", &[email.as_str().into()])?;
            let Some(id) = rows.first().map(|r| r[0].text()) else {
                return Err(MetaError::NotFound(format!("no user {email:?}")));
            };
            db.execute("UPDATE users SET password_hash = ?2 WHERE id = ?1", &[id.as_str().into(), hash.into()])?;
            db.execute("DELETE FROM login_sessions WHERE user_id = ?1", &[id.as_str().into()])?;
            Ok(())
        })
    }

    /// Gives a user `role` on `project` (`None`: every project), replacing their role there.
    pub fn user_grant(&self, email: &str, grant: Grant) -> Result<(), MetaError> {
        let email = check_email(email)?;
        if let Some(p) = &grant.project {
            self.require_project(p)?;
        }
        self.transaction(|db| {
            let rows = db.query("SELECT id FROM users WHERE email = ?1", &[email.as_str().into()])?;
            let Some(id) = rows.first().map(|r| r[0].text()) else {
                return Err(MetaError::NotFound(format!("no user {email:?}")));
            };
            let project = grant.project.clone().unwrap_or_else(|| EVERY_PROJECT.into());
            db.execute(
                "DELETE FROM memberships WHERE user_id = ?1 AND project = ?2",
                &[id.as_str().into(), project.as_str().into()],
            )?;
            db.execute(
                "INSERT INTO memberships (user_id, project, role) VALUES (?1, ?2, ?3)",
                &[id.as_str().into(), project.into(), grant.role.as_str().into()],
            )?;
            Ok(())
        })
    }

    /// Takes a user's role on `project` (`None`: the every-project one) away.
    pub fn user_ungrant(&self, email: &str, project: Option<&str>) -> Result<(), MetaError> {
        let email = check_email(email)?;
        self.with(|db| {
            let n = db.execute(
                "DELETE FROM memberships WHERE project = ?2 AND user_id = (SELECT id FROM users WHERE email = ?1)",
                &[email.as_str().into(), project.unwrap_or(EVERY_PROJECT).into()],
            )?;
            if n == 0 {
                return Err(MetaError::NotFound(format!(
                    "{email:?} has no role on {}",
                    project.unwrap_or("every project")
                )));
            }
            Ok(())
        })
    }

    /// The user with this email.
    pub fn user(&self, email: &str) -> Result<Option<UserRow>, MetaError> {
        let email = email.trim().to_ascii_lowercase();
        self.with(|db| {
            let rows =
                db.query("SELECT id, email, created_ms FROM users WHERE email = ?1", &[email.as_str().into()])?;
            let Some(r) = rows.first() else { return Ok(None) };
            let id = r[0].text();
            let grants = Self::grants_of(db, &id)?;
            Ok(Some(UserRow { id, email: r[1].text(), grants, created_ms: r[2].int() }))
        })
    }

    /// Every user, by email.
    pub fn users(&self) -> Result<Vec<UserRow>, MetaError> {
        self.with(|db| {
            let rows = db.query("SELECT id, email, created_ms FROM users ORDER BY email", &[])?;
            rows.iter()
                .map(|r| {
                    let id = r[0].text();
                    let grants = Self::grants_of(db, &id)?;
                    Ok(UserRow { id, email: r[1].text(), grants, created_ms: r[2].int() })
                })
                .collect()
        })
    }

    /// Deletes a user (their logins end).
    pub fn user_delete(&self, email: &str) -> Result<(), MetaError> {
        let email = check_email(email)?;
        self.with(|db| {
            if db.execute("DELETE FROM users WHERE email = ?1", &[email.as_str().into()])? == 0 {
                return Err(MetaError::NotFound(format!("no user {email:?}")));
            }
            Ok(())
        })
    }

    /// The number of users.
    pub fn user_count(&self) -> Result<i64, MetaError> {
        self.with(|db| Ok(db.query("SELECT COUNT(*) FROM users", &[])?.first().map_or(0, |r| r[0].int())))
    }

    /// The user if `password` is theirs. Takes as long for an unknown email as for a
    /// wrong password (argon2id either way).
    pub fn verify_password(&self, email: &str, password: &str) -> Result<Option<UserRow>, MetaError> {
        let email = email.trim().to_ascii_lowercase();
        let stored = self.with(|db| {
            let rows = db.query("SELECT password_hash FROM users WHERE email = ?1", &[email.as_str().into()])?;
            Ok(rows.first().map(|r| r[0].text()))
        })?;
        let hash = stored.clone().unwrap_or_else(|| decoy_hash().to_string());
        let ok = PasswordHash::new(&hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        if ok && stored.is_some() { self.user(&email) } else { Ok(None) }
    }

    /// The principal of a user.
    pub fn user_principal(user: &UserRow) -> Principal {
        Principal::new(&format!("user:{}", user.email), user.grants.clone())
    }

    // ----- API tokens -----

    fn token_of(r: &[Value]) -> Option<TokenRow> {
        Some(TokenRow {
            id: r[0].text(),
            name: r[1].text(),
            role: r[2].text().parse().ok()?,
            project: r[3].opt_text(),
            created_by: r[4].text(),
            created_ms: r[5].int(),
            last_used_ms: r[6].opt_int(),
            revoked_ms: r[7].opt_int(),
        })
    }

    const TOKEN_COLUMNS: &'static str = "id, name, role, project, created_by, created_ms, last_used_ms, revoked_ms";

    /// Creates a token; returns its text (shown once, never stored) and its row.
    pub fn token_create(
        &self,
        name: &str,
        role: Role,
        project: Option<&str>,
        created_by: &str,
    ) -> Result<(String, TokenRow), MetaError> {
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(MetaError::Invalid("a token name has at most 200 characters, none of them control".into()));
        }
        if let Some(p) = project {
            self.require_project(p)?;
        }
        let id = format!("sf_{}", random_hex(6));
        let secret = format!("{id}_{}", random_hex(24));
        self.with(|db| {
            db.execute(
                "INSERT INTO api_tokens (id, name, secret_hash, role, project, created_by, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    id.as_str().into(),
                    name.into(),
                    secret_hash(&secret).into(),
                    role.as_str().into(),
                    project.map(str::to_string).into(),
                    created_by.into(),
                    now_ms().into(),
                ],
            )?;
            Ok(())
        })?;
        let row = self.token(&id)?.ok_or_else(|| MetaError::NotFound(format!("no token {id}")))?;
        Ok((secret, row))
    }

    /// The token with this id.
    pub fn token(&self, id: &str) -> Result<Option<TokenRow>, MetaError> {
        self.with(|db| {
            let rows =
                db.query(&format!("SELECT {} FROM api_tokens WHERE id = ?1", Self::TOKEN_COLUMNS), &[id.into()])?;
            Ok(rows.first().and_then(|r| Self::token_of(r)))
        })
    }

    /// Every token, newest first; revoked ones included.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, MetaError> {
        self.with(|db| {
            let rows =
                db.query(&format!("SELECT {} FROM api_tokens ORDER BY created_ms DESC, id", Self::TOKEN_COLUMNS), &[])?;
            Ok(rows.iter().filter_map(|r| Self::token_of(r)).collect())
        })
    }

    /// Revokes a token by id (its visible prefix); it works no more, at once.
    pub fn token_revoke(&self, id: &str) -> Result<(), MetaError> {
        let id = id.trim();
        // The whole token text names it too.
        let id = id.match_indices('_').nth(1).map_or(id, |(i, _)| &id[..i]);
        self.with(|db| {
            let n = db.execute(
                "UPDATE api_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                &[id.into(), now_ms().into()],
            )?;
            if n == 0 {
                let exists = !db.query("SELECT 1 FROM api_tokens WHERE id = ?1", &[id.into()])?.is_empty();
                return Err(if exists {
                    MetaError::Exists(format!("token {id} is revoked already"))
                } else {
                    MetaError::NotFound(format!("no token {id} (see `sightflow token list`)"))
                });
            }
            Ok(())
        })
    }

    /// The principal of a token's text, if it is a live token; notes its use (to the
    /// minute, so that a busy token does not write on every request).
    pub fn authenticate_token(&self, secret: &str) -> Result<Option<Principal>, MetaError> {
        if !secret.starts_with("sf_") || secret.len() > 100 {
            return Ok(None);
        }
        let now = now_ms();
        self.with(|db| {
            let rows = db.query(
                &format!("SELECT {} FROM api_tokens WHERE secret_hash = ?1", Self::TOKEN_COLUMNS),
                &[secret_hash(secret).into()],
            )?;
            let Some(t) = rows.first().and_then(|r| Self::token_of(r)) else { return Ok(None) };
            if t.revoked_ms.is_some() {
                return Ok(None);
            }
            if t.last_used_ms.is_none_or(|u| now - u > 60_000) {
                db.execute(
                    "UPDATE api_tokens SET last_used_ms = ?2 WHERE id = ?1",
                    &[t.id.as_str().into(), now.into()],
                )?;
            }
            Ok(Some(Principal::new(&format!("token:{}", t.id), vec![Grant { project: t.project, role: t.role }])))
        })
    }

    // ----- console logins -----

    /// Starts a console login for a user: the cookie's secret (never stored) and the
    /// session.
    pub fn login_create(&self, user: &UserRow, ttl_ms: i64) -> Result<(String, LoginSession), MetaError> {
        let secret = random_hex(32);
        let csrf = random_hex(16);
        let now = now_ms();
        let expires_ms = now + ttl_ms;
        self.with(|db| {
            db.execute("DELETE FROM login_sessions WHERE expires_ms < ?1", &[now.into()])?;
            db.execute(
                "INSERT INTO login_sessions (secret_hash, user_id, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                &[secret_hash(&secret).into(), user.id.as_str().into(), csrf.as_str().into(), now.into(), expires_ms.into()],
            )?;
            Ok(())
        })?;
        Ok((secret, LoginSession { principal: Self::user_principal(user), csrf, expires_ms }))
    }

    /// The live console login of a cookie's secret.
    pub fn login(&self, secret: &str) -> Result<Option<LoginSession>, MetaError> {
        if secret.len() != 64 {
            return Ok(None);
        }
        let now = now_ms();
        let found = self.with(|db| {
            let rows = db.query(
                "SELECT u.email, s.csrf, s.expires_ms FROM login_sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.secret_hash = ?1 AND s.expires_ms > ?2",
                &[secret_hash(secret).into(), now.into()],
            )?;
            Ok(rows.first().map(|r| (r[0].text(), r[1].text(), r[2].int())))
        })?;
        let Some((email, csrf, expires_ms)) = found else { return Ok(None) };
        let Some(user) = self.user(&email)? else { return Ok(None) };
        Ok(Some(LoginSession { principal: Self::user_principal(&user), csrf, expires_ms }))
    }

    /// Ends a console login.
    pub fn logout(&self, secret: &str) -> Result<(), MetaError> {
        self.with(|db| {
            db.execute("DELETE FROM login_sessions WHERE secret_hash = ?1", &[secret_hash(secret).into()])?;
            Ok(())
        })
    }
}

/// Where the default SQLite store of a data directory is.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = MetaStore::open("", dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn migrations_run_once_and_a_newer_store_is_refused() {
        let (dir, s) = store();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(s);
        let s = MetaStore::open("", dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.with(|db| db.execute("INSERT INTO schema_migrations (version, applied_ms) VALUES (99, 0)", &[])).unwrap();
        drop(s);
        let err = MetaStore::open("", dir.path()).err().unwrap();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }

    #[test]
    fn projects_have_unique_names_and_keys() {
        let (_d, s) = store();
        let p = s.project_add("shop", NewProject::default()).unwrap();
        assert!(p.ingest_key.starts_with("sf_pk_") && p.ingest_key.len() == 30, "{}", p.ingest_key);
        assert_eq!(p.time_zone, "UTC");
        assert!(matches!(s.project_add("shop", NewProject::default()), Err(MetaError::Exists(_))));
        let dup_key = NewProject { ingest_key: Some(p.ingest_key.clone()), ..Default::default() };
        assert!(matches!(s.project_add("blog", dup_key), Err(MetaError::Exists(_))));
        assert!(matches!(s.project_add("a b", NewProject::default()), Err(MetaError::Invalid(_))));
        let bad_tz = NewProject { time_zone: Some("Mars/Olympus".into()), ..Default::default() };
        assert!(matches!(s.project_add("mars", bad_tz), Err(MetaError::Invalid(_))));
        assert!(!s.project_seed("shop", NewProject::default()).unwrap(), "an existing project keeps its settings");
        let seeded =
            NewProject { ingest_key: Some("demo".into()), allowed_origins: vec!["*".into()], ..Default::default() };
        assert!(s.project_seed("demo", seeded).unwrap());
        let names: Vec<String> = s.projects().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["demo", "shop"]);
        assert_eq!(s.project("demo").unwrap().unwrap().allowed_origins, ["*"]);
    }

    #[test]
    fn passwords_are_hashed_and_verified() {
        let (_d, s) = store();
        s.project_add("shop", NewProject::default()).unwrap();
        let u = s.user_add("Ann@Shop.test", "correct horse", Grant::on("shop", Role::Member)).unwrap();
        assert_eq!(u.email, "ann@shop.test");
        assert_eq!(u.grants, vec![Grant::on("shop", Role::Member)]);
        let stored: String = s.with(|db| Ok(db.query("SELECT password_hash FROM users", &[])?[0][0].text())).unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(s.verify_password("ann@shop.test", "correct horse").unwrap().is_some());
        assert!(s.verify_password("ann@shop.test", "wrong horse").unwrap().is_none());
        assert!(s.verify_password("nobody@shop.test", "correct horse").unwrap().is_none());
        assert!(matches!(
            s.user_add("ann@shop.test", "another one", Grant::everywhere(Role::Viewer)),
            Err(MetaError::Exists(_))
        ));
        assert!(matches!(
            s.user_add("bob@shop.test", "short", Grant::everywhere(Role::Viewer)),
            Err(MetaError::Invalid(_))
        ));
        assert!(matches!(
            s.user_add("bob", "long enough", Grant::everywhere(Role::Viewer)),
            Err(MetaError::Invalid(_))
        ));
        assert!(matches!(
            s.user_add("bob@x", "long enough", Grant::on("nope", Role::Viewer)),
            Err(MetaError::NotFound(_))
        ));
        let (cookie, _) = s.login_create(&u, 60_000).unwrap();
        assert!(s.login(&cookie).unwrap().is_some());
        s.user_passwd("ann@shop.test", "battery staple").unwrap();
        assert!(s.login(&cookie).unwrap().is_none(), "a new password ends the logins");
        assert!(s.verify_password("ann@shop.test", "battery staple").unwrap().is_some());
        s.user_grant("ann@shop.test", Grant::everywhere(Role::Viewer)).unwrap();
        s.user_grant("ann@shop.test", Grant::on("shop", Role::Admin)).unwrap();
        let u = s.user("ann@shop.test").unwrap().unwrap();
        assert_eq!(u.grants, vec![Grant::everywhere(Role::Viewer), Grant::on("shop", Role::Admin)]);
        s.user_ungrant("ann@shop.test", None).unwrap();
        assert_eq!(s.user("ann@shop.test").unwrap().unwrap().grants, vec![Grant::on("shop", Role::Admin)]);
    }

    #[test]
    fn tokens_are_stored_hashed_scoped_and_revocable() {
        let (_d, s) = store();
        s.project_add("shop", NewProject::default()).unwrap();
        let (secret, row) = s.token_create("grafana", Role::Viewer, Some("shop"), "cli").unwrap();
        assert!(secret.starts_with(&format!("{}_", row.id)), "the id is the visible prefix");
        assert_eq!(secret.len(), 3 + 12 + 1 + 48, "192 random bits of secret");
        let stored: Vec<String> = s
            .with(|db| Ok(db.query("SELECT secret_hash FROM api_tokens", &[])?.iter().map(|r| r[0].text()).collect()))
            .unwrap();
        assert_eq!(stored, vec![secret_hash(&secret)]);
        let p = s.authenticate_token(&secret).unwrap().unwrap();
        assert_eq!(p.id, format!("token:{}", row.id));
        assert_eq!(p.grants, vec![Grant::on("shop", Role::Viewer)]);
        assert!(s.token(&row.id).unwrap().unwrap().last_used_ms.is_some());
        assert!(s.authenticate_token(&format!("{secret}x")).unwrap().is_none());
        assert!(s.authenticate_token("sf_nothing").unwrap().is_none());
        s.token_revoke(&row.id).unwrap();
        assert!(s.authenticate_token(&secret).unwrap().is_none(), "revoked at once");
        assert!(matches!(s.token_revoke(&row.id), Err(MetaError::Exists(_))));
        assert!(matches!(s.token_revoke("sf_000000000000"), Err(MetaError::NotFound(_))));
        let (other, orow) = s.token_create("ci", Role::Owner, None, "cli").unwrap();
        s.token_revoke(&other).unwrap();
        assert!(s.token(&orow.id).unwrap().unwrap().revoked_ms.is_some(), "the whole text names a token too");
        assert_eq!(s.tokens().unwrap().len(), 2);
    }

    #[test]
    fn a_second_connection_sees_what_the_first_wrote() {
        let (dir, a) = store();
        let b = MetaStore::open("", dir.path()).unwrap();
        let (secret, _) = a.token_create("x", Role::Admin, None, "cli").unwrap();
        assert!(b.authenticate_token(&secret).unwrap().is_some());
        a.project_add("shop", NewProject::default()).unwrap();
        assert_eq!(b.projects().unwrap().len(), 1);
    }

    #[test]
    fn deleting_a_project_revokes_its_tokens_and_memberships() {
        let (_d, s) = store();
        s.project_add("shop", NewProject::default()).unwrap();
        let (secret, _) = s.token_create("x", Role::Viewer, Some("shop"), "cli").unwrap();
        s.user_add("ann@shop.test", "long enough", Grant::on("shop", Role::Member)).unwrap();
        s.project_delete("shop").unwrap();
        assert!(s.authenticate_token(&secret).unwrap().is_none());
        assert!(s.user("ann@shop.test").unwrap().unwrap().grants.is_empty());
        assert!(matches!(s.project_delete("shop"), Err(MetaError::NotFound(_))));
    }

    #[test]
    fn a_url_of_another_kind_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = MetaStore::open("mysql://root:hunter2@db/meta", dir.path()).err().unwrap().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("mysql"), "{err}");
    }
}
