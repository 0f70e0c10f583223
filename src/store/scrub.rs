//! Scrub: every blob file re-hashed against its digest; a corrupt one is taken out of service
//! (quarantined) and healed by the next push of the same content.
//!
//! - Quarantine (`Store::quarantine`), under the write lock: first the `QUARANTINE` row (one
//!   transaction: from then on every read of the blob answers unknown, see `Store::blob_size`
//!   and the manifest lookups), then the global file moves to `quarantine/<alg>/<hex>` and the
//!   repositories' hardlinks of it go. The `BLOBS` and `REPO_BLOBS` rows stay: they say which
//!   repositories had it. A crash between the two steps leaves the row and the file in place:
//!   still out of service, and the next scrub or heal moves the file.
//! - Heal (`Store::prepare_heal` / `Store::finish_heal`), when an upload or a manifest push
//!   brings a quarantined digest, verified: before the new file is placed, whatever is at the
//!   global path moves to quarantine (a crash may have left the corrupt file there); then, in the
//!   push's transaction, every repository that linked the blob gets its hardlink back and the
//!   `QUARANTINE` row goes.
//! - Reads never serve a quarantined blob's bytes: a client that asks `HEAD` first (all do)
//!   pushes the blob again, which heals it.

use std::os::unix::fs::MetadataExt;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::meta::{BLOBS, QUARANTINE, REPO_BLOBS};
use super::upload::hash_file;
use super::{now_unix, Store};
use crate::core::{Digest, RepoName};

/// A blob scrub found corrupt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptBlob {
    pub digest: String,
    pub why: String,
}

/// What a scrub found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    pub blobs: u64,
    pub bytes: u64,
    /// Found corrupt by this scrub (now quarantined).
    pub corrupt: Vec<CorruptBlob>,
    /// Quarantined before, still waiting for a push to heal them.
    pub still_quarantined: u64,
    pub elapsed_ms: u64,
}

impl Store {
    /// Re-hashes every blob file (outside the lock; reads only), quarantining each that is
    /// missing, of the wrong size or of the wrong content. `progress` hears every 1,000 blobs.
    pub fn scrub(&self, mut progress: impl FnMut(&str)) -> Result<ScrubReport> {
        let started = std::time::Instant::now();
        let mut report = ScrubReport::default();
        let (blobs, quarantined) = {
            let txn = self.db.begin_read()?;
            let mut blobs = Vec::new();
            for e in txn.open_table(BLOBS)?.iter()? {
                let (k, v) = e?;
                blobs.push((k.value().to_string(), v.value().0));
            }
            (blobs, txn.open_table(QUARANTINE)?.iter()?.count() as u64)
        };
        let total = blobs.len();
        for (i, (name, size)) in blobs.into_iter().enumerate() {
            if i % 1000 == 0 && i > 0 {
                progress(&format!("{i} of {total} blobs"));
            }
            let Ok(digest) = Digest::parse(&name) else { continue };
            let path = self.paths.blob(&digest);
            let found = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((None, "file missing".to_string())),
                Err(e) => Some((None, format!("cannot read: {e}"))),
                Ok(meta) if meta.len() != size => {
                    Some((Some((meta.dev(), meta.ino())), format!("{} bytes, {size} expected", meta.len())))
                }
                Ok(meta) => match hash_file(&path, digest.algorithm()) {
                    Ok((hasher, _)) => {
                        report.bytes += size;
                        let actual = hasher.finish();
                        (actual != digest)
                            .then(|| (Some((meta.dev(), meta.ino())), format!("content hashes to {actual}")))
                    }
                    Err(e) => Some((Some((meta.dev(), meta.ino())), format!("cannot read: {e}"))),
                },
            };
            report.blobs += 1;
            if let Some((inode, why)) = found {
                if self.quarantine(&digest, inode, &why)? {
                    report.corrupt.push(CorruptBlob { digest: name, why });
                }
            }
        }
        report.still_quarantined = quarantined;
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Takes `digest` out of service (see the module doc) if it is still the file scrub looked
    /// at (`inode`; `None`: it was missing): a push may have healed or replaced it meanwhile, or
    /// a delete removed it. Returns whether it did.
    pub(super) fn quarantine(&self, digest: &Digest, inode: Option<(u64, u64)>, why: &str) -> Result<bool> {
        let _guard = self.lock();
        let global = self.paths.blob(digest);
        let now = std::fs::metadata(&global).ok().map(|m| (m.dev(), m.ino()));
        let txn = self.db.begin_write()?;
        if txn.open_table(BLOBS)?.get(digest.as_str())?.is_none() || now != inode {
            return Ok(false);
        }
        let already = txn.open_table(QUARANTINE)?.insert(digest.as_str(), now_unix())?.is_some();
        let repos = Self::repos_linking(&txn.open_table(REPO_BLOBS)?, digest)?;
        self.disk.commit(txn)?;
        if inode.is_some() {
            let dir = self.paths.quarantine_dir(digest.algorithm());
            self.disk.ensure_dir(&dir)?;
            self.disk.rename(&global, &self.paths.quarantined(digest))?;
            self.disk.sync_dir(&dir)?;
        }
        for repo in repos {
            self.disk.remove_if_exists(&self.paths.repo_blob(&repo, digest))?;
        }
        log::error!("{digest} is corrupt ({why}): quarantined; a push of the same content heals it");
        Ok(!already || inode.is_some())
    }

    /// The repositories whose `REPO_BLOBS` has `digest` (a scan of every link: quarantines and
    /// heals are rare).
    pub(super) fn repos_linking(
        links: &impl ReadableTable<(&'static str, &'static str), u64>,
        digest: &Digest,
    ) -> Result<Vec<RepoName>> {
        let mut repos = Vec::new();
        for e in links.iter()? {
            let (k, _) = e?;
            let (repo, d) = k.value();
            if d == digest.as_str() {
                if let Ok(r) = RepoName::parse(repo) {
                    repos.push(r);
                }
            }
        }
        Ok(repos)
    }

    /// Whether `digest` is quarantined (in a read snapshot).
    pub(super) fn is_quarantined(txn: &redb::ReadTransaction, digest: &Digest) -> Result<bool> {
        Ok(txn.open_table(QUARANTINE)?.get(digest.as_str())?.is_some())
    }

    /// Before a verified file of `digest` is placed (caller holds the lock): if the digest is
    /// quarantined, moves whatever is at its global path out of the way. Returns whether the
    /// push heals a quarantined blob ([`Store::finish_heal`] then completes it).
    pub(super) fn prepare_heal(&self, digest: &Digest) -> Result<bool> {
        let quarantined = {
            let txn = self.db.begin_read()?;
            Self::is_quarantined(&txn, digest)?
        };
        if quarantined {
            let global = self.paths.blob(digest);
            if global.exists() {
                let dir = self.paths.quarantine_dir(digest.algorithm());
                self.disk.ensure_dir(&dir)?;
                self.disk.rename(&global, &self.paths.quarantined(digest))?;
                self.disk.sync_dir(&dir)?;
            }
        }
        Ok(quarantined)
    }

    /// In the healing push's transaction (the good file is in place): every repository that
    /// linked `digest` gets its hardlink back, and the quarantine ends.
    pub(super) fn finish_heal(&self, txn: &redb::WriteTransaction, digest: &Digest) -> Result<()> {
        for repo in Self::repos_linking(&txn.open_table(REPO_BLOBS)?, digest)? {
            self.link_into_repo(&repo, digest)?;
        }
        txn.open_table(QUARANTINE)?.remove(digest.as_str())?;
        // The corrupt copy (kept until now for inspection) is no longer needed.
        if let Err(e) = self.disk.remove_if_exists(&self.paths.quarantined(digest)) {
            log::warn!("{digest}: the corrupt copy stays in quarantine/: {e}");
        }
        log::warn!("{digest}: healed by a push of the same content (was quarantined)");
        Ok(())
    }
}
