//! `pier fsck [--repair]`: the data derived from the metadata, checked against it and, with
//! repair, rebuilt from it.
//!
//! redb is the source of truth (`store::meta`). Derived from it, and rebuilt here:
//! - the files: each blob's global file and every repository's hardlink of it (one inode), each
//!   repository's `oci-layout` and `index.json`;
//! - the tables that restate others: `BLOBS` (size and link count of each linked digest),
//!   `REPO_BYTES` (each repository's sum), `MANIFEST_TAGS` (`TAGS` by manifest), `REFERRERS`
//!   (the subjects of `MANIFESTS`), `REPOS` (every repository that links a blob).
//!
//! A blob whose every file is gone or of the wrong size cannot be rebuilt: it is quarantined
//! (`store::scrub`: reads answer unknown; a push of the same content heals every repository
//! that had it) and reported as lost. Primary metadata (a tag naming no manifest, a manifest
//! whose own blob is not linked) is reported, never changed on a guess.
//!
//! Online: the findings come from `Store::check` (a store being written may show files of a
//! push in flight as garbage); every repair decides again under the write lock, from the
//! metadata of that moment, so it never undoes a concurrent push or delete. The table rebuild
//! holds the lock for one scan of the link, tag and manifest tables (a pause of pushes that
//! grows with the store: a repair is rare). Unreferenced files go by the consistency walk.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::meta::{
    ManifestRecord, BLOBS, MANIFESTS, MANIFEST_TAGS, QUARANTINE, REFERRERS, REPOS, REPO_BLOBS, REPO_BYTES, TAGS,
};
use super::upload::hash_file;
use super::{now_unix, Store};
use crate::core::{Digest, RepoName};

/// What `fsck` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckReport {
    pub repair: bool,
    /// Violated invariants found (before any repair).
    pub problems: Vec<String>,
    /// Files nothing references (harmless; removed by a repair, else by the next start).
    pub garbage: u64,
    /// What the repair did.
    pub repaired: Vec<String>,
    /// Blobs with no intact file left: quarantined (reads answer unknown; a push of the same
    /// content heals them).
    pub lost: Vec<String>,
    /// Still broken after the repair (primary metadata to fix by hand).
    pub unrepairable: Vec<String>,
    pub elapsed_ms: u64,
}

impl FsckReport {
    /// Whether the store is consistent now (nothing found, or everything repaired).
    pub fn is_clean(&self) -> bool {
        if self.repair {
            self.unrepairable.is_empty() && self.lost.is_empty()
        } else {
            self.problems.is_empty()
        }
    }
}

impl Store {
    /// Checks the derived data against the metadata; with `repair`, rebuilds what differs
    /// (see the module doc). `progress` hears about each phase.
    pub fn fsck(&self, repair: bool, mut progress: impl FnMut(&str)) -> Result<FsckReport> {
        let started = std::time::Instant::now();
        progress("checking every invariant");
        let found = self.check(false)?;
        let mut report = FsckReport { repair, ..FsckReport::default() };
        for problem in found {
            match problem {
                super::check::Problem::Broken(what) => report.problems.push(what),
                super::check::Problem::Garbage(_) => report.garbage += 1,
            }
        }
        if repair && (!report.problems.is_empty() || report.garbage > 0) {
            progress("repairing blob files and links");
            self.repair_files(&mut report)?;
            progress("rebuilding derived tables");
            self.rebuild_derived_tables(&mut report)?;
            progress("rewriting index.json files");
            self.repair_indexes(&mut report)?;
            progress("removing unreferenced files");
            let swept = self.sweep_unreferenced()?;
            if swept > 0 {
                report.repaired.push(format!("removed {swept} unreferenced file(s)"));
            }
            progress("checking again");
            report.unrepairable = self
                .check(false)?
                .into_iter()
                .filter_map(|p| match p {
                    super::check::Problem::Broken(what) => Some(what),
                    super::check::Problem::Garbage(_) => None,
                })
                .collect();
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Every linked blob whose files are not one complete inode (global file and repository
    /// hardlinks) is repaired from its best remaining file, or quarantined if none is left.
    fn repair_files(&self, report: &mut FsckReport) -> Result<()> {
        let by_digest = {
            let txn = self.db.begin_read()?;
            let quarantined: BTreeSet<String> = txn
                .open_table(QUARANTINE)?
                .iter()?
                .map(|e| e.map(|(k, _)| k.value().to_string()))
                .collect::<std::result::Result<_, _>>()?;
            let mut by_digest: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
            for e in txn.open_table(REPO_BLOBS)?.iter()? {
                let (k, v) = e?;
                let (repo, digest) = k.value();
                if !quarantined.contains(digest) {
                    by_digest.entry(digest.to_string()).or_insert((v.value(), Vec::new())).1.push(repo.to_string());
                }
            }
            by_digest
        };
        for (name, (size, repos)) in by_digest {
            let Ok(digest) = Digest::parse(&name) else { continue };
            let repos: Vec<RepoName> = repos.iter().filter_map(|r| RepoName::parse(r).ok()).collect();
            if !self.blob_files_whole(&digest, size, &repos) {
                self.repair_blob(&digest, report)?;
            }
        }
        Ok(())
    }

    /// Whether the global file of `digest` has `size` bytes and every repository's link is it.
    fn blob_files_whole(&self, digest: &Digest, size: u64, repos: &[RepoName]) -> bool {
        let Ok(global) = fs::metadata(self.paths.blob(digest)) else { return false };
        global.len() == size
            && repos.iter().all(|r| {
                fs::metadata(self.paths.repo_blob(r, digest))
                    .is_ok_and(|l| (l.dev(), l.ino()) == (global.dev(), global.ino()))
            })
    }

    /// Under the lock, from the metadata of now: makes the global file of `digest` a file of the
    /// recorded size (the global file if it is one, else a repository's link whose content
    /// hashes to the digest), then every repository's link that file. With no such file left,
    /// quarantines the blob.
    fn repair_blob(&self, digest: &Digest, report: &mut FsckReport) -> Result<()> {
        let guard = self.lock();
        let (size, repos) = {
            let txn = self.db.begin_read()?;
            if Self::is_quarantined(&txn, digest)? {
                return Ok(());
            }
            let Some((size, _)) = txn.open_table(BLOBS)?.get(digest.as_str())?.map(|v| v.value()) else {
                return Ok(());
            };
            (size, Self::repos_linking(&txn.open_table(REPO_BLOBS)?, digest)?)
        };
        let global = self.paths.blob(digest);
        let of_size = |p: &std::path::Path| fs::metadata(p).ok().filter(|m| m.is_file() && m.len() == size);
        if of_size(&global).is_none() {
            let source = repos.iter().map(|r| (r, self.paths.repo_blob(r, digest))).find(|(_, p)| {
                of_size(p).is_some() && hash_file(p, digest.algorithm()).is_ok_and(|(h, _)| h.finish() == *digest)
            });
            let Some((from, source)) = source else {
                drop(guard);
                let inode = fs::metadata(&global).ok().map(|m| (m.dev(), m.ino()));
                self.quarantine(digest, inode, "no file of the recorded size is left")?;
                report.lost.push(format!("{digest}: no intact file left: quarantined; a push of it heals it"));
                return Ok(());
            };
            if global.exists() {
                // A global file of the wrong size is corrupt: kept in quarantine/ for inspection.
                let dir = self.paths.quarantine_dir(digest.algorithm());
                self.disk.ensure_dir(&dir)?;
                self.disk.rename(&global, &self.paths.quarantined(digest))?;
            }
            let dir = self.paths.blob_dir(digest.algorithm());
            self.disk.ensure_dir(&dir)?;
            self.disk.link_if_absent(&source, &global)?;
            self.disk.sync_dir(&dir)?;
            report.repaired.push(format!("{digest}: global file restored from repositories/{from}"));
        }
        let Ok(g) = fs::metadata(&global) else { return Ok(()) };
        for repo in &repos {
            let link = self.paths.repo_blob(repo, digest);
            match fs::metadata(&link) {
                Ok(l) if (l.dev(), l.ino()) == (g.dev(), g.ino()) => continue,
                Ok(_) => self.disk.remove_if_exists(&link)?,
                Err(_) => {}
            }
            self.link_into_repo(repo, digest)?;
            report.repaired.push(format!("{digest}: relinked into {repo}"));
        }
        Ok(())
    }

    /// Rebuilds `BLOBS`, `REPO_BYTES`, `MANIFEST_TAGS`, `REFERRERS` and `REPOS` from
    /// `REPO_BLOBS`, `TAGS` and `MANIFESTS`, under the lock, in one transaction.
    fn rebuild_derived_tables(&self, report: &mut FsckReport) -> Result<()> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        let mut fixes = Vec::new();
        let mut blobs: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for e in txn.open_table(REPO_BLOBS)?.iter()? {
            let (k, v) = e?;
            let (repo, digest) = k.value();
            let entry = blobs.entry(digest.to_string()).or_insert((v.value(), 0));
            entry.1 += 1;
            *sums.entry(repo.to_string()).or_default() += v.value();
        }
        rebuild(&mut txn.open_table(BLOBS)?, &blobs, "BLOBS", &mut fixes)?;
        rebuild(&mut txn.open_table(REPO_BYTES)?, &sums, "REPO_BYTES", &mut fixes)?;
        {
            let mut repos = txn.open_table(REPOS)?;
            for name in sums.keys() {
                if repos.get(name.as_str())?.is_none() {
                    repos.insert(name.as_str(), now_unix())?;
                    fixes.push(format!("REPOS[{name}] added"));
                }
            }
        }
        let mut by_manifest: BTreeSet<(String, String, String)> = BTreeSet::new();
        for e in txn.open_table(TAGS)?.iter()? {
            let (k, v) = e?;
            let (repo, tag) = k.value();
            by_manifest.insert((repo.to_string(), v.value().to_string(), tag.to_string()));
        }
        rebuild_set(&mut txn.open_table(MANIFEST_TAGS)?, &by_manifest, "MANIFEST_TAGS", &mut fixes)?;
        let mut referrers: BTreeSet<(String, String, String)> = BTreeSet::new();
        for e in txn.open_table(MANIFESTS)?.iter()? {
            let (k, v) = e?;
            let (repo, digest) = k.value();
            if let Some(subject) = ManifestRecord::decode(v.value()).and_then(|r| r.subject) {
                referrers.insert((repo.to_string(), subject, digest.to_string()));
            }
        }
        rebuild_set(&mut txn.open_table(REFERRERS)?, &referrers, "REFERRERS", &mut fixes)?;
        if fixes.is_empty() {
            return Ok(());
        }
        self.disk.commit(txn)?;
        report.repaired.extend(fixes);
        Ok(())
    }

    /// Marks every repository whose `index.json` (or `oci-layout`) is not what its metadata
    /// describes, then lets the index writer's flush rewrite them.
    fn repair_indexes(&self, report: &mut FsckReport) -> Result<()> {
        let mut stale = Vec::new();
        for name in self.keys(REPOS)? {
            let Ok(repo) = RepoName::parse(&name) else { continue };
            let current = fs::read(self.paths.index(&repo)).ok();
            if current.as_deref() != Some(&self.render_index(&repo)?[..]) || !self.paths.oci_layout(&repo).is_file() {
                stale.push(repo);
            }
        }
        if stale.is_empty() {
            return Ok(());
        }
        {
            let txn = self.db.begin_write()?;
            for repo in &stale {
                Self::mark_index_dirty(&txn, repo)?;
            }
            self.disk.commit(txn)?;
        }
        for repo in &stale {
            // A layout without `oci-layout` gets it back with the rewrite (`write_index_file`
            // completes the layout), unless the file is there but wrong: replace it now.
            let layout = self.paths.oci_layout(repo);
            if fs::read(&layout).ok().as_deref() != Some(super::layout::OCI_LAYOUT) {
                self.disk.replace(&layout, super::layout::OCI_LAYOUT)?;
            }
        }
        self.flush_indexes()?;
        report.repaired.extend(stale.iter().map(|r| format!("{r}: index.json rewritten")));
        Ok(())
    }
}

/// Makes the `&str`-keyed `table` hold exactly `want`, noting each change in `fixes`.
fn rebuild<V, T>(
    table: &mut redb::Table<&'static str, V>,
    want: &BTreeMap<String, T>,
    name: &str,
    fixes: &mut Vec<String>,
) -> Result<()>
where
    V: for<'a> redb::Value<SelfType<'a> = T> + 'static,
    T: Copy + PartialEq + std::fmt::Debug,
{
    let mut changes: Vec<(String, Option<T>, Option<T>)> = Vec::new();
    for e in table.iter()? {
        let (k, v) = e?;
        let (key, have) = (k.value(), v.value());
        match want.get(key) {
            None => changes.push((key.to_string(), Some(have), None)),
            Some(w) if *w != have => changes.push((key.to_string(), Some(have), Some(*w))),
            Some(_) => {}
        }
    }
    for (key, w) in want {
        if table.get(key.as_str())?.is_none() {
            changes.push((key.clone(), None, Some(*w)));
        }
    }
    for (key, have, w) in changes {
        match w {
            Some(w) => {
                table.insert(key.as_str(), w)?;
            }
            None => {
                table.remove(key.as_str())?;
            }
        }
        fixes.push(format!("{name}[{key}]: {have:?} -> {w:?}"));
    }
    Ok(())
}

/// Makes the set-like `table` (keys only) hold exactly `want`, noting each change in `fixes`.
fn rebuild_set(
    table: &mut redb::Table<(&'static str, &'static str, &'static str), ()>,
    want: &BTreeSet<(String, String, String)>,
    name: &str,
    fixes: &mut Vec<String>,
) -> Result<()> {
    let mut have = BTreeSet::new();
    for e in table.iter()? {
        let (k, _) = e?;
        let (a, b, c) = k.value();
        have.insert((a.to_string(), b.to_string(), c.to_string()));
    }
    for (a, b, c) in have.difference(want) {
        table.remove((a.as_str(), b.as_str(), c.as_str()))?;
        fixes.push(format!("{name}[{a}, {b}, {c}] removed"));
    }
    for (a, b, c) in want.difference(&have) {
        table.insert((a.as_str(), b.as_str(), c.as_str()), ())?;
        fixes.push(format!("{name}[{a}, {b}, {c}] added"));
    }
    Ok(())
}
