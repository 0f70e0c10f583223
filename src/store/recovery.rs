//! The start-up sweep: removes what a crash can leave behind, so that the invariants of
//! `store::meta` hold again before the first request.
//!
//! A crash can only leave files that metadata does not know (never metadata without files): upload
//! files without a session record (and records without a file), repository hardlinks and global
//! blobs that no record references, a layout on disk for a repository whose first transaction never
//! committed, temporary files of an interrupted `index.json` replace. All of them go. Lagging
//! `index.json` files are not rewritten here: their repositories are marked (`INDEX_DIRTY`, set
//! in the transaction of each change), and the index writer's first pass rewrites them (see
//! `store::index`).

use std::collections::BTreeSet;
use std::fs;
use std::io;

use redb::{ReadableTable, ReadableTableMetadata};

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

    /// Removes what a crash can leave behind (see the module doc).
    pub(super) fn sweep(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let _guard = self.lock();
        let mut swept = 0usize;
        // Uploads.
        let known_uploads: BTreeSet<String> = {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(UPLOADS)?;
            let mut s = BTreeSet::new();
            for e in t.iter()? {
                s.insert(e?.0.value().to_string());
            }
            s
        };
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
        // Repository links that metadata does not know.
        let repos: Vec<String> = {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(REPOS)?;
            let mut v = Vec::new();
            for e in t.iter()? {
                v.push(e?.0.value().to_string());
            }
            v
        };
        // A crash between a first push's links and its transaction leaves a layout on disk for a
        // repository that metadata never recorded: walk the disk as well.
        let mut with_layout = self.repos_on_disk().at("list", &self.paths.repositories())?;
        with_layout.extend(repos.iter().cloned());
        for name in &with_layout {
            let Ok(repo) = RepoName::parse(name) else { continue };
            // What a crash in the middle of an atomic replace of index.json leaves.
            for tmp in stray_index_files(&self.paths.repo(&repo)) {
                self.disk.remove_if_exists(&tmp)?;
                swept += 1;
            }
            let txn = self.db.begin_read()?;
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
        // Global blobs that no repository links.
        for alg in ALGORITHMS {
            let dir = self.paths.blob_dir(alg);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let mut unlinked = Vec::new();
            {
                let txn = self.db.begin_read()?;
                let blobs = txn.open_table(BLOBS)?;
                for entry in rd {
                    let entry = entry.at("list", &dir)?;
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if blobs.get(digest.as_str())?.map(|v| v.value().1).unwrap_or(0) == 0 {
                        unlinked.push((digest, entry.path()));
                    }
                }
            }
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
        let due = self.db.begin_read()?.open_table(INDEX_DIRTY)?.len()?;
        log::info!(
            "start-up recovery: {} repositories and {} open upload(s) checked in {} ms; {swept} unreferenced file(s) removed, {due} index.json due for a rewrite",
            repos.len(),
            known_uploads.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }
}
