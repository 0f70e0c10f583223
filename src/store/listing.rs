//! Sorted, paginated listings: the catalog of repositories and a repository's tags; every blob
//! of the store (a site's inventory, `pier inventory`).

use std::ops::Bound;

use redb::ReadableTableMetadata;

use super::error::{Result, StoreError};
use super::meta::{BLOBS, QUARANTINE, REPOS, TAGS};
use super::Store;
use crate::core::RepoName;

/// A page of a sorted listing, and whether more follows.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Page {
    /// Adds `item` unless the page already holds `limit` items (then marks that more follows).
    /// Returns whether the caller should go on.
    fn offer(&mut self, item: &str, limit: usize) -> bool {
        if self.items.len() == limit {
            self.more = true;
            return false;
        }
        self.items.push(item.to_string());
        true
    }
}

impl Store {
    /// Every key of a table keyed by name (repositories, upload ids), in order: for sweeps over
    /// a whole table, not for request paths.
    pub(super) fn keys<V: redb::Value + 'static>(
        &self,
        table: redb::TableDefinition<&'static str, V>,
    ) -> Result<Vec<String>> {
        use redb::ReadableTable;
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut keys = Vec::new();
        for e in t.iter()? {
            keys.push(e?.0.value().to_string());
        }
        Ok(keys)
    }

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
            Some(l) => table.range::<&str>((Bound::Excluded(l), Bound::Unbounded))?,
            None => table.range::<&str>(..)?,
        };
        let limit = n.unwrap_or(usize::MAX);
        let mut page = Page::default();
        for entry in iter {
            let (k, _) = entry?;
            if visible(k.value()) && !page.offer(k.value(), limit) {
                break;
            }
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
            Some(l) => Bound::Excluded((r, l)),
            None => Bound::Included((r, "")),
        };
        let limit = n.unwrap_or(usize::MAX);
        let mut page = Page::default();
        for entry in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (k, _) = entry?;
            let (kr, tag) = k.value();
            if kr != r || !page.offer(tag, limit) {
                break;
            }
        }
        Ok(page)
    }
}

impl Store {
    /// Calls `each` with every blob the store holds (manifests included) and its size, in
    /// digest order, from one read snapshot: blobs some repository links, quarantined ones left
    /// out (the store does not have their bytes). Stops at the first error `each` returns.
    pub fn each_blob<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&str, u64) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        use redb::ReadableTable;
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS).map_err(StoreError::from)?;
        let quarantine = txn.open_table(QUARANTINE).map_err(StoreError::from)?;
        for entry in blobs.iter().map_err(StoreError::from)? {
            let (digest, value) = entry.map_err(StoreError::from)?;
            let (size, links) = value.value();
            if links == 0 || quarantine.get(digest.value()).map_err(StoreError::from)?.is_some() {
                continue;
            }
            each(digest.value(), size)?;
        }
        Ok(())
    }
}

/// What the store holds, counted from metadata (`pier status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    /// Distinct blobs (manifests included: they are blobs too).
    pub blobs: u64,
    /// Bytes of the distinct blobs, each counted once however many repositories link it.
    pub blob_bytes: u64,
    /// Upload sessions not yet finished or cancelled.
    pub uploads: u64,
    /// Repositories whose `index.json` is due for a rewrite by the index writer.
    pub layouts_due: u64,
}

impl Store {
    /// Counts what the store holds, in one read snapshot. Reads every blob record (for the
    /// bytes): for a status command, not for request paths.
    pub fn summary(&self) -> Result<Summary> {
        use super::meta::{BLOBS, INDEX_DIRTY, MANIFESTS, UPLOADS};
        use redb::ReadableTable;
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let mut blob_bytes = 0u64;
        for entry in blobs.iter()? {
            blob_bytes = blob_bytes.saturating_add(entry?.1.value().0);
        }
        Ok(Summary {
            repositories: txn.open_table(REPOS)?.len()?,
            manifests: txn.open_table(MANIFESTS)?.len()?,
            tags: txn.open_table(TAGS)?.len()?,
            blobs: blobs.len()?,
            blob_bytes,
            uploads: txn.open_table(UPLOADS)?.len()?,
            layouts_due: txn.open_table(INDEX_DIRTY)?.len()?,
        })
    }
}
