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
