//! Staging files of an import (`pier import`, `bundle::import`): bytes streamed from outside into
//! private files under `uploads/`, hashed while they are written, before anything of them is
//! visible. The files are the store's own (created mode 0444, like every blob file), so that a
//! commit can hardlink them as they are (`Store::adopt_staged_blobs`,
//! `Store::adopt_staged_manifest` in `migrate`).
//!
//! Invariants: a staging file is named `<uuid>.import` and has no `UPLOADS` record, so the
//! start-up recovery removes whatever a crash left (`recovery`); no path leaves the store (the
//! caller holds a [`StagedFile`], which tells only the digest and size of its bytes); a staged
//! file is complete (exactly the bytes read) or does not exist (a failed write removes it).
//! Durability is the caller's choice: [`Store::sync_staged`] flushes many at once (one
//! `syncfs`) before the first of them is committed.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use super::error::{IoContext, Result, StoreError};
use super::Store;
use crate::core::{Algorithm, Digest};

/// A complete file of bytes staged under `uploads/`, named by what they hash to.
#[derive(Debug)]
pub struct StagedFile {
    pub(super) path: PathBuf,
    digest: Digest,
    size: u64,
}

impl StagedFile {
    /// What the staged bytes hash to (with the algorithm the caller asked for).
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Why a file could not be staged: the input failed (or ended early), or the store did.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Reading the input failed, or it ended before `expected` bytes.
    #[error("reading the input: {0}")]
    Input(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Streams exactly `len` bytes of `input` into a new staging file while hashing them with
    /// `algorithm`, through `buf` (the caller's fixed buffer: memory does not grow with `len`).
    /// Refuses at once when `len` bytes would take the filesystem below its free-space reserve.
    /// An input that ends before `len` bytes is `StageError::Input` (`UnexpectedEof`); nothing
    /// is left behind on any error.
    pub fn stage_stream(
        &self,
        input: &mut dyn Read,
        len: u64,
        algorithm: Algorithm,
        buf: &mut [u8],
    ) -> std::result::Result<StagedFile, StageError> {
        self.ensure_free_space(len)?;
        let path = self.paths.upload(&format!("{}.import", uuid::Uuid::new_v4()));
        let mut file = self.disk.create_new_mode(&path, 0o444)?;
        let written = copy_hashed(input, &mut file, &path, len, algorithm, buf);
        drop(file);
        match written {
            Ok(digest) => Ok(StagedFile { path, digest, size: len }),
            Err(e) => {
                if let Err(removal) = self.disk.remove_if_exists(&path) {
                    log::warn!("{removal} (removed at the next start)");
                }
                Err(e)
            }
        }
    }

    /// Makes the staged files durable, data and metadata, with one flush of the filesystem.
    pub fn sync_staged(&self, files: &[&StagedFile]) -> Result<()> {
        let paths: Vec<&std::path::Path> = files.iter().map(|f| f.path.as_path()).collect();
        self.disk.sync_files(&paths)?;
        self.disk.sync_dir(&self.paths.uploads())
    }

    /// The bytes of a staged file, if it holds at most `max` bytes (`None` otherwise).
    pub fn read_staged(&self, file: &StagedFile, max: usize) -> Result<Option<Vec<u8>>> {
        if file.size > max as u64 {
            return Ok(None);
        }
        let bytes = std::fs::read(&file.path).at("read", &file.path)?;
        Ok(Some(bytes))
    }

    /// Removes a staged file (committed or not: a committed one lives on under its blob names).
    /// A failure is logged: the next start removes it.
    pub fn discard_staged(&self, file: StagedFile) {
        if let Err(e) = self.disk.remove_if_exists(&file.path) {
            log::warn!("{e} (removed at the next start)");
        }
    }

    /// The bytes of the blob `digest` the store holds, if it does and they are at most `max`
    /// bytes (`None` otherwise: absent, or larger).
    pub fn stored_blob_at_most(&self, digest: &Digest, max: usize) -> Result<Option<Vec<u8>>> {
        if !self.has_blob(digest)? {
            return Ok(None);
        }
        let path = self.paths.blob(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at("open", &path),
        };
        let mut bytes = Vec::new();
        file.take(max as u64 + 1).read_to_end(&mut bytes).at("read", &path)?;
        Ok((bytes.len() <= max).then_some(bytes))
    }

    /// Whether the store holds the blob `digest` (in any repository; manifests are blobs too).
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(super::meta::BLOBS)?.get(digest.as_str())?.is_some())
    }
}

/// Copies exactly `len` bytes from `input` to `file`, hashing them; the digest.
fn copy_hashed(
    input: &mut dyn Read,
    file: &mut File,
    path: &std::path::Path,
    len: u64,
    algorithm: Algorithm,
    buf: &mut [u8],
) -> std::result::Result<Digest, StageError> {
    let mut hasher = algorithm.hasher();
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(StageError::Input(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the input ended {left} bytes before the end of the file"),
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StageError::Input(e)),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).at("write", path)?;
        left -= n as u64;
    }
    Ok(hasher.finish())
}
