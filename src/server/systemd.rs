//! Telling systemd how the daemon is (`Type=notify`): READY=1 once every listener is bound
//! and the store and caches are open, RELOADING=1 / READY=1 around a SIGHUP reload,
//! STOPPING=1 when a shutdown starts, and WATCHDOG=1 every half `WatchdogSec` from a task
//! of the runtime that serves requests, so a runtime that stops scheduling gets the
//! service restarted. Outside systemd (no `$NOTIFY_SOCKET`) each call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Startup is done: every listener accepts.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) starts; [`reloaded`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd 253 and later want the reload's start time with it.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A shutdown starts: in-flight requests are finishing.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), when it asked for one.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Sends WATCHDOG=1 every half interval for as long as the runtime it is spawned on runs
/// its tasks. Without a watchdog, a task that ends at once.
pub async fn watchdog() {
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::debug!(?interval, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}
