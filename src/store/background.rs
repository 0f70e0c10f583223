//! The store's background threads: how they sleep, and how [`Store::close`](super::Store::close) stops them.

use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A background thread of the store (the consistency walk, the background scrub) and the signal
/// that stops it: at shutdown the thread gives up between two steps (a repository, a batch of
/// files, a chunk of a blob), so that [`Store::close`](super::Store::close) can close the database cleanly; what it
/// did not reach it does at the next start.
#[derive(Default)]
pub(super) struct BackgroundControl {
    stopping: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BackgroundControl {
    pub(super) fn stopping(&self) -> bool {
        *self.stopping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits `delay` unless a stop comes first; true if stopped.
    pub(super) fn sleep(&self, delay: Duration) -> bool {
        let stopping = self.stopping.lock().unwrap_or_else(|p| p.into_inner());
        let (stopping, _) =
            self.wake.wait_timeout_while(stopping, delay, |stop| !*stop).unwrap_or_else(|p| p.into_inner());
        *stopping
    }

    /// Keeps `thread`, to be joined by [`BackgroundControl::stop`].
    pub(super) fn adopt(&self, thread: JoinHandle<()>) {
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(&self) {
        *self.stopping.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                log::error!("a background thread of the store panicked");
            }
        }
    }
}
