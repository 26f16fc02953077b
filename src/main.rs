//! The `sightflow` command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sightflow::batch::{self, Input};
use sightflow_config::Config;

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
    /// Run SQL over the views computed from files (batch mode).
    Query(QueryArgs),
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
    /// Project key the input events belong to.
    #[arg(long, default_value = "demo")]
    project: String,
    /// A raw rrweb recording (JSON array); pair each with a --device.
    #[arg(long)]
    rrweb: Vec<PathBuf>,
    /// Device id of the corresponding --rrweb file.
    #[arg(long)]
    device: Vec<String>,
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
    print!("{}", config.to_toml());
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn query(args: QueryArgs) -> anyhow::Result<()> {
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
    let mut inputs: Vec<Input> = args
        .rrweb
        .iter()
        .zip(&args.device)
        .map(|(path, device)| Input::Rrweb { path: path.clone(), device: device.clone() })
        .collect();
    inputs.extend(args.events.iter().map(|path| Input::Events { path: path.clone() }));
    let loaded = batch::load(&inputs, &args.project, now_ms()).map_err(anyhow::Error::msg)?;
    for (file, r) in &loaded.rejected {
        eprintln!("warning: {file}: {r}");
    }
    if !loaded.rejected.is_empty() {
        eprintln!("warning: {} events rejected, {} accepted", loaded.rejected.len(), loaded.envelopes.len());
    }
    let snapshot = batch::run(&config, loaded.envelopes).map_err(anyhow::Error::msg)?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the query runtime")?;
    let result = runtime
        .block_on(sightflow_query::execute(&snapshot, &args.sql, &sightflow_query::QueryLimits::default()))
        .map_err(|e| anyhow::anyhow!("query failed: {e}"))?;
    match args.format {
        Format::Table => print!("{}", sightflow_query::format::to_table(&result)),
        Format::Csv => print!("{}", sightflow_query::format::to_csv(&result)),
        Format::Json => println!("{}", serde_json::Value::Array(sightflow_query::format::rows_as_objects(&result))),
    }
    Ok(())
}
