//! Waiting on observable events (a log line, a port answering, a file appearing, a process
//! exiting) instead of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

/// Polls `f` until it is true (returns true) or `timeout` passes (returns false). Callers assert
/// on the result with a message saying what they saw.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Some` (returned) or `timeout` passes (panics with `what` and
/// whatever `explain` says then, e.g. the daemon's log).
#[track_caller]
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    explain: impl FnOnce() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= end {
            panic!("{what}: not within {timeout:?}\n{}", explain());
        }
        std::thread::sleep(POLL);
    }
}
