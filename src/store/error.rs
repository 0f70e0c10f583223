//! `StoreError`: every way a store operation can fail. The HTTP layer maps each variant to one
//! OCI error code, in one place (`http::error`).

use std::io;
use std::path::{Path, PathBuf};

use crate::core::Digest;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("repository not known")]
    NameUnknown,
    #[error("blob unknown")]
    BlobUnknown,
    #[error("manifest unknown")]
    ManifestUnknown,
    #[error("upload unknown")]
    UploadUnknown,
    /// The content's digest is not the one the client claimed.
    #[error("content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A manifest references a blob or manifest the repository does not have.
    #[error("referenced content {0} is not in this repository")]
    ManifestBlobUnknown(Digest),
    /// A blob delete named a manifest (which must be deleted through the manifest endpoint).
    #[error("this digest is a manifest; delete it through the manifests endpoint")]
    IsManifest,
    /// A chunk did not start where the upload ends (nothing was written).
    #[error("chunk starts at {start} but the upload has {offset} bytes")]
    ChunkOutOfOrder { start: u64, offset: u64 },
    /// A chunk's body was not as long as its declared range; it was rolled back.
    #[error("chunk has {received} bytes, Content-Range says {declared}")]
    ChunkLength { received: u64, declared: u64 },
    /// A file-system operation failed; `path` is empty when no single path is concerned.
    #[error("{op}{}: {source}", if path.as_os_str().is_empty() { String::new() } else { format!(" {}", path.display()) })]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Free space is below `storage.filesystem.reserve`, or would go below it with the
    /// `incoming` bytes the request announced (0: none announced).
    #[error("{}", space_message(*free, *reserve, *incoming))]
    InsufficientSpace { free: u64, reserve: u64, incoming: u64 },
    /// The repository would go past its quota (`quotas:`); `adding` 0: it is already at it.
    #[error("{}", quota_message(repo, *quota, *usage, *adding))]
    QuotaExceeded { repo: String, quota: u64, usage: u64, adding: u64 },
    /// The metadata database failed.
    #[error("metadata: {0}")]
    Db(#[source] redb::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Whether this is the file system being full (ENOSPC, or a quota: EDQUOT), whether pier's
    /// reserve said so or the kernel did.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StoreError::InsufficientSpace { .. })
            || matches!(self.io_kind(), Some(io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }

    /// The I/O error kind, if this is an I/O failure (of a file, or of the metadata database).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StoreError::Io { source, .. } => Some(source.kind()),
            StoreError::Db(redb::Error::Io(source)) => Some(source.kind()),
            _ => None,
        }
    }
}

/// The reason an upload is refused for lack of space, for the client and the log.
fn space_message(free: u64, reserve: u64, incoming: u64) -> String {
    let mib = |bytes: u64| bytes >> 20;
    if incoming == 0 {
        format!("free space below the configured reserve ({} MiB free, reserve {} MiB)", mib(free), mib(reserve))
    } else {
        format!(
            "{} MiB more would take free space below the configured reserve ({} MiB free, reserve {} MiB)",
            mib(incoming),
            mib(free),
            mib(reserve)
        )
    }
}

/// Attaches the operation and the path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StoreError::Io { op, path: path.to_path_buf(), source })
    }
}

/// Maps "file not found" to `unknown` (the object was deleted concurrently), other errors as is.
pub(crate) fn gone_as(e: io::Error, op: &'static str, path: &Path, unknown: StoreError) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        unknown
    } else {
        StoreError::Io { op, path: path.to_path_buf(), source: e }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The reason a push is refused by a quota, for the client and the log.
fn quota_message(repo: &str, quota: u64, usage: u64, adding: u64) -> String {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / 1048576.0);
    if adding == 0 {
        format!("repository {repo} is at its quota: {} used of {}", mib(usage), mib(quota))
    } else {
        format!(
            "repository {repo} would go past its quota: {} used of {}, this blob needs {} more",
            mib(usage),
            mib(quota),
            mib(adding)
        )
    }
}
