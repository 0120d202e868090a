//! Signals: SIGTERM or SIGINT stops the daemon in order; a second one exits at once. SIGHUP
//! (logrotate's `postrotate`, `systemctl reload`) asks for a reload: files reopened, tokens
//! read again.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGINT, SIGTERM};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status when a second signal cuts a shutdown short.
const FORCED_EXIT: i32 = 130;

/// Installs the handlers and returns a token cancelled by the first SIGTERM or SIGINT.
///
/// The second signal is handled by signal-hook in the signal handler itself, not by a task,
/// so it ends the process even if the runtime is wedged.
pub fn install() -> std::io::Result<CancellationToken> {
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // Order matters: the conditional exit must see the flag the first signal sets.
        signal_hook::flag::register_conditional_shutdown(sig, FORCED_EXIT, Arc::clone(&signalled))?;
        signal_hook::flag::register(sig, Arc::clone(&signalled))?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "stopping: no new fetches, finishing the batches in hand (a second signal exits at once)"
        );
        cancel.cancel();
    });
    Ok(token)
}

/// Listens for SIGHUP from now on (so it no longer ends the process); each one received is a
/// request to reload.
pub fn reloads() -> std::io::Result<tokio::signal::unix::Signal> {
    signal(SignalKind::hangup())
}
