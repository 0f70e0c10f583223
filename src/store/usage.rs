//! Disk usage (`pier du`): per repository the bytes it links, how many of them it alone holds
//! and how many it shares; for the store the logical size (what the repositories would take
//! without deduplication) against the bytes on disk. Counted from metadata in one snapshot.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::meta::{BLOBS, REPO_BLOBS};
use super::Store;

/// One repository's share of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoUsage {
    pub repository: String,
    /// Blobs (manifests included) the repository links.
    pub blobs: u64,
    /// Their bytes: what the repository would take alone.
    pub bytes: u64,
    /// Bytes of blobs no other repository links (what deleting the repository would free).
    pub unique_bytes: u64,
    /// Bytes of blobs other repositories link too.
    pub shared_bytes: u64,
}

/// The store's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub repositories: Vec<RepoUsage>,
    /// Sum of every repository's bytes.
    pub logical_bytes: u64,
    /// Bytes of the distinct blob files (each once).
    pub stored_bytes: u64,
    pub stored_blobs: u64,
}

impl Store {
    /// Usage of every repository (or only `only`, with the store's totals either way). Reads
    /// every link record: for a maintenance command, not for request paths.
    pub fn usage(&self, only: Option<&str>) -> Result<Usage> {
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let mut per_repo: BTreeMap<String, RepoUsage> = BTreeMap::new();
        let mut usage = Usage::default();
        for entry in txn.open_table(REPO_BLOBS)?.iter()? {
            let (k, v) = entry?;
            let (repo, digest) = k.value();
            let size = v.value();
            usage.logical_bytes = usage.logical_bytes.saturating_add(size);
            if only.is_some_and(|o| o != repo) {
                continue;
            }
            let links = blobs.get(digest)?.map_or(1, |b| b.value().1);
            let r = per_repo
                .entry(repo.to_string())
                .or_insert_with(|| RepoUsage { repository: repo.to_string(), ..RepoUsage::default() });
            r.blobs += 1;
            r.bytes = r.bytes.saturating_add(size);
            if links <= 1 {
                r.unique_bytes = r.unique_bytes.saturating_add(size);
            } else {
                r.shared_bytes = r.shared_bytes.saturating_add(size);
            }
        }
        for entry in blobs.iter()? {
            let (_, v) = entry?;
            usage.stored_bytes = usage.stored_bytes.saturating_add(v.value().0);
            usage.stored_blobs += 1;
        }
        usage.repositories = per_repo.into_values().collect();
        Ok(usage)
    }
}
