//! Online garbage collection: what no manifest of a repository needs leaves it, while pushes,
//! pulls and mounts go on.
//!
//! What stays in a repository (its *live* set):
//! - every manifest, or with `untagged` only the tagged ones and, transitively, the children of a
//!   live index and the referrers (signatures, SBOMs) whose subject is live;
//! - every blob a live manifest references (config, layers), and the manifests' own files.
//!
//! Everything else the repository links is collected: an untagged manifest that nothing live
//! needs (only with `untagged`), and a blob link no live manifest references, once the link is
//! older than the grace period. A blob is uploaded before the manifest that references it, so
//! the grace period is what keeps a push in progress whole: its blobs are recent links. Each
//! link's time is `LINKED_AT` (set when the link is made, refreshed when the same blob is linked
//! again); a link without one (made before garbage collection existed) gets the current time at
//! its first collection and is collected one grace period later. A global blob file goes when
//! its last link goes, as with a `DELETE` (disk space comes back at once).
//!
//! Locking: each repository is first planned from a read snapshot, without the write lock; only
//! a repository with something to collect is then planned again and changed under the lock, in
//! one transaction (the lock is what every link-and-record sequence holds, so a manifest `PUT`
//! either sees its blobs before the collection, or after it answers `MANIFEST_BLOB_UNKNOWN`;
//! never a manifest pointing at a missing file). Pushes to other repositories wait at most for
//! one repository's plan (linear in that repository's manifests and links).
//!
//! Cost proportional to change: every transaction that can leave something collectable notes it
//! in `GC_DUE` (a blob linked: from when its grace period ends; a manifest removed, manifests or
//! tags changed: at once), and a collection visits only the repositories whose row is due,
//! rewriting each row from what it left (the oldest unreferenced link it kept for its grace
//! period). A collection of an unchanged store reads one table. A full collection (`--full`,
//! and the first one of a store older than `GC_DUE`) visits every repository. Invariant: a
//! repository without a due row has nothing collectable but links younger than the grace
//! period (whose row says when) and, for a tagged-only collection, untagged manifests.
//!
//! Crash safety: records first, files after, as every delete: a crash in between leaves files
//! without records, which the consistency walk removes at the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::blobs::Unlinked;
use super::error::Result;
use super::meta::{ManifestRecord, GC_DUE, GC_NOTHING_DUE, LINKED_AT, MAINTENANCE, MANIFESTS, REPOS, REPO_BLOBS, TAGS};
use super::{now_unix, Store};
use crate::core::{Digest, RepoName};

/// What a collection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcOptions {
    /// Blob links younger than this are kept whatever references them.
    pub grace_secs: u64,
    /// Also collect untagged manifests that nothing live needs.
    pub untagged: bool,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    /// Visit every repository, not only those changed since the last collection.
    #[serde(default)]
    pub full: bool,
}

impl GcOptions {
    /// The default grace period: an hour, far longer than any push between its first blob and
    /// its manifest.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
}

/// What a collection did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Whether every repository was visited (else only those changed since the last run).
    #[serde(default)]
    pub full: bool,
    /// Repositories visited.
    pub repositories: u64,
    /// Untagged manifests removed.
    pub manifests: u64,
    /// Blob links removed from repositories (manifest files not counted).
    pub links: u64,
    /// Links kept only because they are younger than the grace period.
    pub in_grace: u64,
    /// Global blob files removed (their last link went).
    pub blobs_freed: u64,
    /// Bytes of those files.
    pub bytes_freed: u64,
    pub elapsed_ms: u64,
}

/// What goes from one repository.
#[derive(Default)]
struct RepoPlan {
    /// Manifests to remove (untagged, needed by nothing live).
    manifests: Vec<String>,
    /// Blob links to remove (old enough, referenced by nothing live).
    links: Vec<String>,
    /// Unreferenced links kept for the grace period.
    in_grace: u64,
    /// Unreferenced links without a time: they get one now.
    untimed: Vec<String>,
    /// The oldest time among the unreferenced links kept for their grace period.
    oldest_in_grace: Option<u64>,
}

impl RepoPlan {
    fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.links.is_empty() && self.untimed.is_empty()
    }
}

/// Plans the collection of `repo` from tables of one snapshot (read or write).
fn plan_repo(
    repo: &str,
    manifests: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tags: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    links: &impl ReadableTable<(&'static str, &'static str), u64>,
    linked_at: &impl ReadableTable<(&'static str, &'static str), u64>,
    opts: &GcOptions,
    now: u64,
) -> Result<RepoPlan> {
    let mut records: BTreeMap<String, ManifestRecord> = BTreeMap::new();
    for e in manifests.range::<(&str, &str)>((repo, "")..)? {
        let (k, v) = e?;
        let (r, d) = k.value();
        if r != repo {
            break;
        }
        // A record that does not decode says nothing of what it references: the repository
        // keeps everything (nothing is deleted on a guess).
        let Some(record) = ManifestRecord::decode(v.value()) else { return Ok(RepoPlan::default()) };
        records.insert(d.to_string(), record);
    }
    let live: BTreeSet<String> =
        if opts.untagged { live_manifests(repo, &records, tags)? } else { records.keys().cloned().collect() };
    let mut referenced: BTreeSet<&str> = BTreeSet::new();
    for d in &live {
        referenced.insert(d.as_str());
        if let Some(r) = records.get(d) {
            referenced.extend(r.blobs.iter().map(String::as_str));
        }
    }
    let mut plan =
        RepoPlan { manifests: records.keys().filter(|d| !live.contains(*d)).cloned().collect(), ..RepoPlan::default() };
    for e in links.range::<(&str, &str)>((repo, "")..)? {
        let (k, _) = e?;
        let (r, d) = k.value();
        if r != repo {
            break;
        }
        if referenced.contains(d) || records.contains_key(d) {
            continue;
        }
        match linked_at.get((repo, d))?.map(|v| v.value()) {
            None => plan.untimed.push(d.to_string()),
            Some(t) if now.saturating_sub(t) < opts.grace_secs => {
                plan.in_grace += 1;
                plan.oldest_in_grace = Some(plan.oldest_in_grace.map_or(t, |o| o.min(t)));
            }
            Some(_) => plan.links.push(d.to_string()),
        }
    }
    Ok(plan)
}

/// The manifests of `repo` that a tag needs: tagged ones, the children of live indexes and the
/// referrers of live subjects, transitively.
fn live_manifests(
    repo: &str,
    records: &BTreeMap<String, ManifestRecord>,
    tags: &impl ReadableTable<(&'static str, &'static str), &'static str>,
) -> Result<BTreeSet<String>> {
    let mut live = BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    for e in tags.range::<(&str, &str)>((repo, "")..)? {
        let (k, v) = e?;
        if k.value().0 != repo {
            break;
        }
        todo.push(v.value().to_string());
    }
    let mut referrers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (d, r) in records {
        if let Some(subject) = &r.subject {
            referrers.entry(subject.as_str()).or_default().push(d.as_str());
        }
    }
    while let Some(d) = todo.pop() {
        if !live.insert(d.clone()) {
            continue;
        }
        if let Some(r) = records.get(&d) {
            todo.extend(r.children.iter().cloned());
        }
        if let Some(rs) = referrers.get(d.as_str()) {
            todo.extend(rs.iter().map(|s| s.to_string()));
        }
    }
    live.retain(|d| records.contains_key(d));
    Ok(live)
}

/// A change that may leave something for garbage collection (`Store::note_gc_change`).
#[derive(Clone, Copy, Debug)]
pub(super) enum GcChange {
    /// A blob was linked at this time (collectable, if nothing references it, once it is older
    /// than the grace period).
    Linked(u64),
    /// Manifests or tags changed: an untagged manifest may be collectable.
    ManifestsOrTags,
    /// A manifest went: its links may be collectable now.
    ManifestRemoved,
}

/// Whether a `GC_DUE` row `(links, untagged)` asks a collection with `opts` to visit at `now`.
fn is_due((links, untagged): (u64, u64), opts: &GcOptions, now: u64) -> bool {
    let links_due = links != GC_NOTHING_DUE && now.saturating_sub(links) >= opts.grace_secs;
    links_due || (opts.untagged && untagged != GC_NOTHING_DUE)
}

impl Store {
    /// Notes `change` in `repo`'s `GC_DUE` row, in the transaction that makes it (O(1)).
    pub(super) fn note_gc_change(txn: &redb::WriteTransaction, repo: &RepoName, change: GcChange) -> Result<()> {
        let mut due = txn.open_table(GC_DUE)?;
        let old = due.get(repo.as_str())?.map_or((GC_NOTHING_DUE, GC_NOTHING_DUE), |v| v.value());
        let new = match change {
            GcChange::Linked(at) => (old.0.min(at), old.1),
            GcChange::ManifestsOrTags => (old.0, 0),
            GcChange::ManifestRemoved => (0, 0),
        };
        if new != old {
            due.insert(repo.as_str(), new)?;
        }
        Ok(())
    }

    /// The repositories a collection with `opts` visits: every one for a full collection (or
    /// when no full collection ever finished), else those whose `GC_DUE` row is due. And
    /// whether that is a full collection.
    fn repositories_to_collect(&self, opts: &GcOptions, now: u64) -> Result<(Vec<String>, bool)> {
        let txn = self.db.begin_read()?;
        let full = opts.full || txn.open_table(MAINTENANCE)?.get("gc.full")?.is_none();
        if full {
            drop(txn);
            return Ok((self.keys(REPOS)?, true));
        }
        let mut repos = Vec::new();
        for e in txn.open_table(GC_DUE)?.iter()? {
            let (k, v) = e?;
            if is_due(v.value(), opts, now) {
                repos.push(k.value().to_string());
            }
        }
        Ok((repos, false))
    }

    /// Collects what no live manifest needs, in the repositories changed since the last
    /// collection (or in every one: `opts.full`), while the registry serves (see the module
    /// doc). `progress` hears about every 100 repositories.
    pub fn collect_garbage(&self, opts: GcOptions, mut progress: impl FnMut(&str)) -> Result<GcReport> {
        let started = std::time::Instant::now();
        let (repos, full) = self.repositories_to_collect(&opts, now_unix())?;
        let mut report = GcReport { dry_run: opts.dry_run, full, ..GcReport::default() };
        let mut would_unlink: BTreeMap<String, u64> = BTreeMap::new();
        let total = repos.len();
        for (i, name) in repos.iter().enumerate() {
            if i % 100 == 0 && i > 0 {
                progress(&format!("{i} of {total} repositories"));
            }
            let Ok(repo) = RepoName::parse(name) else { continue };
            report.repositories += 1;
            let now = now_unix();
            let (plan, marked) = {
                let txn = self.db.begin_read()?;
                let plan = plan_repo(
                    name,
                    &txn.open_table(MANIFESTS)?,
                    &txn.open_table(TAGS)?,
                    &txn.open_table(REPO_BLOBS)?,
                    &txn.open_table(LINKED_AT)?,
                    &opts,
                    now,
                )?;
                (plan, txn.open_table(GC_DUE)?.get(name.as_str())?.is_some())
            };
            if opts.dry_run {
                report.manifests += plan.manifests.len() as u64;
                report.links += plan.links.len() as u64;
                report.in_grace += plan.in_grace + plan.untimed.len() as u64;
                for d in plan.links.into_iter().chain(plan.manifests) {
                    *would_unlink.entry(d).or_default() += 1;
                }
                continue;
            }
            // Nothing to collect, no grace period to note and no row to rewrite: no lock.
            if plan.is_empty() && plan.in_grace == 0 && !marked {
                continue;
            }
            self.collect_repo(&repo, &opts, &mut report)?;
        }
        // A dry run frees a file when it would remove every link of it, in whichever
        // repositories (the counts of one snapshot; a real run may differ by what changes).
        if opts.dry_run && !would_unlink.is_empty() {
            let txn = self.db.begin_read()?;
            let blobs = txn.open_table(super::meta::BLOBS)?;
            for (d, unlinks) in &would_unlink {
                if let Some((size, links)) = blobs.get(d.as_str())?.map(|v| v.value()) {
                    if links <= *unlinks {
                        report.blobs_freed += 1;
                        report.bytes_freed += size;
                    }
                }
            }
        }
        if full && !opts.dry_run {
            let txn = self.db.begin_write()?;
            txn.open_table(MAINTENANCE)?.insert("gc.full", now_unix())?;
            self.disk.commit(txn)?;
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Plans `repo` again under the write lock and removes what the plan says, in one
    /// transaction; files after the commit.
    fn collect_repo(&self, repo: &RepoName, opts: &GcOptions, report: &mut GcReport) -> Result<()> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        let now = now_unix();
        let plan = plan_repo(
            repo.as_str(),
            &txn.open_table(MANIFESTS)?,
            &txn.open_table(TAGS)?,
            &txn.open_table(REPO_BLOBS)?,
            &txn.open_table(LINKED_AT)?,
            opts,
            now,
        )?;
        report.in_grace += plan.in_grace + plan.untimed.len() as u64;
        {
            let mut linked_at = txn.open_table(LINKED_AT)?;
            for d in &plan.untimed {
                linked_at.insert((repo.as_str(), d.as_str()), now)?;
            }
        }
        {
            // What this visit leaves due: the links kept for their grace period; for a
            // tagged-only collection, whatever an untagged one would still find.
            let mut due = txn.open_table(GC_DUE)?;
            let old = due.get(repo.as_str())?.map_or((GC_NOTHING_DUE, GC_NOTHING_DUE), |v| v.value());
            let links = match (plan.oldest_in_grace, plan.untimed.is_empty()) {
                (Some(t), true) => t,
                (Some(t), false) => t.min(now),
                (None, false) => now,
                (None, true) => GC_NOTHING_DUE,
            };
            let untagged = if opts.untagged { GC_NOTHING_DUE } else { old.1 };
            if (links, untagged) == (GC_NOTHING_DUE, GC_NOTHING_DUE) {
                due.remove(repo.as_str())?;
            } else {
                due.insert(repo.as_str(), (links, untagged))?;
            }
        }
        let mut files: Vec<(Digest, Unlinked, u64)> = Vec::new();
        for d in &plan.manifests {
            let Ok(digest) = Digest::parse(d) else { continue };
            let size = txn.open_table(REPO_BLOBS)?.get((repo.as_str(), d.as_str()))?.map_or(0, |v| v.value());
            Self::remove_manifest_records(&txn, repo, &digest)?;
            let unlinked = Self::unrecord_repo_blob(&txn, repo, &digest)?;
            files.push((digest, unlinked, size));
        }
        if !plan.manifests.is_empty() {
            Self::mark_index_dirty(&txn, repo)?;
        }
        for d in &plan.links {
            let Ok(digest) = Digest::parse(d) else { continue };
            let size = txn.open_table(REPO_BLOBS)?.get((repo.as_str(), d.as_str()))?.map_or(0, |v| v.value());
            let unlinked = Self::unrecord_repo_blob(&txn, repo, &digest)?;
            files.push((digest, unlinked, size));
        }
        self.disk.commit(txn)?;
        if !plan.manifests.is_empty() {
            self.indexes.changed();
        }
        report.manifests += plan.manifests.len() as u64;
        report.links += plan.links.len() as u64;
        for (digest, unlinked, size) in files {
            if unlinked == Unlinked::LastLink {
                report.blobs_freed += 1;
                report.bytes_freed += size;
            }
            self.remove_blob_files(repo, &digest, unlinked)?;
        }
        Ok(())
    }
}
