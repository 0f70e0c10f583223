//! Retention: the tags `core::retention` policies drop are removed, repository by repository
//! (each under the write lock, in one transaction, like a tag `DELETE`); garbage collection
//! then frees what only those tags kept (with `--untagged`, the manifests too).

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::meta::{MANIFEST_TAGS, REPOS, TAGGED_AT, TAGS};
use super::{now_unix, Store};
use crate::core::retention::{policy_for, tags_to_drop, RetentionPolicy, TagInfo};
use crate::core::RepoName;

/// What a retention run removed (or, dry, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// Repositories a policy applied to.
    pub repositories: u64,
    /// repository → the tags dropped.
    pub dropped: BTreeMap<String, Vec<String>>,
    pub tags_dropped: u64,
}

/// The retention policies in force in a daemon (`retention:`; a reload replaces them).
#[derive(Default)]
pub(super) struct RetentionPolicies(std::sync::RwLock<Vec<RetentionPolicy>>);

impl Store {
    /// Replaces the retention policies `pier retention` applies in this daemon.
    pub fn set_retention_policies(&self, policies: Vec<RetentionPolicy>) {
        *self.retention.0.write().unwrap_or_else(|p| p.into_inner()) = policies;
    }

    /// The retention policies in force.
    pub fn retention_policies(&self) -> Vec<RetentionPolicy> {
        self.retention.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `policies` to every repository (see `core::retention`).
    pub fn apply_retention(&self, policies: &[RetentionPolicy], dry_run: bool) -> Result<RetentionReport> {
        let mut report = RetentionReport { dry_run, ..RetentionReport::default() };
        if policies.is_empty() {
            return Ok(report);
        }
        for name in self.keys(REPOS)? {
            let Some(policy) = policy_for(policies, &name) else { continue };
            let Ok(repo) = RepoName::parse(&name) else { continue };
            report.repositories += 1;
            let dropped = if dry_run {
                let txn = self.db.begin_read()?;
                let tags = Self::tag_infos(&txn.open_table(TAGS)?, &txn.open_table(TAGGED_AT)?, &repo, now_unix())?;
                tags_to_drop(policy, &tags, now_unix())
            } else {
                self.drop_tags(&repo, policy)?
            };
            if !dropped.is_empty() {
                report.tags_dropped += dropped.len() as u64;
                report.dropped.insert(name, dropped);
            }
        }
        Ok(report)
    }

    /// The tags of `repo` with the time each was set (`unknown`, for a tag without a row).
    fn tag_infos(
        tags: &impl ReadableTable<(&'static str, &'static str), &'static str>,
        tagged_at: &impl ReadableTable<(&'static str, &'static str), u64>,
        repo: &RepoName,
        unknown: u64,
    ) -> Result<Vec<TagInfo>> {
        let r = repo.as_str();
        let mut out = Vec::new();
        for e in tags.range::<(&str, &str)>((r, "")..)? {
            let (k, v) = e?;
            let (kr, tag) = k.value();
            if kr != r {
                break;
            }
            let set_at = tagged_at.get((r, tag))?.map_or(unknown, |t| t.value());
            out.push(TagInfo { tag: tag.to_string(), digest: v.value().to_string(), set_at });
        }
        Ok(out)
    }

    /// Removes the tags `policy` drops from `repo`, in one transaction under the lock; tags
    /// without a time get one now (their age counts from here).
    fn drop_tags(&self, repo: &RepoName, policy: &RetentionPolicy) -> Result<Vec<String>> {
        let _guard = self.lock();
        let txn = self.db.begin_write()?;
        let now = now_unix();
        let r = repo.as_str();
        let tags = Self::tag_infos(&txn.open_table(TAGS)?, &txn.open_table(TAGGED_AT)?, repo, now)?;
        let dropped = tags_to_drop(policy, &tags, now);
        {
            let mut tagged_at = txn.open_table(TAGGED_AT)?;
            for t in &tags {
                if tagged_at.get((r, t.tag.as_str()))?.is_none() {
                    tagged_at.insert((r, t.tag.as_str()), now)?;
                }
            }
            let mut tag_table = txn.open_table(TAGS)?;
            let mut by_manifest = txn.open_table(MANIFEST_TAGS)?;
            for tag in &dropped {
                if let Some(digest) = tag_table.remove((r, tag.as_str()))?.map(|d| d.value().to_string()) {
                    by_manifest.remove((r, digest.as_str(), tag.as_str()))?;
                }
                tagged_at.remove((r, tag.as_str()))?;
            }
        }
        if !dropped.is_empty() {
            Self::mark_index_dirty(&txn, repo)?;
        }
        self.disk.commit(txn)?;
        if !dropped.is_empty() {
            self.indexes.changed();
            log::info!("retention: {r}: dropped {} tag(s): {}", dropped.len(), dropped.join(", "));
        }
        Ok(dropped)
    }
}
