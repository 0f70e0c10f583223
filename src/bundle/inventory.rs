//! `pier inventory`: what a site holds, as the inventory format of `core::bundle` (digests
//! only, sorted; manifests are blobs), written as it is read from one store snapshot, so memory
//! does not grow with the number of blobs.

use std::io::{self, BufWriter, Write};

use serde::{Deserialize, Serialize};

use super::tar_out::Counted;
use crate::core::bundle::INVENTORY_VERSION;
use crate::store::{Store, StoreError};

/// What an inventory holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryReport {
    /// Blobs listed (layers, configs and manifests) and the bytes they hold.
    pub blobs: u64,
    pub bytes: u64,
    /// The length of the inventory file.
    pub file_bytes: u64,
}

/// Why an inventory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    #[error("writing the inventory: {0}")]
    Write(#[source] io::Error),
}

/// Writes the inventory of `store` into `out`.
pub fn write_inventory(store: &Store, out: &mut dyn Write) -> Result<InventoryReport, InventoryError> {
    let mut out = Counted { inner: BufWriter::with_capacity(64 * 1024, out), bytes: 0 };
    let created = super::plan::rfc3339(crate::store::now_unix());
    write!(out, r#"{{"pierInventoryVersion":{INVENTORY_VERSION},"created":"{created}","blobs":["#)
        .map_err(InventoryError::Write)?;
    let mut report = InventoryReport { blobs: 0, bytes: 0, file_bytes: 0 };
    store.each_blob(|digest, size| {
        // Digests are `alg:hex` as the store validated them: nothing to escape.
        let comma = if report.blobs == 0 { "" } else { "," };
        write!(out, "{comma}\n\"{digest}\"").map_err(InventoryError::Write)?;
        report.blobs += 1;
        report.bytes += size;
        Ok::<(), InventoryError>(())
    })?;
    out.write_all(b"\n]}\n").map_err(InventoryError::Write)?;
    out.flush().map_err(InventoryError::Write)?;
    report.file_bytes = out.bytes;
    Ok(report)
}
