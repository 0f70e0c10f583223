//! `Store`: the only owner of the data directory and of everything in it.
//!
//! It keeps the commit protocol of ARCHITECTURE.md: files are written, verified, fsynced and
//! linked *before* one short redb write transaction makes them visible; deletions run the other
//! way round (transaction first, unlink after). Metadata therefore only ever points at complete
//! files, and a crash at any instant leaves at most unreferenced files, which [`Store::open`]
//! sweeps away (see [`recovery`]). Each repository's `index.json` is derived data, written off
//! the request path by a background writer ([`index`]). No path and no file handle leaves this
//! module: callers get typed values ([`BlobReader`], [`UploadSession`],
//! [`Descriptor`](crate::core::manifest::Descriptor)).
//!
//! All methods are blocking (the HTTP layer calls them from blocking threads), except
//! [`UploadSession::claim`], a future that waits for exclusive use of an upload session and
//! needs no particular runtime.
//!
//! Files, one concept each: [`error`] (`StoreError`), [`disk`] (every file-system mutation, and
//! the fault-injection seam), `database` (the redb handle, reopened after a latched I/O
//! failure), `space` (the free-space reserve), [`layout`] (paths of the data directory), [`meta`] (the redb
//! schema and its invariants), [`blobs`] (blob links, reads, mounts, deletes), [`manifests`]
//! (manifests, tags, referrers), [`listing`] (catalog and tag pages), [`index`] (each
//! repository's `index.json` and its background writer), [`upload`] (upload sessions),
//! `upload_writer` (how upload bytes reach the disk), [`recovery`] (the start-up sweep),
//! [`check`] (the invariant checker), [`migrate`] (importing a registry:2 data directory in
//! place, and the commit of foreign files it shares with imports), `migrate_source` (reading
//! one) and [`staging`] (an import's files, streamed in and hashed before they are committed).

mod background;
pub mod blobs;
pub mod check;
mod database;
pub(crate) mod disk;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod index;
pub mod layout;
pub mod listing;
pub mod manifests;
pub mod meta;
pub mod migrate;
mod migrate_source;
pub mod quota;
pub mod recovery;
pub mod retention;
pub mod scrub;
mod space;
pub mod staging;
pub mod upload;
mod upload_writer;
pub mod usage;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use database::MetaDb;
use disk::Disk;
use index::IndexWriter;
use layout::Paths;
use meta::{
    BLOBS, GC_DUE, INDEX_DIRTY, LINKED_AT, MAINTENANCE, MANIFESTS, MANIFEST_TAGS, QUARANTINE, REFERRERS, REPOS,
    REPO_BLOBS, REPO_BYTES, TAGGED_AT, TAGS, UPLOADS,
};
use redb::{ReadableTable, TableHandle};
use space::FreeSpace;

pub use blobs::BlobReader;
pub use check::Problem;
pub use disk::write_file_atomically;
pub use error::{Result, StoreError};
pub use listing::{Page, Summary};
pub use manifests::ReferrersPage;
pub use manifests::StoredManifest;
pub use upload::{ChunkAppend, SessionClaim, UploadSession};

pub struct Store {
    paths: Paths,
    /// `meta.redb`; reopens itself when redb latched an I/O failure (see `database`).
    db: MetaDb,
    disk: Disk,
    /// The free-space reserve of the data directory's filesystem.
    space: FreeSpace,
    /// Upload sessions touched since start; others are loaded from `UPLOADS` on demand.
    sessions: Mutex<HashMap<String, UploadSession>>,
    /// Serialises every (file link/unlink + metadata transaction) sequence, so that a concurrent
    /// delete can never interleave between a push's link and its transaction. Only O(1) work per
    /// object runs under it: `index.json` files are written by the index writer, outside it.
    /// Invariant, kept under this lock: the global file `blobs/<alg>/<hex>` exists whenever
    /// `BLOBS[digest]` counts at least one link. It is created only by `blobs::commit_blob_file`
    /// (uploads and manifests alike), and removed when a delete takes away the last link (or by
    /// the start-up sweep, for what a crash left unreferenced), always while holding this lock.
    write_lock: Mutex<()>,
    /// The background writer of `index.json` files (see [`index`]); shared with its thread.
    indexes: Arc<IndexWriter>,
    /// The consistency walk's thread and its stop signal (see [`recovery`]).
    walk: Arc<background::BackgroundControl>,
    /// The background scrub's thread and its stop signal (`store::scrub`).
    scrubber: Arc<background::BackgroundControl>,
    /// The quota rules in force (see [`quota`]).
    quotas: quota::Quotas,
    /// The retention policies a daemon applies (`store::retention`).
    retention: retention::RetentionPolicies,
}

impl Drop for Store {
    /// Ends the index writer's thread (it holds no reference to the store; what is still marked
    /// is written at the next start).
    fn drop(&mut self) {
        self.indexes.stop();
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the data directory and makes its uploads consistent; what else a
    /// crash may have left is for [`Store::sweep_unreferenced`], which the caller runs while it
    /// serves (see `recovery`).
    pub fn open(root: &Path) -> Result<Store> {
        Self::open_on(root, Disk::default())
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        self.paths.root()
    }

    /// [`Store::open`] with the given file-system access (tests install fault plans this way).
    pub(crate) fn open_on(root: &Path, disk: Disk) -> Result<Store> {
        let paths = Paths::new(root);
        disk.ensure_dir(root)?;
        for d in [paths.blobs(), paths.repositories(), paths.uploads()] {
            disk.ensure_dir(&d)?;
        }
        let db = MetaDb::open(paths.db())?;
        {
            let txn = db.begin_write()?;
            let existing: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
            let missing = |name: &str| !existing.iter().any(|t| t == name);
            // A data directory from before `INDEX_DIRTY` existed: every index.json is due once
            // (the old start-up rewrote them all), so that a crash of the old version is healed.
            if missing(INDEX_DIRTY.name()) {
                let mut marks = txn.open_table(INDEX_DIRTY)?;
                for e in txn.open_table(REPOS)?.iter()? {
                    marks.insert(e?.0.value(), 1)?;
                }
            }
            // ... or before `MANIFEST_TAGS`: built once from `TAGS`.
            if missing(MANIFEST_TAGS.name()) {
                let mut by_manifest = txn.open_table(MANIFEST_TAGS)?;
                for e in txn.open_table(TAGS)?.iter()? {
                    let (k, v) = e?;
                    let (repo, tag) = k.value();
                    by_manifest.insert((repo, v.value(), tag), ())?;
                }
            }
            txn.open_table(REPOS)?;
            txn.open_table(BLOBS)?;
            txn.open_table(REPO_BLOBS)?;
            txn.open_table(MANIFESTS)?;
            txn.open_table(TAGS)?;
            txn.open_table(MANIFEST_TAGS)?;
            txn.open_table(REFERRERS)?;
            txn.open_table(UPLOADS)?;
            txn.open_table(INDEX_DIRTY)?;
            txn.open_table(LINKED_AT)?;
            txn.open_table(GC_DUE)?;
            txn.open_table(MAINTENANCE)?;
            // A data directory from before `REPO_BYTES`: each repository's usage, summed once.
            if missing(REPO_BYTES.name()) {
                let mut sums: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
                for e in txn.open_table(REPO_BLOBS)?.iter()? {
                    let (k, v) = e?;
                    *sums.entry(k.value().0.to_string()).or_default() += v.value();
                }
                let mut bytes = txn.open_table(REPO_BYTES)?;
                for (repo, sum) in &sums {
                    bytes.insert(repo.as_str(), *sum)?;
                }
            }
            txn.open_table(QUARANTINE)?;
            txn.open_table(TAGGED_AT)?;
            disk.commit(txn)?;
        }
        let space = FreeSpace::new(root);
        let store = Store {
            paths,
            db,
            disk,
            space,
            sessions: Mutex::new(HashMap::new()),
            write_lock: Mutex::new(()),
            indexes: Arc::new(IndexWriter::new()),
            walk: Arc::default(),
            scrubber: Arc::default(),
            quotas: quota::Quotas::default(),
            retention: retention::RetentionPolicies::default(),
        };
        store.recover()?;
        Ok(store)
    }

    /// Sets `storage.filesystem.reserve`: bytes to keep free on the data directory's filesystem
    /// (0: no reserve). Takes effect for the next request.
    pub fn set_free_space_reserve(&self, bytes: u64) {
        self.space.set_reserve(bytes);
    }

    /// Refuses new data (`InsufficientSpace`) when free space is below the reserve or would go
    /// below it with `incoming` more bytes (0 when the request announced no length). Cheap:
    /// free space is measured at most once a second.
    pub fn ensure_free_space(&self, incoming: u64) -> Result<()> {
        self.space.ensure(incoming)
    }

    /// Whether the store works: metadata can be read, and written (a latched database is
    /// reopened here if it can be). Blocking; the watchdog's probe.
    pub fn check_health(&self) -> Result<()> {
        self.repo_count()?;
        self.db.check_writable()
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}
