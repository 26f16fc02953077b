//! Consistent snapshots of all views.
//!
//! Each worker's sink sends its view changes and its frontier to the [`Publisher`]
//! (its own thread). When the least frontier over all workers advances, the publisher
//! applies every change before it and publishes one immutable [`Snapshot`] of all views
//! stamped `as_of = frontier - 1`: a query reads one snapshot and so sees all views at
//! one time. Publishing swaps an `Arc`, so it never blocks or tears a running query.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use sightflow_operators::stats::{StateSize, StateStats};
use sightflow_operators::sym::{self, Sym};
use sightflow_operators::{Params, Update, ViewId};

use crate::retention::Retention;
use crate::schema::{STATE_TABLE, Tables, state_table};

/// All views at one logical time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Every event with logical time `<= as_of` is reflected, and nothing later.
    pub as_of: u64,
    /// The input has ended and everything was processed.
    pub complete: bool,
    /// Tables by name: every view in registry order, then `sightflow_state`; each table
    /// is a list of batches (see [`crate::segments`]), in no particular row order.
    pub tables: Vec<(&'static str, SchemaRef, Vec<RecordBatch>)>,
    /// State held per view when the snapshot was taken.
    pub state: BTreeMap<String, StateSize>,
    /// How long building this snapshot took (µs).
    pub build_us: u64,
    /// Closed sessions that have left the views so far (`session.retention_ms`).
    pub sessions_left: u64,
}

impl Snapshot {
    fn empty(params: &Params) -> Snapshot {
        let mut t = Tables::default();
        let mut tables: Vec<(&'static str, SchemaRef, Vec<RecordBatch>)> = ViewId::ALL
            .iter()
            .map(|v| {
                let (s, b) = t.arrow(*v, params);
                (v.name(), s, b)
            })
            .collect();
        let b = state_table(&BTreeMap::new());
        tables.push((STATE_TABLE, b.schema(), vec![b]));
        Snapshot { as_of: 0, complete: false, tables, state: BTreeMap::new(), build_us: 0, sessions_left: 0 }
    }

    /// A table's batches by name.
    pub fn batches(&self, name: &str) -> Option<&[RecordBatch]> {
        self.tables.iter().find(|(n, _, _)| *n == name).map(|(_, _, b)| b.as_slice())
    }

    /// A table by name as one batch (a copy: for tests and small tables).
    pub fn table(&self, name: &str) -> Option<RecordBatch> {
        let (_, schema, batches) = self.tables.iter().find(|(n, _, _)| *n == name)?;
        Some(concat_batches(schema, batches).expect("a table's batches share its schema"))
    }

    /// Rows of a table.
    pub fn num_rows(&self, name: &str) -> Option<usize> {
        self.batches(name).map(|b| b.iter().map(|b| b.num_rows()).sum())
    }
}

struct Shared {
    latest: Arc<Snapshot>,
    closed: bool,
    /// Tasks waiting (without a thread) for a later snapshot.
    wakers: Vec<std::task::Waker>,
}

/// Where snapshots are published and awaited.
#[derive(Clone)]
pub struct Snapshots {
    inner: Arc<(Mutex<Shared>, Condvar)>,
}

impl Snapshots {
    /// A store whose latest snapshot is empty (every view with no rows, at `as_of` 0).
    pub fn new(params: &Params) -> Snapshots {
        Snapshots {
            inner: Arc::new((
                Mutex::new(Shared { latest: Arc::new(Snapshot::empty(params)), closed: false, wakers: Vec::new() }),
                Condvar::new(),
            )),
        }
    }

    /// The newest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.inner.0.lock().map(|s| s.latest.clone()).unwrap_or_else(|e| e.into_inner().latest.clone())
    }

    /// Waits until a snapshot with `as_of >= min_as_of` (or a complete one) is
    /// published; on timeout returns the newest one as `Err`.
    pub fn wait_for(&self, min_as_of: u64, timeout: Duration) -> Result<Arc<Snapshot>, Arc<Snapshot>> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.inner;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.latest.as_of >= min_as_of || g.latest.complete {
                return Ok(g.latest.clone());
            }
            if g.closed {
                return Err(g.latest.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(g.latest.clone());
            }
            g = cvar.wait_timeout(g, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// A future that resolves once a snapshot with `as_of >= min_as_of` (or a complete
    /// one) is published, or with `Err(latest)` once the engine has stopped. It holds no
    /// thread while it waits; bound its wait with a timer.
    pub fn wait_async(&self, min_as_of: u64) -> WaitFor {
        WaitFor { snapshots: self.clone(), min_as_of }
    }

    /// Waits for the final snapshot of a finite input.
    pub fn wait_complete(&self) -> Arc<Snapshot> {
        let (lock, cvar) = &*self.inner;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !g.latest.complete && !g.closed {
            g = cvar.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.latest.clone()
    }

    fn publish(&self, snap: Snapshot) {
        let (lock, cvar) = &*self.inner;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        g.latest = Arc::new(snap);
        let wakers = std::mem::take(&mut g.wakers);
        drop(g);
        cvar.notify_all();
        wakers.into_iter().for_each(std::task::Waker::wake);
    }

    /// No more snapshots will come (the engine stopped).
    pub fn close(&self) {
        let (lock, cvar) = &*self.inner;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        g.closed = true;
        let wakers = std::mem::take(&mut g.wakers);
        drop(g);
        cvar.notify_all();
        wakers.into_iter().for_each(std::task::Waker::wake);
    }
}

/// See [`Snapshots::wait_async`].
pub struct WaitFor {
    snapshots: Snapshots,
    min_as_of: u64,
}

impl std::future::Future for WaitFor {
    type Output = Result<Arc<Snapshot>, Arc<Snapshot>>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let mut g = self.snapshots.inner.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.latest.as_of >= self.min_as_of || g.latest.complete {
            return std::task::Poll::Ready(Ok(g.latest.clone()));
        }
        if g.closed {
            return std::task::Poll::Ready(Err(g.latest.clone()));
        }
        // Woken at the next publish (which drains the list); a task is polled once per
        // wake, so it is listed about once.
        g.wakers.push(cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// A callback invoked at every publish with `as_of`, whether the input is complete,
/// and the materialised views.
pub type OnPublish = Box<dyn FnMut(u64, bool, &Tables) + Send>;

/// One worker's message: its changes and its new frontier (`None` when done).
pub struct WorkerUpdate {
    /// The worker's index.
    pub worker: usize,
    /// View changes with their logical times.
    pub updates: Vec<(u64, Update)>,
    /// No later change from this worker has a time below this; `None` when it is done.
    pub frontier: Option<u64>,
}

/// Applies view changes and publishes snapshots at frontier advances.
pub struct Publisher {
    params: Arc<Params>,
    tables: Tables,
    frontiers: Vec<Option<u64>>,
    pending: BTreeMap<u64, Vec<Update>>,
    published: u64,
    max_time: u64,
    complete: bool,
    snapshots: Snapshots,
    stats: StateStats,
    on_publish: Option<OnPublish>,
    final_only: bool,
    /// The string-table epoch of the last reclaim.
    reclaimed: u64,
    /// A one-shot build holds the string table until its snapshot is built.
    pin: Option<sym::Pinned>,
    /// When the published views were last measured.
    measured_at: Option<Instant>,
    /// Closed sessions leave the views (`session.retention_ms`).
    retention: Option<Retention>,
    /// Retractions of rows not held, kept until the rest of their time is applied.
    absent: Vec<Update>,
}

impl Publisher {
    /// `final_only`: publish only the complete snapshot of a finite input.
    pub fn new(
        workers: usize,
        params: Arc<Params>,
        snapshots: Snapshots,
        stats: StateStats,
        on_publish: Option<OnPublish>,
        final_only: bool,
    ) -> Publisher {
        Publisher {
            tables: Tables::default(),
            frontiers: vec![Some(0); workers],
            pending: BTreeMap::new(),
            published: 0,
            max_time: 0,
            complete: false,
            snapshots,
            stats,
            on_publish,
            final_only,
            reclaimed: 0,
            pin: final_only.then(Sym::pin),
            measured_at: None,
            retention: Retention::new(params.retention),
            absent: Vec::new(),
            params,
        }
    }

    /// Takes one worker's message; publishes when the least frontier advanced.
    pub fn receive(&mut self, msg: WorkerUpdate) {
        self.absorb(msg);
        self.maybe_publish();
    }

    /// Takes one worker's message without publishing.
    pub fn absorb(&mut self, msg: WorkerUpdate) {
        for (t, u) in msg.updates {
            self.pending.entry(t).or_default().push(u);
        }
        if let Some(f) = self.frontiers.get_mut(msg.worker) {
            *f = msg.frontier;
        }
    }

    /// Publishes a snapshot when the least frontier has advanced.
    pub fn maybe_publish(&mut self) {
        let least = self.frontiers.iter().map(|f| f.unwrap_or(u64::MAX)).min().unwrap_or(u64::MAX);
        if self.complete {
            return;
        }
        if least == u64::MAX {
            self.apply_before(u64::MAX);
            self.complete = true;
            let as_of = self.max_time.max(self.published.saturating_sub(1));
            self.expire(as_of);
            self.publish(as_of);
            self.pin = None;
        } else if least > self.published {
            Sym::advance(least);
            // Changes are applied as the frontier passes them, so a one-shot build's
            // tables grow alongside the dataflow rather than all at its end.
            self.apply_before(least);
            self.published = least;
            self.expire(least - 1);
            if !self.final_only {
                self.publish(least - 1);
            }
        }
    }

    fn apply_before(&mut self, frontier: u64) {
        while let Some((&t, _)) = self.pending.first_key_value() {
            if t >= frontier {
                break;
            }
            let (t, us) = self.pending.pop_first().expect("present");
            self.max_time = self.max_time.max(t);
            let Some(retention) = &mut self.retention else {
                for u in us {
                    self.tables.apply(u);
                }
                continue;
            };
            for u in us {
                if let Update::Sessions(row, d) = &u
                    && *d > 0
                {
                    retention.note(t, row);
                }
                // The changes of one time add up in any order: a retraction may come
                // before the row it retracts.
                if self.tables.retracts_absent(&u) {
                    self.absent.push(u);
                } else {
                    self.tables.apply(u);
                }
            }
            // What is still absent once the whole time is in belongs to a session that
            // has left the views.
            for u in std::mem::take(&mut self.absent) {
                if !self.tables.retracts_absent(&u) {
                    self.tables.apply(u);
                }
            }
        }
    }

    /// Every row of the sessions that leave the views at `as_of`.
    fn expire(&mut self, as_of: u64) {
        let Some(retention) = &mut self.retention else {
            return;
        };
        let gone = retention.due(as_of);
        if !gone.is_empty() {
            self.tables.remove_sessions(&gone);
        }
    }

    fn publish(&mut self, as_of: u64) {
        let started = Instant::now();
        if let Some(cb) = &mut self.on_publish {
            cb(as_of, self.complete, &self.tables);
        }
        // Each view builds only the rows changed since the last snapshot.
        let mut tables = Vec::with_capacity(ViewId::ALL.len() + 1);
        for v in ViewId::ALL {
            let (s, b) = self.tables.arrow(*v, &self.params);
            tables.push((v.name(), s, b));
        }
        // Measuring walks every segment's buffers: once a second is enough for a report.
        if self.complete || self.measured_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            self.measured_at = Some(Instant::now());
            self.stats.set("published_views", 0, self.tables.rows(), self.tables.heap_bytes());
        }
        // Every held row is built now: strings no longer in use can go (a one-shot
        // build publishes once, at its end, and keeps them all until then).
        let epoch = as_of / sym::EPOCH_MS;
        if !self.final_only && epoch > self.reclaimed {
            self.reclaimed = epoch;
            self.tables.for_each_value_sym(&mut Sym::touch);
            Sym::reclaim(self.params.strings_keep);
        }
        let (strings, bytes) = Sym::table_size();
        self.stats.set("strings", 0, strings, bytes);
        let state = self.stats.per_view();
        let b = state_table(&state);
        tables.push((STATE_TABLE, b.schema(), vec![b]));
        let build_us = started.elapsed().as_micros() as u64;
        let sessions_left = self.retention.as_ref().map_or(0, Retention::left);
        self.snapshots.publish(Snapshot { as_of, complete: self.complete, tables, state, build_us, sessions_left });
    }
}

/// Runs a publisher on its own thread, fed by a channel.
pub fn spawn_publisher(
    mut publisher: Publisher,
    rx: std::sync::mpsc::Receiver<WorkerUpdate>,
    snapshots: Snapshots,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            // Everything already queued is absorbed before one snapshot is built, so a
            // publisher that falls behind catches up instead of building a snapshot for
            // every tick it missed.
            while let Ok(msg) = rx.recv() {
                publisher.absorb(msg);
                while let Ok(more) = rx.try_recv() {
                    publisher.absorb(more);
                }
                publisher.maybe_publish();
            }
            snapshots.close();
        })
        .expect("spawn publisher thread")
}
