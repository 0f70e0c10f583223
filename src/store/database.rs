//! `MetaDb`: the store's handle on `meta.redb`, and how it heals after an I/O failure.
//!
//! redb latches I/O failures: once a write of the database file fails (ENOSPC during a commit,
//! EIO, EPERM), every later transaction of that `Database` fails with
//! `StorageError::PreviousIo` until the database is closed and opened again (measured with redb
//! 4.6 on a full 32 MiB ext4: the failed commit returns `Io(ENOSPC)`, every `begin_write` after
//! it `PreviousIo`, even once space is free; reads still answer from redb's cache). Left alone,
//! one full disk would stop every push until pier restarts. Here a write transaction that finds
//! the handle latched reopens the database (redb recovers the file to its last commit, about
//! 2 ms on a small one) and goes on: writes work again as soon as the cause is gone, without a
//! restart. If the file cannot be reopened for writing (a read-only or immutable file), the old
//! handle stays, reads go on, and writes keep failing: the store's probe then fails and the
//! watchdog stops pinging, so systemd restarts pier.
//!
//! Invariants:
//! - At most one `Database` of the file is open at any time (redb locks the file: a second open,
//!   even in this process, fails with `DatabaseAlreadyOpen`). A reopen therefore closes the old
//!   handle first, and only once nothing uses it: every transaction handed out ([`ReadTxn`],
//!   [`WriteTxn`]) holds a reference to its handle, and the reopen waits (bounded by
//!   `REOPEN_WAIT`) until the slot holds the last one. New transactions wait for the reopen
//!   (the slot's lock), and reopens are serialised (`reopening`).
//! - A reopen happens only when the current handle is latched (its `begin_write` answered
//!   `PreviousIo`) and the file can be opened for writing right now; a handle that cannot be
//!   replaced is never closed, so reads keep their handle whatever happens to writes.
//! - Each handle has a generation; a caller that saw generation N latched reopens only if N is
//!   still current (another caller may have reopened meanwhile).

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, StorageError, TransactionError};

use super::error::{IoContext, Result, StoreError};

/// redb's page cache: small, because blob data never goes through redb.
const DB_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// How long a reopen waits for the transactions of the old handle to end (they are short:
/// metadata only).
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// The open database and its generation (1 for the handle opened at start, one more per
/// reopen). `db` is `None` only after a reopen closed the old handle and failed to open the
/// file again; the next use tries again.
struct Slot {
    db: Option<Arc<Database>>,
    generation: u64,
    /// Set by [`MetaDb::close`]: the database stays closed, nothing reopens it.
    closed: bool,
}

/// `meta.redb`, reopened when redb latched an I/O failure.
pub(crate) struct MetaDb {
    path: PathBuf,
    slot: RwLock<Slot>,
    /// Serialises reopens.
    reopening: Mutex<()>,
}

/// A read transaction; keeps its database handle open until it ends.
pub(crate) struct ReadTxn {
    // Field order matters: the transaction ends before the handle reference is released.
    txn: redb::ReadTransaction,
    _db: Arc<Database>,
}

impl Deref for ReadTxn {
    type Target = redb::ReadTransaction;
    fn deref(&self) -> &redb::ReadTransaction {
        &self.txn
    }
}

/// A write transaction; keeps its database handle open until it commits or is dropped
/// (dropping aborts it).
pub(crate) struct WriteTxn {
    txn: redb::WriteTransaction,
    _db: Arc<Database>,
}

impl Deref for WriteTxn {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        &self.txn
    }
}

impl WriteTxn {
    /// Commits (see `Disk::commit`, the one caller).
    pub(super) fn commit(self) -> std::result::Result<(), redb::CommitError> {
        let WriteTxn { txn, _db } = self;
        txn.commit()
    }
}

fn open(path: &Path) -> Result<Database> {
    Ok(Database::builder().set_cache_size(DB_CACHE_BYTES).create(path)?)
}

/// Whether a failed `begin_write` says the handle is unusable until reopened.
fn latched(e: &TransactionError) -> bool {
    matches!(e, TransactionError::Storage(StorageError::PreviousIo | StorageError::DatabaseClosed))
}

impl MetaDb {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn open(path: PathBuf) -> Result<MetaDb> {
        let db = Arc::new(open(&path)?);
        let slot = Slot { db: Some(db), generation: 1, closed: false };
        Ok(MetaDb { path, slot: RwLock::new(slot), reopening: Mutex::new(()) })
    }

    /// Closes the database for good (at shutdown), once the transactions in flight have ended
    /// (bounded by `REOPEN_WAIT`); every later use fails. A file whose last handle was closed
    /// opens at once; one left open by an exiting process is repaired at its next open, which
    /// reads all of it (measured: ~100 ms per 30,000 blobs on a warm cache, several times that
    /// on a cold one), so a clean stop must close it rather than leave it to the process exit.
    pub(crate) fn close(&self) -> Result<()> {
        let _reopening = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        slot.closed = true;
        let Some(db) = slot.db.take() else { return Ok(()) };
        let db = wait_for_last_reference(db, Instant::now() + REOPEN_WAIT).map_err(|_| StoreError::Io {
            op: "close metadata",
            path: self.path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "transactions in flight did not end"),
        })?;
        db.close().map_err(|e| StoreError::Io {
            op: "close metadata",
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The current handle and its generation, reopening the file if the last reopen failed.
    fn current(&self) -> Result<(Arc<Database>, u64)> {
        let generation = {
            let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
            match &slot.db {
                Some(db) => return Ok((db.clone(), slot.generation)),
                None if slot.closed => return Err(closed(&self.path)),
                None => slot.generation,
            }
        };
        self.reopen(generation)?;
        let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
        match &slot.db {
            Some(db) => Ok((db.clone(), slot.generation)),
            None => Err(closed(&self.path)),
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTxn> {
        let (db, _) = self.current()?;
        let txn = db.begin_read()?;
        Ok(ReadTxn { txn, _db: db })
    }

    /// Begins a write transaction, reopening the database first if an earlier I/O failure
    /// latched the handle.
    pub(crate) fn begin_write(&self) -> Result<WriteTxn> {
        let (db, generation) = self.current()?;
        match db.begin_write() {
            Ok(txn) => Ok(WriteTxn { txn, _db: db }),
            Err(e) if latched(&e) => {
                // This caller's reference must go before the reopen waits for the last one.
                drop(db);
                self.reopen(generation)?;
                let (db, _) = self.current()?;
                let txn = db.begin_write()?;
                Ok(WriteTxn { txn, _db: db })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether metadata can be written now: a write transaction begins (healing a latched
    /// handle) and is aborted; nothing reaches the file.
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.begin_write().map(drop)
    }

    /// Replaces the handle of `generation` by a fresh one (unless another caller did already).
    fn reopen(&self, generation: u64) -> Result<()> {
        let _reopening = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        {
            let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
            if slot.closed {
                return Err(closed(&self.path));
            }
            if slot.generation != generation {
                return Ok(());
            }
        }
        // Nothing is closed unless the file can be opened for writing now (it may have become
        // read-only or immutable): until then the latched handle still serves reads.
        std::fs::OpenOptions::new().read(true).write(true).open(&self.path).at("reopen metadata", &self.path)?;
        let started = Instant::now();
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.db.take() {
            match wait_for_last_reference(old, started + REOPEN_WAIT) {
                // The latched I/O failure is what closing reports; the next open recovers.
                Ok(old) => {
                    if let Err(e) = old.close() {
                        log::debug!("closing the failed metadata handle: {e}");
                    }
                }
                Err(old) => {
                    slot.db = Some(old);
                    return Err(StoreError::Io {
                        op: "reopen metadata",
                        path: self.path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "transactions of the failed handle did not end",
                        ),
                    });
                }
            }
        }
        slot.generation += 1;
        match open(&self.path) {
            Ok(db) => {
                slot.db = Some(Arc::new(db));
                log::warn!("metadata database reopened after an I/O failure (in {} ms)", started.elapsed().as_millis());
                Ok(())
            }
            Err(e) => {
                log::error!("metadata database could not be reopened (tried again at its next use): {e}");
                Err(e)
            }
        }
    }
}

/// The database itself once `db` is its only reference (the transactions of other threads ended),
/// or `db` back at `deadline`.
fn wait_for_last_reference(mut db: Arc<Database>, deadline: Instant) -> std::result::Result<Database, Arc<Database>> {
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(shared) if Instant::now() >= deadline => return Err(shared),
            Err(shared) => {
                db = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn closed(path: &Path) -> StoreError {
    StoreError::Io {
        op: "open metadata",
        path: path.to_path_buf(),
        source: std::io::Error::other("the metadata database is closed (shut down, or a reopen failed)"),
    }
}
