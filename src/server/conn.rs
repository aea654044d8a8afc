//! The I/O side of a listener's limits: the idle clock on a connection, the clock between a
//! request body's bytes, the count of requests a connection is handling, the 503 answered
//! past a listener's connection cap, and the descriptor limit the caps come from.
//!
//! What must stay true: a connection that moves no byte while it handles no request is
//! closed after `idle_timeout`; a body that stalls fails after `body_timeout`; a handler that
//! works for a long time without I/O (a large CompleteMultipartUpload, a render) is never cut
//! by the idle clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Raises the soft descriptor limit to the hard one (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do) and returns the limit now in force; the listeners' caps are
/// derived from it. `None` where it cannot be read.
pub fn raise_nofile() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        let soft = limit.current?;
        if let Some(hard) = limit.maximum
            && hard > soft
        {
            // Past about a million the kernel's own file-max matters more than ours.
            let want = hard.min(1 << 20);
            limit.current = Some(want);
            if setrlimit(Resource::Nofile, limit).is_ok() {
                return Some(want);
            }
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    None
}

/// How many requests a connection is handling (from the call until the handler answers);
/// shared between the connection's I/O and its service.
#[derive(Debug, Default, Clone)]
pub struct Busy(Arc<AtomicUsize>);

impl Busy {
    /// Counts a request until the guard drops.
    pub fn enter(&self) -> BusyGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        BusyGuard(self.0.clone())
    }

    fn is_busy(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// Ends one request's count when dropped (answered, failed or cancelled alike).
#[derive(Debug)]
pub struct BusyGuard(Arc<AtomicUsize>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection with an idle clock: when no byte has moved either way for `idle` and no
/// request is being handled, reads and writes fail with `TimedOut` and hyper closes it.
pub struct IdleIo<T> {
    inner: T,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    busy: Busy,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, idle: Duration, busy: Busy) -> Self {
        let now = Instant::now();
        Self {
            inner,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            busy,
        }
    }

    /// Called when an operation would wait: `Ready(err)` once the connection has been idle
    /// too long, else `Pending` with the clock registered for a wake-up.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.busy.is_busy() {
                // A request in hand counts as activity: its handler may work for long without
                // I/O, and its body has its own clock.
                self.last = Instant::now();
            }
            let deadline = self.last + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.busy.is_busy() => continue,
                Poll::Ready(()) => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle past [limits] idle_timeout",
                    ));
                }
            }
        }
    }
}

impl<T> IdleIo<T> {
    /// A write's outcome: bytes written restart the idle clock; a write that would wait
    /// checks it.
    fn wrote(
        &mut self,
        r: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }
}

/// Why a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body stalled for longer than [limits] body_timeout ({0:?})")]
    TimedOut(Duration),
    #[error("{0}")]
    Inner(Box<dyn std::error::Error + Send + Sync>),
}

/// A request body with a clock between its frames: a body that sends nothing for
/// `timeout` fails with [`BodyError::TimedOut`], which ends the request and the connection.
pub struct TimeoutBody<B> {
    inner: B,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> TimeoutBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(|e| BodyError::Inner(e.into()))))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TimedOut(timeout)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a connection past its listener's cap: written at once into the fresh
/// socket's empty send buffer, then the socket is closed.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\n\
Retry-After: 1\r\n\
Connection: close\r\n\
Content-Length: 101\r\n\
\r\n\
{\"error\":\"Service Unavailable\",\"kind\":\"connections\",\"message\":\"too many connections; retry shortly\"}\n";

/// Answers [`OVER_CAPACITY`] without waiting (a full send buffer just drops it) and closes.
pub fn refuse(stream: tokio::net::TcpStream) {
    let _ = stream.try_write(OVER_CAPACITY);
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(OVER_CAPACITY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_time_out_unless_busy() {
        let (client, server) = tokio::io::duplex(64);
        let busy = Busy::default();
        let mut io = IdleIo::new(server, Duration::from_secs(60), busy.clone());
        let mut buf = [0u8; 8];
        // Busy: a read waits past the idle clock without failing.
        let guard = busy.enter();
        let read = tokio::time::timeout(Duration::from_secs(120), io.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection must not time out");
        drop(guard);
        // Idle: the read fails with TimedOut after 60 s.
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(59));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_reset_the_idle_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = IdleIo::new(server, Duration::from_secs(10), Busy::default());
        let writer = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(8)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut got = 0;
        let mut buf = [0u8; 1];
        while got < 5 {
            got += io.read(&mut buf).await.unwrap();
        }
        let _client = writer.await.unwrap();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A body that sends one frame, then nothing: an upload that stalled.
    struct Stalled(Option<Bytes>);

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.get_mut().0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails() {
        use http_body_util::BodyExt;
        let mut body = TimeoutBody::new(
            Stalled(Some(Bytes::from_static(b"abc"))),
            Duration::from_secs(30),
        );
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from_static(b"abc"));
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::TimedOut(_)), "{err}");
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}
