//! Blobs: the one global file per digest, its hardlink in each repository that has it, and the
//! `REPO_BLOBS`/`BLOBS` records that make a link visible. Reads, mounts and deletes.
//!
//! Order of a link (under the write lock): global file in place and its directory fsynced →
//! hardlink in the repository and its directory fsynced → one transaction records the link.
//! Order of an unlink: one transaction removes the record → the repository's hardlink goes →
//! the global file goes when that was the last link.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::ReadableTable;

use super::error::{gone_as, Result, StoreError};
use super::meta::{BLOBS, LINKED_AT, MANIFESTS, REPOS, REPO_BLOBS, REPO_BYTES};
use super::{layout, now_unix, Store};
use crate::core::{Digest, RepoName};

/// An open blob, for reading at explicit offsets (clones share the file). The file stays the
/// store's: callers only read from it.
#[derive(Clone)]
pub struct BlobReader {
    file: Arc<File>,
    size: u64,
}

/// Set once the kernel said it cannot read without blocking (`RWF_NOWAIT` unsupported: kernels
/// before 4.14, some filesystems); every read then goes the blocking way.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

impl BlobReader {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads at `offset` into `buf`, waiting for the disk if need be (call it where blocking is
    /// allowed). Returns the number of bytes read; 0 only at the end of the file.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// Reads at `offset` only what the page cache holds, never waiting for the disk
    /// (`preadv2(RWF_NOWAIT)`): `Ok(None)` when the bytes at `offset` are not cached (or the
    /// kernel cannot tell), so the caller reads them with [`read_at`](Self::read_at) where
    /// blocking is allowed. May return fewer bytes than asked (only part cached).
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<Option<usize>> {
        use rustix::io::{preadv2, Errno, ReadWriteFlags};
        if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) || buf.is_empty() {
            return Ok(None);
        }
        loop {
            match preadv2(&*self.file, &mut [io::IoSliceMut::new(buf)], offset, ReadWriteFlags::NOWAIT) {
                // 0 before the end: let the blocking read say what it is.
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(n)),
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::INTR) => {}
                Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
                    NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What `unrecord_repo_blob` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unlinked {
    /// The repository did not have the blob.
    NotLinked,
    /// Removed from the repository; other repositories still link it.
    LinkedElsewhere,
    /// Removed, and that was the last link: the global file can go.
    LastLink,
}

impl Store {
    /// The size of `digest` in `repo`, if the repository has that blob.
    /// A quarantined blob (`store::scrub`) is unknown: its bytes are never served, and a
    /// client that asks first pushes it again, which heals it.
    pub fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let txn = self.db.begin_read()?;
        match txn.open_table(REPO_BLOBS)?.get((repo.as_str(), digest.as_str()))? {
            Some(_) if Self::is_quarantined(&txn, digest)? => Err(StoreError::BlobUnknown),
            Some(size) => Ok(size.value()),
            None if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() => Err(StoreError::NameUnknown),
            None => Err(StoreError::BlobUnknown),
        }
    }

    /// Opens a blob the repository has, for reading.
    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<BlobReader> {
        let size = self.blob_size(repo, digest)?;
        // A delete of the last link may remove the file between the lookup and the open.
        let path = self.paths.blob(digest);
        let file = File::open(&path).map_err(|e| gone_as(e, "open", &path, StoreError::BlobUnknown))?;
        Ok(BlobReader { file: Arc::new(file), size })
    }

    /// Makes the verified, fsynced file `src` the global blob `digest` unless that file exists
    /// (hardlink, then the directory fsynced). `src` stays: the caller removes it once the link is
    /// recorded (an upload stays resumable until then). Caller holds the lock.
    pub(super) fn place_global(&self, src: &Path, digest: &Digest) -> Result<()> {
        let global = self.paths.blob(digest);
        let global_dir = self.paths.blob_dir(digest.algorithm());
        self.disk.ensure_dir(&global_dir)?;
        self.disk.make_read_only(src)?;
        if self.disk.link_if_absent(src, &global)? {
            self.disk.sync_dir(&global_dir)?;
        }
        Ok(())
    }

    /// Hardlinks the global blob into `repo`'s layout, completing the layout first if needed
    /// (`oci-layout`, then `index.json`, written last, so that its presence means the layout is
    /// complete even after a crash while a new repository was being set up).
    pub(super) fn link_into_repo(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let index = self.paths.index(repo);
        if !index.exists() {
            self.disk.ensure_dir(&self.paths.repo(repo))?;
            let oci_layout = self.paths.oci_layout(repo);
            if !oci_layout.exists() {
                self.disk.replace(&oci_layout, layout::OCI_LAYOUT)?;
            }
            self.disk.replace(&index, &self.render_index(repo)?)?;
        }
        let dst = self.paths.repo_blob(repo, digest);
        let dir = self.paths.repo_blob_dir(repo, digest.algorithm());
        self.disk.ensure_dir(&dir)?;
        if self.disk.link_if_absent(&self.paths.blob(digest), &dst)? {
            self.disk.sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Inserts `REPO_BLOBS[(repo, digest)]`, keeping `BLOBS` counts and `REPOS` in step.
    pub(super) fn record_repo_blob(
        txn: &redb::WriteTransaction,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        let now = now_unix();
        txn.open_table(LINKED_AT)?.insert((repo.as_str(), digest.as_str()), now)?;
        Self::note_gc_change(txn, repo, super::gc::GcChange::Linked(now))?;
        let mut links = txn.open_table(REPO_BLOBS)?;
        if links.insert((repo.as_str(), digest.as_str()), size)?.is_none() {
            let mut bytes = txn.open_table(REPO_BYTES)?;
            let usage = bytes.get(repo.as_str())?.map_or(0, |v| v.value());
            bytes.insert(repo.as_str(), usage.saturating_add(size))?;
            let mut blobs = txn.open_table(BLOBS)?;
            let count = blobs.get(digest.as_str())?.map(|v| v.value().1).unwrap_or(0);
            blobs.insert(digest.as_str(), (size, count + 1))?;
        }
        let mut repos = txn.open_table(REPOS)?;
        if repos.get(repo.as_str())?.is_none() {
            repos.insert(repo.as_str(), now_unix())?;
        }
        Ok(())
    }

    /// Removes `REPO_BLOBS[(repo, digest)]`, keeping the `BLOBS` count in step; when that was the
    /// last link, the `BLOBS` record goes too and the caller removes the global file once the
    /// transaction is committed (still under the write lock).
    pub(super) fn unrecord_repo_blob(
        txn: &redb::WriteTransaction,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Unlinked> {
        txn.open_table(LINKED_AT)?.remove((repo.as_str(), digest.as_str()))?;
        let mut links = txn.open_table(REPO_BLOBS)?;
        let Some(size) = links.remove((repo.as_str(), digest.as_str()))?.map(|v| v.value()) else {
            return Ok(Unlinked::NotLinked);
        };
        {
            let mut bytes = txn.open_table(REPO_BYTES)?;
            let usage = bytes.get(repo.as_str())?.map_or(0, |v| v.value());
            bytes.insert(repo.as_str(), usage.saturating_sub(size))?;
        }
        let mut blobs = txn.open_table(BLOBS)?;
        let entry = blobs.get(digest.as_str())?.map(|v| v.value());
        match entry {
            Some((size, count)) if count > 1 => {
                blobs.insert(digest.as_str(), (size, count - 1))?;
                Ok(Unlinked::LinkedElsewhere)
            }
            _ => {
                blobs.remove(digest.as_str())?;
                Ok(Unlinked::LastLink)
            }
        }
    }

    /// After a committed unlink: removes the repository's hardlink and, if no repository links
    /// the blob any more, the global file (disk space comes back at once). Caller holds the lock.
    pub(super) fn remove_blob_files(&self, repo: &RepoName, digest: &Digest, unlinked: Unlinked) -> Result<()> {
        self.disk.remove_if_exists(&self.paths.repo_blob(repo, digest))?;
        if unlinked == Unlinked::LastLink {
            self.disk.remove_if_exists(&self.paths.blob(digest))?;
        }
        Ok(())
    }

    /// `otherwise` when the repository exists, else `NameUnknown` (inside a write transaction).
    pub(super) fn unknown_in_write(
        txn: &redb::WriteTransaction,
        repo: &RepoName,
        otherwise: StoreError,
    ) -> Result<StoreError> {
        Ok(if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() { StoreError::NameUnknown } else { otherwise })
    }

    /// Cross-repository mount: gives `to` the blob `digest` of `from`. Returns false when
    /// `from` does not have it (the caller then starts a normal upload).
    pub fn mount_blob(&self, from: &RepoName, to: &RepoName, digest: &Digest) -> Result<bool> {
        let size = match self.blob_size(from, digest) {
            Ok(s) => s,
            Err(StoreError::BlobUnknown | StoreError::NameUnknown) => return Ok(false),
            Err(e) => return Err(e),
        };
        let _guard = self.lock();
        self.check_quota(to, digest, size)?;
        let txn = self.db.begin_write()?;
        // Re-check under the lock: `from` may have lost the blob (and its file) meanwhile.
        if txn.open_table(REPO_BLOBS)?.get((from.as_str(), digest.as_str()))?.is_none() {
            return Ok(false);
        }
        self.link_into_repo(to, digest)?;
        Self::record_repo_blob(&txn, to, digest, size)?;
        self.disk.commit(txn)?;
        Ok(true)
    }

    /// Removes the blob from `repo`; its file goes too when no other repository links it.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        if txn.open_table(MANIFESTS)?.get((repo.as_str(), digest.as_str()))?.is_some() {
            return Err(StoreError::IsManifest);
        }
        let unlinked = Self::unrecord_repo_blob(&txn, repo, digest)?;
        if unlinked == Unlinked::NotLinked {
            return Err(Self::unknown_in_write(&txn, repo, StoreError::BlobUnknown)?);
        }
        self.disk.commit(txn)?;
        self.remove_blob_files(repo, digest, unlinked)
    }
}
