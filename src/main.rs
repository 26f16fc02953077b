//! The `sightflow` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sightflow::batch::{self, Input};
use sightflow_config::Config;
use sightflow_config::access::{Grant, Role};
use sightflow_connectors::meta::MetaStore;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sightflow",
    version,
    about = "Real-time behaviour analytics and session replay on a streaming dataflow"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run SQL over the views computed from files (batch mode), or on a server (--url).
    Query(QueryArgs),
    /// Run the server: HTTP ingest, embedded log, live views, SQL and replay.
    Serve(ServeArgs),
    /// Import a raw rrweb recording into a running server, in chunks.
    Import(ImportArgs),
    /// Re-read the Kafka topic (or the embedded log) into fresh views, then write them
    /// out as Parquet or serve them.
    Backfill(BackfillArgs),
    /// Console users and their roles (in the metadata store; works while `serve` runs).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API tokens for SQL, REST, the live feed, pgwire and Grafana.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Projects: their names, ingest keys and allowed origins.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
}

/// Where the metadata store is: as for `serve`.
#[derive(clap::Args)]
struct StoreArgs {
    /// Config file (its `metadata.url`, else SQLite under the data directory).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The server's data directory [default: server.data_dir, ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: sightflow_config::access::UnknownRole| e.to_string())
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user with a role on one project (--project) or on every project. The
    /// password is read from standard input when it is not a terminal, else prompted.
    Add {
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The project's name [default: every project].
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password (read as for `add`); their console logins end.
    Passwd {
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a user a role on a project (or every project), replacing their role there.
    Grant {
        email: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a user.
    Remove {
        email: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List users and their roles.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it once on standard output (nothing else goes there).
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The one project it may read [default: every project].
        #[arg(long)]
        project: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by its id (the `sf_...` prefix `list` shows); it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Add a project; prints its ingest key.
    Add {
        name: String,
        /// The public ingest key [default: a random sf_pk_... key].
        #[arg(long)]
        ingest_key: Option<String>,
        /// A browser origin allowed to send events (repeat for more).
        #[arg(long = "origin")]
        origins: Vec<String>,
        /// IANA time zone [default: UTC].
        #[arg(long)]
        time_zone: Option<String>,
        /// Days its recordings are kept for replay (0: the server's `replay.retention_ms`).
        #[arg(long, default_value_t = 0)]
        retention_days: u32,
        /// Events per second accepted (0: unlimited).
        #[arg(long, default_value_t = 0.0)]
        rate_limit: f64,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List projects with their ingest keys.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct BackfillArgs {
    /// Config file: with `kafka.brokers` set the topic is read, else the embedded log.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the embedded log lives [default: server.data_dir, ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// earliest | latest | an RFC 3339 time | partition:offset,...
    #[arg(long, default_value = "earliest")]
    from: String,
    /// end (the end when the backfill starts) | an RFC 3339 time.
    #[arg(long, default_value = "end")]
    until: String,
    /// Write each view to DIR/<view>.parquet.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Serve the resulting views (SQL over HTTP, read-only) on this address.
    #[arg(long)]
    serve: Option<String>,
    /// Progress output: a bar on a terminal and lines otherwise (auto), lines, or none.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Lines,
    None,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Config file (defaults < file < SIGHTFLOW__* environment).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: server.listen, 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Where the log, replay chunks and checkpoint live [default: server.data_dir, ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The Postgres-wire endpoint's address ("" for none) [default: server.pg_listen,
    /// 127.0.0.1:5433].
    #[arg(long)]
    pg_listen: Option<String>,
    /// Send demo traffic: the bundled recordings replayed as live visitors.
    #[arg(long)]
    demo: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Project key.
    #[arg(long)]
    project: String,
    /// Device id of the recording.
    #[arg(long)]
    device: String,
    /// Tab id [default: the device id].
    #[arg(long, default_value = "")]
    tab: String,
    /// Events per request.
    #[arg(long, default_value_t = 200)]
    chunk: usize,
    /// How long to keep retrying when the server is unreachable or overloaded (s).
    #[arg(long, default_value_t = 60)]
    retry_for: u64,
    /// Wait until the views reflect every imported event before exiting (needs --token).
    #[arg(long)]
    wait: bool,
    /// With --wait: an API token to ask the views with.
    #[arg(long, env = "SIGHTFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The recording: a JSON array of rrweb events.
    file: PathBuf,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file and print the effective configuration.
    Check {
        /// The file to check (defaults and environment are layered as when running).
        file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(clap::Args)]
struct QueryArgs {
    /// Config file (defaults < file < SIGHTFLOW__* environment).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run the query on this server instead of on files.
    #[arg(long)]
    url: Option<String>,
    /// With --url: an API token (`sightflow token create --role viewer`).
    #[arg(long, env = "SIGHTFLOW_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// With --url: wait until the views have caught up to this logical time (ms).
    #[arg(long)]
    min_as_of: Option<u64>,
    /// Project key the input events belong to.
    #[arg(long, default_value = "demo")]
    project: String,
    /// A raw rrweb recording (JSON array); pair each with a --device.
    #[arg(long)]
    rrweb: Vec<PathBuf>,
    /// Device id of the corresponding --rrweb file.
    #[arg(long)]
    device: Vec<String>,
    /// Tab id of the corresponding --rrweb file [default: the device id, or device/N
    /// when a device has several files: each file is its own tab].
    #[arg(long)]
    tab: Vec<String>,
    /// Newline-delimited JSON events.
    #[arg(long)]
    events: Vec<PathBuf>,
    /// The query.
    #[arg(long)]
    sql: String,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config { command: ConfigCommand::Check { file } } => config_check(file),
        Command::Query(args) => query(args),
        Command::Serve(args) => serve(args),
        Command::Import(args) => import(args),
        Command::Backfill(args) => backfill(args),
        Command::User { command } => user(command),
        Command::Token { command } => token(command),
        Command::Project { command } => project(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_check(file: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::from_file_and_env(file.as_deref())?;
    print!("{}", config.to_toml_redacted());
    Ok(())
}

fn query(args: QueryArgs) -> anyhow::Result<()> {
    let result = match &args.url {
        Some(url) => {
            if !args.rrweb.is_empty() || !args.events.is_empty() {
                bail!("--url queries a server; --rrweb and --events are for batch mode");
            }
            let token = args.token.as_deref().context(
                "--url needs an API token: pass --token or set SIGHTFLOW_TOKEN (`sightflow token create --role viewer`)",
            )?;
            sightflow::client::query(url, token, &args.sql, args.min_as_of)?
        }
        None => query_files(&args)?,
    };
    use sightflow_query::format;
    match args.format {
        Format::Table => print!("{}", format::to_table(&result)),
        Format::Csv => print!("{}", format::to_csv(&result)),
        Format::Json => println!("{}", serde_json::Value::Array(format::rows_as_objects(&result))),
    }
    Ok(())
}

/// Batch mode: the views of the input files, queried.
fn query_files(args: &QueryArgs) -> anyhow::Result<sightflow_query::QueryResult> {
    let config = Config::from_file_and_env(args.config.as_deref())?;
    if args.rrweb.len() != args.device.len() {
        bail!(
            "each --rrweb file needs its own --device (got {} files and {} devices)",
            args.rrweb.len(),
            args.device.len()
        );
    }
    if args.rrweb.is_empty() && args.events.is_empty() {
        bail!("no input: give --rrweb FILE --device ID and/or --events FILE");
    }
    if args.tab.len() > args.rrweb.len() {
        bail!("{} --tab values for {} --rrweb files: give at most one per file", args.tab.len(), args.rrweb.len());
    }
    let tabs = batch::tabs_for(&args.device, &args.tab);
    let mut inputs: Vec<Input> = args
        .rrweb
        .iter()
        .zip(&args.device)
        .zip(tabs)
        .map(|((path, device), tab)| Input::Rrweb { path: path.clone(), device: device.clone(), tab })
        .collect();
    inputs.extend(args.events.iter().map(|path| Input::Events { path: path.clone() }));
    let loaded = batch::load(&inputs, &args.project, sightflow::serve::now_ms())?;
    for (file, r) in &loaded.rejected {
        eprintln!("warning: {file}: {r}");
    }
    if !loaded.rejected.is_empty() {
        eprintln!("warning: {} events rejected, {} accepted", loaded.rejected.len(), loaded.envelopes.len());
    }
    let snapshot = batch::run(&config, loaded.envelopes)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the query runtime")?;
    runtime
        .block_on(sightflow_query::execute(&snapshot, &args.sql, &sightflow_query::QueryLimits::default()))
        .context("query failed")
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (stderr on a full disk) is dropped: reporting it
    // would print to the same stderr, and a failed print panics.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let mut config = Config::from_file_and_env(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(l) = args.pg_listen {
        config.server.pg_listen = l;
    }
    let pg_listen: Option<std::net::SocketAddr> = match config.server.pg_listen.as_str() {
        "" => None,
        a => Some(a.parse().with_context(|| format!("--pg-listen {a:?} is not an address like 127.0.0.1:5433"))?),
    };
    let listen: std::net::SocketAddr = config
        .server
        .listen
        .parse()
        .with_context(|| format!("--listen {:?} is not an address like 127.0.0.1:8080", config.server.listen))?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from(&config.server.data_dir));
    sightflow::serve::raise_open_files_limit(config.server.max_connections);
    // The read side's blocking work runs here, apart from ingest's threads. It outlives
    // the serving runtime and is dropped outside any async context.
    let read_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(16)
        .thread_name("read")
        .enable_all()
        .build()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("http").enable_all().build()?;
    let read = read_rt.handle().clone();
    let served = rt.block_on(async move {
        // A file-size limit (a full disk, a quota) must fail writes, not kill the process.
        let _xfsz = sightflow::serve::survive_file_size_limit();
        let options = sightflow::serve::serve_options(&config);
        let started = sightflow::serve::build(config, &data_dir, read)?;
        started.server.spawn_maintenance();
        if args.demo {
            sightflow::demo::spawn(started.server.clone(), std::time::Duration::from_secs(4));
        }
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        if let Some((email, password)) = &started.first_owner {
            // Once, on the terminal (not through the log): the store had no users.
            eprintln!(
                "\n  created the first owner: open the console at http://{local}/ and log in as {email} with password {password}\n  \
                 (shown once; change it with `sightflow user passwd {email}`, add people with `sightflow user add`)\n"
            );
        }
        tracing::info!(addr = %local, data_dir = %data_dir.display(), demo = args.demo, "sightflow listening");
        let pg_listener = match pg_listen {
            Some(pg) => Some(
                tokio::net::TcpListener::bind(pg)
                    .await
                    .with_context(|| format!("cannot listen on {pg} (server.pg_listen)"))?,
            ),
            None => None,
        };
        println!("sightflow listening on http://{local}");
        if let Some(pg_listener) = pg_listener {
            let pg_local = pg_listener.local_addr()?;
            tracing::info!(addr = %pg_local, "postgres wire listening");
            // Nobody may be reading stdout any more: a closed pipe is not an error here.
            let _ = writeln!(std::io::stdout(), "postgres wire on {pg_local} (user: anything, password: an API token)");
            tokio::spawn(sightflow_query::pg::serve(pg_listener, started.state.clone()));
        }
        sightflow_query::server::serve(listener, started.router.clone(), options, async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
        anyhow::Ok(started)
    });
    drop(rt);
    read_rt.shutdown_background();
    // The engine stops here, outside the runtimes.
    drop(served?);
    Ok(())
}

fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    use sightflow::backfill::{self, ProgressOutput, Until};
    let from: sightflow_config::StartAt = args.from.parse().map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let until: Until = args.until.parse().map_err(|e| anyhow::anyhow!("--until: {e}"))?;
    if args.out.is_none() && args.serve.is_none() {
        bail!("say what to do with the views: --out DIR (Parquet per view) and/or --serve ADDRESS");
    }
    let listen: Option<std::net::SocketAddr> = args
        .serve
        .as_deref()
        .map(|a| a.parse().with_context(|| format!("--serve {a:?} is not an address like 127.0.0.1:8081")))
        .transpose()?;
    init_logs(LogFormat::Text);
    let config = Config::from_file_and_env(args.config.as_deref())?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from(&config.server.data_dir));
    let progress = match args.progress {
        ProgressArg::Auto => ProgressOutput::Auto,
        ProgressArg::Lines => ProgressOutput::Lines,
        ProgressArg::None => ProgressOutput::None,
    };
    let source = if config.kafka.enabled() {
        format!("kafka topic {} on {}", config.kafka.topic, config.kafka.brokers)
    } else {
        format!("embedded log in {}", data_dir.display())
    };
    let done = backfill::backfill(&config, &data_dir, &from, &until, progress)?;
    let s = &done.stats;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "backfilled {} events ({} records, {:.1} MB, {} malformed skipped) from the {source} in {:.2} s: {:.0} events/s",
        s.events,
        s.records,
        s.bytes as f64 / 1e6,
        s.malformed,
        secs,
        s.events as f64 / secs
    );
    if let Some(dir) = &args.out {
        for (view, rows, path) in backfill::write_parquet(&done.snapshot, dir)? {
            println!("wrote {view}: {rows} rows to {}", path.display());
        }
    }
    if let Some(listen) = listen {
        backfill::serve_read_only(&config, &data_dir, &done, listen)
            .with_context(|| format!("cannot serve on {listen}"))?;
    }
    Ok(())
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let summary = sightflow::client::import(
        &args.url,
        &args.project,
        &args.device,
        &args.tab,
        &text,
        args.chunk,
        std::time::Duration::from_secs(args.retry_for),
    )?;
    for (i, reason) in &summary.rejected {
        eprintln!("warning: {}: event {i}: {reason}", args.file.display());
    }
    println!(
        "imported {} events in {} chunks ({} late, {} rejected, {} retries){}",
        summary.accepted,
        summary.chunks,
        summary.late,
        summary.rejected.len(),
        summary.retries,
        summary.min_as_of.map(|t| format!("; visible from as_of {t} (query with min_as_of {t})")).unwrap_or_default()
    );
    if args.wait
        && let Some(t) = summary.min_as_of
    {
        let token = args.token.as_deref().context("--wait asks the views: pass --token (or SIGHTFLOW_TOKEN)")?;
        sightflow::client::wait_visible(&args.url, token, t, std::time::Duration::from_secs(args.retry_for))?;
        println!("the views reflect the import (as_of >= {t})");
    }
    Ok(())
}

fn open_store(args: &StoreArgs) -> anyhow::Result<MetaStore> {
    let config = Config::from_file_and_env(args.config.as_deref())?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(&config.server.data_dir));
    let store = sightflow::accounts::open(&config, &data_dir)?;
    // The configuration's projects exist for commands as they do for `serve`.
    sightflow::accounts::seed(&store, &config)?;
    Ok(store)
}

/// A password from standard input when it is not a terminal (one line), else prompted
/// twice on the terminal without echo.
fn read_password(what: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        let p = line.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(p);
    }
    let first = rpassword::prompt_password(format!("{what}: "))?;
    let again = rpassword::prompt_password("again: ")?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

fn grant(role: Role, project: Option<String>) -> Grant {
    Grant { project, role }
}

fn scope_text(g: &Grant) -> String {
    format!("{} on {}", g.role, g.project.as_deref().unwrap_or("every project"))
}

fn time_text(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(header);
    for r in rows {
        t.add_row(r);
    }
    println!("{t}");
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { email, role, project, store } => {
            let store = open_store(&store)?;
            let password = read_password(&format!("password for {email}"))?;
            let u = store.user_add(&email, &password, grant(role, project))?;
            eprintln!("added {} ({})", u.email, u.grants.iter().map(scope_text).collect::<Vec<_>>().join(", "));
        }
        UserCommand::Passwd { email, store } => {
            let store = open_store(&store)?;
            let password = read_password(&format!("new password for {email}"))?;
            store.user_passwd(&email, &password)?;
            eprintln!("password of {email} changed; their console logins ended");
        }
        UserCommand::Grant { email, role, project, store } => {
            let store = open_store(&store)?;
            let g = grant(role, project);
            store.user_grant(&email, g.clone())?;
            eprintln!("{email} is now {}", scope_text(&g));
        }
        UserCommand::Remove { email, store } => {
            open_store(&store)?.user_delete(&email)?;
            eprintln!("removed {email}");
        }
        UserCommand::List { store } => {
            let rows = open_store(&store)?
                .users()?
                .into_iter()
                .map(|u| {
                    vec![
                        u.email,
                        u.grants.iter().map(scope_text).collect::<Vec<_>>().join(", "),
                        time_text(Some(u.created_ms)),
                    ]
                })
                .collect();
            print_table(&["email", "roles", "created"], rows);
        }
    }
    Ok(())
}

fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { role, project, name, store } => {
            let store = open_store(&store)?;
            let (secret, row) = store.token_create(&name, role, project.as_deref(), "cli")?;
            // The token alone on stdout, so that `$(sightflow token create ...)` takes it.
            println!("{secret}");
            eprintln!(
                "created token {} ({}); it is shown once: keep it now",
                row.id,
                scope_text(&Grant { project: row.project, role: row.role })
            );
        }
        TokenCommand::List { store } => {
            let rows = open_store(&store)?
                .tokens()?
                .into_iter()
                .map(|t| {
                    let state = if t.revoked_ms.is_some() {
                        format!("revoked {}", time_text(t.revoked_ms))
                    } else {
                        "active".into()
                    };
                    vec![
                        t.id,
                        t.name,
                        t.role.to_string(),
                        t.project.unwrap_or_else(|| "every project".into()),
                        time_text(Some(t.created_ms)),
                        time_text(t.last_used_ms),
                        state,
                    ]
                })
                .collect();
            print_table(&["id", "name", "role", "project", "created", "last used", "state"], rows);
        }
        TokenCommand::Revoke { id, store } => {
            open_store(&store)?.token_revoke(&id)?;
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

fn project(command: ProjectCommand) -> anyhow::Result<()> {
    match command {
        ProjectCommand::Add { name, ingest_key, origins, time_zone, retention_days, rate_limit, store } => {
            for o in &origins {
                if o != "*" && !o.contains("://") {
                    bail!("--origin {o:?}: expected an origin like https://shop.test, https://*.shop.test or *");
                }
            }
            let p = open_store(&store)?.project_add(
                &name,
                sightflow_connectors::meta::NewProject {
                    ingest_key,
                    allowed_origins: origins,
                    time_zone,
                    retention_days,
                    rate_limit_per_s: rate_limit,
                },
            )?;
            println!("{}", p.ingest_key);
            eprintln!("added project {} (ingest key above; a running server takes its events within a second)", p.name);
        }
        ProjectCommand::List { store } => {
            let rows = open_store(&store)?
                .projects()?
                .into_iter()
                .map(|p| {
                    vec![
                        p.name,
                        p.ingest_key,
                        if p.allowed_origins.is_empty() { "-".into() } else { p.allowed_origins.join(" ") },
                        p.time_zone,
                        if p.retention_days == 0 { "server's".into() } else { format!("{} days", p.retention_days) },
                    ]
                })
                .collect();
            print_table(&["name", "ingest key", "allowed origins", "time zone", "retention"], rows);
        }
    }
    Ok(())
}
