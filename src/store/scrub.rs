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

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::background::BackgroundControl;
use super::error::IoContext;
use super::error::Result;
use super::meta::{BLOBS, MAINTENANCE, QUARANTINE, REPO_BLOBS};
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
    /// The scrub was stopped (a shutdown) before it checked every blob.
    #[serde(default)]
    pub stopped: bool,
    pub elapsed_ms: u64,
}

impl Store {
    /// Re-hashes every blob file (outside the lock; reads only), quarantining each that is
    /// missing, of the wrong size or of the wrong content. `progress` hears every 1,000 blobs.
    pub fn scrub(&self, progress: impl FnMut(&str)) -> Result<ScrubReport> {
        self.scrub_paced(None, progress)
    }

    /// [`Store::scrub`] reading at most `pacer`'s rate, stoppable by its control (the
    /// background scrub); unpaced with `None`. A complete scrub is recorded
    /// (`MAINTENANCE["scrub.finished"]`) for the background scrub's schedule.
    fn scrub_paced(&self, mut pacer: Option<Pacer<'_>>, mut progress: impl FnMut(&str)) -> Result<ScrubReport> {
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
            if pacer.as_ref().is_some_and(|p| p.control.stopping()) {
                report.stopped = true;
                break;
            }
            let path = self.paths.blob(&digest);
            let found = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some((None, "file missing".to_string())),
                Err(e) => Some((None, format!("cannot read: {e}"))),
                Ok(meta) if meta.len() != size => {
                    Some((Some((meta.dev(), meta.ino())), format!("{} bytes, {size} expected", meta.len())))
                }
                Ok(meta) => match hash_paced(&path, digest.algorithm(), pacer.as_mut()) {
                    Ok(None) => {
                        report.stopped = true;
                        break;
                    }
                    Ok(Some(hasher)) => {
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
        if !report.stopped {
            let txn = self.db.begin_write()?;
            txn.open_table(MAINTENANCE)?.insert("scrub.finished", now_unix())?;
            self.disk.commit(txn)?;
        }
        Ok(report)
    }

    /// Starts the background scrub on a thread of its own: a scrub at most `rate` bytes per
    /// second whenever the last complete one finished `interval` ago or more (checked at start
    /// and every hour; a restart does not postpone it). [`Store::close`] stops it between two
    /// chunks; the next start begins the scrub again.
    pub fn start_background_scrub(self: &Arc<Self>, interval: Duration, rate: u64) -> Result<()> {
        let store: Weak<Store> = Arc::downgrade(self);
        let control = self.scrubber.clone();
        let thread = std::thread::Builder::new()
            .name("pier-scrub".into())
            .spawn(move || loop {
                // First moments of a start belong to the requests (as the consistency walk's).
                if control.sleep(BACKGROUND_CHECK.min(interval)) {
                    return;
                }
                let Some(store) = store.upgrade() else { return };
                let due = match store.last_scrub() {
                    Ok(last) => last.map_or(true, |t| now_unix().saturating_sub(t) >= interval.as_secs()),
                    Err(e) => {
                        log::warn!("background scrub: {e}");
                        false
                    }
                };
                if !due {
                    continue;
                }
                log::info!("background scrub started ({} MiB/s at most)", rate / (1024 * 1024));
                let pacer = Pacer { rate: rate.max(1), started: Instant::now(), bytes: 0, control: &control };
                match store.scrub_paced(Some(pacer), |_| {}) {
                    Ok(r) if r.stopped => return,
                    Ok(r) => log::info!(
                        "background scrub: {} blobs ({} bytes) checked in {} s; {} corrupt (quarantined); {} still quarantined",
                        r.blobs,
                        r.bytes,
                        r.elapsed_ms / 1000,
                        r.corrupt.len(),
                        r.still_quarantined
                    ),
                    Err(e) => log::warn!("background scrub failed: {e} (tried again within the hour)"),
                }
            })
            .map_err(|source| super::error::StoreError::Io { op: "start the background scrub", path: self.paths.blobs(), source })?;
        self.scrubber.adopt(thread);
        Ok(())
    }

    /// When the last complete scrub finished (unix seconds), if one ever did.
    pub fn last_scrub(&self) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(MAINTENANCE)?.get("scrub.finished")?.map(|v| v.value()))
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

/// How often the background scrub looks whether a scrub is due.
const BACKGROUND_CHECK: Duration = Duration::from_secs(3600);
/// Bytes read per step of a scrub (and between two looks at the pace).
const SCRUB_CHUNK: usize = 1 << 20;

/// The background scrub's pace: at most `rate` bytes per second on average since `started`,
/// stopped when its control says so.
struct Pacer<'a> {
    rate: u64,
    started: Instant,
    bytes: u64,
    control: &'a BackgroundControl,
}

impl Pacer<'_> {
    /// Counts `n` bytes read and sleeps until the average is back at the rate; false if the
    /// scrub is to stop.
    fn pace(&mut self, n: usize) -> bool {
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        match due.checked_sub(self.started.elapsed()) {
            Some(ahead) if !ahead.is_zero() => !self.control.sleep(ahead),
            _ => !self.control.stopping(),
        }
    }
}

/// The digest of the file at `path`, read in chunks at `pacer`'s pace (as fast as the disk
/// goes without one); `None` when the pacer stopped the read.
fn hash_paced(
    path: &Path,
    algorithm: crate::core::Algorithm,
    mut pacer: Option<&mut Pacer<'_>>,
) -> Result<Option<crate::core::Hasher>> {
    let mut f = std::fs::File::open(path).at("open", path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; SCRUB_CHUNK];
    loop {
        let n = f.read(&mut buf).at("read", path)?;
        if n == 0 {
            return Ok(Some(h));
        }
        h.update(&buf[..n]);
        if let Some(p) = pacer.as_deref_mut() {
            if !p.pace(n) {
                return Ok(None);
            }
        }
    }
}
