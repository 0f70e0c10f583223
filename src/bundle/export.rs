//! `pier export`'s engine: from references and a [`BundleSource`] to a bundle's tar stream in
//! any [`Write`] (ARCHITECTURE.md, "Bundles").
//!
//! Two phases. The **plan** ([`plan`](super::plan)) resolves every reference, walks every
//! manifest reachable from them (children of indexes, referrers of each manifest, recursively),
//! verifies each manifest's bytes against its digest and lists every blob once, leaving out what
//! the inventory of a delta names. Nothing is written before the plan succeeds: an unknown
//! repository or tag is refused with no output at all. The **write** ([`tar_out`](super::tar_out))
//! then streams the entries, each blob hashed on its way and compared with its digest.
//!
//! Invariants: memory is bounded by the plan (a few hundred bytes per blob and manifest, never
//! blob bytes; one buffer of [`tar_out::WRITE_BUFFER`](super::tar_out::WRITE_BUFFER) bytes);
//! every blob written hashes to its name, or the export fails (the caller discards the output);
//! the stream ends with the tar end marker only when every entry was written.
//!
//! Where the images come from is the caller's choice (`&dyn BundleSource`: the store here, a
//! remote registry for `pier export --from URL`); where the stream goes is the caller's too (a
//! pipe to the command, in the daemon and without one).

use std::io::{Read, Write};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::source::{BundleSource, SourceError};
use crate::core::bundle::{BundleImage, FormatError, Inventory, MAX_FORMAT_BYTES};
use crate::core::{Algorithm, Digest};

/// What to export.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRequest {
    /// `repo:tag`, `repo@digest`, or `repo` (every tag of it).
    pub references: Vec<String>,
    /// Every tag of every repository.
    pub all: bool,
    /// `os/arch[/variant]`: keep only these platforms of an index (none: every platform).
    pub platforms: Vec<String>,
}

/// The blobs a delta leaves out: the site's inventory.
#[derive(Clone, Debug)]
pub struct Exclusion {
    /// The digest of the inventory file (recorded in `pier-bundle.json`).
    pub inventory: Digest,
    /// Sorted, for binary search.
    blobs: Vec<Digest>,
}

impl Exclusion {
    /// Reads an inventory file (at most [`MAX_FORMAT_BYTES`]).
    pub fn read(mut file: impl Read) -> Result<Exclusion, ExportError> {
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_FORMAT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ExportError::ReadInventory { source })?;
        Exclusion::parse(&bytes)
    }

    /// An inventory's bytes as an exclusion.
    pub fn parse(bytes: &[u8]) -> Result<Exclusion, ExportError> {
        let inventory = Inventory::parse(bytes).map_err(ExportError::Inventory)?;
        let mut blobs = inventory.blobs;
        blobs.sort();
        blobs.dedup();
        Ok(Exclusion { inventory: Digest::of(Algorithm::Sha256, bytes), blobs })
    }

    /// Whether the site has `digest`.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blobs.binary_search(digest).is_ok()
    }

    /// How many digests the inventory lists.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// What an export did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReport {
    /// Every exported reference (as in `pier-bundle.json`).
    pub images: Vec<BundleImage>,
    /// Blobs written (layers, configs and manifests) and their bytes.
    pub blobs: u64,
    pub bytes: u64,
    /// Blobs left out because the inventory lists them, and their bytes (what the delta saves).
    pub excluded_blobs: u64,
    pub excluded_bytes: u64,
    /// The digest of the inventory a delta was made against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Digest>,
    /// The length of the tar stream.
    pub stream_bytes: u64,
    pub elapsed_ms: u64,
}

/// What an export tells its progress display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportEvent {
    /// One exported reference was resolved and walked (a line per image).
    Image(String),
    /// The plan is complete: the tar stream will be this long.
    Planned { stream_bytes: u64 },
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A reference that is not `repo`, `repo:tag` or `repo@digest`.
    #[error("{reference:?} is not a reference (repo, repo:tag or repo@digest): {why}")]
    Reference { reference: String, why: String },
    /// A `--platform` that is not `os/arch[/variant]`.
    #[error("{0:?} is not a platform (os/arch or os/arch/variant, e.g. linux/arm64)")]
    Platform(String),
    /// Nothing was named (no references, no `--all`), or `--all` found no tag.
    #[error("nothing to export: {0}")]
    Nothing(String),
    /// A repository given alone has no tags.
    #[error("repository {0} has no tags (name a manifest with repo@digest)")]
    NoTags(String),
    /// An index has no child of the platforms asked for.
    #[error("{image} has no manifest for the platform(s) {platforms}")]
    NoPlatform { image: String, platforms: String },
    /// The source does not have something the images need, or cannot give it.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A manifest that does not parse.
    #[error("manifest {what}: {why}")]
    Manifest { what: String, why: String },
    /// Content whose bytes do not hash to its digest (corruption at the source).
    #[error("{what}: the content has digest {actual}, not {expected}")]
    DigestMismatch { what: String, expected: Digest, actual: Digest },
    /// Content whose length is not the size its descriptor states.
    #[error("{what}: {actual} bytes, its descriptor says {expected}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    /// Manifests nested deeper than the walk follows.
    #[error("{0}: manifests nested deeper than {max} levels", max = super::plan::MAX_DEPTH)]
    TooDeep(String),
    /// The inventory file could not be read.
    #[error("reading the inventory: {source}")]
    ReadInventory {
        #[source]
        source: std::io::Error,
    },
    /// The inventory file is not an inventory.
    #[error("the inventory {0}")]
    Inventory(FormatError),
    /// Reading a blob failed midway.
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing the stream failed (the command's end of the pipe closed, a full disk...).
    #[error("writing the bundle: {source}")]
    Write {
        #[source]
        source: std::io::Error,
    },
}

/// Exports `request` from `source` into `out`: the plan first (nothing is written if it
/// fails), then the tar stream. `exclusion` makes it a delta. `progress` hears one
/// [`ExportEvent::Image`] per exported reference and the stream's length once planned.
pub fn export(
    source: &dyn BundleSource,
    request: &ExportRequest,
    exclusion: Option<&Exclusion>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(ExportEvent),
) -> Result<ExportReport, ExportError> {
    let started = Instant::now();
    let plan = super::plan::plan(source, request, exclusion, progress)?;
    let planned = plan.stream_bytes();
    progress(ExportEvent::Planned { stream_bytes: planned });
    let written = super::tar_out::write(source, &plan, out)?;
    // The plan's length is computed from the entries' paths and sizes alone; the tests export
    // with debug builds, so a writer that strays from it fails them.
    debug_assert_eq!(planned, written, "the tar stream's length differs from the plan's");
    Ok(ExportReport {
        images: plan.images.iter().map(|i| i.image.clone()).collect(),
        blobs: plan.blobs.len() as u64,
        bytes: plan.blobs.iter().map(|b| b.size).sum(),
        excluded_blobs: plan.excluded.len() as u64,
        excluded_bytes: plan.excluded.iter().map(|b| b.size).sum(),
        inventory: exclusion.map(|e| e.inventory.clone()),
        stream_bytes: written,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// [`export`] into a passed pipe's write end (`pipe`), reading the inventory of a delta from
/// the passed descriptor `inventory`: the daemon's side of `pier export`. The pipe is closed
/// when this returns, so the reader sees the end of the stream before it hears the result.
pub fn export_into(
    source: &dyn BundleSource,
    request: &ExportRequest,
    pipe: Option<std::os::fd::OwnedFd>,
    inventory: Option<std::os::fd::OwnedFd>,
    progress: &mut dyn FnMut(ExportEvent),
) -> Result<ExportReport, ExportError> {
    let Some(pipe) = pipe else {
        return Err(ExportError::Write { source: std::io::Error::other("no pipe passed with the request") });
    };
    let exclusion = inventory.map(|fd| Exclusion::read(std::fs::File::from(fd))).transpose()?;
    let mut out = std::fs::File::from(pipe);
    export(source, request, exclusion.as_ref(), &mut out, progress)
}
