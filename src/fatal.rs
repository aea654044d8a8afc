//! Faults the daemon cannot recover from in place. redb answers every call after one failed
//! write with `PreviousIo` until the database is reopened; rather than stay up answering 500
//! to everything, the daemon records the fault here, shuts down gracefully, and exits with
//! `EXIT_CODE`, so systemd (`Restart=on-failure`) starts it again and the catalog is reopened
//! (and repaired by redb if it must be).

use std::sync::OnceLock;

use tokio::sync::Notify;

/// The exit status after a fault (EX_TEMPFAIL: "try again later").
pub const EXIT_CODE: u8 = 75;

static FAULT: OnceLock<String> = OnceLock::new();
static RAISED: Notify = Notify::const_new();

/// Records the first fault and wakes `wait`; later ones are only logged.
pub fn raise(reason: impl Into<String>) {
    let reason = reason.into();
    if FAULT.set(reason.clone()).is_ok() {
        tracing::error!(
            %reason,
            "unrecoverable storage fault: shutting down to be restarted (exit status {EXIT_CODE})"
        );
        RAISED.notify_one();
    } else {
        tracing::error!(%reason, "another storage fault while shutting down");
    }
}

/// The first fault raised, if any.
pub fn raised() -> Option<&'static str> {
    FAULT.get().map(String::as_str)
}

/// Returns once a fault has been raised (at once if it already was).
pub async fn wait() -> &'static str {
    loop {
        if let Some(reason) = raised() {
            return reason;
        }
        RAISED.notified().await;
    }
}
