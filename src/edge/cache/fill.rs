//! Request collapsing: one request to the appliance for N concurrent misses of one key. The
//! first request (the leader) publishes the response head, then the body as it arrives
//! (handing each chunk on as it streams it to its own client); every other request for the
//! key reads the body from here as it streams, not after it ends.
//!
//! What must stay true: a waiter never hangs: it is told `Alone` (go to the appliance
//! yourself) when the leader's response cannot be shared or the leader goes away before its
//! head, and a reader's body ends (or fails) when the leader's does.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;

use super::status::CacheStatus;

/// The shared response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The leader's `Cache-Status`; waiters add `collapsed`.
    pub cache_status: CacheStatus,
    /// The body's length when known (all shared bodies have one today).
    pub length: Option<u64>,
}

/// Where the leader is.
#[derive(Debug, Clone)]
pub enum Phase {
    /// The head has not arrived.
    Waiting,
    /// Read the body from the fill.
    Shared(Arc<Head>),
    /// The response cannot be shared: go to the appliance yourself.
    Alone,
}

#[derive(Default)]
struct Body_ {
    chunks: Vec<Bytes>,
    /// `Some(Ok)`: complete; `Some(Err)`: failed, with why.
    end: Option<Result<(), String>>,
    wakers: Vec<Waker>,
}

pub struct Fill {
    phase: watch::Sender<Phase>,
    body: Mutex<Body_>,
    /// Moves the leader's upstream body into a task of its own (see [`Fill::detach`]).
    detach: Mutex<Option<Detach>>,
}

type Detach = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the shared response failed: {0}")]
pub struct FillError(String);

impl Fill {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            phase: watch::Sender::new(Phase::Waiting),
            body: Mutex::new(Body_::default()),
            detach: Mutex::new(None),
        })
    }

    /// What [`Fill::detach`] runs: the leader, which reads the upstream body in its own
    /// client's task, says how to move it into a task of its own.
    pub fn on_detach(&self, f: Detach) {
        if let Ok(mut d) = self.detach.lock() {
            *d = Some(f);
        }
    }

    /// A waiter joined: the body must no longer arrive at the pace of the leader's client
    /// (once; nothing when the leader does not read it itself or it has ended).
    pub fn detach(&self) {
        let f = self.detach.lock().ok().and_then(|mut d| d.take());
        if let Some(f) = f {
            f();
        }
    }

    /// Publishes the head (or `Alone`); only the first call counts.
    pub fn publish(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            if matches!(p, Phase::Waiting) {
                *p = phase;
                true
            } else {
                false
            }
        });
    }

    pub fn is_waiting(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Waiting)
    }

    /// The head, or `None` when `timeout` passes first (then go to the appliance yourself).
    pub async fn head(&self, timeout: Duration) -> Option<Phase> {
        let mut rx = self.phase.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|p| !matches!(p, Phase::Waiting)));
        match waited.await {
            Ok(Ok(p)) => Some(p.clone()),
            _ => None,
        }
    }

    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let wakers = match self.body.lock() {
            Ok(mut b) => {
                b.chunks.push(chunk);
                std::mem::take(&mut b.wakers)
            }
            Err(_) => return,
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ends the body (`Err`: readers fail, as the leader's body did).
    pub fn finish(&self, end: Result<(), String>) {
        let detach = self.detach.lock().ok().and_then(|mut d| d.take());
        drop(detach);
        let wakers = match self.body.lock() {
            Ok(mut b) => {
                if b.end.is_none() {
                    b.end = Some(end);
                }
                std::mem::take(&mut b.wakers)
            }
            Err(_) => return,
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The body so far, in one piece.
    pub fn bytes(&self) -> Bytes {
        let Ok(b) = self.body.lock() else {
            return Bytes::new();
        };
        match b.chunks.len() {
            1 => b.chunks[0].clone(),
            _ => {
                let mut all = Vec::with_capacity(b.chunks.iter().map(Bytes::len).sum());
                for c in &b.chunks {
                    all.extend_from_slice(c);
                }
                Bytes::from(all)
            }
        }
    }

    /// A reader of the body from its start.
    pub fn reader(self: &Arc<Self>, length: Option<u64>) -> Reader {
        self.reader_from(0, length)
    }

    /// A reader of the body from chunk `next` on (`length`: the whole body's).
    pub fn reader_from(self: &Arc<Self>, next: usize, length: Option<u64>) -> Reader {
        Reader {
            fill: self.clone(),
            next,
            length,
        }
    }
}

/// One request's view of the shared body.
pub struct Reader {
    fill: Arc<Fill>,
    next: usize,
    length: Option<u64>,
}

impl Body for Reader {
    type Data = Bytes;
    type Error = FillError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, FillError>>> {
        let fill = self.fill.clone();
        let Ok(mut b) = fill.body.lock() else {
            return Poll::Ready(Some(Err(FillError("poisoned".into()))));
        };
        if let Some(chunk) = b.chunks.get(self.next).cloned() {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match &b.end {
            Some(Ok(())) => Poll::Ready(None),
            Some(Err(why)) => Poll::Ready(Some(Err(FillError(why.clone())))),
            None => {
                b.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn head() -> Phase {
        Phase::Shared(Arc::new(Head {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            cache_status: CacheStatus::Hit { ttl: 1 },
            length: Some(6),
        }))
    }

    #[tokio::test]
    async fn readers_get_the_body_as_it_streams() {
        let fill = Fill::new();
        let early = fill.reader(Some(6));
        fill.publish(head());
        fill.push(Bytes::from_static(b"abc"));
        let mut early = early;
        let first = early.frame().await.expect("frame").expect("ok");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"abc")));
        // A reader that joins late starts from the beginning.
        let late = fill.reader(Some(6));
        let f2 = fill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            f2.push(Bytes::from_static(b"def"));
            f2.finish(Ok(()));
        });
        let rest = early.collect().await.expect("body").to_bytes();
        assert_eq!(rest, Bytes::from_static(b"def"));
        let all = late.collect().await.expect("body").to_bytes();
        assert_eq!(all, Bytes::from_static(b"abcdef"));
        assert_eq!(fill.bytes(), Bytes::from_static(b"abcdef"));
    }

    #[tokio::test]
    async fn a_failed_leader_fails_its_readers_and_waiters_never_hang() {
        let fill = Fill::new();
        // No head within the lock timeout: go alone.
        assert!(fill.head(Duration::from_millis(10)).await.is_none());
        fill.publish(Phase::Alone);
        fill.publish(head()); // too late: the first publication stands
        assert!(matches!(
            fill.head(Duration::from_millis(10)).await,
            Some(Phase::Alone)
        ));
        let fill = Fill::new();
        fill.publish(head());
        fill.push(Bytes::from_static(b"ab"));
        fill.finish(Err("reset".into()));
        assert!(fill.reader(None).collect().await.is_err());
    }
}
