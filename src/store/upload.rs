//! Upload sessions: `uploads/<uuid>` files that grow by PATCH/PUT and become blobs on commit.
//!
//! Invariants:
//! - A session's file holds exactly the bytes acknowledged so far, and `offset` is its length.
//! - `hasher`, when present, has been fed exactly those bytes, so each byte is hashed once.
//!   After a restart (or an I/O error) it is `None` and is rebuilt by re-reading the file.
//! - `UPLOADS[uuid]` exists ⇔ the session is live; the start-up sweep removes files without a
//!   record and records without a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use redb::{ReadableDatabase, ReadableTable};

use super::meta::UPLOADS;
use super::upload_writer::{trim_preallocation, UploadWriter};
use super::{files, now_unix, Result, Store, StoreError};
use crate::core::{Algorithm, Digest, Hasher, RepoName};

/// The in-memory state of one upload.
pub struct UploadSession {
    pub id: String,
    pub repo: RepoName,
    pub algorithm: Algorithm,
    pub hasher: Option<Hasher>,
    pub offset: u64,
    /// Set once the session is committed or cancelled: a request that was waiting for the
    /// session's lock must then answer `BLOB_UPLOAD_UNKNOWN`.
    pub closed: bool,
}

/// Read buffer for re-hashing a partial upload.
const READ_BUFFER: usize = 1 << 20;

impl UploadSession {
    /// Appends every batch of chunks received from `rx` to the upload file, hashing each byte once.
    /// `announced` is the body length the request announced, if any (space is allocated for it).
    /// Runs on a blocking thread. On return `offset`/`hasher` describe the file exactly, even
    /// after an error (the client can resume from `offset`).
    pub fn append_stream(
        &mut self,
        path: &std::path::Path,
        rx: &mut tokio::sync::mpsc::Receiver<Vec<Bytes>>,
        announced: Option<u64>,
    ) -> io::Result<u64> {
        if self.hasher.is_none() {
            self.rehash(path)?;
        }
        let mut out = UploadWriter::new(path, self.offset, announced)?;
        let mut written = 0u64;
        let streamed = (|| {
            while let Some(batch) = rx.blocking_recv() {
                for chunk in batch {
                    if let Some(h) = self.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    written += chunk.len() as u64;
                    out.push(chunk)?;
                }
            }
            Ok(())
        })();
        let result = streamed.and(out.finish());
        self.offset += written;
        if result.is_err() {
            // What reached the file is unknown: re-derive both from the file next time.
            self.hasher = None;
            self.offset = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        }
        result.map(|()| written)
    }

    /// Rebuilds `hasher` and `offset` from the file.
    pub fn rehash(&mut self, path: &std::path::Path) -> io::Result<()> {
        let (hasher, len) = hash_file(path, self.algorithm)?;
        self.hasher = Some(hasher);
        self.offset = len;
        Ok(())
    }

    /// The digest of the content so far under `algorithm` (re-reading the file only if the
    /// session hashes with another algorithm).
    pub fn digest(&mut self, path: &std::path::Path, algorithm: Algorithm) -> io::Result<Digest> {
        if algorithm == self.algorithm {
            if self.hasher.is_none() {
                self.rehash(path)?;
            }
            if let Some(h) = &self.hasher {
                return Ok(h.clone().finish());
            }
        }
        Ok(hash_file(path, algorithm)?.0.finish())
    }
}

fn hash_file(path: &std::path::Path, algorithm: Algorithm) -> io::Result<(Hasher, u64)> {
    let mut f = File::open(path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((h, len));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

impl Store {
    /// Canonicalises an upload id from a URL; anything that is not a UUID is unknown.
    pub fn parse_upload_id(s: &str) -> Option<String> {
        uuid::Uuid::parse_str(s).ok().map(|u| u.hyphenated().to_string())
    }

    /// Starts an upload session for `repo`, hashing with `algorithm`.
    pub fn create_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> Result<Arc<tokio::sync::Mutex<UploadSession>>> {
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let path = self.paths.upload(&id);
        OpenOptions::new().write(true).create_new(true).open(&path)?;
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.insert(id.as_str(), (repo.as_str(), algorithm.name(), now_unix()))?;
        txn.commit()?;
        let session = Arc::new(tokio::sync::Mutex::new(UploadSession {
            id: id.clone(),
            repo: repo.clone(),
            algorithm,
            hasher: Some(algorithm.hasher()),
            offset: 0,
            closed: false,
        }));
        self.sessions_lock().insert(id, session.clone());
        Ok(session)
    }

    fn sessions_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Arc<tokio::sync::Mutex<UploadSession>>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds the session `id` of `repo` (loading it from metadata after a restart).
    pub fn upload(&self, repo: &RepoName, id: &str) -> Result<Arc<tokio::sync::Mutex<UploadSession>>> {
        let id = Self::parse_upload_id(id).ok_or(StoreError::UploadUnknown)?;
        // The map lock is held across the metadata lookup so that a session being forgotten
        // (see `forget`) cannot be resurrected from a stale record.
        let mut sessions = self.sessions_lock();
        let txn = self.db.begin_read()?;
        let (owner, algorithm) = match txn.open_table(UPLOADS)?.get(id.as_str())? {
            Some(v) => {
                let (r, a, _) = v.value();
                (r.to_string(), a.to_string())
            }
            None => return Err(StoreError::UploadUnknown),
        };
        if owner != repo.as_str() {
            return Err(StoreError::UploadUnknown);
        }
        if let Some(s) = sessions.get(&id) {
            return Ok(s.clone());
        }
        let algorithm = Algorithm::from_name(&algorithm).unwrap_or(Algorithm::Sha256);
        let offset = fs::metadata(self.paths.upload(&id)).map(|m| m.len()).map_err(|_| StoreError::UploadUnknown)?;
        let session = Arc::new(tokio::sync::Mutex::new(UploadSession {
            id: id.clone(),
            repo: repo.clone(),
            algorithm,
            hasher: None,
            offset,
            closed: false,
        }));
        sessions.insert(id, session.clone());
        Ok(session)
    }

    /// Ends a session's life in memory and in metadata (not its file). Requests waiting for
    /// the session see `closed`; later lookups find no record.
    fn forget(&self, session: &mut UploadSession) -> Result<()> {
        session.closed = true;
        let mut sessions = self.sessions_lock();
        sessions.remove(&session.id);
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.remove(session.id.as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Removes uploads whose file has not been written to for `age` (abandoned pushes).
    /// Returns how many were purged. Sessions in use right now are skipped.
    pub fn purge_uploads(&self, age: std::time::Duration) -> Result<usize> {
        let ids: Vec<String> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(UPLOADS)?;
            let mut v = Vec::new();
            for e in table.iter()? {
                v.push(e?.0.value().to_string());
            }
            v
        };
        let mut purged = 0;
        for id in ids {
            let idle = fs::metadata(self.paths.upload(&id))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(std::time::Duration::MAX);
            if idle < age {
                continue;
            }
            let Some(repo) = self.upload_owner(&id)? else { continue };
            let session = self.upload(&repo, &id)?;
            // A session in use right now is not abandoned.
            let Ok(mut session) = session.try_lock() else { continue };
            self.cancel_upload(&mut session)?;
            purged += 1;
        }
        Ok(purged)
    }

    fn upload_owner(&self, id: &str) -> Result<Option<RepoName>> {
        let txn = self.db.begin_read()?;
        let owner = txn.open_table(UPLOADS)?.get(id)?.map(|v| v.value().0.to_string());
        Ok(owner.and_then(|o| RepoName::parse(&o).ok()))
    }

    /// Ends a session: forgets it and removes its file.
    pub fn cancel_upload(&self, session: &mut UploadSession) -> Result<()> {
        self.forget(session)?;
        files::remove_if_exists(&self.paths.upload(&session.id))?;
        Ok(())
    }

    /// Verifies the session's content against `expected` and commits it as a blob of the
    /// session's repository. On a mismatch the session is cancelled (nothing becomes visible).
    pub fn commit_upload(&self, session: &mut UploadSession, expected: &Digest) -> Result<()> {
        let path = self.paths.upload(&session.id);
        let actual = session.digest(&path, expected.algorithm())?;
        if &actual != expected {
            self.cancel_upload(session)?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        let file = OpenOptions::new().write(true).open(&path)?;
        trim_preallocation(&file)?;
        file.sync_all()?;
        let size = session.offset;
        self.commit_blob_file(&path, &session.repo, expected, size)?;
        self.forget(session)
    }
}
