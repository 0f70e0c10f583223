//! Writing a planned bundle as a tar stream (POSIX ustar, a GNU long-name entry where a path
//! does not fit): `oci-layout`, `pier-bundle.json`, the blobs in the plan's order, `index.json`,
//! `manifest.json`.
//!
//! Invariants: every entry has the same owner (0), mode (0644) and mtime (the plan's), so the
//! same plan gives the same bytes; a blob's bytes are hashed as they pass and the export fails
//! if they do not hash to its digest or are not exactly its size (the bytes are already in the
//! stream then: the caller discards it); the tar end marker is written only after every entry.
//! One buffer of [`WRITE_BUFFER`] bytes, whatever the sizes of the blobs.

use std::io::{self, BufWriter, Read, Write};

use super::export::ExportError;
use super::plan::{ExportPlan, PlannedKind};
use super::source::BundleSource;
use crate::core::bundle::{blob_path, BUNDLE_MANIFEST_PATH};
use crate::core::{Digest, Hasher};

/// The one buffer between the source and the output (pipe writes of this size).
pub const WRITE_BUFFER: usize = 1 << 20;
/// The `oci-layout` entry.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes `plan` into `out`; returns the number of bytes written.
pub(super) fn write(source: &dyn BundleSource, plan: &ExportPlan, out: &mut dyn Write) -> Result<u64, ExportError> {
    let counted = Counted { inner: out, bytes: 0 };
    let mut tar = tar::Builder::new(BufWriter::with_capacity(WRITE_BUFFER, counted));
    let write_error = |source| ExportError::Write { source };
    let small = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| {
        let mut header = header(plan.created, bytes.len() as u64);
        tar.append_data(&mut header, path, bytes).map_err(write_error)
    };
    small(&mut tar, "oci-layout", OCI_LAYOUT)?;
    small(&mut tar, BUNDLE_MANIFEST_PATH, &plan.bundle_json)?;
    for blob in &plan.blobs {
        let what = format!("{}@{}", blob.repo, blob.digest);
        let path = blob_path(&blob.digest);
        match &blob.kind {
            PlannedKind::Blob => {
                let fetched = source.open_blob(&blob.repo, &blob.digest)?;
                if fetched.size != blob.size {
                    return Err(ExportError::SizeMismatch { what, expected: blob.size, actual: fetched.size });
                }
                let mut reader = Checked::new(fetched.reader, &blob.digest, blob.size);
                let mut header = header(plan.created, blob.size);
                if let Err(e) = tar.append_data(&mut header, &path, &mut reader) {
                    return Err(if reader.failed {
                        ExportError::Read { what, source: e }
                    } else {
                        ExportError::Write { source: e }
                    });
                }
                reader.finish(&what)?;
            }
            PlannedKind::Manifest => {
                let fetched = source.manifest_by_digest(&blob.repo, &blob.digest)?;
                check(&what, &blob.digest, blob.size, &fetched.bytes)?;
                small(&mut tar, &path, &fetched.bytes)?;
            }
            PlannedKind::Rewritten(bytes) => {
                check(&what, &blob.digest, blob.size, bytes)?;
                small(&mut tar, &path, bytes)?;
            }
        }
    }
    small(&mut tar, "index.json", &plan.index_json)?;
    if let Some(docker) = &plan.docker_json {
        small(&mut tar, "manifest.json", docker)?;
    }
    let buffered = tar.into_inner().map_err(write_error)?;
    let counted = buffered.into_inner().map_err(|e| write_error(e.into_error()))?;
    counted.inner.flush().map_err(write_error)?;
    Ok(counted.bytes)
}

/// A regular file's header: owner 0, mode 0644, the plan's mtime.
fn header(mtime: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

fn check(what: &str, digest: &Digest, size: u64, bytes: &[u8]) -> Result<(), ExportError> {
    if bytes.len() as u64 != size {
        return Err(ExportError::SizeMismatch { what: what.to_string(), expected: size, actual: bytes.len() as u64 });
    }
    let actual = Digest::of(digest.algorithm(), bytes);
    if &actual != digest {
        return Err(ExportError::DigestMismatch { what: what.to_string(), expected: digest.clone(), actual });
    }
    Ok(())
}

/// A blob's bytes on their way into the stream: exactly `size` of them (an early end is an
/// error, later bytes are not read), hashed.
struct Checked<'a> {
    inner: Box<dyn Read + Send + 'a>,
    hasher: Hasher,
    expected: Digest,
    left: u64,
    /// Whether the error the tar writer returned came from here (reading) or from the output.
    failed: bool,
}

impl<'a> Checked<'a> {
    fn new(inner: Box<dyn Read + Send + 'a>, digest: &Digest, size: u64) -> Checked<'a> {
        Checked { inner, hasher: digest.algorithm().hasher(), expected: digest.clone(), left: size, failed: false }
    }

    /// After the last byte: the digest must be the blob's.
    fn finish(self, what: &str) -> Result<(), ExportError> {
        let actual = self.hasher.finish();
        if actual != self.expected {
            return Err(ExportError::DigestMismatch { what: what.to_string(), expected: self.expected, actual });
        }
        Ok(())
    }
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{} bytes short", self.left)));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A writer that counts the bytes it passed on (the bundle's and the inventory's output).
pub(super) struct Counted<W: Write> {
    pub(super) inner: W,
    pub(super) bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
