//! `FreeSpace`: the free-space reserve (`storage.filesystem.reserve`) of the filesystem that holds
//! the data directory.
//!
//! New data (an upload, a chunk, a manifest) is refused with `StoreError::InsufficientSpace` when
//! the space left to unprivileged users (`statvfs` `f_bavail`) is below the reserve, or would go
//! below it with the bytes the request announced. Pulls, deletes and upload cancels are never
//! refused: they are how space comes back. The reserve keeps room for the metadata database,
//! the system and the operator; a full disk is survived too (see `database`), but a reserve
//! means it rarely happens.
//!
//! Invariant: `statvfs` runs at most once per `MEASURE_EVERY`; between measurements the last
//! value is used (a check costs a lock and a clock read).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::{Result, StoreError};

/// How long a measurement of free space is used.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The reserve and the last measurement (cheap to clone: clones share both).
#[derive(Clone)]
pub(crate) struct FreeSpace(Arc<Inner>);

struct Inner {
    /// A directory on the filesystem measured.
    dir: PathBuf,
    /// Bytes to keep free; 0 disables the check.
    reserve: AtomicU64,
    /// When free space was last measured, and what it was.
    measured: Mutex<Option<(Instant, u64)>>,
}

impl FreeSpace {
    pub(crate) fn new(dir: &Path) -> FreeSpace {
        FreeSpace(Arc::new(Inner { dir: dir.to_path_buf(), reserve: AtomicU64::new(0), measured: Mutex::new(None) }))
    }

    pub(crate) fn set_reserve(&self, bytes: u64) {
        self.0.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Bytes available to unprivileged users on the filesystem, measured at most `max_age` ago.
    fn measure(&self, max_age: Duration) -> Result<u64> {
        let mut measured = self.0.measured.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = *measured {
            if at.elapsed() < max_age {
                return Ok(free);
            }
        }
        let stat = nix::sys::statvfs::statvfs(&self.0.dir).map_err(|errno| StoreError::Io {
            op: "measure free space",
            path: self.0.dir.clone(),
            source: errno.into(),
        })?;
        #[allow(clippy::useless_conversion)] // the field types differ between targets
        let free = u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        *measured = Some((Instant::now(), free));
        Ok(free)
    }

    /// Refuses new data when free space is below the reserve, or would go below it with
    /// `incoming` more bytes (what the request announced; 0 when unknown).
    pub(crate) fn ensure(&self, incoming: u64) -> Result<()> {
        self.ensure_measured(incoming, MEASURE_EVERY)
    }

    /// [`ensure`](Self::ensure) on a fresh measurement: for a body streaming in, whose own
    /// bytes make any earlier measurement stale (one `statvfs`, about a microsecond).
    pub(crate) fn ensure_now(&self) -> Result<()> {
        self.ensure_measured(0, Duration::ZERO)
    }

    fn ensure_measured(&self, incoming: u64, max_age: Duration) -> Result<()> {
        let reserve = self.0.reserve.load(Ordering::Relaxed);
        if reserve == 0 {
            return Ok(());
        }
        let free = self.measure(max_age)?;
        if free.saturating_sub(incoming) < reserve {
            return Err(StoreError::InsufficientSpace { free, reserve, incoming });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_refuses_what_would_go_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let space = FreeSpace::new(dir.path());
        let free = space.measure(MEASURE_EVERY).unwrap();
        assert!(free > 0);
        // No reserve: nothing is refused, whatever is announced.
        space.ensure(u64::MAX).unwrap();
        space.set_reserve(1);
        space.ensure(0).unwrap();
        match space.ensure(free) {
            Err(StoreError::InsufficientSpace { free: f, reserve: 1, incoming }) => {
                assert_eq!((f, incoming), (free, free));
            }
            other => panic!("{other:?}"),
        }
        space.set_reserve(u64::MAX);
        let e = space.ensure(0).unwrap_err();
        assert!(e.to_string().starts_with("free space below the configured reserve ("), "{e}");
        assert!(e.is_out_of_space());
    }
}
