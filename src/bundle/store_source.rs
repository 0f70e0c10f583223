//! The local store as a [`BundleSource`]: what `pier export` reads when it runs in the daemon
//! or on a stopped store. Reads only.
//!
//! Manifests come from the store's records and blob files; blobs are read with
//! [`BlobReader::read_at`] at an advancing offset (no buffer of its own: the caller's buffer is
//! the only one). A blob whose file ends before its recorded size is an error, never a short
//! blob in the bundle. Quarantined blobs and manifests (`store::scrub`) are unknown here as
//! they are to a pull.

use std::io::{self, Read};

use super::source::{BundleSource, FetchedBlob, FetchedManifest, SourceError};
use crate::core::{Digest, RepoName, Tag};
use crate::store::{BlobReader, Store, StoreError, StoredManifest};

/// Referrers listed per store read (a page of the referrers index).
const REFERRERS_PAGE: usize = 1000;

impl BundleSource for Store {
    fn repositories(&self) -> Result<Vec<RepoName>, SourceError> {
        let page = self.catalog(None, None, &|_| true).map_err(|e| source_error("the catalog", e))?;
        page.items
            .iter()
            .map(|name| {
                RepoName::parse(name)
                    .map_err(|e| SourceError::Invalid { what: format!("repository {name:?}"), detail: e.to_string() })
            })
            .collect()
    }

    fn tags(&self, repo: &RepoName) -> Result<Vec<Tag>, SourceError> {
        let page = Store::tags(self, repo, None, None).map_err(|e| source_error(&format!("repository {repo}"), e))?;
        page.items
            .iter()
            .map(|tag| {
                Tag::parse(tag)
                    .map_err(|e| SourceError::Invalid { what: format!("tag {repo}:{tag}"), detail: e.to_string() })
            })
            .collect()
    }

    fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<FetchedManifest, SourceError> {
        let what = format!("{repo}:{tag}");
        let stored = self.resolve_tag(repo, tag).map_err(|e| source_error(&what, e))?;
        fetched(self, stored).map_err(|e| source_error(&what, e))
    }

    fn manifest_by_digest(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        let what = format!("{repo}@{digest}");
        let stored = self.manifest(repo, digest).map_err(|e| source_error(&what, e))?;
        fetched(self, stored).map_err(|e| source_error(&what, e))
    }

    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Digest>, SourceError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = Store::referrers(self, repo, subject, None, after.as_ref(), REFERRERS_PAGE, |_| 1)
                .map_err(|e| source_error(&format!("referrers of {repo}@{subject}"), e))?;
            all.extend(page.manifests.into_iter().map(|d| d.digest));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedBlob<'_>, SourceError> {
        let what = format!("blob {digest} of {repo}");
        let reader = Store::open_blob(self, repo, digest).map_err(|e| source_error(&what, e))?;
        Ok(FetchedBlob { size: reader.size(), reader: Box::new(BlobRead { blob: reader, offset: 0, what }) })
    }
}

fn fetched(store: &Store, stored: StoredManifest) -> Result<FetchedManifest, StoreError> {
    let bytes = store.manifest_bytes(&stored.digest)?;
    Ok(FetchedManifest { digest: stored.digest, media_type: stored.record.media_type, bytes })
}

/// A store error as the source's: unknown things are [`SourceError::NotFound`].
fn source_error(what: &str, e: StoreError) -> SourceError {
    match e {
        StoreError::NameUnknown => SourceError::NotFound { what: format!("{what}: repository") },
        StoreError::ManifestUnknown | StoreError::BlobUnknown => SourceError::NotFound { what: what.to_string() },
        other => SourceError::Io { what: what.to_string(), source: io::Error::other(other) },
    }
}

/// A stored blob as a [`Read`]: `read_at` at an advancing offset, up to the recorded size.
struct BlobRead {
    blob: BlobReader,
    offset: u64,
    what: String,
}

impl Read for BlobRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.blob.size().saturating_sub(self.offset);
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.blob.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: the file ends at {} of {} bytes", self.what, self.offset, self.blob.size()),
            ));
        }
        self.offset += n as u64;
        Ok(n)
    }
}
