//! The threads queries run on, apart from ingest: a fixed number of low-priority
//! threads, a bounded queue in front of them, a deadline per query, and CPU time
//! measured per query.
//!
//! A query's future is dropped at its deadline, which stops DataFusion at its next
//! yield point. Work that does not yield (one long function call) keeps its thread busy
//! past the deadline: the pool then counts the thread as a *runaway*, answers the caller
//! with a timeout, and starts a replacement thread so the next query does not wait
//! behind it. At most `max_runaway` threads run away at once; beyond that the pool
//! refuses new queries until one finishes. The threads run at a lower scheduling
//! priority (nice 10), so that queries, runaways included, take CPU from ingest and the
//! dataflow only when those leave it idle.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the pool did not run a query to the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The queue is full.
    #[error("{waiting} queries are already waiting to run; retry later")]
    Busy {
        /// Queries queued.
        waiting: usize,
    },
    /// Too many timed-out queries still hold threads: nothing new is taken.
    #[error(
        "{runaway} queries are still running past their time limit; no more queries are taken until one \
         finishes"
    )]
    Saturated {
        /// Queries running past their time limit.
        runaway: usize,
    },
    /// The query ran past its time limit (the limit).
    #[error("query exceeded its time limit of {0:?}")]
    Timeout(Duration),
    /// The pool cannot take the query: its threads are gone.
    #[error("the query thread failed: {0}")]
    Failed(String),
}

/// What a finished query cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// CPU time of its thread while it ran.
    pub cpu: Duration,
    /// Time from submission to the start of its run.
    pub queued: Duration,
}

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

struct Inner {
    tx: SyncSender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    queued: AtomicUsize,
    runaway: AtomicUsize,
    max_runaway: usize,
    /// The threads' nice value.
    nice: i32,
    threads: AtomicUsize,
    next_id: AtomicU64,
    /// CPU time of every finished query (ns), for metrics.
    cpu_ns: AtomicU64,
    finished: AtomicU64,
}

/// The query pool.
#[derive(Clone)]
pub struct QueryPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryPool")
            .field("queued", &self.inner.queued.load(Ordering::Relaxed))
            .field("runaway", &self.inner.runaway.load(Ordering::Relaxed))
            .finish()
    }
}

/// Where a submitted query is: running (or waiting), done, or replaced because it ran
/// past its deadline (its thread exits when it is done).
const RUNNING: u8 = 0;
const DONE: u8 = 1;
const RETIRED: u8 = 2;

/// Sets the calling thread's nice value (Linux keeps one per thread). Failure only
/// leaves it where it was.
fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice);
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

impl QueryPool {
    /// `threads` queries at once, `queue` more waiting, at most `max_runaway` threads
    /// running past their deadline.
    pub fn new(threads: usize, queue: usize, max_runaway: usize) -> QueryPool {
        QueryPool::with_nice(threads, queue, max_runaway, 10)
    }

    /// As [`QueryPool::new`], with the threads' nice value (0 is ingest's priority, 19
    /// the lowest; `query.nice`).
    pub fn with_nice(threads: usize, queue: usize, max_runaway: usize, nice: i32) -> QueryPool {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let pool = QueryPool {
            inner: Arc::new(Inner {
                tx,
                rx: Arc::new(Mutex::new(rx)),
                queued: AtomicUsize::new(0),
                runaway: AtomicUsize::new(0),
                max_runaway,
                nice: nice.clamp(0, 19),
                threads: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                cpu_ns: AtomicU64::new(0),
                finished: AtomicU64::new(0),
            }),
        };
        for _ in 0..threads.max(1) {
            pool.spawn_thread();
        }
        pool
    }

    fn spawn_thread(&self) {
        let rx = self.inner.rx.clone();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.threads.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::downgrade(&self.inner);
        let nice = self.inner.nice;
        let spawned = std::thread::Builder::new()
            .name(format!("query-{id}"))
            // Deep plans recurse; DataFusion grows its stack on the heap beyond this.
            .stack_size(16 << 20)
            .spawn(move || {
                set_nice(nice);
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                loop {
                    let job = {
                        let Ok(rx) = rx.lock() else { return };
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    job(&rt);
                    // A job leaves a retire mark in a thread-local when its thread was
                    // replaced while it ran.
                    if RETIRE.with(|r| r.replace(false)) {
                        if let Some(i) = inner.upgrade() {
                            i.threads.fetch_sub(1, Ordering::Relaxed);
                        }
                        return;
                    }
                }
            });
        if spawned.is_err() {
            self.inner.threads.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs `make()`'s future on a query thread with `deadline`; returns its output and
    /// cost.
    pub async fn run<F, Fut, T>(&self, deadline: Duration, make: F) -> Result<(T, Cost), PoolError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let inner = &self.inner;
        let runaway = inner.runaway.load(Ordering::Relaxed);
        if runaway >= inner.max_runaway {
            return Err(PoolError::Saturated { runaway });
        }
        let submitted = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel::<(T, Cost)>();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let started: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let (job_state, job_started, job_inner) = (state.clone(), started.clone(), Arc::downgrade(inner));
        let job: Job = Box::new(move |rt| {
            if let Some(i) = job_inner.upgrade() {
                i.queued.fetch_sub(1, Ordering::Relaxed);
            }
            let queued = submitted.elapsed();
            // A query whose caller gave up while it waited is not run at all.
            let Some(left) = deadline.checked_sub(queued) else {
                job_state.store(DONE, Ordering::Release);
                return;
            };
            if let Ok(mut s) = job_started.lock() {
                *s = Some(Instant::now());
            }
            let cpu0 = thread_cpu();
            let out = rt.block_on(async move { tokio::time::timeout(left, make()).await });
            let cpu = thread_cpu().saturating_sub(cpu0);
            if let Some(i) = job_inner.upgrade() {
                i.cpu_ns.fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
                i.finished.fetch_add(1, Ordering::Relaxed);
            }
            if job_state.compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // Replaced while it ran: no longer a runaway, and its thread goes.
                if let Some(i) = job_inner.upgrade() {
                    i.runaway.fetch_sub(1, Ordering::AcqRel);
                }
                RETIRE.with(|r| r.set(true));
            }
            if let Ok(out) = out {
                let _ = tx.send((out, Cost { cpu, queued }));
            }
        });
        inner.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = inner.tx.try_send(job) {
            inner.queued.fetch_sub(1, Ordering::Relaxed);
            return match e {
                TrySendError::Full(_) => Err(PoolError::Busy { waiting: inner.queued.load(Ordering::Relaxed) }),
                TrySendError::Disconnected(_) => Err(PoolError::Failed("the query threads are gone".into())),
            };
        }
        // The thread's own timeout fires at the deadline if the query yields; allow it a
        // moment to answer before calling it a runaway.
        let grace = Duration::from_millis(250);
        match tokio::time::timeout(deadline + grace, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(PoolError::Timeout(deadline)),
            Err(_) => {
                // A query that never started will not: it sees its deadline passed.
                let was_running = started.lock().map(|s| s.is_some()).unwrap_or(false);
                if was_running {
                    // Counted before the mark, so that the thread's uncount follows it.
                    inner.runaway.fetch_add(1, Ordering::AcqRel);
                    if state.compare_exchange(RUNNING, RETIRED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        tracing::warn!(
                            deadline_ms = deadline.as_millis() as u64,
                            "a query runs past its deadline; its thread is replaced"
                        );
                        self.spawn_thread();
                    } else {
                        inner.runaway.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Err(PoolError::Timeout(deadline))
            }
        }
    }

    /// Queries waiting, threads running past their deadline.
    pub fn load(&self) -> (usize, usize) {
        (self.inner.queued.load(Ordering::Relaxed), self.inner.runaway.load(Ordering::Relaxed))
    }

    /// Queries finished and the CPU time they used.
    pub fn totals(&self) -> (u64, Duration) {
        (self.inner.finished.load(Ordering::Relaxed), Duration::from_nanos(self.inner.cpu_ns.load(Ordering::Relaxed)))
    }
}

thread_local! {
    static RETIRE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) -> u64 {
        let end = Instant::now() + d;
        let mut n = 0u64;
        while Instant::now() < end {
            n = n.wrapping_add(1);
            std::hint::black_box(n);
        }
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_query_that_does_not_yield_does_not_hold_up_the_next() {
        let pool = QueryPool::new(1, 4, 2);
        let t0 = Instant::now();
        let slow = pool.run(Duration::from_millis(100), || async { spin(Duration::from_secs(2)) }).await;
        assert_eq!(slow.unwrap_err(), PoolError::Timeout(Duration::from_millis(100)));
        assert!(t0.elapsed() < Duration::from_secs(1), "answered at the deadline");
        assert_eq!(pool.load().1, 1, "one runaway");
        // The replacement thread answers at once.
        let t1 = Instant::now();
        let (v, cost) = pool.run(Duration::from_secs(1), || async { 7 }).await.unwrap();
        assert_eq!(v, 7);
        assert!(t1.elapsed() < Duration::from_millis(500), "{:?}", t1.elapsed());
        assert!(cost.cpu < Duration::from_millis(100));
        // A second runaway saturates the pool (max 2) ...
        let _ = pool.run(Duration::from_millis(50), || async { spin(Duration::from_secs(2)) }).await;
        assert!(matches!(pool.run(Duration::from_secs(1), || async { 1 }).await, Err(PoolError::Saturated { .. })));
        // ... until they finish.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.load().1 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.load().1, 0);
        assert_eq!(pool.run(Duration::from_secs(1), || async { 2 }).await.unwrap().0, 2);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_run_at_the_configured_nice_value() {
        fn own() -> i32 {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        }
        for nice in [10, 3] {
            let pool = QueryPool::with_nice(1, 4, 2, nice);
            assert_eq!(pool.run(Duration::from_secs(5), || async { own() }).await.unwrap().0, nice);
            // A thread started to replace a runaway gets it too.
            let _ = pool.run(Duration::from_millis(20), || async { spin(Duration::from_millis(300)) }).await;
            assert_eq!(pool.run(Duration::from_secs(5), || async { own() }).await.unwrap().0, nice);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_yielding_query_stops_at_its_deadline_and_cpu_is_counted() {
        let pool = QueryPool::new(1, 4, 2);
        let r = pool
            .run(Duration::from_millis(100), || async {
                loop {
                    spin(Duration::from_millis(5));
                    tokio::task::yield_now().await;
                }
            })
            .await;
        assert_eq!(r.unwrap_err(), PoolError::Timeout(Duration::from_millis(100)));
        // Its thread notices the deadline at its next yield (a loaded machine may take a
        // moment to schedule it).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.load().1 > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.load().1, 0, "it stopped: no runaway");
        // 50 ms of CPU, however long the (low-priority) thread takes to get it.
        let busy = || async {
            let start = thread_cpu();
            while thread_cpu().saturating_sub(start) < Duration::from_millis(50) {
                spin(Duration::from_millis(1));
            }
        };
        let (_, cost) = pool.run(Duration::from_secs(10), busy).await.unwrap();
        assert!(cost.cpu >= Duration::from_millis(50), "{:?}", cost.cpu);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses() {
        let pool = QueryPool::new(1, 1, 2);
        let p = pool.clone();
        let busy = tokio::spawn(async move {
            p.run(Duration::from_millis(500), || async { spin(Duration::from_millis(300)) }).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let p = pool.clone();
        let waiting = tokio::spawn(async move { p.run(Duration::from_secs(2), || async { 1 }).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(pool.run(Duration::from_secs(2), || async { 1 }).await, Err(PoolError::Busy { .. })));
        assert!(busy.await.unwrap().is_ok());
        assert_eq!(waiting.await.unwrap().unwrap().0, 1);
    }
}
