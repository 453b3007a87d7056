//! Telling systemd where the broker is (`Type=notify`): `READY=1` once every listener is
//! bound and the store is loaded, `RELOADING=1` and `READY=1` around a SIGHUP reload,
//! `STOPPING=1` when shutdown begins. Each is a datagram to the socket named by
//! `NOTIFY_SOCKET`; without that variable (not started by systemd) nothing is sent.
//!
//! A failed send is logged and otherwise ignored: the broker runs the same either way.

use sd_notify::NotifyState;

/// Every listener is bound and the store is loaded: clients can connect.
pub fn ready() {
    send("READY=1", &[NotifyState::Ready]);
}

/// A reload (SIGHUP) begins. systemd wants the monotonic clock with it, to tell this
/// reload from an earlier one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("RELOADING=1", &[NotifyState::Reloading, now]),
        Err(_) => send("RELOADING=1", &[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send("STOPPING=1", &[NotifyState::Stopping]);
}

fn send(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(
            event = "notify_failed",
            state = what,
            "cannot tell systemd {what}: {e}"
        );
    }
}
