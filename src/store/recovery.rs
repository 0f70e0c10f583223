//! Recovery after a crash, in two parts, so that start-up does not grow with the store.
//!
//! A crash can only leave files that metadata does not know (never metadata without files): upload
//! files without a session record (and records without a file), repository hardlinks and global
//! blobs that no record references, a layout on disk for a repository whose first transaction never
//! committed, temporary files of an interrupted `index.json` replace. Lagging `index.json` files
//! are not rewritten here: their repositories are marked (`INDEX_DIRTY`, set in the transaction of
//! each change), and the index writer's first pass rewrites them (see `store::index`).
//!
//! - [`Store::recover`], at open, before the first request, costs what was in flight at the crash:
//!   upload files and records agree again (a session must be resumable or gone), and the marked
//!   repositories lose the temporary files of an interrupted `index.json` replace (only a marked
//!   repository can have one: the mark goes after the file is in place).
//! - [`Store::sweep_unreferenced`], the consistency walk, runs in the background once pier serves
//!   (`pier serve` starts it; the first request does not wait for it): it removes unreferenced
//!   repository links, global files and the links of unrecorded layouts. Until it has passed,
//!   such files are invisible (every read goes through metadata) and harmless (a push of the same
//!   digest reuses them: they hold verified content). Each repository, and each batch of global
//!   files, is decided under the store's write lock, which every link-and-record sequence holds:
//!   the walk never sees, let alone removes, the files of a push in flight.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::error::{IoContext, Result};
use super::meta::{BLOBS, INDEX_DIRTY, REPOS, REPO_BLOBS, UPLOADS};
use super::Store;
use crate::core::{Algorithm, RepoName};

/// Every digest algorithm that can name a file in a `blobs/` directory.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3];

/// Temporary files of an interrupted atomic replace (`disk::replace_file`) of `index.json` or
/// `oci-layout` in the repository directory `dir`.
pub(super) fn stray_index_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().filter(|e| is_stray_layout_file(&e.file_name().to_string_lossy())).map(|e| e.path()).collect()
}

/// Whether `name` is the temporary name `disk::replace_file` gives `index.json` or `oci-layout`.
fn is_stray_layout_file(name: &str) -> bool {
    (name.starts_with(".index.json.") || name.starts_with(".oci-layout.")) && name.ends_with(".tmp")
}

impl Store {
    /// Starts the consistency walk ([`Store::sweep_unreferenced`]) on a thread of its own,
    /// `delay` from now: maintenance yields to serving, the first moments of a (re)start belong
    /// to the first requests (with a cold page cache the walk would compete with them for the
    /// disk). It is not niced: under sustained load it must still end. [`Store::close`] stops it.
    pub fn start_consistency_walk(self: &Arc<Self>, delay: Duration) -> Result<()> {
        let store: Weak<Store> = Arc::downgrade(self);
        let control = self.walk.clone();
        let thread = std::thread::Builder::new()
            .name("pier-walk".into())
            .spawn(move || {
                if control.sleep(delay) {
                    return;
                }
                // The walk holds the store while it runs (`close` stops it first).
                let Some(store) = store.upgrade() else { return };
                if let Err(e) = store.sweep_unreferenced() {
                    log::warn!("consistency walk stopped: {e} (it runs again at the next start)");
                }
            })
            .map_err(|source| super::error::StoreError::Io {
                op: "start the consistency walk",
                path: self.paths.repositories(),
                source,
            })?;
        self.walk.adopt(thread);
        Ok(())
    }

    /// Ends the store's life in this process, for a clean shutdown: stops the consistency walk
    /// (and waits for it) and closes the database, so that the next start opens it without a
    /// repair. Call after [`Store::stop_index_writer`]; every later operation fails.
    pub fn close(&self) -> Result<()> {
        self.walk.stop();
        self.scrubber.stop();
        self.indexes.stop();
        self.db.close()
    }

    /// Names of the repositories that have a layout under `repositories/`: a `blobs/` directory,
    /// or an `oci-layout` (or a temporary file of one, left by a crash while the layout was
    /// being created).
    pub(super) fn repos_on_disk(&self) -> io::Result<BTreeSet<String>> {
        let root = self.paths.repositories();
        let mut found = BTreeSet::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name == "oci-layout" || is_stray_layout_file(&name) {
                        if let Some(repo) = dir.strip_prefix(&root).ok().and_then(|r| r.to_str()) {
                            found.insert(repo.to_string());
                        }
                    }
                    continue;
                }
                // `<name>/blobs` marks a repository; later components may not be `blobs`, but
                // the first may, so keep descending in every case.
                if entry.file_name() == "blobs" {
                    if let Some(name) = dir.strip_prefix(&root).ok().and_then(|r| r.to_str()) {
                        found.insert(name.to_string());
                    }
                }
                dirs.push(entry.path());
            }
        }
        Ok(found)
    }

    /// What must be right before the first request (see the module doc); at open.
    pub(super) fn recover(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let _guard = self.lock();
        let mut swept = 0usize;
        // Uploads.
        let known_uploads: BTreeSet<String> = self.keys(UPLOADS)?.into_iter().collect();
        let uploads = self.paths.uploads();
        for entry in fs::read_dir(&uploads).at("list", &uploads)? {
            let entry = entry.at("list", &uploads)?;
            if !known_uploads.contains(entry.file_name().to_string_lossy().as_ref()) {
                self.disk.remove_if_exists(&entry.path())?;
                swept += 1;
            }
        }
        // A crash in the middle of a commit can leave a live upload's file read-only (it was
        // about to become a blob): make it writable again so that the client can resume.
        for id in &known_uploads {
            let path = self.paths.upload(id);
            if fs::metadata(&path).is_ok_and(|m| m.permissions().readonly()) {
                self.disk.make_writable(&path)?;
            }
        }
        let orphan_records: Vec<&String> = known_uploads.iter().filter(|id| !self.paths.upload(id).exists()).collect();
        if !orphan_records.is_empty() {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(UPLOADS)?;
                for id in orphan_records {
                    t.remove(id.as_str())?;
                }
            }
            self.disk.commit(txn)?;
        }
        // Temporary files of an interrupted index.json replace: only marked repositories.
        let marked = self.keys(INDEX_DIRTY)?;
        for name in &marked {
            let Ok(repo) = RepoName::parse(name) else { continue };
            for tmp in stray_index_files(&self.paths.repo(&repo)) {
                self.disk.remove_if_exists(&tmp)?;
                swept += 1;
            }
        }
        log::info!(
            "start-up recovery: {} open upload(s) and {} marked repositories checked in {} ms; {swept} file(s) removed, \
             {} index.json due for a rewrite; the consistency walk runs in the background",
            known_uploads.len(),
            marked.len(),
            started.elapsed().as_millis(),
            marked.len()
        );
        Ok(())
    }

    /// The consistency walk (see the module doc): removes repository links and global files no
    /// record references, and the links of layouts no record knows. Runs while the registry
    /// serves, deciding each repository and each batch of global files under the write lock.
    /// Returns the number of files removed.
    pub fn sweep_unreferenced(&self) -> Result<usize> {
        let started = std::time::Instant::now();
        let mut swept = 0usize;
        // Repository links that metadata does not know.
        let repos = self.keys(REPOS)?;
        // A crash between a first push's links and its transaction leaves a layout on disk for a
        // repository that metadata never recorded: walk the disk as well.
        let mut with_layout = self.repos_on_disk().at("list", &self.paths.repositories())?;
        with_layout.extend(repos.iter().cloned());
        for name in &with_layout {
            if self.walk.stopping() {
                return Ok(stopped(swept));
            }
            let Ok(repo) = RepoName::parse(name) else { continue };
            let _guard = self.lock();
            let txn = self.db.begin_read()?;
            // Temporary layout files of an interrupted replace (a first push's `oci-layout`):
            // only in unmarked repositories, where the index writer (which works outside the
            // lock, only on marked ones) has none in flight.
            if txn.open_table(INDEX_DIRTY)?.get(repo.as_str())?.is_none() {
                for tmp in stray_index_files(&self.paths.repo(&repo)) {
                    self.disk.remove_if_exists(&tmp)?;
                    swept += 1;
                }
            }
            let links = txn.open_table(REPO_BLOBS)?;
            for alg in ALGORITHMS {
                let Ok(rd) = fs::read_dir(self.paths.repo_blob_dir(&repo, alg)) else { continue };
                for entry in rd {
                    let entry = entry.at("list", &self.paths.repo_blob_dir(&repo, alg))?;
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if links.get((repo.as_str(), digest.as_str()))?.is_none() {
                        self.disk.remove_if_exists(&entry.path())?;
                        swept += 1;
                    }
                }
            }
        }
        // Global blobs that no repository links: candidates found without the lock, each one
        // decided again under it (a push may have linked it meanwhile).
        for alg in ALGORITHMS {
            let dir = self.paths.blob_dir(alg);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut candidates = Vec::new();
            {
                let txn = self.db.begin_read()?;
                let blobs = txn.open_table(BLOBS)?;
                for entry in rd {
                    let entry = entry.at("list", &dir)?;
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if blobs.get(digest.as_str())?.map(|v| v.value().1).unwrap_or(0) == 0 {
                        candidates.push((digest, entry.path()));
                    }
                }
            }
            for batch in candidates.chunks(256) {
                if self.walk.stopping() {
                    return Ok(stopped(swept));
                }
                let _guard = self.lock();
                let unlinked: Vec<&(String, std::path::PathBuf)> = {
                    let txn = self.db.begin_read()?;
                    let blobs = txn.open_table(BLOBS)?;
                    let mut still = Vec::new();
                    for c in batch {
                        if blobs.get(c.0.as_str())?.map(|v| v.value().1).unwrap_or(0) == 0 {
                            still.push(c);
                        }
                    }
                    still
                };
                if unlinked.is_empty() {
                    continue;
                }
                // Records first, files after: a crash in between leaves files without records.
                let txn = self.db.begin_write()?;
                {
                    let mut blobs = txn.open_table(BLOBS)?;
                    for (digest, _) in &unlinked {
                        blobs.remove(digest.as_str())?;
                    }
                }
                self.disk.commit(txn)?;
                for (_, path) in &unlinked {
                    self.disk.remove_if_exists(path)?;
                    swept += 1;
                }
            }
        }
        log::info!(
            "consistency walk: {} repositories checked in {} ms; {swept} unreferenced file(s) removed",
            with_layout.len(),
            started.elapsed().as_millis()
        );
        Ok(swept)
    }
}

/// What an interrupted walk reports.
fn stopped(swept: usize) -> usize {
    log::info!(
        "consistency walk: stopped by the shutdown after removing {swept} file(s); it runs again at the next start"
    );
    swept
}
