//! Group commit for the catalog: write jobs from concurrent requests are applied in one redb
//! write transaction and made durable by a single commit, and each job gets its own result.
//! Catalog write functions check every precondition before they change anything, so a job
//! that fails leaves the transaction as it found it and the others still commit. A failed
//! commit fails every job of its batch; none of them became visible.

use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, WriteTransaction};
use tokio::sync::oneshot;

use crate::store::{StoreError, StoreResult};

/// Called once the batch's fate is known: `None` when it committed, else the commit error.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(Result<&WriteTransaction, &str>) -> Finish + Send>;

/// Longest a batch waits for more writers when the previous batch had several.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;

pub struct Committer {
    jobs: Option<mpsc::Sender<Job>>,
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
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("pixelport-catalog".into())
            .spawn(move || run(&db, &rx))?;
        Ok(Committer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Applies `f` in the next batch and waits until that batch is durable.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (done, wait) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |tx| {
            let result = match tx {
                Ok(tx) => f(tx),
                Err(e) => Err(StoreError::Internal(format!("catalog: {e}"))),
            };
            Box::new(move |commit_error: Option<&str>| {
                let result = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(StoreError::Internal(format!("catalog commit: {e}"))),
                    (r, _) => r,
                };
                let _ = done.send(result);
            })
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

fn run(db: &Database, rx: &mpsc::Receiver<Job>) {
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
        match db.begin_write() {
            Ok(tx) => {
                let finishers: Vec<Finish> = batch.into_iter().map(|job| job(Ok(&tx))).collect();
                let error = tx.commit().err().map(|e| e.to_string());
                if let Some(e) = &error {
                    tracing::error!(error = %e, jobs = finishers.len(), "catalog commit failed");
                }
                for finish in finishers {
                    finish(error.as_deref());
                }
            }
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "cannot begin a catalog transaction");
                for job in batch {
                    job(Err(&msg))(Some(&msg));
                }
            }
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
}
