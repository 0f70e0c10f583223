//! Manifests, tags and referrers: storing a validated manifest (its bytes become a blob of the
//! repository, like any layer), resolving and deleting tags and manifests, listing referrers.
//!
//! A manifest is only recorded when every blob and child manifest it references is in the
//! repository (checked before writing anything, and again inside the transaction, under the
//! write lock, because a concurrent delete may have removed a reference meanwhile).
//!
//! Every change of a repository's manifests or tags marks its `index.json` as lagging in the
//! same transaction (`store::index`); the file itself is rewritten later, off the request path,
//! so these operations cost the same however many tags and manifests the repository has.

use std::fs;

use redb::ReadableTable;

use super::error::{gone_as, Result, StoreError};
use super::meta::{ManifestRecord, MANIFESTS, MANIFEST_TAGS, REFERRERS, REPOS, REPO_BLOBS, TAGGED_AT, TAGS};
use super::Store;
use crate::core::manifest::Descriptor;
use crate::core::{Digest, Manifest, RepoName, Tag};

/// A stored manifest as served: its record and digest (bytes are read separately).
#[derive(Clone, Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub record: ManifestRecord,
}

impl Store {
    /// Resolves a tag to its manifest.
    pub fn resolve_tag(&self, repo: &RepoName, tag: &Tag) -> Result<StoredManifest> {
        let txn = self.db.begin_read()?;
        let digest = match txn.open_table(TAGS)?.get((repo.as_str(), tag.as_str()))? {
            Some(d) => d.value().to_string(),
            None => return Err(Self::unknown_manifest(&txn, repo)?),
        };
        let digest = Digest::parse(&digest).map_err(|_| StoreError::ManifestUnknown)?;
        let record = Self::manifest_record(&txn, repo, &digest)?.ok_or(StoreError::ManifestUnknown)?;
        Ok(StoredManifest { digest, record })
    }

    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<StoredManifest> {
        let txn = self.db.begin_read()?;
        match Self::manifest_record(&txn, repo, digest)? {
            Some(record) => Ok(StoredManifest { digest: digest.clone(), record }),
            None => Err(Self::unknown_manifest(&txn, repo)?),
        }
    }

    /// Reads a stored manifest's bytes.
    pub fn manifest_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        // A concurrent delete of the last link may have removed the file since the lookup.
        let path = self.paths.blob(digest);
        fs::read(&path).map_err(|e| gone_as(e, "read", &path, StoreError::ManifestUnknown))
    }

    fn unknown_manifest(txn: &redb::ReadTransaction, repo: &RepoName) -> Result<StoreError> {
        Ok(if txn.open_table(REPOS)?.get(repo.as_str())?.is_none() {
            StoreError::NameUnknown
        } else {
            StoreError::ManifestUnknown
        })
    }

    /// The record of a manifest `repo` has; none for a quarantined one (`store::scrub`): it is
    /// not served, by GET or HEAD, until a push heals it.
    fn manifest_record(
        txn: &redb::ReadTransaction,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>> {
        if Self::is_quarantined(txn, digest)? {
            return Ok(None);
        }
        Ok(txn
            .open_table(MANIFESTS)?
            .get((repo.as_str(), digest.as_str()))?
            .and_then(|v| ManifestRecord::decode(v.value())))
    }

    /// The first reference of `manifest` that `repo` lacks, checked in one transaction's tables.
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
        self.store_manifest(repo, digest, body, None, manifest, tags)
    }

    /// [`Store::put_manifest`], where `staged` (when given) is a verified, fsynced file holding
    /// `body` that becomes the global blob as it is (a hardlink, no copy; see `store::migrate`).
    pub(super) fn store_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        staged: Option<&std::path::Path>,
        manifest: &Manifest,
        tags: &[Tag],
    ) -> Result<()> {
        // Fail fast, before writing anything.
        self.ensure_free_space(body.len() as u64)?;
        {
            let txn = self.db.begin_read()?;
            if let Some(d) =
                Self::missing_reference(&txn.open_table(REPO_BLOBS)?, &txn.open_table(MANIFESTS)?, repo, manifest)?
            {
                return Err(StoreError::ManifestBlobUnknown(d));
            }
        }
        let record = ManifestRecord::of(manifest, body.len() as u64);
        let _guard = self.lock();
        self.check_quota(repo, digest, body.len() as u64)?;
        let healing = self.prepare_heal(digest)?;
        // The bytes become a blob of the repository, like any layer.
        if let Some(staged) = staged {
            self.place_global_as_is(staged, digest)?;
        } else if !self.paths.blob(digest).exists() {
            let tmp = self.paths.upload(&format!("{}.manifest", uuid::Uuid::new_v4()));
            self.disk.write_new(&tmp, body)?;
            let placed = self.place_global(&tmp, digest);
            self.disk.remove_if_exists(&tmp)?;
            placed?;
        }
        self.link_into_repo(repo, digest)?;
        let txn = self.db.begin_write()?;
        // Re-check under the lock: a concurrent delete may have removed a reference.
        if let Some(d) =
            Self::missing_reference(&txn.open_table(REPO_BLOBS)?, &txn.open_table(MANIFESTS)?, repo, manifest)?
        {
            return Err(StoreError::ManifestBlobUnknown(d));
        }
        Self::record_repo_blob(&txn, repo, digest, body.len() as u64)?;
        if healing {
            self.finish_heal(&txn, digest)?;
        }
        txn.open_table(MANIFESTS)?.insert((repo.as_str(), digest.as_str()), record.encode().as_slice())?;
        {
            let mut t = txn.open_table(TAGS)?;
            let mut by_manifest = txn.open_table(MANIFEST_TAGS)?;
            let mut tagged_at = txn.open_table(TAGGED_AT)?;
            for tag in tags {
                tagged_at.insert((repo.as_str(), tag.as_str()), super::now_unix())?;
                let before = t.insert((repo.as_str(), tag.as_str()), digest.as_str())?.map(|d| d.value().to_string());
                if let Some(before) = before {
                    by_manifest.remove((repo.as_str(), before.as_str(), tag.as_str()))?;
                }
                by_manifest.insert((repo.as_str(), digest.as_str(), tag.as_str()), ())?;
            }
        }
        if let Some(s) = &manifest.subject {
            txn.open_table(REFERRERS)?.insert((repo.as_str(), s.digest.as_str(), digest.as_str()), ())?;
        }
        Self::mark_index_dirty(&txn, repo)?;
        self.disk.commit(txn)?;
        self.indexes.changed();
        Ok(())
    }

    /// Removes a tag (the manifest stays).
    pub fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(TAGS)?.remove((repo.as_str(), tag.as_str()))?.map(|d| d.value().to_string());
        let Some(digest) = removed else {
            return Err(Self::unknown_in_write(&txn, repo, StoreError::ManifestUnknown)?);
        };
        txn.open_table(MANIFEST_TAGS)?.remove((repo.as_str(), digest.as_str(), tag.as_str()))?;
        txn.open_table(TAGGED_AT)?.remove((repo.as_str(), tag.as_str()))?;
        Self::mark_index_dirty(&txn, repo)?;
        self.disk.commit(txn)?;
        self.indexes.changed();
        Ok(())
    }

    /// Removes a manifest, every tag pointing at it and its referrer edge.
    pub fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        if !Self::remove_manifest_records(&txn, repo, digest)? {
            return Err(Self::unknown_in_write(&txn, repo, StoreError::ManifestUnknown)?);
        }
        let unlinked = Self::unrecord_repo_blob(&txn, repo, digest)?;
        Self::mark_index_dirty(&txn, repo)?;
        self.disk.commit(txn)?;
        self.indexes.changed();
        self.remove_blob_files(repo, digest, unlinked)?;
        Ok(())
    }

    /// In `txn`: removes the manifest's record, every tag pointing at it and its referrer edge
    /// (not its blob link). False if `repo` has no such manifest.
    pub(super) fn remove_manifest_records(
        txn: &redb::WriteTransaction,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let record = match txn.open_table(MANIFESTS)?.remove((repo.as_str(), digest.as_str()))? {
            Some(v) => ManifestRecord::decode(v.value()),
            None => return Ok(false),
        };
        Self::note_gc_change(txn, repo, super::gc::GcChange::ManifestRemoved)?;
        {
            // The manifest's own tags, found by key: no scan of the repository's tags.
            let (r, d) = (repo.as_str(), digest.as_str());
            let mut by_manifest = txn.open_table(MANIFEST_TAGS)?;
            let mut doomed = Vec::new();
            for entry in by_manifest.range::<(&str, &str, &str)>((r, d, "")..)? {
                let (k, _) = entry?;
                let (kr, kd, t) = k.value();
                if kr != r || kd != d {
                    break;
                }
                doomed.push(t.to_string());
            }
            let mut tags = txn.open_table(TAGS)?;
            for t in doomed {
                tags.remove((r, t.as_str()))?;
                txn.open_table(TAGGED_AT)?.remove((r, t.as_str()))?;
                by_manifest.remove((r, d, t.as_str()))?;
            }
        }
        if let Some(subject) = record.as_ref().and_then(|r| r.subject.clone()) {
            txn.open_table(REFERRERS)?.remove((repo.as_str(), subject.as_str(), digest.as_str()))?;
        }
        Ok(true)
    }

    /// One page of the descriptors of the manifests in `repo` whose subject is `subject` (as
    /// the referrers API lists them: with artifact type and annotations), optionally only those
    /// of `artifact_type`, in digest order after `after`. The page ends before the descriptor
    /// that would take the sum of `weigh` past `budget` (a page holds at least one), so one
    /// response stays bounded however many referrers there are and however big their
    /// annotations.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        budget: usize,
        weigh: impl Fn(&Descriptor) -> usize,
    ) -> Result<ReferrersPage> {
        let txn = self.db.begin_read()?;
        let edges = txn.open_table(REFERRERS)?;
        let mut page = ReferrersPage { manifests: Vec::new(), next: None };
        let mut used = 0;
        let (r, s) = (repo.as_str(), subject.as_str());
        let from = after.map_or("", Digest::as_str);
        for entry in edges.range::<(&str, &str, &str)>((r, s, from)..)? {
            let (k, _) = entry?;
            let (kr, ks, referrer) = k.value();
            if kr != r || ks != s {
                break;
            }
            if referrer == from {
                continue;
            }
            let Ok(digest) = Digest::parse(referrer) else { continue };
            let Some(record) = Self::manifest_record(&txn, repo, &digest)? else { continue };
            if artifact_type.is_some_and(|a| record.artifact_type.as_deref() != Some(a)) {
                continue;
            }
            let descriptor = record.descriptor(digest);
            let weight = weigh(&descriptor);
            if !page.manifests.is_empty() && used + weight > budget {
                page.next = page.manifests.last().map(|d: &Descriptor| d.digest.clone());
                break;
            }
            used += weight;
            page.manifests.push(descriptor);
        }
        Ok(page)
    }
}

/// A page of referrers; `next` is the last digest listed when more follow.
pub struct ReferrersPage {
    pub manifests: Vec<Descriptor>,
    pub next: Option<Digest>,
}
