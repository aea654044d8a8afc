//! Single flight: N concurrent callers for one key run the work once and all receive its
//! result (pingora-cache's `lock.rs` idea, in-process).
//!
//! What must stay true: at most one run per key is in progress; every waiter gets the value
//! of the run it waited for (an `Err` too: it is cloned to every waiter, never kept); nothing
//! is remembered once a run finishes, so the next call runs again. A leader whose future is
//! dropped (client gone) or panics closes its channel: its waiters then retry, and the first
//! of them becomes the new leader, so nobody waits forever.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

/// Runs in progress: key → (run id, where the run's result will appear).
type Calls<K, V> = HashMap<K, (u64, watch::Receiver<Option<V>>)>;

/// Deduplicates concurrent work by key. `V` is the whole outcome (typically
/// `Result<Arc<T>, Arc<E>>`), cloned to every waiter.
pub struct SingleFlight<K, V> {
    calls: Mutex<Calls<K, V>>,
    ids: AtomicU64,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            calls: Mutex::new(HashMap::new()),
            ids: AtomicU64::new(0),
        }
    }
}

enum Role<V> {
    Leader(u64, watch::Sender<Option<V>>),
    Follower(watch::Receiver<Option<V>>),
}

/// Removes the leader's entry however its future ends (done, dropped or panicked).
struct LeaderGuard<'a, K: Hash + Eq, V> {
    flight: &'a SingleFlight<K, V>,
    key: &'a K,
    id: u64,
}

impl<K: Hash + Eq, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        let mut calls = self.flight.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.get(self.key).is_some_and(|(id, _)| *id == self.id) {
            calls.remove(self.key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Calls<K, V>> {
        // The map is only touched in short critical sections that cannot leave it half
        // changed, so a poisoned lock is still consistent.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` unless a run for `key` is in progress, in which case waits for that run's
    /// result. `work` is called at most once, and only by the caller that leads.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut work = Some(work);
        loop {
            let role = {
                let mut calls = self.lock();
                match calls.get(&key) {
                    Some((_, rx)) => Role::Follower(rx.clone()),
                    None => {
                        let id = self.ids.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = watch::channel(None);
                        calls.insert(key.clone(), (id, rx));
                        Role::Leader(id, tx)
                    }
                }
            };
            match role {
                Role::Leader(id, tx) => {
                    let _guard = LeaderGuard {
                        flight: self,
                        key: &key,
                        id,
                    };
                    let Some(work) = work.take() else {
                        // Unreachable: a caller leads at most once, as leading returns.
                        continue;
                    };
                    let value = work().await;
                    tx.send_replace(Some(value.clone()));
                    return value;
                }
                Role::Follower(mut rx) => {
                    if let Ok(v) = rx.wait_for(Option::is_some).await
                        && let Some(v) = v.as_ref()
                    {
                        return v.clone();
                    }
                    // The leader went away without a result: try again (maybe as leader).
                }
            }
        }
    }

    /// Keys with a run in progress (metrics).
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_callers_run_the_work_once() {
        let flight = Arc::new(SingleFlight::<String, Result<Arc<Vec<u8>>, String>>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Barrier::new(50));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flight, runs, gate) = (flight.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                flight
                    .run("k".to_string(), || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Arc::new(vec![1, 2, 3]))
                    })
                    .await
            }));
        }
        let mut outs = Vec::new();
        for t in tasks {
            outs.push(t.await.unwrap().unwrap());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(outs.iter().all(|o| Arc::ptr_eq(o, &outs[0])));
        assert_eq!(*outs[0], vec![1, 2, 3]);
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_reaches_every_waiter_and_is_not_kept() {
        let flight = Arc::new(SingleFlight::<u32, Result<u32, String>>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Barrier::new(10));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (flight, runs, gate) = (flight.clone(), runs.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                flight
                    .run(7, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err("decode failed".to_string())
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err("decode failed".to_string()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let again = flight
            .run(7, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(1)
            })
            .await;
        assert_eq!(again, Ok(1));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn different_keys_run_separately() {
        let flight = SingleFlight::<u32, u32>::new();
        let (a, b) = tokio::join!(
            flight.run(1, || async { 10 }),
            flight.run(2, || async { 20 })
        );
        assert_eq!((a, b), (10, 20));
    }

    /// A leader whose request is dropped must not leave its followers waiting forever: one
    /// of them runs the work instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_hands_over_to_a_follower() {
        let flight = Arc::new(SingleFlight::<u32, u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (flight, runs) = (flight.clone(), runs.clone());
            tokio::spawn(async move {
                flight
                    .run(1, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<u32>().await
                    })
                    .await
            })
        };
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let mut followers = Vec::new();
        for _ in 0..5 {
            let (flight, runs) = (flight.clone(), runs.clone());
            followers.push(tokio::spawn(async move {
                flight
                    .run(1, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "followers wait for the leader"
        );
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        for f in followers {
            let v = tokio::time::timeout(Duration::from_secs(5), f)
                .await
                .expect("a follower hung after its leader was cancelled")
                .unwrap();
            assert_eq!(v, 42);
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "exactly one follower took over"
        );
        assert_eq!(flight.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_leader_hands_over_too() {
        let flight = Arc::new(SingleFlight::<u32, u32>::new());
        let leader = {
            let flight = flight.clone();
            tokio::spawn(async move {
                flight
                    .run(1, || async {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        panic!("codec bug")
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let follower = flight.run(1, || async { 5 });
        let v = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap();
        assert_eq!(v, 5);
        assert!(leader.await.unwrap_err().is_panic());
    }
}
