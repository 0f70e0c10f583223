//! `Store`: the only API that touches disk.
//!
//! It owns the data directory (see [`layout`]) and the redb metadata (see [`meta`]) and keeps
//! the commit protocol of `shared/design.md`: files are written, verified, fsynced and linked
//! *before* one short redb write transaction makes them visible; deletions run the other way
//! round (transaction first, unlink after). Metadata therefore only ever points at complete
//! files, and a crash at any instant leaves at most unreferenced files, which [`Store::open`]
//! sweeps away.
//!
//! All methods are blocking; the HTTP layer calls them from `spawn_blocking` (or from the
//! dedicated writer/reader threads of a streaming request).

pub mod files;
pub mod layout;
pub mod meta;
pub mod upload;
mod upload_writer;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::core::{Algorithm, Digest, Manifest, RepoName, Tag};
use layout::Paths;
use meta::{ManifestRecord, BLOBS, MANIFESTS, REFERRERS, REPOS, REPO_BLOBS, TAGS, UPLOADS};
pub use upload::UploadSession;

/// Errors of the storage layer; the HTTP layer maps each to one OCI error code.
#[derive(Debug)]
pub enum StoreError {
    NameUnknown,
    BlobUnknown,
    ManifestUnknown,
    UploadUnknown,
    /// The content's digest is not the one the client claimed.
    DigestMismatch {
        expected: Digest,
        actual: Digest,
    },
    /// A manifest references a blob or manifest the repository does not have.
    ManifestBlobUnknown(Digest),
    /// Deletion is disabled by configuration.
    DeleteDisabled,
    /// A blob delete named a manifest (which must be deleted through the manifest endpoint).
    IsManifest,
    Io(io::Error),
    Db(redb::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NameUnknown => f.write_str("repository not known"),
            StoreError::BlobUnknown => f.write_str("blob unknown"),
            StoreError::ManifestUnknown => f.write_str("manifest unknown"),
            StoreError::UploadUnknown => f.write_str("upload unknown"),
            StoreError::DigestMismatch { expected, actual } => write!(f, "content has digest {actual}, not {expected}"),
            StoreError::ManifestBlobUnknown(d) => write!(f, "referenced content {d} is not in this repository"),
            StoreError::DeleteDisabled => f.write_str("deletion is disabled (storage.delete.enabled)"),
            StoreError::IsManifest => {
                f.write_str("this digest is a manifest; delete it through the manifests endpoint")
            }
            StoreError::Io(e) => write!(f, "storage I/O error: {e}"),
            StoreError::Db(e) => write!(f, "metadata error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub type Result<T> = std::result::Result<T, StoreError>;

/// A stored manifest as served: its record and digest (bytes are read separately).
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub record: ManifestRecord,
}

/// One entry of a referrers listing.
#[derive(Clone, Debug)]
pub struct Referrer {
    pub digest: Digest,
    pub record: ManifestRecord,
}

/// A page of a sorted listing, and whether more follows.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

pub struct Store {
    paths: Paths,
    db: Database,
    /// Upload sessions touched since start; others are loaded from `UPLOADS` on demand.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadSession>>>>,
    /// Serialises every (file link/unlink + metadata transaction + index.json) sequence, so that a
    /// concurrent delete can never interleave between a push's link and its transaction.
    /// Invariant, kept under this lock: the global file `blobs/<alg>/<hex>` exists whenever
    /// `BLOBS[digest]` counts at least one link. It is created only by `commit_blob_file` and
    /// `put_manifest`, and removed when a delete takes away the last link (or by the start-up
    /// sweep, for what a crash left unreferenced), always while holding this lock.
    write_lock: Mutex<()>,
    delete_enabled: std::sync::atomic::AtomicBool,
}

/// What `unrecord_repo_blob` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlinked {
    /// The repository did not have the blob.
    NotLinked,
    /// Removed from the repository; other repositories still link it.
    LinkedElsewhere,
    /// Removed, and that was the last link: the global file can go.
    LastLink,
}

/// Maps "file not found" to `unknown` (the object was deleted concurrently), other errors as is.
fn gone_as(e: io::Error, unknown: StoreError) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        unknown
    } else {
        e.into()
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Config media types of ordinary images (as opposed to artifacts).
const IMAGE_CONFIG_TYPES: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// redb's page cache: small, because blob data never goes through redb.
const DB_CACHE_BYTES: usize = 4 * 1024 * 1024;

impl Store {
    /// Opens (or creates) the data directory, then sweeps what a crash may have left behind.
    pub fn open(root: &Path) -> Result<Store> {
        let paths = Paths::new(root);
        files::ensure_dir(root)?;
        for d in [paths.blobs(), paths.repositories(), paths.uploads()] {
            files::ensure_dir(&d)?;
        }
        let db = Database::builder().set_cache_size(DB_CACHE_BYTES).create(paths.db())?;
        {
            let txn = db.begin_write()?;
            txn.open_table(REPOS)?;
            txn.open_table(BLOBS)?;
            txn.open_table(REPO_BLOBS)?;
            txn.open_table(MANIFESTS)?;
            txn.open_table(TAGS)?;
            txn.open_table(REFERRERS)?;
            txn.open_table(UPLOADS)?;
            txn.commit()?;
        }
        let store = Store {
            paths,
            db,
            sessions: Mutex::new(HashMap::new()),
            write_lock: Mutex::new(()),
            delete_enabled: std::sync::atomic::AtomicBool::new(false),
        };
        store.sweep()?;
        Ok(store)
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// `storage.delete.enabled` (reloadable).
    pub fn set_delete_enabled(&self, enabled: bool) {
        self.delete_enabled.store(enabled, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn delete_enabled(&self) -> bool {
        self.delete_enabled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ----- repositories -------------------------------------------------------------------

    pub fn repo_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(REPOS)?.len()?)
    }

    /// Repositories for which `visible` holds, in lexical order, `n` at most, strictly after
    /// `last`.
    pub fn catalog(&self, n: Option<usize>, last: Option<&str>, visible: &dyn Fn(&str) -> bool) -> Result<Page> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REPOS)?;
        let iter = match last {
            Some(l) => table.range::<&str>((std::ops::Bound::Excluded(l), std::ops::Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let limit = n.unwrap_or(usize::MAX);
        let mut page = Page::default();
        for entry in iter {
            let (k, _) = entry?;
            if !visible(k.value()) {
                continue;
            }
            if page.items.len() == limit {
                page.more = true;
                break;
            }
            page.items.push(k.value().to_string());
        }
        Ok(page)
    }

    /// Tags of `repo` in lexical order, `n` at most, strictly after `last`.
    pub fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Page> {
        let txn = self.db.begin_read()?;
        if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
            return Err(StoreError::NameUnknown);
        }
        let table = txn.open_table(TAGS)?;
        let r = repo.as_str();
        let start = match last {
            Some(l) => std::ops::Bound::Excluded((r, l)),
            None => std::ops::Bound::Included((r, "")),
        };
        let limit = n.unwrap_or(usize::MAX);
        let mut page = Page::default();
        for entry in table.range::<(&str, &str)>((start, std::ops::Bound::Unbounded))? {
            let (k, _) = entry?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            if page.items.len() == limit {
                page.more = true;
                break;
            }
            page.items.push(tag.to_string());
        }
        Ok(page)
    }

    // ----- blobs --------------------------------------------------------------------------

    /// The size of `digest` in `repo`, if the repository has that blob.
    pub fn blob_size(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        let txn = self.db.begin_read()?;
        match txn.open_table(REPO_BLOBS)?.get((repo.as_str(), digest.as_str()))? {
            Some(size) => Ok(size.value()),
            None if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() => Err(StoreError::NameUnknown),
            None => Err(StoreError::BlobUnknown),
        }
    }

    /// Opens a blob the repository has, for reading. Returns the file and its size.
    pub fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(fs::File, u64)> {
        let size = self.blob_size(repo, digest)?;
        // A delete of the last link may remove the file between the lookup and the open.
        let file = fs::File::open(self.paths.blob(digest)).map_err(|e| gone_as(e, StoreError::BlobUnknown))?;
        Ok((file, size))
    }

    /// Makes the verified, fsynced file at `src` the blob `digest` of `repo`: links it into the
    /// global store (unless present) and into the repository's layout, fsyncs both directories,
    /// then records the link. `src` is removed.
    fn commit_blob_file(&self, src: &Path, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let _guard = self.lock();
        self.place_global(src, digest)?;
        self.link_into_repo(repo, digest)?;
        let txn = self.db.begin_write()?;
        Self::record_repo_blob(&txn, repo, digest, size)?;
        txn.commit()?;
        Ok(())
    }

    /// Makes the fsynced file `src` the global blob `digest` unless that file exists (hardlink,
    /// then the directory fsynced), and removes `src`. Caller holds the lock.
    fn place_global(&self, src: &Path, digest: &Digest) -> Result<()> {
        let global = self.paths.blob(digest);
        let global_dir = global.parent().ok_or_else(|| io::Error::other("blob path without parent"))?;
        files::ensure_dir(global_dir)?;
        files::make_read_only(src)?;
        if files::link_if_absent(src, &global)? {
            files::sync_dir(global_dir)?;
        }
        files::remove_if_exists(src)?;
        Ok(())
    }

    /// Hardlinks the global blob into `repo`'s layout (creating the layout if needed).
    fn link_into_repo(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let dst = self.paths.repo_blob(repo, digest);
        let dir = dst.parent().ok_or_else(|| io::Error::other("blob path without parent"))?;
        if !dir.is_dir() {
            files::ensure_dir(dir)?;
            let layout = self.paths.repo(repo).join("oci-layout");
            if !layout.exists() {
                files::write_atomic(&layout, layout::OCI_LAYOUT)?;
            }
            let index = self.paths.repo(repo).join("index.json");
            if !index.exists() {
                files::write_atomic(&index, layout::EMPTY_INDEX)?;
            }
        }
        if files::link_if_absent(&self.paths.blob(digest), &dst)? {
            files::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Inserts `REPO_BLOBS[(repo, digest)]`, keeping `BLOBS` counts and `REPOS` in step.
    fn record_repo_blob(txn: &redb::WriteTransaction, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let mut links = txn.open_table(REPO_BLOBS)?;
        if links.insert((repo.as_str(), digest.as_str()), size)?.is_none() {
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
    fn unrecord_repo_blob(txn: &redb::WriteTransaction, repo: &RepoName, digest: &Digest) -> Result<Unlinked> {
        let mut links = txn.open_table(REPO_BLOBS)?;
        if links.remove((repo.as_str(), digest.as_str()))?.is_none() {
            return Ok(Unlinked::NotLinked);
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
    fn remove_blob_files(&self, repo: &RepoName, digest: &Digest, unlinked: Unlinked) -> Result<()> {
        files::remove_if_exists(&self.paths.repo_blob(repo, digest))?;
        if unlinked == Unlinked::LastLink {
            files::remove_if_exists(&self.paths.blob(digest))?;
        }
        Ok(())
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
        let txn = self.db.begin_write()?;
        // Re-check under the lock: `from` may have lost the blob (and its file) meanwhile.
        if txn.open_table(REPO_BLOBS)?.get((from.as_str(), digest.as_str()))?.is_none() {
            return Ok(false);
        }
        self.link_into_repo(to, digest)?;
        Self::record_repo_blob(&txn, to, digest, size)?;
        txn.commit()?;
        Ok(true)
    }

    /// Removes the blob from `repo`; its file goes too when no other repository links it.
    pub fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.delete_enabled() {
            return Err(StoreError::DeleteDisabled);
        }
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        if txn.open_table(MANIFESTS)?.get((repo.as_str(), digest.as_str()))?.is_some() {
            return Err(StoreError::IsManifest);
        }
        let unlinked = Self::unrecord_repo_blob(&txn, repo, digest)?;
        if unlinked == Unlinked::NotLinked {
            return Err(Self::unknown_in_write(&txn, repo, StoreError::BlobUnknown)?);
        }
        txn.commit()?;
        self.remove_blob_files(repo, digest, unlinked)
    }

    // ----- manifests ----------------------------------------------------------------------

    /// Resolves a tag to its manifest.
    pub fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<StoredManifest> {
        let txn = self.db.begin_read()?;
        let digest = match txn.open_table(TAGS)?.get((repo.as_str(), tag.as_str()))? {
            Some(d) => d.value().to_string(),
            None => return Err(self.unknown_manifest(&txn, repo)?),
        };
        let digest = Digest::parse(&digest).map_err(|_| StoreError::ManifestUnknown)?;
        let record = Self::manifest_record(&txn, repo, &digest)?.ok_or(StoreError::ManifestUnknown)?;
        Ok(StoredManifest { digest, record })
    }

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<StoredManifest> {
        let txn = self.db.begin_read()?;
        match Self::manifest_record(&txn, repo, digest)? {
            Some(record) => Ok(StoredManifest { digest: digest.clone(), record }),
            None => Err(self.unknown_manifest(&txn, repo)?),
        }
    }

    /// `otherwise` when the repository exists, else `NameUnknown` (inside a write transaction).
    fn unknown_in_write(txn: &redb::WriteTransaction, repo: &RepoName, otherwise: StoreError) -> Result<StoreError> {
        Ok(if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() { StoreError::NameUnknown } else { otherwise })
    }

    fn unknown_manifest(&self, txn: &redb::ReadTransaction, repo: &RepoName) -> Result<StoreError> {
        Ok(if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
            StoreError::NameUnknown
        } else {
            StoreError::ManifestUnknown
        })
    }

    fn manifest_record(
        txn: &redb::ReadTransaction,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        Ok(txn
            .open_table(MANIFESTS)?
            .get((repo.as_str(), digest.as_str()))?
            .and_then(|v| ManifestRecord::decode(v.value())))
    }

    /// Reads a stored manifest's bytes.
    pub fn manifest_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        // A concurrent delete of the last link may have removed the file since the lookup.
        fs::read(self.paths.blob(digest)).map_err(|e| gone_as(e, StoreError::ManifestUnknown))
    }

    /// The first reference of `manifest` that `repo` lacks, checked in `txn`.
    fn missing_reference<
        T: ReadableTable<(&'static str, &'static str), u64>,
        M: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    >(
        links: &T,
        manifests: &M,
        repo: &RepoName,
        manifest: &Manifest,
    ) -> Result<Option<Digest>> {
        for b in &manifest.blobs {
            if links.get((repo.as_str(), b.digest.as_str()))?.is_none() {
                return Ok(Some(b.digest.clone()));
            }
        }
        for c in &manifest.children {
            if manifests.get((repo.as_str(), c.digest.as_str()))?.is_none() {
                return Ok(Some(c.digest.clone()));
            }
        }
        Ok(None)
    }

    /// Stores a validated manifest (bytes `body`, digest `digest`) and points `tags` at it.
    pub fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        manifest: &Manifest,
        tags: &[Tag],
    ) -> Result<()> {
        // Fail fast, before writing anything.
        {
            let txn = self.db.begin_read()?;
            if let Some(d) =
                Self::missing_reference(&txn.open_table(REPO_BLOBS)?, &txn.open_table(MANIFESTS)?, repo, manifest)?
            {
                return Err(StoreError::ManifestBlobUnknown(d));
            }
        }
        let record = ManifestRecord {
            media_type: manifest.media_type.clone(),
            size: body.len() as u64,
            artifact_type: manifest.artifact_type.clone(),
            subject: manifest.subject.as_ref().map(|s| s.digest.to_string()),
            annotations: manifest.annotations.clone(),
            children: manifest.children.iter().map(|c| c.digest.to_string()).collect(),
            blobs: manifest.blobs.iter().map(|b| b.digest.to_string()).collect(),
        };
        let _guard = self.lock();
        // The bytes become a blob of the repository, like any layer.
        self.write_global_if_absent(digest, body)?;
        self.link_into_repo(repo, digest)?;
        let txn = self.db.begin_write()?;
        // Re-check under the lock: a concurrent delete may have removed a reference.
        if let Some(d) =
            Self::missing_reference(&txn.open_table(REPO_BLOBS)?, &txn.open_table(MANIFESTS)?, repo, manifest)?
        {
            return Err(StoreError::ManifestBlobUnknown(d));
        }
        Self::record_repo_blob(&txn, repo, digest, body.len() as u64)?;
        txn.open_table(MANIFESTS)?.insert((repo.as_str(), digest.as_str()), record.encode().as_slice())?;
        {
            let mut t = txn.open_table(TAGS)?;
            for tag in tags {
                t.insert((repo.as_str(), tag.as_str()), digest.as_str())?;
            }
        }
        if let Some(s) = &manifest.subject {
            txn.open_table(REFERRERS)?.insert((repo.as_str(), s.digest.as_str(), digest.as_str()), ())?;
        }
        txn.commit()?;
        self.write_index(repo)?;
        Ok(())
    }

    /// Writes `body` as the global blob `digest` unless that file exists (fsynced temp file in
    /// `uploads/`, linked into place). Caller holds the lock.
    fn write_global_if_absent(&self, digest: &Digest, body: &[u8]) -> Result<()> {
        if self.paths.blob(digest).exists() {
            return Ok(());
        }
        let tmp = self.paths.upload(&format!("{}.manifest", uuid::Uuid::new_v4()));
        let write = (|| -> io::Result<()> {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(body)?;
            f.sync_all()
        })();
        if let Err(e) = write {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        self.place_global(&tmp, digest)
    }

    /// Removes a tag (the manifest stays).
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        if !self.delete_enabled() {
            return Err(StoreError::DeleteDisabled);
        }
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        if txn.open_table(TAGS)?.remove((repo.as_str(), tag.as_str()))?.is_none() {
            return Err(Self::unknown_in_write(&txn, repo, StoreError::ManifestUnknown)?);
        }
        txn.commit()?;
        self.write_index(repo)?;
        Ok(())
    }

    /// Removes a manifest, every tag pointing at it and its referrer edge.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        if !self.delete_enabled() {
            return Err(StoreError::DeleteDisabled);
        }
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        let record = match txn.open_table(MANIFESTS)?.remove((repo.as_str(), digest.as_str()))? {
            Some(v) => ManifestRecord::decode(v.value()),
            None => return Err(Self::unknown_in_write(&txn, repo, StoreError::ManifestUnknown)?),
        };
        {
            let mut tags = txn.open_table(TAGS)?;
            let mut doomed = Vec::new();
            for entry in tags.range::<(&str, &str)>((repo.as_str(), "")..)? {
                let (k, v) = entry?;
                let (r, t) = k.value();
                if r != repo.as_str() {
                    break;
                }
                if v.value() == digest.as_str() {
                    doomed.push(t.to_string());
                }
            }
            for t in doomed {
                tags.remove((repo.as_str(), t.as_str()))?;
            }
        }
        if let Some(subject) = record.as_ref().and_then(|r| r.subject.clone()) {
            txn.open_table(REFERRERS)?.remove((repo.as_str(), subject.as_str(), digest.as_str()))?;
        }
        let unlinked = Self::unrecord_repo_blob(&txn, repo, digest)?;
        txn.commit()?;
        self.remove_blob_files(repo, digest, unlinked)?;
        self.write_index(repo)?;
        Ok(())
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of `artifact_type`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        let txn = self.db.begin_read()?;
        let edges = txn.open_table(REFERRERS)?;
        let mut out = Vec::new();
        let (r, s) = (repo.as_str(), subject.as_str());
        for entry in edges.range::<(&str, &str, &str)>((r, s, "")..)? {
            let (k, _) = entry?;
            let (kr, ks, referrer) = k.value();
            if kr != r || ks != s {
                break;
            }
            let Ok(digest) = Digest::parse(referrer) else { continue };
            let Some(record) = Self::manifest_record(&txn, repo, &digest)? else { continue };
            if artifact_type.is_some_and(|a| record.artifact_type.as_deref() != Some(a)) {
                continue;
            }
            out.push(Referrer { digest, record });
        }
        Ok(out)
    }

    /// Rewrites `repositories/<repo>/index.json` from the metadata (call with the write lock
    /// held). Lists every tag (with `org.opencontainers.image.ref.name`) and every untagged
    /// manifest that is not a child of an index, so layout tools see all live content.
    /// Returns whether the file changed.
    fn write_index(&self, repo: &RepoName) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let manifests = txn.open_table(MANIFESTS)?;
        let r = repo.as_str();
        let mut records: BTreeMap<String, ManifestRecord> = BTreeMap::new();
        for entry in manifests.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = entry?;
            let (kr, d) = k.value();
            if kr != r {
                break;
            }
            if let Some(rec) = ManifestRecord::decode(v.value()) {
                records.insert(d.to_string(), rec);
            }
        }
        let children: BTreeSet<&str> = records.values().flat_map(|m| m.children.iter().map(String::as_str)).collect();
        let mut tagged: BTreeSet<String> = BTreeSet::new();
        let mut entries = Vec::new();
        let descriptor = |digest: &str, rec: &ManifestRecord| {
            let mut d = serde_json::json!({"mediaType": rec.media_type, "digest": digest, "size": rec.size});
            // Plain images carry no artifactType in an image index; artifacts do.
            if let Some(a) = rec.artifact_type.as_deref().filter(|a| !IMAGE_CONFIG_TYPES.contains(a)) {
                d["artifactType"] = serde_json::Value::String(a.to_string());
            }
            d
        };
        for entry in txn.open_table(TAGS)?.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = entry?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            let digest = v.value();
            if let Some(rec) = records.get(digest) {
                let mut d = descriptor(digest, rec);
                d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
                entries.push(d);
                tagged.insert(digest.to_string());
            }
        }
        for (digest, rec) in &records {
            if !tagged.contains(digest) && !children.contains(digest.as_str()) {
                entries.push(descriptor(digest, rec));
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::core::manifest::OCI_INDEX,
            "manifests": entries,
        });
        let dir = self.paths.repo(repo);
        files::ensure_dir(&dir)?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            files::write_atomic(&layout, layout::OCI_LAYOUT)?;
        }
        let bytes = serde_json::to_vec_pretty(&index).unwrap_or_default();
        let path = dir.join("index.json");
        // Unchanged content is not rewritten (spares flash storage at every start-up).
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        files::write_atomic(&path, &bytes)?;
        Ok(true)
    }

    // ----- start-up recovery --------------------------------------------------------------

    /// Names of the repositories that have a `blobs/` directory under `repositories/`.
    fn repos_on_disk(&self) -> io::Result<BTreeSet<String>> {
        let root = self.paths.repositories();
        let mut found = BTreeSet::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
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

    /// Removes what a crash can leave behind: upload files without a session record (and
    /// records without a file), repository links and global blobs that metadata does not
    /// reference; rewrites every `index.json`.
    fn sweep(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let _guard = self.lock();
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
        let mut swept = 0usize;
        for entry in fs::read_dir(self.paths.uploads())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known_uploads.contains(&name) {
                files::remove_if_exists(&entry.path())?;
                swept += 1;
            }
        }
        {
            let txn = self.db.begin_write()?;
            {
                let mut t = txn.open_table(UPLOADS)?;
                for id in &known_uploads {
                    if !self.paths.upload(id).exists() {
                        t.remove(id.as_str())?;
                    }
                }
            }
            txn.commit()?;
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
        let mut with_layout: BTreeSet<String> = self.repos_on_disk()?;
        with_layout.extend(repos.iter().cloned());
        for name in &with_layout {
            let Ok(repo) = RepoName::parse(name) else { continue };
            let txn = self.db.begin_read()?;
            let links = txn.open_table(REPO_BLOBS)?;
            for alg in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
                let dir = self.paths.repo(&repo).join("blobs").join(alg.name());
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                for entry in rd {
                    let entry = entry?;
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    if links.get((repo.as_str(), digest.as_str()))?.is_none() {
                        files::remove_if_exists(&entry.path())?;
                        swept += 1;
                    }
                }
            }
        }
        // Global blobs that no repository links.
        for alg in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
            let dir = self.paths.blobs().join(alg.name());
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            let txn = self.db.begin_write()?;
            {
                let mut blobs = txn.open_table(BLOBS)?;
                for entry in rd {
                    let entry = entry?;
                    let digest = format!("{}:{}", alg.name(), entry.file_name().to_string_lossy());
                    let linked = blobs.get(digest.as_str())?.map(|v| v.value().1).unwrap_or(0);
                    if linked == 0 {
                        blobs.remove(digest.as_str())?;
                        files::remove_if_exists(&entry.path())?;
                        swept += 1;
                    }
                }
            }
            txn.commit()?;
        }
        let mut rebuilt = 0usize;
        for name in &repos {
            if let Ok(repo) = RepoName::parse(name) {
                rebuilt += usize::from(self.write_index(&repo)?);
            }
        }
        log::info!(
            "start-up recovery: {} repositories and {} open upload(s) checked in {} ms; {swept} unreferenced file(s) removed, {rebuilt} index.json rebuilt",
            repos.len(),
            known_uploads.len(),
            started.elapsed().as_millis()
        );
        Ok(())
    }
}
