//! Each repository's `index.json`: derived from the metadata and written off the request path,
//! so that a push costs the same in a repository of 100 tags as in one of 50,000.
//!
//! It lists every tag (with `org.opencontainers.image.ref.name`) and every untagged manifest that
//! is not a child of an index, so that layout tools (skopeo, umoci) see all live content.
//!
//! How it keeps up (ARCHITECTURE.md, "Commit protocol"):
//! - A transaction that changes a repository's manifests or tags also marks the repository
//!   (`INDEX_DIRTY[repo]`, a change count, see [`Store::mark_index_dirty`]): O(1), under the
//!   write lock, and atomic with the change, so a crash can never leave a changed repository
//!   unmarked. After the commit the request wakes the [`IndexWriter`] and answers.
//! - The writer (a thread of its own, [`Store::start_index_writer`]) waits a little so that a
//!   burst of changes costs one write, then rewrites the marked repositories one at a time
//!   ([`Store::flush_indexes`]), *outside* the write lock: a read snapshot gives the mark and
//!   the content, the file is replaced atomically (temp file, fsync, rename, directory fsync),
//!   and only then does a short transaction remove the mark, if it is still the one of the
//!   snapshot (a change since leaves it for the next pass). Nothing else writes a repository's
//!   `index.json` except [`Store::link_into_repo`] when it creates the layout (an empty or new
//!   repository).
//! - So an `index.json` lags its metadata by at most the writer's delay plus two passes (well
//!   under a second in practice); the shutdown flush ([`Store::stop_index_writer`]) writes what
//!   is marked, and marks left by a crash or a second stop signal are acted on by the writer's
//!   first pass after the next start.
//!
//! Invariant (checked by `Store::check`): a repository that is not marked has the `index.json`
//! its metadata describes. A marked one has a complete, atomically written `index.json` of an
//! earlier state (it may still name a manifest deleted since, or miss a newer one).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::ReadableTable;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use super::database::WriteTxn;
use super::error::{Result, StoreError};
use super::meta::{INDEX_DIRTY, MANIFESTS, REPOS, TAGS};
use super::{layout, Store};
use crate::core::manifest::OCI_INDEX;
use crate::core::{Digest, RepoName};

/// Config media types of ordinary images (as opposed to artifacts).
const IMAGE_CONFIG_TYPES: &[&str] =
    &["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// The annotation that names a tag in an image layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How long the writer waits after a change before it writes, so that a burst of changes costs
/// one write: at least this...
const MIN_DELAY: Duration = Duration::from_millis(100);
/// ...and at most this; in between, as long as its last pass took, so that the writer never
/// takes more than about half of a core from the requests, however big the indexes.
const MAX_DELAY: Duration = Duration::from_millis(400);
/// Wait before trying again after a pass failed (a full disk, say).
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// What `index.json` needs of a manifest's record (`meta::ManifestRecord`, same encoding):
/// decoded without its annotations and blob list, which never go into `index.json` (a
/// manifest's annotations may weigh megabytes).
#[derive(Deserialize)]
struct IndexedManifest {
    media_type: String,
    size: u64,
    #[serde(default)]
    artifact_type: Option<String>,
    /// Digests of the child manifests (indexes only): children are listed only when tagged.
    #[serde(default)]
    children: Vec<String>,
}

/// A manifest's entry in `index.json`, borrowed from the metadata (nothing is copied per tag):
/// the fields of a [`Descriptor`](crate::core::manifest::Descriptor), serialised the same way.
/// Plain images carry no `artifactType` (artifacts do), and the only annotation is the tag's
/// name, if any.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<RefName<'a>>,
}

impl<'a> Entry<'a> {
    fn of(digest: &'a str, record: &'a IndexedManifest, tag: Option<&'a str>) -> Entry<'a> {
        Entry {
            media_type: &record.media_type,
            artifact_type: record.artifact_type.as_deref().filter(|a| !IMAGE_CONFIG_TYPES.contains(a)),
            digest,
            size: record.size,
            annotations: tag.map(RefName),
        }
    }
}

/// `{"org.opencontainers.image.ref.name": tag}`.
struct RefName<'a>(&'a str);

impl Serialize for RefName<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(REF_NAME, self.0)?;
        map.end()
    }
}

/// The whole file: an OCI image index, as [`ImageIndex`](crate::core::manifest::ImageIndex)
/// serialises.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: &'a [Entry<'a>],
}

/// What the writer thread is asked to do.
#[derive(Default)]
struct Requests {
    /// A change was committed (or a pass failed) since the writer last looked.
    pending: bool,
    /// The store is stopping: the writer exits (the final flush is its caller's).
    stopping: bool,
}

/// The background writer of `index.json` files: its wake-up signal, its thread, and the lock
/// that makes flush passes one at a time.
pub(super) struct IndexWriter {
    requests: Mutex<Requests>,
    wake: Condvar,
    /// Held for a whole flush pass: the writer's, the shutdown flush, a test's.
    pass: Mutex<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IndexWriter {
    pub(super) fn new() -> IndexWriter {
        // Pending from the start: a crash or a second stop signal may have left marks.
        IndexWriter {
            requests: Mutex::new(Requests { pending: true, stopping: false }),
            wake: Condvar::new(),
            pass: Mutex::new(()),
            thread: Mutex::new(None),
        }
    }

    fn requests(&self) -> MutexGuard<'_, Requests> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change was committed: the writer takes it in its next pass.
    pub(super) fn changed(&self) {
        self.requests().pending = true;
        self.wake.notify_one();
    }

    /// Asks the writer thread to exit (without a final pass).
    pub(super) fn stop(&self) {
        self.requests().stopping = true;
        self.wake.notify_one();
    }

    /// Waits until a change is pending, then `delay` more (changes meanwhile join this pass),
    /// and takes the pending request. False when the store is stopping.
    fn next_pass(&self, delay: Duration) -> bool {
        let mut requests = self.requests();
        while !requests.pending && !requests.stopping {
            requests = self.wake.wait(requests).unwrap_or_else(|p| p.into_inner());
        }
        let until = Instant::now() + delay;
        while !requests.stopping {
            let now = Instant::now();
            if now >= until {
                break;
            }
            requests = self.wake.wait_timeout(requests, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        requests.pending = false;
        !requests.stopping
    }

    /// The writer thread's loop; ends when the store stops or is gone. A failure is logged
    /// once (a full disk would otherwise log every second), its end too.
    fn run(&self, store: Weak<Store>) {
        let mut delay = MIN_DELAY;
        let mut failing = false;
        while self.next_pass(delay) {
            let Some(store) = store.upgrade() else { return };
            let started = Instant::now();
            let result = store.flush_indexes();
            drop(store);
            let took = started.elapsed();
            delay = took.clamp(MIN_DELAY, MAX_DELAY);
            match result {
                Ok(n) => {
                    if failing {
                        log::info!("index writer: index.json files written again");
                        failing = false;
                    }
                    if n > 0 {
                        log::debug!("index writer: {n} index.json rewritten in {} ms", took.as_millis());
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!("index writer: {e} (trying again every {} s)", RETRY_DELAY.as_secs());
                        failing = true;
                    }
                    self.requests().pending = true;
                    delay = RETRY_DELAY;
                }
            }
        }
    }
}

impl Store {
    /// Marks `repo`'s `index.json` as lagging, inside the transaction that changes the
    /// repository's manifests or tags (O(1)). Call [`IndexWriter::changed`] (`self.indexes`)
    /// after the commit.
    pub(super) fn mark_index_dirty(txn: &WriteTxn, repo: &RepoName) -> Result<()> {
        let mut marks = txn.open_table(INDEX_DIRTY)?;
        let count = marks.get(repo.as_str())?.map_or(0, |v| v.value());
        marks.insert(repo.as_str(), count.wrapping_add(1))?;
        // The same changes may leave an untagged manifest for garbage collection.
        Self::note_gc_change(txn, repo, super::gc::GcChange::ManifestsOrTags)
    }

    /// Starts the background writer of `index.json` files (see the module doc). It holds no
    /// reference that keeps the store alive; [`Store::stop_index_writer`] ends it.
    pub fn start_index_writer(self: &Arc<Self>) -> Result<()> {
        let writer = self.indexes.clone();
        let store = Arc::downgrade(self);
        let handle = std::thread::Builder::new().name("pier-index".into()).spawn(move || writer.run(store)).map_err(
            |source| StoreError::Io { op: "start the index writer", path: self.paths.repositories(), source },
        )?;
        *self.indexes.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops the background writer (waiting for a pass in progress) and writes every
    /// `index.json` still marked, so that a clean shutdown leaves every layout current.
    /// Returns how many files were rewritten. Blocking.
    pub fn stop_index_writer(&self) -> Result<usize> {
        self.indexes.stop();
        let handle = self.indexes.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                log::error!("the index writer thread panicked");
            }
        }
        self.flush_indexes()
    }

    /// Rewrites the `index.json` of every marked repository, one at a time, and removes each
    /// mark that no change overtook meanwhile. Goes on past a repository that fails and
    /// returns the first error (its mark stays). Returns how many files changed. Blocking; never
    /// takes the write lock.
    pub fn flush_indexes(&self) -> Result<usize> {
        let _pass = self.indexes.pass.lock().unwrap_or_else(|p| p.into_inner());
        let marked = self.keys(INDEX_DIRTY)?;
        let mut written = 0;
        let mut failed = None;
        for name in &marked {
            match self.flush_index(name) {
                Ok(changed) => written += usize::from(changed),
                Err(e) => {
                    log::debug!("{name}: index.json not rewritten: {e}");
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(written), Err)
    }

    /// One repository of [`Store::flush_indexes`]: write from a snapshot, then clear the mark
    /// of that snapshot. Returns whether the file changed.
    fn flush_index(&self, name: &str) -> Result<bool> {
        let (mark, bytes) = {
            let txn = self.db.begin_read()?;
            let Some(mark) = txn.open_table(INDEX_DIRTY)?.get(name)?.map(|v| v.value()) else {
                return Ok(false);
            };
            // A mark of a name that is no repository (none is ever made) has nothing to write.
            let repo = RepoName::parse(name).ok();
            let known = txn.open_table(REPOS)?.get(name)?.is_some();
            let bytes = match repo {
                Some(repo) if known => Some((self.render_index_in(&txn, &repo)?, repo)),
                _ => None,
            };
            (mark, bytes)
        };
        let changed = match bytes {
            Some((bytes, repo)) => self.write_index_file(&repo, &bytes)?,
            None => false,
        };
        let txn = self.db.begin_write()?;
        let cleared = {
            let mut marks = txn.open_table(INDEX_DIRTY)?;
            let current = marks.get(name)?.map(|v| v.value());
            current == Some(mark) && marks.remove(name)?.is_some()
        };
        if cleared {
            self.disk.commit(txn)?;
        }
        Ok(changed)
    }

    /// Replaces `repositories/<repo>/index.json` with `bytes` (completing the layout first if
    /// need be), unless it holds them already (spares flash storage). Returns whether it changed.
    fn write_index_file(&self, repo: &RepoName, bytes: &[u8]) -> Result<bool> {
        self.disk.ensure_dir(&self.paths.repo(repo))?;
        let oci_layout = self.paths.oci_layout(repo);
        if !oci_layout.exists() {
            self.disk.replace(&oci_layout, layout::OCI_LAYOUT)?;
        }
        let path = self.paths.index(repo);
        // Read the old file only when it could be equal (a changed index rarely keeps its size).
        let same_size = fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64);
        if same_size && fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        self.disk.replace(&path, bytes)?;
        Ok(true)
    }

    /// The `index.json` that the metadata of `repo` describes (now).
    pub(super) fn render_index(&self, repo: &RepoName) -> Result<Vec<u8>> {
        let txn = self.db.begin_read()?;
        self.render_index_in(&txn, repo)
    }

    /// The `index.json` that the metadata of `repo` describes in the snapshot `txn`. Linear in
    /// the repository's tags and manifests, with one small copy per tag (its name).
    fn render_index_in(&self, txn: &redb::ReadTransaction, repo: &RepoName) -> Result<Vec<u8>> {
        let r = repo.as_str();
        let mut records: BTreeMap<String, IndexedManifest> = BTreeMap::new();
        for e in txn.open_table(MANIFESTS)?.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = e?;
            let (kr, d) = k.value();
            if kr != r {
                break;
            }
            if let (Ok(_), Ok(rec)) = (Digest::parse(d), serde_json::from_slice::<IndexedManifest>(v.value())) {
                records.insert(d.to_string(), rec);
            }
        }
        let mut tags: Vec<(String, &str, &IndexedManifest)> = Vec::new();
        for e in txn.open_table(TAGS)?.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = e?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            if let Some((digest, rec)) = records.get_key_value(v.value()) {
                tags.push((tag.to_string(), digest.as_str(), rec));
            }
        }
        let children: BTreeSet<&str> = records.values().flat_map(|m| m.children.iter().map(String::as_str)).collect();
        let tagged: BTreeSet<&str> = tags.iter().map(|(_, digest, _)| *digest).collect();
        let mut entries: Vec<Entry<'_>> =
            tags.iter().map(|(tag, digest, rec)| Entry::of(digest, rec, Some(tag))).collect();
        for (digest, rec) in &records {
            if !tagged.contains(digest.as_str()) && !children.contains(digest.as_str()) {
                entries.push(Entry::of(digest, rec, None));
            }
        }
        let file = IndexFile { schema_version: 2, media_type: OCI_INDEX, manifests: &entries };
        // ~280 bytes per entry, pretty-printed.
        let mut bytes = Vec::with_capacity(256 + entries.len() * 300);
        serde_json::to_writer_pretty(&mut bytes, &file).map_err(|e| StoreError::Io {
            op: "render index.json",
            path: self.paths.index(repo),
            source: e.into(),
        })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Entry, IndexFile, IndexedManifest, IMAGE_CONFIG_TYPES, REF_NAME};
    use crate::core::manifest::{Descriptor, ImageIndex, OCI_INDEX};
    use crate::core::Digest;
    use crate::store::meta::ManifestRecord;

    /// The borrowed rendering writes exactly what serialising core's `ImageIndex` of
    /// `Descriptor`s writes (the format of every index.json pier ever wrote), for each kind of
    /// entry: tagged, untagged, artifact, image config type dropped, no entries at all.
    #[test]
    fn borrowed_entries_render_as_descriptors_do() {
        let record = |artifact_type: Option<&str>, size| ManifestRecord {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size,
            artifact_type: artifact_type.map(String::from),
            subject: None,
            annotations: BTreeMap::from([("ignored".into(), "in index.json".into())]),
            children: Vec::new(),
            blobs: Vec::new(),
        };
        let d1 = format!("sha256:{}", "a".repeat(64));
        let d2 = format!("sha256:{}", "b".repeat(64));
        let image = record(Some(IMAGE_CONFIG_TYPES[0]), 512);
        let artifact = record(Some("application/vnd.example.sbom"), 300);
        let rows = [(&d1, &image, Some("v1")), (&d1, &image, Some("v1.2-rc_3")), (&d2, &artifact, None)];
        // Decoded from the record's encoding, as render_index_in does.
        let indexed: Vec<IndexedManifest> =
            rows.iter().map(|(_, r, _)| serde_json::from_slice(&r.encode()).unwrap()).collect();
        for n in 0..=rows.len() {
            let entries: Vec<Entry<'_>> =
                rows[..n].iter().zip(&indexed).map(|((d, _, t), rec)| Entry::of(d, rec, *t)).collect();
            let ours =
                serde_json::to_vec_pretty(&IndexFile { schema_version: 2, media_type: OCI_INDEX, manifests: &entries })
                    .unwrap();
            let descriptors: Vec<Descriptor> = rows[..n]
                .iter()
                .map(|(d, r, t)| {
                    let mut desc = r.descriptor(Digest::parse(d).unwrap());
                    desc.artifact_type = desc.artifact_type.filter(|a| !IMAGE_CONFIG_TYPES.contains(&a.as_str()));
                    desc.annotations =
                        t.map(|t| BTreeMap::from([(REF_NAME.to_string(), t.to_string())])).unwrap_or_default();
                    desc
                })
                .collect();
            let theirs = serde_json::to_vec_pretty(&ImageIndex::new(descriptors)).unwrap();
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap(), "{n} entries");
        }
    }
}
