//! Runs the views dataflow on timely workers over an abstract source.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use differential_dataflow::VecCollection;
use sightflow_operators::stats::StateStats;
use sightflow_operators::views::{ViewCollections, build_views};
use sightflow_operators::{Event, Params, Update};
use sightflow_proto::v1::Envelope;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::UnorderedInput;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Stream};

use crate::convert::envelope_events;
use crate::publish::{OnPublish, Publisher, Snapshots, WorkerUpdate, spawn_publisher};

pub use sightflow_proto::source::{Empty, OrderedSource, Progress, Source, SourceError, VecSource};

/// How to run.
pub struct RunOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// The view definitions.
    pub params: Arc<Params>,
    /// Called at every publish (tests compare views with the reference there).
    pub on_publish: Option<OnPublish>,
    /// How long an idle worker parks between polls.
    pub idle_park: Duration,
    /// Only the final state of a finite input will be read: publish once, at the end,
    /// and let operators fold each activation's changes into one time.
    pub final_only: bool,
}

/// A running engine.
pub struct Running {
    /// Where the views are published.
    pub snapshots: Snapshots,
    /// State sizes per view and worker.
    pub stats: StateStats,
    workers: Option<timely::communication::initialize::WorkerGuards<()>>,
    publisher: Option<std::thread::JoinHandle<()>>,
    /// Set to make every worker stop reading its source and finish.
    stop: Arc<AtomicBool>,
    /// The first source failure: the run stops, and [`Running::join`] reports it.
    failure: Arc<std::sync::Mutex<Option<SourceError>>>,
}

impl Drop for Running {
    /// Stops live sources so that dropping a running dataflow ends its threads.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Timely could not start the workers (its message).
    #[error("cannot start dataflow workers: {0}")]
    Start(String),
    /// A worker thread panicked (the panic's message).
    #[error("dataflow worker failed: {0}")]
    Worker(String),
    /// The publisher thread panicked.
    #[error("the publisher thread panicked")]
    Publisher,
    /// A source failed: the views are missing part of their input.
    #[error("the input failed: {0}")]
    Source(#[from] SourceError),
}

impl Running {
    /// Waits for every worker and the publisher to finish (finite sources).
    pub fn join(mut self) -> Result<(), RunError> {
        self.join_threads()
    }

    /// Stops the sources, then waits for the threads to finish.
    pub fn shutdown(mut self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::SeqCst);
        self.join_threads()
    }

    fn join_threads(&mut self) -> Result<(), RunError> {
        if let Some(w) = self.workers.take() {
            for r in w.join() {
                r.map_err(RunError::Worker)?;
            }
        }
        if let Some(p) = self.publisher.take() {
            p.join().map_err(|_| RunError::Publisher)?;
        }
        if let Some(e) = self.failure.lock().ok().and_then(|mut f| f.take()) {
            return Err(e.into());
        }
        Ok(())
    }

    /// The source failure that stopped the run, if one did (the run goes on otherwise).
    pub fn failure(&self) -> Option<SourceError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

/// Starts the dataflow: `make_source(worker, workers)` builds each worker's source.
pub fn start<F>(options: RunOptions, make_source: F) -> Result<Running, RunError>
where
    F: Fn(usize, usize) -> Box<dyn Source> + Send + Sync + 'static,
{
    let params = options.params.clone();
    let stats = StateStats::default();
    let snapshots = Snapshots::new(&params);
    let (tx, rx) = mpsc::channel::<WorkerUpdate>();
    let publisher = Publisher::new(
        options.workers,
        params.clone(),
        snapshots.clone(),
        stats.clone(),
        options.on_publish,
        options.final_only,
    );
    let per_time = !options.final_only;
    let publisher = spawn_publisher(publisher, rx, snapshots.clone());
    let tx = std::sync::Mutex::new(tx);
    let worker_stats = stats.clone();
    let idle = options.idle_park;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_workers = stop.clone();
    let failure: Arc<std::sync::Mutex<Option<SourceError>>> = Arc::default();
    let worker_failure = failure.clone();
    let mut config =
        if options.workers <= 1 { timely::Config::thread() } else { timely::Config::process(options.workers) };
    // Arrangements keep merging while the input is idle, so that state shrinks to its
    // compact size instead of holding the unmerged history of recent changes.
    differential_dataflow::configure(
        &mut config.worker,
        &differential_dataflow::Config::default().idle_merge_effort(Some(1000)),
    );
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let tx = tx.lock().map(|t| t.clone()).expect("sender");
        let params = params.clone();
        let stats = worker_stats.clone();
        let stop_worker = stop_workers.clone();
        let failure = worker_failure.clone();
        crate::logging::attach(worker, stats.clone());
        let probe = ProbeHandle::new();
        let (mut input, mut cap, measured) = worker.dataflow::<u64, _, _>(|scope| {
            let ((input, cap), events) = scope.new_unordered_input::<CapacityContainerBuilder<Vec<Event>>>();
            let mut views = build_views(events, params.clone(), stats.clone(), per_time);
            let measured = std::mem::take(&mut views.measured);
            let streams = tagged(views);
            let all = scope.concatenate(streams).probe_with(&probe);
            let mut buf: Vec<(u64, Update)> = Vec::new();
            let mut last: Option<Option<u64>> = None;
            all.sink(Pipeline, "Publish", move |(input, frontier)| {
                input.for_each(|_cap, data| buf.append(data));
                let f = frontier.frontier().iter().next().copied();
                if last != Some(f) || !buf.is_empty() {
                    let _ = tx.send(WorkerUpdate { worker: index, updates: std::mem::take(&mut buf), frontier: f });
                    last = Some(f);
                }
            });
            (input, cap, measured)
        });
        let measure = |stats: &StateStats| {
            for m in &measured {
                let size = m.size();
                stats.set(m.view, index, size.records, size.bytes);
            }
        };
        let mut measured_at = Instant::now();
        crate::logging::names_known(worker);
        let mut source = make_source(index, peers);
        let mut items: Vec<(u64, Envelope)> = Vec::new();
        let mut events: Vec<Event> = Vec::new();
        loop {
            items.clear();
            let progress = match source.poll(&mut items) {
                Ok(p) => p,
                Err(e) => {
                    // Stop every worker: the views would be incomplete without this input.
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    stop_worker.store(true, Ordering::SeqCst);
                    break;
                }
            };
            if !items.is_empty() {
                items.sort_by_key(|(t, _)| *t);
                let mut i = 0;
                while i < items.len() {
                    // Never before the capability: such an envelope is stamped at it.
                    let t = items[i].0.max(*cap.time());
                    events.clear();
                    while i < items.len() && items[i].0.max(*cap.time()) == t {
                        envelope_events(&items[i].1, &mut events);
                        i += 1;
                    }
                    let at = cap.delayed(&t);
                    input.activate().session(&at).give_iterator(events.drain(..));
                }
            }
            match progress {
                Progress::At { frontier, busy } => {
                    if frontier > *cap.time() {
                        cap.downgrade(&frontier);
                    }
                    worker.step_or_park(if busy { Some(Duration::ZERO) } else { Some(idle) });
                    if measured_at.elapsed() >= MEASURE_EVERY {
                        measure(&stats);
                        measured_at = Instant::now();
                    }
                }
                Progress::Done => break,
            }
            if stop_worker.load(Ordering::Relaxed) {
                break;
            }
        }
        drop(cap);
        drop(input);
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        measure(&stats);
    })
    .map_err(RunError::Start)?;
    Ok(Running { snapshots, stats, workers: Some(guards), publisher: Some(publisher), stop, failure })
}

/// How often the measured arrangements are sized.
const MEASURE_EVERY: Duration = Duration::from_millis(20);

macro_rules! declare_tagged {
    ($($id:ident, $field:ident, $name:literal, $row:ty, $diff:ty, $shape:ident $(($vc:ident))?, $src:ident $(($out:ident))?;)*) => {
        /// Every view's changes, tagged with their view.
        fn tagged(views: ViewCollections<'_>) -> Vec<Stream<'_, u64, Vec<(u64, Update)>>> {
            vec![$(tag(views.$field, Update::$id)),*]
        }
    };
}

sightflow_operators::for_each_view!(declare_tagged);

/// Maps a view collection to tagged updates.
fn tag<'s, D, R>(c: VecCollection<'s, u64, D, R>, f: fn(D, R) -> Update) -> Stream<'s, u64, Vec<(u64, Update)>>
where
    D: Clone + 'static,
    R: Clone + 'static,
{
    c.inner.map(move |(d, t, r)| (t, f(d, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fails on its second poll; the other worker's source never ends on its own.
    struct Failing {
        polls: usize,
    }

    impl Source for Failing {
        fn poll(&mut self, _out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
            self.polls += 1;
            if self.polls < 2 {
                return Ok(Progress::At { frontier: 0, busy: true });
            }
            Err(SourceError { partition: Some(3), offset: Some(17), reason: "checksum mismatch".into() })
        }
    }

    struct Forever;

    impl Source for Forever {
        fn poll(&mut self, _out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
            Ok(Progress::At { frontier: 0, busy: false })
        }
    }

    #[test]
    fn a_failing_source_stops_every_worker_and_is_reported() {
        let options = RunOptions {
            workers: 2,
            params: Arc::new(Params::from_config(&sightflow_config::Config::defaults())),
            on_publish: None,
            idle_park: Duration::from_millis(1),
            final_only: true,
        };
        let running = start(options, |worker, _| {
            if worker == 0 { Box::new(Failing { polls: 0 }) as Box<dyn Source> } else { Box::new(Forever) }
        })
        .unwrap();
        let err = running.join().unwrap_err().to_string();
        assert!(err.contains("partition 3 at offset 17: checksum mismatch"), "{err}");
    }
}
