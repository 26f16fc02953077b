//! Batch mode: run the dataflow over files to completion, then query the views.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sightflow_config::Config;
use sightflow_connectors::files::{self, Rejection, SplitError};
use sightflow_connectors::json::Defaults;
use sightflow_connectors::rrweb::Decoders;
use sightflow_connectors::validate::Limits;
use sightflow_dataflows::{OrderedSource, RunError, RunOptions, Snapshot, VecSource, start};
use sightflow_operators::Params;
use sightflow_operators::event::tick_ceil;
use sightflow_proto::v1::Envelope;

/// Why batch mode could not read its inputs or finish.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Input { path: PathBuf, source: SplitError },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// One input file.
#[derive(Clone, Debug)]
pub enum Input {
    /// A raw rrweb recording (JSON array) of one tab of `device` (`tab` empty: the
    /// device id).
    Rrweb { path: PathBuf, device: String, tab: String },
    /// Newline-delimited JSON events.
    Events { path: PathBuf },
}

/// What was read, and what was not.
#[derive(Debug, Default)]
pub struct Loaded {
    pub envelopes: Vec<Envelope>,
    /// `(file, rejection)` for every event that was not accepted.
    pub rejected: Vec<(String, Rejection)>,
}

/// The tab of each of `devices`' recordings: `tabs[i]` when given, else the device id
/// when the device has one recording, else `device/n` for its n-th (so that two
/// recordings of one device are two tabs, not one).
pub fn tabs_for(devices: &[String], tabs: &[String]) -> Vec<String> {
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if let Some(t) = tabs.get(i).filter(|t| !t.is_empty()) {
                return t.clone();
            }
            let total = devices.iter().filter(|x| *x == d).count();
            let nth = devices[..i].iter().filter(|x| *x == d).count();
            if total == 1 { d.clone() } else { format!("{d}/{nth}") }
        })
        .collect()
}

/// Reads and decodes every input.
pub fn load(inputs: &[Input], project: &str, now_ms: i64) -> Result<Loaded, BatchError> {
    let limits = Limits::any_age(now_ms);
    let decoders = Decoders::default();
    let mut loaded = Loaded::default();
    for input in inputs {
        let (path, import) = match input {
            Input::Rrweb { path, device, tab } => {
                let text = read(path)?;
                let tab = if tab.is_empty() { device } else { tab };
                let import = files::read_rrweb(&text, project, device, tab, &limits, &decoders, None)
                    .map_err(|source| BatchError::Input { path: path.clone(), source })?;
                (path, import)
            }
            Input::Events { path } => {
                let text = read(path)?;
                let defaults = Defaults { project: project.to_string(), device_id: String::new() };
                (path, files::read_ndjson(&text, &defaults, &limits, &decoders))
            }
        };
        let name = path.display().to_string();
        loaded.envelopes.extend(import.envelopes);
        loaded.rejected.extend(import.rejected.into_iter().map(|r| (name.clone(), r)));
    }
    Ok(loaded)
}

fn read(path: &PathBuf) -> Result<String, BatchError> {
    std::fs::read_to_string(path).map_err(|source| BatchError::Read { path: path.clone(), source })
}

/// Runs the dataflow over envelopes to completion and returns the final snapshot.
/// Every event is on time: its logical time is its event time rounded up to a tick.
pub fn run(config: &Config, envelopes: Vec<Envelope>) -> Result<Arc<Snapshot>, RunError> {
    let params = Arc::new(Params::from_config(config));
    let tick = params.tick;
    let workers = config.engine.workers;
    let mut shares: Vec<Vec<(u64, Envelope)>> = vec![Vec::new(); workers];
    for (i, e) in envelopes.into_iter().enumerate() {
        shares[i % workers].push((tick_ceil(e.ts, tick), e));
    }
    let shares = std::sync::Mutex::new(shares.into_iter().map(Some).collect::<Vec<_>>());
    let running = start(
        RunOptions { workers, params, on_publish: None, idle_park: Duration::from_millis(1), final_only: true },
        move |index, _| {
            let items = shares.lock().ok().and_then(|mut s| s[index].take()).unwrap_or_default();
            Box::new(VecSource::new(items))
        },
    )?;
    let snapshots = running.snapshots.clone();
    running.join()?;
    Ok(snapshots.wait_complete())
}

/// Runs the dataflow to completion over an input too large to hold at once: worker `i`
/// of `config.engine.workers` reads `stream(i)`, its disjoint share of the input, which
/// must yield envelopes in event-time order (a share that goes back in time stops the
/// run with an error naming the times). Returns the final snapshot.
pub fn run_streams<F>(config: &Config, stream: F) -> Result<Arc<Snapshot>, RunError>
where
    F: Fn(usize) -> Box<dyn Iterator<Item = Envelope> + Send> + Send + Sync + 'static,
{
    let params = Arc::new(Params::from_config(config));
    let tick = params.tick;
    let running = start(
        RunOptions {
            workers: config.engine.workers,
            params,
            on_publish: None,
            idle_park: Duration::from_millis(1),
            final_only: true,
        },
        move |index, _| Box::new(OrderedSource::ordered(stream(index).map(move |e| (tick_ceil(e.ts, tick), e)))),
    )?;
    let snapshots = running.snapshots.clone();
    running.join()?;
    Ok(snapshots.wait_complete())
}
