//! systemd, natively: `READY=1` once the state is open and every account resolved, `STATUS=`
//! lines a person reads in `systemctl status`, `RELOADING=1` around a reload, `STOPPING=1` at
//! shutdown, and `WATCHDOG=1` pings that stop when a poller or a sink worker is wedged (busy
//! in one fetch, store call or delivery far longer than any of them may take), so systemd
//! restarts a daemon that hangs. Outside systemd (`NOTIFY_SOCKET` unset) every call does
//! nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tells systemd something; a failure to tell is logged, never fatal.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!(error = %err, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Started: the state is open, the accounts are resolved, the tasks run.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// A line for `systemctl status`.
pub fn status(status: &str) {
    notify(&[sd_notify::NotifyState::Status(status)]);
}

/// A reload begins (SIGHUP); [`reloaded`] ends it.
pub fn reloading() {
    let mut states = vec![sd_notify::NotifyState::Reloading];
    // systemd 253 and later want the monotonic time with RELOADING=1.
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

pub fn reloaded() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Stopping: the batches in hand are being finished.
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: finishing the batches in hand"),
    ]);
}

/// Which tasks are busy in one operation, and since when. Pollers mark a fetch and a store
/// call, sink workers a delivery and its acknowledgement; waiting (a poll interval, a
/// backoff, a rate-limit pause) is not being busy.
#[derive(Debug, Default)]
pub struct Liveness {
    busy: Mutex<BTreeMap<String, (Instant, &'static str)>>,
}

/// Held while a task is busy in one operation; dropped when it is done.
pub struct Busy<'a> {
    liveness: &'a Liveness,
    task: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.liveness
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.task);
    }
}

impl Liveness {
    /// Marks `task` busy with `what` until the guard is dropped.
    pub fn busy(&self, task: &str, what: &'static str) -> Busy<'_> {
        self.busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task.to_owned(), (Instant::now(), what));
        Busy {
            liveness: self,
            task: task.to_owned(),
        }
    }

    /// The tasks busy in one operation for longer than `limit`: what, and for how long.
    pub fn wedged(&self, limit: Duration) -> Vec<String> {
        let busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.iter()
            .filter(|(_, (since, _))| since.elapsed() > limit)
            .map(|(task, (since, what))| {
                format!("{task}: {what} for {}s", since.elapsed().as_secs())
            })
            .collect()
    }
}

/// Pings the watchdog every `every` while no task is wedged (busy longer than
/// `wedged_after`); logs an ERROR, once, when one is, and stops pinging so systemd restarts
/// the daemon (`WatchdogSec=`). `ping` is the notification (the tests count them).
pub async fn watchdog(
    liveness: Arc<Liveness>,
    every: Duration,
    wedged_after: Duration,
    ping: impl Fn(),
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    let mut reported = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let wedged = liveness.wedged(wedged_after);
        if wedged.is_empty() {
            if reported {
                tracing::info!("no task is wedged any more; pinging the watchdog again");
                reported = false;
            }
            ping();
        } else if !reported {
            reported = true;
            tracing::error!(
                wedged = %wedged.join("; "),
                "a task has been busy in one operation far longer than it may take; no more \
                 watchdog pings, so systemd restarts the daemon (nothing is lost: the batch in \
                 hand is delivered again)"
            );
        }
    }
}

/// The watchdog ping, for [`watchdog`].
pub fn ping() {
    notify(&[sd_notify::NotifyState::Watchdog]);
}

/// `WatchdogSec=` as systemd set it for this process, if it did.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_stops_while_a_task_is_wedged_and_resumes_after() {
        let liveness = Arc::new(Liveness::default());
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pings);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(watchdog(
            Arc::clone(&liveness),
            Duration::from_secs(10),
            Duration::from_secs(60),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 4, "at 0, 10, 20, 30 s");
        {
            // A delivery that hangs (a file on a dead NFS server, say).
            let _busy = liveness.busy("sink archive/acme/auditevents", "a delivery");
            tokio::time::sleep(Duration::from_secs(55)).await;
            let before = pings.load(Ordering::SeqCst);
            assert!(before >= 9, "busy under the limit is alive: {before}");
            tokio::time::sleep(Duration::from_secs(60)).await;
            let stalled = pings.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(100)).await;
            assert_eq!(
                pings.load(Ordering::SeqCst),
                stalled,
                "no pings while wedged"
            );
            assert_eq!(
                liveness.wedged(Duration::from_secs(60)),
                ["sink archive/acme/auditevents: a delivery for 215s"]
            );
        }
        tokio::time::sleep(Duration::from_secs(25)).await;
        let resumed = pings.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(pings.load(Ordering::SeqCst) >= resumed + 2, "pinging again");
        shutdown.cancel();
        task.await.unwrap();
    }
}
