//! The bounded processing pool: at most `workers` images are processed at once (each on a
//! blocking thread), at most `max_queue` more wait for a turn, and every request has a
//! deadline. What must stay true:
//!
//! * A request past the admission bound (`workers + max_queue`) is refused at once
//!   ([`PoolError::QueueFull`], 429). Requests are admitted before their source is
//!   fetched, so memory is bounded by `workers` images in flight plus the admitted
//!   requests' source bytes.
//! * A request that misses its deadline gets [`PoolError::Timeout`] (503). The blocking work
//!   cannot be interrupted, so it keeps its worker slot until it really ends: the number of
//!   images being processed never exceeds `workers`, timeouts included.
//! * Background work (eager presets) has lower priority: [`Pool::admit_background`] admits
//!   only while a worker is idle and nobody waits (admitted < `workers`, a free worker slot),
//!   and at most `workers - 1` background requests at once (1 when there is one worker), so
//!   with two or more workers a visitor always finds a worker that background work cannot
//!   take. Background work never queues: refused, it waits and asks again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("too many image requests are waiting ({0} queued); try again shortly")]
    QueueFull(usize),
    #[error("image processing did not finish within {0:?}")]
    Timeout(Duration),
    #[error("image processing failed unexpectedly: {0}")]
    Crashed(String),
}

/// Counts of the pool's state, for metrics and the admin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: usize,
    pub queued: usize,
    pub processing: usize,
}

#[derive(Debug)]
pub struct Pool {
    workers: usize,
    max_queue: usize,
    timeout: Duration,
    slots: Arc<Semaphore>,
    /// Requests admitted (queued or processing).
    admitted: AtomicUsize,
    processing: Arc<AtomicUsize>,
    /// Background requests admitted.
    background: AtomicUsize,
}

impl Pool {
    pub fn new(workers: usize, max_queue: usize, timeout: Duration) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            max_queue,
            timeout,
            slots: Arc::new(Semaphore::new(workers)),
            admitted: AtomicUsize::new(0),
            processing: Arc::new(AtomicUsize::new(0)),
            background: AtomicUsize::new(0),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let processing = self.processing.load(Ordering::Acquire);
        let admitted = self.admitted.load(Ordering::Acquire);
        PoolStats {
            workers: self.workers,
            queued: admitted.saturating_sub(processing),
            processing,
        }
    }

    /// The per-request deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Admits a request, or refuses it at once when `workers + max_queue` requests are
    /// already admitted. Call it before fetching the source, so that the source bytes held
    /// in memory are bounded by the admission limit too; the ticket frees its place when
    /// dropped.
    pub fn admit(&self) -> Result<Ticket<'_>, PoolError> {
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket {
            pool: self,
            background: false,
        };
        if before >= self.workers + self.max_queue {
            return Err(PoolError::QueueFull(before.saturating_sub(self.workers)));
        }
        Ok(ticket)
    }

    /// Most background requests admitted at once: all workers but one (at least one).
    pub fn background_limit(&self) -> usize {
        self.workers.saturating_sub(1).max(1)
    }

    /// Admits low-priority work only when a worker is idle and no request waits, and fewer
    /// than [`Pool::background_limit`] background requests are admitted; `None` otherwise
    /// (ask again later). A visitor arriving meanwhile is admitted as usual: background
    /// tickets count against the same bound.
    pub fn admit_background(&self) -> Option<Ticket<'_>> {
        let background = self.background.fetch_add(1, Ordering::AcqRel);
        let before = self.admitted.fetch_add(1, Ordering::AcqRel);
        let ticket = Ticket {
            pool: self,
            background: true,
        };
        let idle = before < self.workers && self.slots.available_permits() > 0;
        (idle && background < self.background_limit()).then_some(ticket)
    }

    /// Admits and runs in one call (for work that needs no preparation).
    pub async fn run<T, F>(&self, started: Instant, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.admit()?.run(started, work).await
    }
}

/// An admitted request's place in the pool.
#[derive(Debug)]
pub struct Ticket<'p> {
    pool: &'p Pool,
    background: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.pool.admitted.fetch_sub(1, Ordering::AcqRel);
        if self.background {
            self.pool.background.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One image in processing, counted until dropped.
struct Processing(Arc<AtomicUsize>);

impl Processing {
    fn start(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for Processing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticket<'_> {
    /// Waits for a worker (until the deadline that began at `started`, the request's
    /// arrival) and runs `work` on it.
    pub async fn run<T, F>(self, started: Instant, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool;
        let deadline = tokio::time::Instant::from_std(started + pool.timeout);
        let permit = tokio::time::timeout_at(deadline, pool.slots.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Timeout(pool.timeout))?
            .map_err(|e| PoolError::Crashed(e.to_string()))?;
        let processing = Processing::start(pool.processing.clone());
        let handle = tokio::task::spawn_blocking(move || {
            // Dropped however `work` ends, a panic included: the in-progress count (and the
            // gauge read from it) never stays high after a failed render.
            let _processing = processing;
            let _permit = permit;
            work()
        });
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(PoolError::Crashed(e.to_string())),
            Err(_) => Err(PoolError::Timeout(pool.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn a_panicking_render_does_not_leave_the_gauge_high() {
        // Bug guarded: the in-progress count was decremented after the work returned, so a
        // render that panicked left `imgproxy_images_in_progress` one higher forever.
        let pool = Pool::new(1, 1, Duration::from_secs(5));
        let out = pool
            .run(Instant::now(), || -> u32 { panic!("render failed") })
            .await;
        assert!(matches!(out, Err(PoolError::Crashed(_))), "{out:?}");
        assert_eq!(pool.stats().processing, 0);
        // The worker's slot came back too.
        assert_eq!(pool.run(Instant::now(), || 7).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_than_workers_at_once_and_queue_is_bounded() {
        let pool = Arc::new(Pool::new(2, 3, Duration::from_secs(5)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(Instant::now(), move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(100));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut ok = 0;
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(PoolError::QueueFull(_)) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert_eq!((ok, full), (5, 3), "2 workers + 3 queued admitted");
        assert_eq!(pool.stats().queued + pool.stats().processing, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_work_times_out_but_keeps_its_slot() {
        let pool = Pool::new(1, 4, Duration::from_millis(100));
        let r = pool
            .run(Instant::now(), || {
                std::thread::sleep(Duration::from_millis(400))
            })
            .await;
        assert_eq!(r, Err(PoolError::Timeout(Duration::from_millis(100))));
        // The first job still holds the only worker: the next one times out waiting.
        let r = pool.run(Instant::now(), || ()).await;
        assert_eq!(r, Err(PoolError::Timeout(Duration::from_millis(100))));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(pool.run(Instant::now(), || 7).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_work_takes_only_idle_workers_and_leaves_one() {
        let pool = Pool::new(3, 4, Duration::from_secs(5));
        assert_eq!(pool.background_limit(), 2);
        let a = pool
            .admit_background()
            .expect("idle pool admits background work");
        let b = pool.admit_background().expect("a second idle worker");
        assert!(
            pool.admit_background().is_none(),
            "the last worker stays for visitors"
        );
        let visitor = pool.admit().unwrap();
        drop(a);
        let c = pool
            .admit_background()
            .expect("one background and one visitor: a worker is idle");
        drop(c);
        let visitor2 = pool.admit().unwrap();
        assert!(
            pool.admit_background().is_none(),
            "one background and two visitors: no idle worker"
        );
        // Visitors still queue up to the usual bound, background tickets included.
        let queued: Vec<_> = (0..4).map(|_| pool.admit().unwrap()).collect();
        assert!(matches!(pool.admit(), Err(PoolError::QueueFull(_))));
        drop((b, visitor, visitor2, queued));
        assert_eq!(pool.stats().queued + pool.stats().processing, 0);
        // Refusals leave no trace.
        let c = pool.admit_background().expect("idle again");
        assert_eq!(c.pool.background.load(Ordering::Acquire), 1);
        drop(c);
        let one = Pool::new(1, 1, Duration::from_secs(5));
        assert_eq!(one.background_limit(), 1);
        let held = one.admit().unwrap();
        assert!(one.admit_background().is_none(), "its only worker is taken");
        drop(held);
        assert!(
            one.admit_background().is_some(),
            "idle: background may use it"
        );
    }
}
