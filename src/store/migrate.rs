//! Importing a data directory written by CNCF Distribution (`registry:2`) into the store, in
//! place: `pier migrate [DIR]`, and `pier serve` at start-up when its root directory holds a
//! registry:2 tree not yet migrated. The tree is read by `migrate_source`; this module owns
//! the import and its report.
//!
//! What is imported, per repository: every blob its `_layers` links, every manifest revision
//! whose link is present (images, indexes and manifest lists, schema 2 and OCI; referrers get
//! their subject edge as for a push), every tag whose `current/link` names an imported manifest.
//! A deleted manifest (its revision link gone) stays deleted, a deleted tag (its directory gone)
//! does not come back, unfinished uploads (`_uploads`) are counted and left. Anything that
//! cannot be taken is skipped and reported with its repository, digest or tag and the reason:
//! a missing or corrupt blob (its bytes do not hash to its digest), a manifest that references
//! such a blob or is not a manifest pier stores (Docker schema 1), a tag that names a manifest
//! that was not imported, a repository name pier refuses.
//!
//! How a blob enters the store (`Store::adopt_blobs`, the commit protocol of an upload): its
//! registry:2 `data` file is hardlinked to a private name under `uploads/` (a copy when the
//! link is impossible: another filesystem, or a file the user may not link), that file is hashed
//! and made durable, then under the write lock it becomes the global blob (if absent) and the
//! repository's hardlink, the directories are fsynced, and one transaction records the link.
//! Nothing is visible before its digest is verified. The blobs of a repository go in batches
//! of up to 256: one `syncfs` for the staged files, one fsync per directory and one
//! transaction per batch, not per blob. A blob already in the store (another repository had it) is linked
//! without reading it again; a blob the repository already has is left alone. The registry:2
//! files are never written, renamed, removed or chmod-ed: a hardlink only adds a name, so they
//! stay usable by `registry:2`. (Consequence: an adopted blob keeps registry:2's file mode,
//! usually 0644, where pier's own blobs are 0444; nothing in pier writes to a blob file.)
//! Manifests are staged the same way and stored through `store_manifest` (the checks and
//! the single transaction of a push); tags through [`Store::adopt_tag`].
//!
//! Resumption: no progress record is needed, every step is idempotent and checked against
//! the metadata first (a blob, manifest or tag already there is counted as present and not read
//! again). A crash or `kill -9` leaves at most a staged file (removed by the next open, like any
//! upload file without a record) or an unrecorded hardlink (reused by the next run, swept by the
//! consistency walk otherwise); re-running finishes the job without duplicates, and re-running
//! after success only reports. One row per tree in `MIGRATIONS` records that a migration
//! finished; `pier serve` consults it so that it migrates a tree once (`pier migrate` always
//! runs). A tag pier already has with another value is left as pier has it (reported).
//!
//! `--dry-run`: nothing is written (not even the store: without `meta.redb` none is opened);
//! every blob and manifest is still read and verified, so the report is the one a real run
//! would give, and it lists every item that would be imported.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::ReadableTable;
use serde::Serialize;

use super::error::{IoContext, Result, StoreError};
use super::meta::{BLOBS, MANIFESTS, MANIFEST_TAGS, MIGRATIONS, REPO_BLOBS, TAGS};
use super::migrate_source::{Registry2, Unreadable};
use super::{now_unix, Store};
use crate::core::manifest::{ManifestKind, MAX_MANIFEST_BYTES};
use crate::core::{Digest, Manifest, RepoName, Tag};

/// Read buffer for hashing and copying blobs.
const BUFFER: usize = 1 << 20;
/// Blobs of a repository committed together: one fsync per directory and one transaction per
/// batch instead of per blob (bounded, so that few staged files wait at a time).
const BATCH: usize = 256;

/// Why a migration stopped before its end (skipped items are not errors: they are reported).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("no registry:2 data in {}: {} is not a directory", .0.display(), .0.join("docker/registry/v2/repositories").display())]
    NoRegistry2Tree(PathBuf),
    #[error("cannot read the registry:2 data: {op} {}: {source}", path.display())]
    Source {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One item that was not imported, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Skipped {
    pub repository: String,
    /// `repository`, `blob`, `manifest` or `tag`.
    pub kind: &'static str,
    /// The digest or tag (or the file, for what could not be named).
    pub item: String,
    pub reason: String,
}

/// One item imported (listed in a dry run only: what a real run would import).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Planned {
    pub repository: String,
    /// `blob`, `manifest` or `tag`.
    pub kind: &'static str,
    pub item: String,
}

/// What a migration did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MigrationReport {
    /// The registry:2 tree (`<dir>/docker/registry/v2`).
    pub source: String,
    pub dry_run: bool,
    /// Repositories found in the tree.
    pub repositories: u64,
    /// Manifests imported now, and those pier already had.
    pub manifests: u64,
    pub manifests_present: u64,
    /// Tags imported now, and those pier already had (same manifest).
    pub tags: u64,
    pub tags_present: u64,
    /// Blobs (layers and configs; manifests not included) imported now by hardlinking the
    /// registry:2 file, by copying it, or by linking a blob the store already had (another
    /// repository); and those the repository already had.
    pub blobs_linked: u64,
    pub blobs_copied: u64,
    pub blobs_shared: u64,
    pub blobs_present: u64,
    /// Bytes of the blobs and manifests hardlinked or copied now (read and verified).
    pub bytes: u64,
    /// Manifest revisions registry:2 marked deleted (not imported).
    pub deleted_manifests: u64,
    /// Unfinished uploads (`_uploads`), not imported.
    pub unfinished_uploads: u64,
    pub skipped: Vec<Skipped>,
    /// Dry run only: every item that would be imported.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<Planned>,
    pub seconds: f64,
}

impl MigrationReport {
    /// Whether this run imported (or would import) anything.
    pub fn changed_anything(&self) -> bool {
        self.manifests + self.tags + self.blobs_linked + self.blobs_copied + self.blobs_shared > 0
    }

    /// The report as lines of text, for the terminal and the log.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run { "would import" } else { "imported" };
        let mut s = format!(
            "registry:2 data in {}: {} repositories; {verb} {} manifests ({} already present), {} tags ({} already present), \
             {} blobs ({} hardlinked, {} copied, {} shared with another repository; {} already present), {} bytes; \
             {} deleted manifests and {} unfinished uploads left out; {} skipped; {:.1} s",
            self.source,
            self.repositories,
            self.manifests,
            self.manifests_present,
            self.tags,
            self.tags_present,
            self.blobs_linked + self.blobs_copied + self.blobs_shared,
            self.blobs_linked,
            self.blobs_copied,
            self.blobs_shared,
            self.blobs_present,
            self.bytes,
            self.deleted_manifests,
            self.unfinished_uploads,
            self.skipped.len(),
            self.seconds,
        );
        for p in &self.planned {
            s.push_str(&format!("\n  would import {} {} {}", p.repository, p.kind, p.item));
        }
        for k in &self.skipped {
            s.push_str(&format!("\n  skipped {} {} {}: {}", k.repository, k.kind, k.item, k.reason));
        }
        s
    }
}

/// Where a migration is, for progress reports (called before each repository, each batch of
/// blobs and each manifest).
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// 1-based index of the repository, and how many there are.
    pub repository: usize,
    pub repositories: usize,
    pub name: &'a str,
}

/// Whether `dir` holds a registry:2 tree.
pub fn has_registry2_tree(dir: &Path) -> bool {
    Registry2::find(dir).is_some()
}

/// A verified file under a private name in `uploads/`, about to become a blob: a registry:2
/// file hardlinked or copied there, or an import's staging file (`staging`).
struct Staged {
    path: PathBuf,
    origin: Origin,
    size: u64,
}

/// Where a staged file came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// A hardlink of a registry:2 file (another program's inode: never chmod-ed).
    Linked,
    /// A copy (pier's own file, mode 0444).
    Copied,
    /// An import's staging file (pier's own file, mode 0444), which the import removes.
    Imported,
}

/// How a blob came into a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adopted {
    /// The repository had it.
    Present,
    /// The store had it (another repository): linked, not read again.
    Shared,
    /// The registry:2 file was hardlinked (`u64`: its size).
    Linked(u64),
    /// The registry:2 file was copied.
    Copied(u64),
    /// An import's staging file became the blob (`u64`: its size).
    Imported(u64),
}

/// What [`Store::adopt_tag`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagAdoption {
    Set,
    /// The tag already named that manifest.
    Present,
    /// The tag names another manifest in pier (left as it is).
    Differs(String),
    /// The tag named this other manifest and was moved ([`Store::import_tag`] only).
    Moved(String),
}

/// The outcome of taking one item from the source: `Err(reason)` skips it.
type Taken<T> = std::result::Result<T, String>;

/// One outcome per blob of a batch, `None` while undecided.
type Outcomes = Vec<Option<Taken<Adopted>>>;

impl Store {
    /// Whether the registry:2 tree in `dir` was migrated to the end once.
    pub fn registry2_migrated(&self, dir: &Path) -> Result<bool> {
        let Some(source) = Registry2::find(dir) else { return Ok(false) };
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(MIGRATIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(source_key(&source).as_str())?.is_some())
    }

    fn record_migration_finished(&self, source: &Registry2) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(MIGRATIONS)?.insert(source_key(source).as_str(), now_unix())?;
        self.disk.commit(txn)
    }

    fn has_repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(REPO_BLOBS)?.get((repo.as_str(), digest.as_str()))?.is_some())
    }

    fn has_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(MANIFESTS)?.get((repo.as_str(), digest.as_str()))?.is_some())
    }

    fn tag_target(&self, repo: &RepoName, tag: &Tag) -> Result<Option<String>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(TAGS)?.get((repo.as_str(), tag.as_str()))?.map(|d| d.value().to_string()))
    }

    /// Makes the verified, fsynced file `src` the global blob `digest` unless that file exists,
    /// without changing `src` (no chmod: it may be another program's inode). Caller holds the
    /// lock.
    pub(super) fn place_global_as_is(&self, src: &Path, digest: &Digest) -> Result<()> {
        let global = self.paths.blob(digest);
        let global_dir = self.paths.blob_dir(digest.algorithm());
        self.disk.ensure_dir(&global_dir)?;
        if self.disk.link_if_absent(src, &global)? {
            self.disk.sync_dir(&global_dir)?;
        }
        Ok(())
    }

    /// Gives `repo` the blobs `(digest, file)` whose bytes are those files (of another program:
    /// read, hardlinked or copied, never changed), committed together: each is staged and
    /// verified, then under the write lock the new global files are linked
    /// (their directory fsynced once), the repository's links made (each directory fsynced
    /// once) and one transaction records them all. Returns one outcome per blob, in order.
    pub fn adopt_blobs(&self, repo: &RepoName, blobs: &[(Digest, PathBuf)]) -> Result<Vec<Taken<Adopted>>> {
        let digests: Vec<&Digest> = blobs.iter().map(|(d, _)| d).collect();
        let (mut outcomes, shared) = self.classify_adopted(repo, &digests)?;
        let mut staged = Vec::new();
        for (i, (d, src)) in blobs.iter().enumerate() {
            if outcomes[i].is_some() || shared.contains(&i) {
                continue;
            }
            match self.stage(src, d, false) {
                Ok(Ok(s)) => staged.push((i, s)),
                Ok(Err(why)) => outcomes[i] = Some(Err(why)),
                Err(e) => {
                    self.remove_staged(&staged);
                    return Err(e);
                }
            }
        }
        // The staged files were not synced one by one: one flush makes every byte of the batch
        // durable before any becomes a global blob (which a push of the same digest would reuse).
        let paths: Vec<&Path> = staged.iter().map(|(_, s)| s.path.as_path()).collect();
        if let Err(e) = self.disk.sync_files(&paths) {
            self.remove_staged(&staged);
            return Err(e);
        }
        let committed = self.commit_adopted(repo, &digests, &staged, &shared, &mut outcomes);
        self.remove_staged(&staged);
        committed?;
        Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(String::from("not committed")))).collect())
    }

    /// [`Store::adopt_blobs`] for an import: each blob is `(digest, its staging file)`, the file
    /// verified and made durable by the caller ([`Store::sync_staged`]), or `None` when the
    /// store holds the blob already (the import read past it). The staging files stay (the
    /// import removes them once every repository has what it needs).
    pub fn adopt_staged_blobs(
        &self,
        repo: &RepoName,
        blobs: &[(&Digest, Option<&super::staging::StagedFile>)],
    ) -> Result<Vec<Taken<Adopted>>> {
        let digests: Vec<&Digest> = blobs.iter().map(|(d, _)| *d).collect();
        let (mut outcomes, shared) = self.classify_adopted(repo, &digests)?;
        let mut staged = Vec::new();
        for (i, (d, file)) in blobs.iter().enumerate() {
            if outcomes[i].is_some() || shared.contains(&i) {
                continue;
            }
            match file {
                Some(f) if f.digest() == *d => {
                    staged.push((i, Staged { path: f.path.clone(), origin: Origin::Imported, size: f.size() }))
                }
                Some(f) => outcomes[i] = Some(Err(format!("its staged bytes hash to {}", f.digest()))),
                None => {
                    outcomes[i] = Some(Err(String::from("not in the bundle, and no longer in the store; run again")))
                }
            }
        }
        self.commit_adopted(repo, &digests, &staged, &shared, &mut outcomes)?;
        Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(String::from("not committed")))).collect())
    }

    /// Which of `digests` `repo` has (their outcome set to `Present`), and the indexes of those
    /// the store has in another repository (shared: linked without reading).
    fn classify_adopted(&self, repo: &RepoName, digests: &[&Digest]) -> Result<(Outcomes, Vec<usize>)> {
        let mut outcomes: Vec<Option<Taken<Adopted>>> = vec![None; digests.len()];
        let mut shared = Vec::new();
        let txn = self.db.begin_read()?;
        let (links, all) = (txn.open_table(REPO_BLOBS)?, txn.open_table(BLOBS)?);
        for (i, d) in digests.iter().enumerate() {
            if links.get((repo.as_str(), d.as_str()))?.is_some() {
                outcomes[i] = Some(Ok(Adopted::Present));
            } else if all.get(d.as_str())?.is_some() {
                shared.push(i);
            }
        }
        Ok((outcomes, shared))
    }

    /// The commit of adopted blobs: under the write lock, the durable `staged` files become
    /// global blobs (their directory fsynced once), the repository's links are made (each
    /// directory fsynced once) for them and the `shared` ones, and one transaction records
    /// them all; `outcomes` gets theirs.
    fn commit_adopted(
        &self,
        repo: &RepoName,
        digests: &[&Digest],
        staged: &[(usize, Staged)],
        shared: &[usize],
        outcomes: &mut [Option<Taken<Adopted>>],
    ) -> Result<()> {
        let _guard = self.lock();
        let mut new_names = BTreeSet::new();
        for (i, s) in staged {
            let d = digests[*i];
            let dir = self.paths.blob_dir(d.algorithm());
            self.disk.ensure_dir(&dir)?;
            if self.disk.link_if_absent(&s.path, &self.paths.blob(d))? {
                new_names.insert(dir);
            }
        }
        for dir in &new_names {
            self.disk.sync_dir(dir)?;
        }
        let txn = self.db.begin_write()?;
        let mut linked: Vec<(usize, u64, Adopted)> = Vec::new();
        {
            // Re-check under the lock: a delete may have taken a shared blob's last link.
            let all = txn.open_table(BLOBS)?;
            for &i in shared {
                match all.get(digests[i].as_str())? {
                    Some(v) => linked.push((i, v.value().0, Adopted::Shared)),
                    None => outcomes[i] = Some(Err(String::from("deleted from pier meanwhile; run again"))),
                }
            }
        }
        for (i, s) in staged {
            let how = match s.origin {
                Origin::Linked => Adopted::Linked(s.size),
                Origin::Copied => Adopted::Copied(s.size),
                Origin::Imported => Adopted::Imported(s.size),
            };
            linked.push((*i, s.size, how));
        }
        let linking: Vec<&Digest> = linked.iter().map(|(i, _, _)| digests[*i]).collect();
        self.link_all_into_repo(repo, &linking)?;
        for (i, size, _) in &linked {
            Self::record_repo_blob(&txn, repo, digests[*i], *size)?;
        }
        self.disk.commit(txn)?;
        for (i, _, how) in linked {
            outcomes[i] = Some(Ok(how));
        }
        Ok(())
    }

    /// Removes staged files (after their commit, or when it failed).
    fn remove_staged(&self, staged: &[(usize, Staged)]) {
        for (_, s) in staged {
            if let Err(e) = self.disk.remove_if_exists(&s.path) {
                log::warn!("{e} (removed at the next start)");
            }
        }
    }

    /// Hardlinks the global blobs `digests` into `repo`'s layout (completed first if needed),
    /// fsyncing each directory that got a new name once. Caller holds the lock.
    fn link_all_into_repo(&self, repo: &RepoName, digests: &[&Digest]) -> Result<()> {
        let Some((first, rest)) = digests.split_first() else { return Ok(()) };
        self.link_into_repo(repo, first)?;
        let mut new_names = BTreeSet::new();
        for d in rest {
            let dir = self.paths.repo_blob_dir(repo, d.algorithm());
            self.disk.ensure_dir(&dir)?;
            if self.disk.link_if_absent(&self.paths.blob(d), &self.paths.repo_blob(repo, d))? {
                new_names.insert(dir);
            }
        }
        for dir in &new_names {
            self.disk.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Stores the manifest `digest` of `repo` whose bytes are the file `src` (as
    /// [`Store::adopt_blobs`] takes a blob), after the checks of a push. `Ok(Err(reason))` when
    /// it cannot be taken (unreadable, corrupt, not a manifest pier stores, a reference missing).
    pub fn adopt_manifest(&self, repo: &RepoName, digest: &Digest, src: &Path) -> Result<Taken<u64>> {
        if let Some(stored) = self.adopt_stored_manifest(repo, digest)? {
            return Ok(stored.map(|()| 0));
        }
        let staged = match self.stage(src, digest, true)? {
            Ok(s) => s,
            Err(why) => return Ok(Err(why)),
        };
        let stored = (|| {
            let body = match read_manifest(&staged.path, digest) {
                Ok(b) => b,
                Err(why) => return Ok(Err(why)),
            };
            self.store_adopted_manifest(repo, digest, &body, Some(&staged.path))
        })();
        self.disk.remove_if_exists(&staged.path)?;
        stored.map(|r| r.map(|()| staged.size))
    }

    /// Stores the manifest `digest` in `repo` from the bytes the store holds already (another
    /// repository has it; verified when they came in), after the checks of a push. `None` when
    /// the store does not hold it as a manifest.
    pub fn adopt_stored_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Taken<()>>> {
        if !self.has_blob(digest)? {
            return Ok(None);
        }
        match self.manifest_bytes(digest) {
            Ok(body) => self.store_adopted_manifest(repo, digest, &body, None).map(Some),
            Err(StoreError::ManifestUnknown) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores the manifest whose bytes are `body`, staged by an import in `file` (verified and
    /// made durable by the caller), in `repo` after the checks of a push: the staging file
    /// becomes the global blob as it is (a hardlink; the import removes its own name later).
    pub fn adopt_staged_manifest(
        &self,
        repo: &RepoName,
        file: &super::staging::StagedFile,
        body: &[u8],
    ) -> Result<Taken<()>> {
        if body.len() as u64 != file.size() || Digest::of(file.digest().algorithm(), body) != *file.digest() {
            return Ok(Err(format!("the bytes given are not those staged as {}", file.digest())));
        }
        self.store_adopted_manifest(repo, file.digest(), body, Some(&file.path))
    }

    /// Parses and stores a verified manifest (`staged`: its file, to become the global blob).
    fn store_adopted_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        staged: Option<&Path>,
    ) -> Result<Taken<()>> {
        let manifest = match Manifest::parse(None, body) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e.to_string())),
        };
        match self.store_manifest(repo, digest, body, staged, &manifest, &[]) {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::ManifestBlobUnknown(d)) => {
                Ok(Err(format!("references {d}, which is not in the repository (missing or skipped)")))
            }
            Err(e) => Err(e),
        }
    }

    /// Points `tag` of `repo` at the manifest `digest`, which the repository has, unless the
    /// tag exists (then it stays as it is).
    pub fn adopt_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<TagAdoption> {
        self.adopt_tag_as(repo, tag, digest, false)
    }

    /// Points `tag` of `repo` at the manifest `digest`, which the repository has, moving it if
    /// it named another manifest (as a push would: an import of a newer `latest` moves it).
    pub fn import_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<TagAdoption> {
        self.adopt_tag_as(repo, tag, digest, true)
    }

    fn adopt_tag_as(&self, repo: &RepoName, tag: &Tag, digest: &Digest, move_it: bool) -> Result<TagAdoption> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        if txn.open_table(MANIFESTS)?.get((repo.as_str(), digest.as_str()))?.is_none() {
            return Err(StoreError::ManifestUnknown);
        }
        let outcome;
        {
            let mut tags = txn.open_table(TAGS)?;
            let before = tags.get((repo.as_str(), tag.as_str()))?.map(|d| d.value().to_string());
            match &before {
                Some(d) if d == digest.as_str() => return Ok(TagAdoption::Present),
                Some(d) if !move_it => return Ok(TagAdoption::Differs(d.clone())),
                _ => {}
            }
            tags.insert((repo.as_str(), tag.as_str()), digest.as_str())?;
            let mut by_manifest = txn.open_table(MANIFEST_TAGS)?;
            if let Some(before) = &before {
                by_manifest.remove((repo.as_str(), before.as_str(), tag.as_str()))?;
            }
            by_manifest.insert((repo.as_str(), digest.as_str(), tag.as_str()), ())?;
            txn.open_table(super::meta::TAGGED_AT)?.insert((repo.as_str(), tag.as_str()), super::now_unix())?;
            outcome = match before {
                Some(d) => TagAdoption::Moved(d),
                None => TagAdoption::Set,
            };
        }
        Self::mark_index_dirty(&txn, repo)?;
        self.disk.commit(txn)?;
        self.indexes.changed();
        Ok(outcome)
    }

    /// Puts the bytes of `src` under a private name in `uploads/` (a hardlink, else a copy),
    /// fsynced, and verifies that they are `digest`. `Ok(Err(reason))` for a source that cannot
    /// be taken (nothing is left behind); `Err` for a failure of the store's own files.
    ///
    /// With `sync`, the file is fdatasynced; without, the caller makes it durable (a batch
    /// flushes the filesystem once).
    fn stage(&self, src: &Path, digest: &Digest, sync: bool) -> Result<Taken<Staged>> {
        let path = self.paths.upload(&format!("{}.adopt", uuid::Uuid::new_v4()));
        // A new private name (the file is another program's until committed): a creation.
        self.disk.step(|| super::disk::Step::Create(path.clone())).at("link", &path)?;
        let copied = match fs::hard_link(src, &path) {
            Ok(()) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(format!("its data file {} is missing", src.display())))
            }
            // Another filesystem (EXDEV), a file the user may not link (EPERM with
            // fs.protected_hardlinks), too many links (EMLINK), no hardlinks at all: copy.
            Err(_) => true,
        };
        let verified = if copied { self.copy_hashed(src, &path, digest)? } else { hash_as(&path, digest.algorithm()) };
        let verified = verified.and_then(|(actual, size)| {
            if actual == *digest {
                Ok(size)
            } else {
                Err(format!("its data file {} is corrupt: its bytes hash to {actual}", src.display()))
            }
        });
        let size = match verified {
            Ok(size) => size,
            Err(why) => {
                self.disk.remove_if_exists(&path)?;
                return Ok(Err(why));
            }
        };
        // registry:2 fsynced nothing: make the bytes durable before metadata names them.
        let synced = if sync {
            File::open(&path).at("open", &path).and_then(|f| self.disk.sync_data(&f, &path))
        } else {
            Ok(())
        };
        if let Err(e) = synced {
            self.disk.remove_if_exists(&path)?;
            return Err(e);
        }
        Ok(Ok(Staged { path, origin: if copied { Origin::Copied } else { Origin::Linked }, size }))
    }

    /// Copies `src` to the new file `dst` (mode 0444) while hashing it; `Ok(Err(reason))` when
    /// `src` cannot be read (then `dst` is removed by the caller).
    fn copy_hashed(&self, src: &Path, dst: &Path, digest: &Digest) -> Result<Taken<(Digest, u64)>> {
        let mut input = match File::open(src) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(format!("its data file {} is missing", src.display())))
            }
            Err(e) => return Ok(Err(format!("cannot read its data file {}: {e}", src.display()))),
        };
        let size = input.metadata().map(|m| m.len()).unwrap_or(0);
        self.ensure_free_space(size)?;
        let mut output = self.disk.create_new_mode(dst, 0o444)?;
        let mut hasher = digest.algorithm().hasher();
        let mut buf = vec![0u8; BUFFER];
        let mut len = 0u64;
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Ok(Err(format!("cannot read its data file {}: {e}", src.display()))),
            };
            hasher.update(&buf[..n]);
            output.write_all(&buf[..n]).at("write", dst)?;
            len += n as u64;
        }
        Ok(Ok((hasher.finish(), len)))
    }
}

/// The key of a tree in `MIGRATIONS`: its path, made absolute where possible.
fn source_key(source: &Registry2) -> String {
    let base = source.base();
    fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf()).to_string_lossy().into_owned()
}

/// The digest (with `algorithm`) and length of a file's bytes; `Err(reason)` if unreadable.
fn hash_as(path: &Path, algorithm: crate::core::Algorithm) -> Taken<(Digest, u64)> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok((hasher.finish(), len)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// A manifest's bytes from `path`, verified against `digest`; at most [`MAX_MANIFEST_BYTES`].
fn read_manifest(path: &Path, digest: &Digest) -> Taken<Vec<u8>> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut body = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes: not a manifest pier stores"));
    }
    let actual = Digest::of(digest.algorithm(), &body);
    if actual != *digest {
        return Err(format!("its data file {} is corrupt: its bytes hash to {actual}", path.display()));
    }
    Ok(body)
}

/// Imports the registry:2 tree in `dir` into `store` (see the module doc). With `dry_run`,
/// writes nothing and `store` (if any) only tells what is already there. `progress` is called
/// often (see [`Progress`]); it should be cheap.
pub fn migrate(
    store: Option<&Store>,
    dir: &Path,
    dry_run: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> std::result::Result<MigrationReport, MigrateError> {
    let started = Instant::now();
    let source = Registry2::find(dir).ok_or_else(|| MigrateError::NoRegistry2Tree(dir.to_path_buf()))?;
    let mut run = Run {
        store: if dry_run { None } else { store },
        known: store,
        source: &source,
        report: MigrationReport { source: source.base().display().to_string(), dry_run, ..MigrationReport::default() },
        verified: HashMap::new(),
    };
    let repos_dir = source.base().join("repositories");
    let listed = source.repositories().map_err(|e| source_error("list", &repos_dir, e))?;
    let repos = listed.items;
    for u in listed.unreadable {
        run.skip("", "repository", u.what, u.why);
    }
    run.report.repositories = repos.len() as u64;
    for (i, name) in repos.iter().enumerate() {
        let at = Progress { repository: i + 1, repositories: repos.len(), name };
        progress(at);
        let before = run.report.clone();
        run.repository(name, &mut || progress(at))?;
        log::info!("migrate: [{}/{}] {name}: {}", i + 1, repos.len(), run.report.delta(&before));
    }
    if let Some(store) = run.store {
        store.record_migration_finished(&source)?;
    }
    run.report.seconds = started.elapsed().as_secs_f64();
    Ok(run.report)
}

fn source_error(op: &'static str, path: &Path, source: io::Error) -> MigrateError {
    MigrateError::Source { op, path: path.to_path_buf(), source }
}

impl MigrationReport {
    /// What one repository added to the report, for its progress line.
    fn delta(&self, before: &MigrationReport) -> String {
        format!(
            "{} manifests, {} tags, {} blobs ({} hardlinked, {} copied, {} shared), {} already present, {} skipped",
            self.manifests - before.manifests,
            self.tags - before.tags,
            (self.blobs_linked + self.blobs_copied + self.blobs_shared)
                - (before.blobs_linked + before.blobs_copied + before.blobs_shared),
            self.blobs_linked - before.blobs_linked,
            self.blobs_copied - before.blobs_copied,
            self.blobs_shared - before.blobs_shared,
            (self.manifests_present + self.tags_present + self.blobs_present)
                - (before.manifests_present + before.tags_present + before.blobs_present),
            self.skipped.len() - before.skipped.len(),
        )
    }
}

/// One migration in progress.
struct Run<'a> {
    /// Where to write: `None` in a dry run.
    store: Option<&'a Store>,
    /// What to consult for what is already imported (also in a dry run, when a store exists).
    known: Option<&'a Store>,
    source: &'a Registry2,
    report: MigrationReport,
    /// Dry run: blobs already read, and what reading them gave (each is hashed once).
    verified: HashMap<Digest, Taken<u64>>,
}

impl Run<'_> {
    fn skip(&mut self, repository: &str, kind: &'static str, item: String, reason: String) {
        log::warn!("migrate: {repository}: {kind} {item} not imported: {reason}");
        self.report.skipped.push(Skipped { repository: repository.to_string(), kind, item, reason });
    }

    fn skip_unreadable(&mut self, repository: &str, kind: &'static str, items: Vec<Unreadable>) {
        for u in items {
            self.skip(repository, kind, u.what, u.why);
        }
    }

    fn plan(&mut self, repository: &str, kind: &'static str, item: &str) {
        if self.report.dry_run {
            self.report.planned.push(Planned { repository: repository.to_string(), kind, item: item.to_string() });
        }
    }

    fn repo_error(&self, op: &'static str, name: &str, e: io::Error) -> MigrateError {
        source_error(op, &self.source.base().join("repositories").join(name), e)
    }

    /// Imports one repository: its blobs, then its manifests (children before indexes), then
    /// its tags.
    fn repository(&mut self, name: &str, tick: &mut dyn FnMut()) -> std::result::Result<(), MigrateError> {
        self.report.unfinished_uploads +=
            self.source.unfinished_uploads(name).map_err(|e| self.repo_error("list", name, e))?;
        let repo = match RepoName::parse(name) {
            Ok(r) => r,
            Err(e) => {
                self.skip(name, "repository", name.to_string(), format!("not a repository name pier accepts: {e}"));
                return Ok(());
            }
        };
        // Blobs.
        let layers = self.source.layers(name).map_err(|e| self.repo_error("list", name, e))?;
        self.skip_unreadable(name, "blob", layers.unreadable);
        let mut blobs: HashSet<Digest> = HashSet::new();
        for batch in layers.items.chunks(BATCH) {
            tick();
            let outcomes = match self.store {
                Some(store) => {
                    let items: Vec<(Digest, PathBuf)> =
                        batch.iter().map(|d| (d.clone(), self.source.blob_data(d))).collect();
                    store.adopt_blobs(&repo, &items)?
                }
                None => batch.iter().map(|d| self.check_blob(&repo, d)).collect::<Result<_>>()?,
            };
            for (d, outcome) in batch.iter().zip(outcomes) {
                if self.count_blob(&repo, d, outcome) {
                    blobs.insert(d.clone());
                }
            }
        }
        // Manifests: read and verify each, then store those whose references are in, images
        // first, then indexes round by round (an index may name another index).
        let revisions = self.source.revisions(name).map_err(|e| self.repo_error("list", name, e))?;
        self.report.deleted_manifests += revisions.deleted;
        self.skip_unreadable(name, "manifest", revisions.unreadable);
        let mut manifests: HashSet<Digest> = HashSet::new();
        let mut pending: Vec<(Digest, Manifest, u64)> = Vec::new();
        for d in revisions.present {
            tick();
            if self.known.map(|s| s.has_manifest(&repo, &d)).transpose()?.unwrap_or(false) {
                self.report.manifests_present += 1;
                manifests.insert(d);
                continue;
            }
            let parsed = read_manifest(&self.source.blob_data(&d), &d).and_then(|body| {
                Manifest::parse(None, &body).map(|m| (m, body.len() as u64)).map_err(|e| e.to_string())
            });
            match parsed {
                Ok((m, size)) => pending.push((d, m, size)),
                Err(why) => self.skip(name, "manifest", d.to_string(), why),
            }
        }
        pending.sort_by_key(|(_, m, _)| m.kind == ManifestKind::Index);
        loop {
            let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, m, _)| {
                m.blobs.iter().all(|b| blobs.contains(&b.digest))
                    && m.children.iter().all(|c| manifests.contains(&c.digest))
            });
            pending = waiting;
            if ready.is_empty() {
                break;
            }
            for (d, _, size) in ready {
                tick();
                if self.manifest(&repo, &d, size)? {
                    manifests.insert(d);
                }
            }
        }
        for (d, m, _) in pending {
            let missing = m
                .blobs
                .iter()
                .map(|b| &b.digest)
                .find(|b| !blobs.contains(*b))
                .or_else(|| m.children.iter().map(|c| &c.digest).find(|c| !manifests.contains(*c)));
            let why = match missing {
                Some(r) => format!("references {r}, which is not in the repository (missing or skipped)"),
                None => String::from("its references were not imported"),
            };
            self.skip(name, "manifest", d.to_string(), why);
        }
        // Tags.
        let tags = self.source.tags(name).map_err(|e| self.repo_error("list", name, e))?;
        self.skip_unreadable(name, "tag", tags.unreadable);
        for (tag, d) in tags.items {
            let Ok(parsed) = Tag::parse(&tag) else {
                self.skip(name, "tag", tag, String::from("not a tag name pier accepts"));
                continue;
            };
            if !manifests.contains(&d) {
                self.skip(name, "tag", tag, format!("names {d}, which was not imported (deleted, missing or skipped)"));
                continue;
            }
            self.tag(&repo, &parsed, &d)?;
        }
        Ok(())
    }

    /// Dry run: what adopting blob `d` into `repo` would give (each blob is read once).
    fn check_blob(&mut self, repo: &RepoName, d: &Digest) -> Result<Taken<Adopted>> {
        let src = self.source.blob_data(d);
        Ok({
            {
                if self.known.map(|s| s.has_repo_blob(repo, d)).transpose()?.unwrap_or(false) {
                    Ok(Adopted::Present)
                } else if self.known.map(|s| s.has_blob(d)).transpose()?.unwrap_or(false) {
                    Ok(Adopted::Shared)
                } else if let Some(seen) = self.verified.get(d) {
                    seen.clone().map(|_| Adopted::Shared)
                } else {
                    let read = hash_as(&src, d.algorithm()).and_then(|(actual, size)| {
                        if actual == *d {
                            Ok(size)
                        } else {
                            Err(format!("its data file {} is corrupt: its bytes hash to {actual}", src.display()))
                        }
                    });
                    self.verified.insert(d.clone(), read.clone());
                    read.map(Adopted::Linked)
                }
            }
        })
    }

    /// Counts what happened to blob `d` of `repo`; whether the repository has it now (or would
    /// have, in a dry run).
    fn count_blob(&mut self, repo: &RepoName, d: &Digest, outcome: Taken<Adopted>) -> bool {
        let r = &mut self.report;
        match outcome {
            Ok(Adopted::Present) => r.blobs_present += 1,
            Ok(Adopted::Shared) => r.blobs_shared += 1,
            Ok(Adopted::Linked(size)) => {
                r.blobs_linked += 1;
                r.bytes += size;
            }
            Ok(Adopted::Copied(size) | Adopted::Imported(size)) => {
                r.blobs_copied += 1;
                r.bytes += size;
            }
            Err(why) => {
                self.skip(repo.as_str(), "blob", d.to_string(), why);
                return false;
            }
        }
        if !matches!(outcome, Ok(Adopted::Present)) {
            self.plan(repo.as_str(), "blob", d.as_str());
        }
        true
    }

    /// One manifest whose references are in; whether it is in now (or would be).
    fn manifest(&mut self, repo: &RepoName, d: &Digest, size: u64) -> std::result::Result<bool, MigrateError> {
        let outcome = match self.store {
            Some(store) => store.adopt_manifest(repo, d, &self.source.blob_data(d))?,
            // Read and verified already.
            None => Ok(size),
        };
        match outcome {
            Ok(size) => {
                self.report.manifests += 1;
                self.report.bytes += size;
                self.plan(repo.as_str(), "manifest", d.as_str());
                Ok(true)
            }
            Err(why) => {
                self.skip(repo.as_str(), "manifest", d.to_string(), why);
                Ok(false)
            }
        }
    }

    fn tag(&mut self, repo: &RepoName, tag: &Tag, d: &Digest) -> std::result::Result<(), MigrateError> {
        let outcome = match self.store {
            Some(store) => store.adopt_tag(repo, tag, d)?,
            None => match self.known.map(|s| s.tag_target(repo, tag)).transpose()?.flatten() {
                None => TagAdoption::Set,
                Some(t) if t == d.as_str() => TagAdoption::Present,
                Some(t) => TagAdoption::Differs(t),
            },
        };
        match outcome {
            TagAdoption::Set | TagAdoption::Moved(_) => {
                self.report.tags += 1;
                self.plan(repo.as_str(), "tag", tag.as_str());
            }
            TagAdoption::Present => self.report.tags_present += 1,
            TagAdoption::Differs(other) => self.skip(
                repo.as_str(),
                "tag",
                tag.as_str().to_string(),
                format!("registry:2 has it at {d}, pier at {other}; pier's stays"),
            ),
        }
        Ok(())
    }
}
