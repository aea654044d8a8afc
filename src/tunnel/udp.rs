//! The tunnel's UDP socket, with large kernel buffers: QUIC at speed needs more than Linux's
//! 208 KiB default, or bursts are dropped in the kernel and look like loss (quic-go and
//! cloudflared raise them the same way). Also builds the QUIC endpoint on it.
//!
//! What must stay true: a buffer the kernel caps below the request is a warning naming the
//! sysctl to raise, never a failure to start.

use std::net::SocketAddr;
use std::sync::Arc;

/// Binds `addr` and asks for `buffer` bytes each way (as root, past `net.core.*mem_max`).
pub fn bind(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    if buffer > 0 {
        use rustix::net::sockopt;
        let recv = sockopt::set_socket_recv_buffer_size_force(&socket, buffer)
            .or_else(|_| sockopt::set_socket_recv_buffer_size(&socket, buffer));
        let send = sockopt::set_socket_send_buffer_size_force(&socket, buffer)
            .or_else(|_| sockopt::set_socket_send_buffer_size(&socket, buffer));
        let got = sockopt::socket_recv_buffer_size(&socket).unwrap_or(0);
        // Linux reports double what was set (its bookkeeping share).
        if recv.is_err() || send.is_err() || got < buffer {
            tracing::warn!(
                wanted = buffer,
                got,
                "the UDP receive buffer is smaller than asked; raise net.core.rmem_max and \
                 net.core.wmem_max (sysctl) for full tunnel speed"
            );
        }
    }
    Ok(socket)
}

/// A QUIC endpoint on a socket from [`bind`]; a server when `server` is given.
pub fn endpoint(
    addr: SocketAddr,
    buffer: usize,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = bind(addr, buffer)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
}
