//! The tunnel between an appliance (`pixelport serve`) and its edges (`pixelport edge`):
//! the wire format ([`frame`], pure), the join token ([`token`], pure), the reconnect policy
//! ([`backoff`], pure), identities and pins ([`identity`], [`tls`]), the stream pipe
//! ([`stream`]), the appliance's connector ([`connector`]) and `tunnel join` ([`join`]).
//! docs/tunnel.md describes the protocol.

pub mod backoff;
pub mod config;
pub mod connector;
pub mod frame;
pub mod identity;
pub mod join;
pub mod purge;
pub mod stream;
pub mod tls;
pub mod token;
pub mod udp;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("cannot read the joined edges: {0}")]
    Joined(String),
    #[error("tunnel configuration: {0}")]
    Config(String),
    #[error("cannot resolve the edge address {0}")]
    Resolve(String),
    #[error("cannot dial the edge: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("tunnel connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("tunnel stream: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("tunnel I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Refused(String),
    #[error("tunnel protocol: {0}")]
    Protocol(String),
}
