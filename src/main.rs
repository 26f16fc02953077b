//! The `sightflow` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sightflow::batch::{self, Input};
use sightflow_config::Config;

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
    /// Wait until the views reflect every imported event before exiting.
    #[arg(long)]
    wait: bool,
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
            sightflow::client::query(url, &args.sql, args.min_as_of)?
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
        tracing::info!(addr = %local, data_dir = %data_dir.display(), demo = args.demo, "sightflow listening");
        println!("sightflow listening on http://{local}");
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
        backfill::serve_read_only(&config, &done, listen).with_context(|| format!("cannot serve on {listen}"))?;
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
        sightflow::client::wait_visible(&args.url, t, std::time::Duration::from_secs(args.retry_for))?;
        println!("the views reflect the import (as_of >= {t})");
    }
    Ok(())
}
