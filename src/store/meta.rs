//! The redb schema: every table, its key and value, and the invariants between them.
//!
//! Invariants (kept by `Store`, checked by the start-up sweep):
//! - `REPO_BLOBS[(repo, digest)]` exists ⇒ `blobs/<alg>/<hex>` and
//!   `repositories/<repo>/blobs/<alg>/<hex>` are complete, verified, fsynced files (hardlinks of
//!   one inode).
//! - `BLOBS[digest].1` == number of `REPO_BLOBS` rows for that digest.
//! - `MANIFESTS[(repo, digest)]` exists ⇒ `REPO_BLOBS[(repo, digest)]` exists (the manifest bytes
//!   are a blob of the repository) and every blob it references was in the repository when it
//!   was stored.
//! - `TAGS[(repo, tag)] = digest` ⇒ `MANIFESTS[(repo, digest)]` exists.
//! - `TAGS[(repo, tag)] = digest` ⇔ `MANIFEST_TAGS[(repo, digest, tag)]` (the same rows, keyed
//!   by manifest, so that deleting a manifest finds its tags without a scan of the repository's).
//! - `REFERRERS[(repo, subject, referrer)]` ⇒ `MANIFESTS[(repo, referrer)]` exists and its
//!   subject is `subject` (the subject itself need not exist).
//! - `REPOS[repo]` and no `INDEX_DIRTY[repo]` ⇒ `repositories/<repo>/index.json` is what the
//!   metadata describes (`store::index`). Every transaction that changes a repository's
//!   manifests or tags sets `INDEX_DIRTY[repo]` itself; the mark goes only after the file was
//!   rewritten from a snapshot that held that very mark.

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::core::manifest::Descriptor;
use crate::core::{Digest, Manifest};

/// repo → creation time (unix seconds).
pub const REPOS: TableDefinition<&str, u64> = TableDefinition::new("repos");
/// digest → (size, number of repositories linking it).
pub const BLOBS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("blobs");
/// (repo, digest) → size.
pub const REPO_BLOBS: TableDefinition<(&str, &str), u64> = TableDefinition::new("repo_blobs");
/// (repo, manifest digest) → [`ManifestRecord`] as JSON.
pub const MANIFESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("manifests");
/// (repo, tag) → manifest digest.
pub const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (repo, manifest digest, tag) → (): `TAGS` by manifest.
pub const MANIFEST_TAGS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("manifest_tags");
/// (repo, subject digest, referrer manifest digest) → ().
pub const REFERRERS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("referrers");
/// (repo, digest) → unix seconds when the repository last linked the blob (for the grace period
/// of garbage collection, `store::gc`). Rows only for `REPO_BLOBS` rows; a link made before
/// this table existed has none until a collection gives it one.
pub const LINKED_AT: TableDefinition<(&str, &str), u64> = TableDefinition::new("linked_at");
/// digest → unix seconds when `pier scrub` found its file corrupt (`store::scrub`): the blob is
/// out of service (reads answer unknown; its file is in `quarantine/`) until a push of the same
/// content heals it. Its `BLOBS` and `REPO_BLOBS` rows stay, so the heal relinks every
/// repository that had it.
pub const QUARANTINE: TableDefinition<&str, u64> = TableDefinition::new("quarantine");
/// repo → the sum of its `REPO_BLOBS` sizes (its usage for quotas, `store::quota`), kept in the
/// transactions that add and remove links.
pub const REPO_BYTES: TableDefinition<&str, u64> = TableDefinition::new("repo_bytes");
/// (repo, tag) → unix seconds when the tag was last set (for retention, `store::retention`).
/// A tag without a row (set before this table existed) gets one at the first retention run.
pub const TAGGED_AT: TableDefinition<(&str, &str), u64> = TableDefinition::new("tagged_at");
/// repo → (links, untagged): from when a garbage collection may find something in the
/// repository (`store::gc`), so that a collection visits only what changed. `links`: the unix
/// time of the oldest blob link no manifest references (collectable once it is older than the
/// grace period; 0 after a manifest went, whose links are old); `untagged`: 0 once manifests or
/// tags changed (an untagged manifest may be collectable). [`GC_NOTHING_DUE`] for neither; a
/// repository with nothing due has no row. Set in the transaction of every change
/// (`Store::note_gc_change`), rewritten by the collection that visits the repository.
pub const GC_DUE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("gc_due");
/// No collection is due for this half of a `GC_DUE` row.
pub const GC_NOTHING_DUE: u64 = u64::MAX;
/// "gc.full" → unix time the last full garbage collection finished (one that visited every
/// repository). Without it (a store older than `GC_DUE`), the next collection is a full one.
pub const MAINTENANCE: TableDefinition<&str, u64> = TableDefinition::new("maintenance");

/// upload uuid → (repo, digest algorithm, start time in unix seconds).
pub const UPLOADS: TableDefinition<&str, (&str, &str, u64)> = TableDefinition::new("uploads");
/// repo → change count: the repository's `index.json` lags its metadata and is due for a
/// rewrite (by the background index writer, the shutdown flush or the next start). The count
/// goes up with every change, so that a rewrite from an older snapshot leaves the mark.
pub const INDEX_DIRTY: TableDefinition<&str, u64> = TableDefinition::new("index_dirty");

/// registry:2 tree imported (`<dir>/docker/registry/v2`, as given) → unix time its last
/// migration finished (`store::migrate`). Only `pier serve`'s start-up reads it (to migrate a
/// tree once); the import itself is idempotent and needs no other progress record.
pub const MIGRATIONS: TableDefinition<&str, u64> = TableDefinition::new("migrations");

/// What the registry remembers about a stored manifest (its bytes live in the blob files).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Digests of the child manifests (indexes only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Digests of the referenced blobs (config and layers; images only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<String>,
}

impl ManifestRecord {
    /// What is remembered of `manifest`, whose bytes are `size` long.
    pub fn of(manifest: &Manifest, size: u64) -> ManifestRecord {
        ManifestRecord {
            media_type: manifest.media_type.clone(),
            size,
            artifact_type: manifest.artifact_type.clone(),
            subject: manifest.subject.as_ref().map(|s| s.digest.to_string()),
            annotations: manifest.annotations.clone(),
            children: manifest.children.iter().map(|c| c.digest.to_string()).collect(),
            blobs: manifest.blobs.iter().map(|b| b.digest.to_string()).collect(),
        }
    }

    /// The manifest's descriptor with its artifact type and annotations (as the referrers API
    /// lists it; `index.json` narrows it, see `store::index`).
    pub fn descriptor(&self, digest: Digest) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            artifact_type: self.artifact_type.clone(),
            digest,
            size: self.size,
            annotations: self.annotations.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Option<ManifestRecord> {
        serde_json::from_slice(bytes).ok()
    }
}
