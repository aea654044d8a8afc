//! One tunnel stream as a byte pipe hyper can speak HTTP/1.1 over: the QUIC stream's two
//! halves joined, with cancellation carried to the other side.
//!
//! What must stay true: a stream dropped before its side was shut down cleanly is reset
//! (and its receiving half stopped), so the peer sees a cancelled request rather than a body
//! that simply ended early; a cleanly shut down stream is finished, never reset.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::close;

pub struct TunnelIo {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    finished: bool,
}

impl TunnelIo {
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self {
            send,
            recv,
            finished: false,
        }
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf)
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx);
        if r.is_ready() {
            self.finished = true;
        }
        r
    }
}

impl Drop for TunnelIo {
    fn drop(&mut self) {
        if !self.finished {
            let code = quinn::VarInt::from_u32(close::CANCELLED);
            let _ = self.send.reset(code);
            let _ = self.recv.stop(code);
        }
    }
}
