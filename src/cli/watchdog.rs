//! The systemd watchdog (`WATCHDOG_USEC`): `WATCHDOG=1` is sent only while pier really works,
//! so that `Restart=always` restarts a wedged pier.
//!
//! Every interval (half of `WATCHDOG_USEC`) two probes run, each with its own timeout:
//! - the store: metadata can be read and written (`Store::check_health`, which reopens a
//!   database that redb latched after an I/O failure; if that is impossible, writes fail and the
//!   probe with them);
//! - the accept loop: a connection made to pier's own listener is taken.
//!
//! Invariant: the probes never run on the async runtime or its blocking pool, which stalled
//! transfers could exhaust: the watchdog has its own thread, and the store probe another one
//! (a store call may block; the watchdog then times out and does not ping, rather than block
//! with it). At most one store probe is in flight: while one hangs, no other is started.
//! While a probe fails, `STATUS=` says why; when they pass again, it says so.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::State;
use crate::store::Store;
use crate::systemd::Notifier;

/// The longest a probe may take (less when the interval is shorter).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the watchdog thread (and its store-probe thread); they live as long as the process.
pub fn start(
    state: Arc<State>,
    listeners: Vec<SocketAddr>,
    notifier: Arc<Notifier>,
    every: Duration,
) -> std::io::Result<()> {
    let mut store_probe = StoreProbe::start(state.store.clone())?;
    let target = listeners.first().map(|a| probe_target(*a));
    let timeout = every.min(PROBE_TIMEOUT);
    std::thread::Builder::new().name(String::from("pier-watchdog")).spawn(move || {
        let mut degraded = false;
        loop {
            std::thread::sleep(every);
            let verdict =
                store_probe.run(timeout).and_then(|()| target.map_or(Ok(()), |t| accept_probe(&state, t, timeout)));
            match verdict {
                Ok(()) => {
                    if degraded {
                        degraded = false;
                        log::info!("watchdog: the probes pass again");
                        notifier.status("serving (the watchdog probes pass again)");
                    }
                    notifier.watchdog();
                }
                Err(why) => {
                    log::error!("watchdog: not pinging systemd: {why}");
                    degraded = true;
                    notifier.status(&format!("degraded: {why}"));
                }
            }
        }
    })?;
    Ok(())
}

/// Where to connect to reach a listener (loopback for an unspecified address).
fn probe_target(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    addr
}

/// A connection to `target` is accepted by pier within `timeout`.
fn accept_probe(state: &State, target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let before = state.accepted.load(Ordering::Relaxed);
    let _conn = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("cannot connect to {target}: {e}"))?;
    while state.accepted.load(Ordering::Relaxed) == before {
        if Instant::now() >= deadline {
            return Err(format!("the accept loop did not take a connection to {target} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// The store probe's own thread, asked to probe once per round.
struct StoreProbe {
    request: SyncSender<()>,
    result: Receiver<Result<(), String>>,
    /// A probe was asked for and has not answered yet.
    pending: bool,
}

impl StoreProbe {
    fn start(store: Arc<Store>) -> std::io::Result<StoreProbe> {
        let (request, requests) = mpsc::sync_channel::<()>(1);
        let (answer, result) = mpsc::sync_channel(1);
        std::thread::Builder::new().name(String::from("pier-store-probe")).spawn(move || {
            for () in requests {
                let verdict = store.check_health().map_err(|e| format!("the store fails: {e}"));
                if answer.send(verdict).is_err() {
                    return;
                }
            }
        })?;
        Ok(StoreProbe { request, result, pending: false })
    }

    /// Probes the store (or waits on the probe still in flight) for at most `timeout`.
    fn run(&mut self, timeout: Duration) -> Result<(), String> {
        if !self.pending {
            self.request.send(()).map_err(|_| String::from("the store probe thread ended"))?;
            self.pending = true;
        }
        match self.result.recv_timeout(timeout) {
            Ok(verdict) => {
                self.pending = false;
                verdict
            }
            Err(RecvTimeoutError::Timeout) => Err(format!("the store did not answer within {timeout:?}")),
            Err(RecvTimeoutError::Disconnected) => Err(String::from("the store probe thread ended")),
        }
    }
}
