//! Group commit for the catalog: write jobs from concurrent requests are applied in one redb
//! write transaction and made durable by a single commit, and each job gets its own result.
//!
//! A job that fails may already have changed the transaction before its error (a storage
//! error half-way through, or a check after a write), and redb has no savepoints inside a
//! transaction that has been written to. So a batch in which any job failed is aborted and
//! applied again, in a fresh transaction, without the failed jobs: what commits is exactly
//! the work of the jobs that succeeded. Jobs are therefore `Fn`, run once per attempt. A
//! failed commit fails every job of its batch; none of them became visible.

use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use crate::store::{StoreError, StoreResult};

/// One writer's job: applied (perhaps more than once, see the module doc), then finished
/// with the batch's fate.
trait Job: Send {
    /// Applies the job in `tx` and keeps its result; true when it succeeded.
    fn apply(&mut self, tx: &WriteTransaction) -> bool;
    /// Fails the job without applying it (no transaction could be begun).
    fn refuse(&mut self, error: &str);
    /// Hands the kept result to the waiting writer; `commit_error` fails a successful job
    /// whose batch did not commit.
    fn finish(self: Box<Self>, commit_error: Option<&str>);
}

struct Pending<T, F> {
    f: F,
    result: Option<StoreResult<T>>,
    done: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: Fn(&WriteTransaction) -> StoreResult<T> + Send + 'static,
{
    fn apply(&mut self, tx: &WriteTransaction) -> bool {
        let result = (self.f)(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn refuse(&mut self, error: &str) {
        self.result = Some(Err(StoreError::Internal(format!("catalog: {error}"))));
    }

    fn finish(self: Box<Self>, commit_error: Option<&str>) {
        let result = match (self.result, commit_error) {
            (None, _) => Err(StoreError::Internal("catalog job was never applied".into())),
            (Some(Ok(_)), Some(e)) => Err(StoreError::Internal(format!("catalog commit: {e}"))),
            (Some(r), _) => r,
        };
        let _ = self.done.send(result);
    }
}

/// Longest a batch waits for more writers when the previous batch had several.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;

pub struct Committer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Lets queued jobs finish and releases the database before returning, so the catalog
    /// can be reopened right away.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Committer {
    pub fn start(db: Arc<Database>) -> std::io::Result<Committer> {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("pixelport-catalog".into())
            .spawn(move || run(&db, &rx))?;
        Ok(Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Applies `f` in the next batch and waits until that batch is durable. `f` may run more
    /// than once (each time in a fresh transaction) and its last result counts.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (done, wait) = oneshot::channel::<StoreResult<T>>();
        let job: Box<dyn Job> = Box::new(Pending {
            f,
            result: None,
            done,
        });
        self.jobs
            .as_ref()
            .ok_or_else(|| StoreError::Internal("the catalog writer has stopped".into()))?
            .send(job)
            .map_err(|_| StoreError::Internal("the catalog writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Internal("the catalog writer dropped a job".into()))?
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Box<dyn Job>>) {
    let mut last_batch = 1usize;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        // Under concurrency, wait a moment for the writers of the last batch to come back,
        // so one fsync serves them all (commit_delay in PostgreSQL terms). A lone writer
        // never waits.
        let deadline = std::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if last_batch <= 1 || batch.len() >= last_batch || now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(deadline - now) {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
        }
        last_batch = batch.len();
        commit_batch(db, batch);
    }
}

/// Applies `batch` and commits what succeeded; see the module doc for failed jobs.
fn commit_batch(db: &Database, mut batch: Vec<Box<dyn Job>>) {
    let mut failed: Vec<Box<dyn Job>> = Vec::new();
    loop {
        let tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "cannot begin a catalog transaction");
                let _ = StoreError::from(e); // raises a fault on an I/O error
                for mut job in batch {
                    job.refuse(&msg);
                    job.finish(Some(&msg));
                }
                for job in failed {
                    job.finish(None);
                }
                return;
            }
        };
        let outcomes: Vec<bool> = batch.iter_mut().map(|job| job.apply(&tx)).collect();
        if outcomes.iter().all(|ok| *ok) {
            let error = tx.commit().err().map(|e| {
                let msg = e.to_string();
                tracing::error!(error = %msg, jobs = batch.len(), "catalog commit failed");
                let _ = StoreError::from(e); // raises a fault on an I/O error
                msg
            });
            for job in batch {
                job.finish(error.as_deref());
            }
            for job in failed {
                job.finish(None);
            }
            return;
        }
        // Something failed: nothing of this attempt may commit. Apply the rest again.
        if let Err(e) = tx.abort() {
            tracing::warn!(error = %e, "could not abort a catalog transaction");
        }
        let mut kept = Vec::with_capacity(batch.len());
        for (job, ok) in batch.into_iter().zip(outcomes) {
            if ok { kept.push(job) } else { failed.push(job) }
        }
        batch = kept;
        if batch.is_empty() {
            for job in failed {
                job.finish(None);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_each_get_their_result_and_all_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
        let c = Arc::new(Committer::start(db.clone()).unwrap());
        let mut handles = Vec::new();
        for i in 0..200u64 {
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                c.write(move |tx| {
                    if i % 10 == 0 {
                        return Err(StoreError::InvalidPartOrder);
                    }
                    tx.open_table(T)?.insert(i, i * 2)?;
                    Ok(i)
                })
                .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.unwrap();
            if i % 10 == 0 {
                assert!(matches!(r, Err(StoreError::InvalidPartOrder)));
            } else {
                assert_eq!(r.unwrap(), i as u64);
            }
        }
        let rtx = db.begin_read().unwrap();
        let t = rtx.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 180);
        assert_eq!(t.get(7).unwrap().unwrap().value(), 14);
        assert!(t.get(10).unwrap().is_none());
    }

    /// The bug: a job that wrote and then failed (a storage error half-way through, a check
    /// after a write) had its half-applied change committed with the rest of its batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_fails_after_writing_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
        let c = Arc::new(Committer::start(db.clone()).unwrap());
        let mut handles = Vec::new();
        for i in 0..100u64 {
            let c = c.clone();
            handles.push(tokio::spawn(async move {
                c.write(move |tx| {
                    tx.open_table(T)?.insert(i, i + 1)?;
                    if i % 3 == 0 {
                        return Err(StoreError::InvalidPartOrder);
                    }
                    Ok(i)
                })
                .await
            }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.unwrap();
            assert_eq!(r.is_ok(), i % 3 != 0, "job {i}: {r:?}");
        }
        let rtx = db.begin_read().unwrap();
        let t = rtx.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 66);
        for i in 0..100u64 {
            assert_eq!(t.get(i).unwrap().is_some(), i % 3 != 0, "row {i}");
        }
    }
}
