//! Where an export reads images from: [`BundleSource`], implemented by the local store and by
//! a remote registry (`pier export --from URL`). Blocking calls: exports run on a thread of
//! their own (or a blocking-pool thread of the daemon), never on the async runtime.

use std::io::Read;

use crate::core::{Digest, RepoName, Tag};

/// A manifest as a source holds it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A blob being read from a source: its size (as the source states it; the reader of the
/// bundle verifies the digest) and its bytes.
pub struct FetchedBlob<'a> {
    pub size: u64,
    pub reader: Box<dyn Read + Send + 'a>,
}

/// Why a source could not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The repository, tag, manifest or blob does not exist there.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The source refused the credentials (or gave none it accepts).
    #[error("{what}: access denied: {detail}")]
    Denied { what: String, detail: String },
    /// The source answered something that is not what was asked (bad manifest, wrong size...).
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    /// Reading the source failed (disk, network, protocol).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// What an export reads from. Implementations: the local store (`Store`), a remote registry.
pub trait BundleSource: Send + Sync {
    /// Every repository (for `--all`), sorted.
    fn repositories(&self) -> Result<Vec<RepoName>, SourceError>;
    /// Every tag of `repo`, sorted.
    fn tags(&self, repo: &RepoName) -> Result<Vec<Tag>, SourceError>;
    /// The manifest `repo:tag` points at.
    fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<FetchedManifest, SourceError>;
    /// The manifest `repo@digest` (also children of an index, subjects' referrers).
    fn manifest_by_digest(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedManifest, SourceError>;
    /// The digests of the manifests that refer to `subject` in `repo` (signatures, SBOMs).
    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Digest>, SourceError>;
    /// A blob's bytes (layers, configs).
    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedBlob<'_>, SourceError>;
}
