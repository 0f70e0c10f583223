//! `du`: disk usage per repository and of the store, and what a garbage collection with the
//! default grace period would free now; the same result from the daemon or the store itself.

use serde::{Deserialize, Serialize};

use super::human_bytes;
use crate::store::gc::{GcOptions, GcReport};
use crate::store::usage::Usage;
use crate::store::Store;

/// The result of the `du` command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    #[serde(flatten)]
    pub usage: Usage,
    /// A dry run of `pier gc` with the default options.
    pub gc_would_free: GcReport,
}

/// The usage of `store` (every repository, or only `only`).
pub fn du(store: &Store, only: Option<&str>) -> crate::store::Result<DiskUsage> {
    let usage = store.usage(only)?;
    let options =
        GcOptions { grace_secs: GcOptions::DEFAULT_GRACE.as_secs(), untagged: false, dry_run: true, full: true };
    let gc_would_free = store.collect_garbage(options, |_| {})?;
    Ok(DiskUsage { usage, gc_would_free })
}

impl std::fmt::Display for DiskUsage {
    /// The human form (`pier du` without `--json`): a table, then the totals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = &self.usage;
        let width = u.repositories.iter().map(|r| r.repository.len()).max().unwrap_or(0).max("REPOSITORY".len());
        writeln!(f, "{:<width$}  {:>8}  {:>10}  {:>10}  {:>10}", "REPOSITORY", "BLOBS", "SIZE", "UNIQUE", "SHARED")?;
        for r in &u.repositories {
            writeln!(
                f,
                "{:<width$}  {:>8}  {:>10}  {:>10}  {:>10}",
                r.repository,
                r.blobs,
                human_bytes(r.bytes),
                human_bytes(r.unique_bytes),
                human_bytes(r.shared_bytes)
            )?;
        }
        let ratio = if u.stored_bytes == 0 { 1.0 } else { u.logical_bytes as f64 / u.stored_bytes as f64 };
        writeln!(
            f,
            "logical {} in all repositories; on disk {} in {} blob files (deduplication {ratio:.2}x)",
            human_bytes(u.logical_bytes),
            human_bytes(u.stored_bytes),
            u.stored_blobs
        )?;
        let g = &self.gc_would_free;
        write!(
            f,
            "pier gc would free {} now ({} blob files; {} links still in the 1 h grace period)",
            human_bytes(g.bytes_freed),
            g.blobs_freed,
            g.in_grace
        )
    }
}
