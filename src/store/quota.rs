//! Per-repository size quotas: a push that would take a repository past its quota is refused
//! (`StoreError::QuotaExceeded`, `DENIED` at the HTTP edge) before anything of it is visible.
//!
//! - Usage is what the repository links, shared blobs included (`pier du`'s "SIZE"), kept in
//!   `REPO_BYTES` in the same transactions that add and remove links (`record_repo_blob`,
//!   `unrecord_repo_blob`), so it is exact and O(1) to read.
//! - Checked where a repository gains a blob: an upload's commit (the session is cancelled: its
//!   bytes could never be committed), a mount and a manifest push, each under the write lock,
//!   so concurrent pushes cannot together overshoot. A new upload session is refused at once
//!   when the repository is already at or over its quota (no gigabytes sent for nothing).
//! - A blob the repository already has costs nothing; deletes and garbage collection bring a
//!   repository back under its quota.

use std::sync::RwLock;

use super::error::{Result, StoreError};
use super::meta::{REPO_BLOBS, REPO_BYTES};
use super::Store;
use crate::core::quota::{quota_for, QuotaRule};
use crate::core::{Digest, RepoName};

/// The quota rules in force (set at start from the configuration; a reload replaces them).
#[derive(Default)]
pub(super) struct Quotas(RwLock<Vec<QuotaRule>>);

impl Store {
    /// Replaces the quota rules (`quotas:` in the configuration).
    pub fn set_quotas(&self, rules: Vec<QuotaRule>) {
        *self.quotas.0.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// The quota of `repo`, if a rule matches it.
    fn quota_bytes(&self, repo: &RepoName) -> Option<u64> {
        let rules = self.quotas.0.read().unwrap_or_else(|p| p.into_inner());
        quota_for(&rules, repo.as_str()).map(|r| r.bytes)
    }

    /// The bytes `repo` links (in a snapshot).
    pub(super) fn repo_bytes(txn: &redb::ReadTransaction, repo: &RepoName) -> Result<u64> {
        Ok(txn.open_table(REPO_BYTES)?.get(repo.as_str())?.map_or(0, |v| v.value()))
    }

    /// Whether `repo` may gain the blob `digest` of `size` bytes (no cost if it has it already).
    /// Call under the write lock, before any file step.
    pub(super) fn check_quota(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        let Some(quota) = self.quota_bytes(repo) else { return Ok(()) };
        let txn = self.db.begin_read()?;
        if txn.open_table(REPO_BLOBS)?.get((repo.as_str(), digest.as_str()))?.is_some() {
            return Ok(());
        }
        let usage = Self::repo_bytes(&txn, repo)?;
        if usage.saturating_add(size) > quota {
            return Err(StoreError::QuotaExceeded { repo: repo.to_string(), quota, usage, adding: size });
        }
        Ok(())
    }

    /// Refuses (`QuotaExceeded`) adding `blobs` (digest, size) to `repo` when they would take
    /// it past its quota; blobs the repository has cost nothing. Advisory, without the lock: an
    /// import asks before it commits anything, so that a repository it would overfill gets
    /// nothing at all (the commit's own checks still hold).
    pub fn check_quota_for(&self, repo: &RepoName, blobs: &[(&Digest, u64)]) -> Result<()> {
        let Some(quota) = self.quota_bytes(repo) else { return Ok(()) };
        let txn = self.db.begin_read()?;
        let links = txn.open_table(REPO_BLOBS)?;
        let mut adding = 0u64;
        for (digest, size) in blobs {
            if links.get((repo.as_str(), digest.as_str()))?.is_none() {
                adding = adding.saturating_add(*size);
            }
        }
        let usage = Self::repo_bytes(&txn, repo)?;
        if adding > 0 && usage.saturating_add(adding) > quota {
            return Err(StoreError::QuotaExceeded { repo: repo.to_string(), quota, usage, adding });
        }
        Ok(())
    }

    /// Refuses a new upload to a repository already at or over its quota.
    pub(super) fn check_quota_room(&self, repo: &RepoName) -> Result<()> {
        let Some(quota) = self.quota_bytes(repo) else { return Ok(()) };
        let usage = Self::repo_bytes(&*self.db.begin_read()?, repo)?;
        if usage >= quota {
            return Err(StoreError::QuotaExceeded { repo: repo.to_string(), quota, usage, adding: 0 });
        }
        Ok(())
    }
}
