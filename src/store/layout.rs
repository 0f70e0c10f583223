//! Paths of the data directory and the OCI image layout of each repository.
//!
//! ```text
//! <root>/meta.redb
//! <root>/blobs/<alg>/<hex>                      the one copy of each blob (mode 0444)
//! <root>/repositories/<name>/oci-layout
//! <root>/repositories/<name>/index.json         derived from meta.redb
//! <root>/repositories/<name>/blobs/<alg>/<hex>  hardlinks to <root>/blobs/<alg>/<hex>
//! <root>/uploads/<uuid>                         partial uploads (same file system)
//! ```
//! A `RepoName` is a safe relative path (see `core::name`), a `Digest`'s hex is a safe file name
//! and upload ids are parsed UUIDs, so no path built here can leave `<root>`.

use std::path::{Path, PathBuf};

use crate::core::{Algorithm, Digest, RepoName};

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Builds every path of the data directory (and nothing else does).
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: &Path) -> Paths {
        Paths { root: root.to_path_buf() }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("meta.redb")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub fn blob_dir(&self, a: Algorithm) -> PathBuf {
        self.blobs().join(a.name())
    }
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blob_dir(d.algorithm()).join(d.hex())
    }
    pub fn repositories(&self) -> PathBuf {
        self.root.join("repositories")
    }
    pub fn repo(&self, r: &RepoName) -> PathBuf {
        self.root.join("repositories").join(r.as_str())
    }
    pub fn oci_layout(&self, r: &RepoName) -> PathBuf {
        self.repo(r).join("oci-layout")
    }
    pub fn index(&self, r: &RepoName) -> PathBuf {
        self.repo(r).join("index.json")
    }
    pub fn repo_blob_dir(&self, r: &RepoName, a: Algorithm) -> PathBuf {
        self.repo(r).join("blobs").join(a.name())
    }
    pub fn repo_blob(&self, r: &RepoName, d: &Digest) -> PathBuf {
        self.repo_blob_dir(r, d.algorithm()).join(d.hex())
    }
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }
    /// `id` must be a canonical UUID string (see `upload::parse_upload_id`), or one with a
    /// suffix of the store's own (`<uuid>.manifest`).
    /// Where `pier scrub` keeps the corrupt blob files it took out of service.
    pub fn quarantine_dir(&self, a: Algorithm) -> PathBuf {
        self.root.join("quarantine").join(a.name())
    }

    /// The quarantined file of `d`.
    pub fn quarantined(&self, d: &Digest) -> PathBuf {
        self.quarantine_dir(d.algorithm()).join(d.hex())
    }

    pub fn upload(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }
}
