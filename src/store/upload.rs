//! Upload sessions: `uploads/<uuid>` files that grow chunk by chunk and become blobs on commit.
//!
//! An [`UploadSession`] is a handle; one request at a time has exclusive use of it through a
//! [`SessionClaim`] ([`UploadSession::claim`] waits for it). With the claim, a request appends
//! one chunk ([`Store::begin_append`] → [`ChunkAppend::write`]… → [`ChunkAppend::finish`]), then
//! may commit ([`Store::commit_upload`]) or cancel ([`Store::cancel_upload`]). The store applies,
//! rolls back and reports chunks itself; callers never see the file.
//!
//! Invariants:
//! - A session's file holds exactly the bytes acknowledged so far, and `offset` is its length
//!   (while a chunk is being appended, the file may hold more: the chunk's bytes so far).
//! - `hasher`, when present, has been fed exactly those bytes, so each byte is hashed once.
//!   After a restart (or an I/O error) it is `None` and is rebuilt by re-reading the file.
//! - A chunk with a declared length is wholly in the upload or not at all: a body that ends short
//!   is cut back off. A body that is interrupted keeps what arrived (the client may resume).
//! - `UPLOADS[uuid]` exists ⇔ the session is live; the start-up sweep removes files without a
//!   record and records without a file.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use redb::ReadableTable;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::disk::Disk;
use super::error::{IoContext, Result, StoreError};
use super::meta::UPLOADS;
use super::upload_writer::{trim_preallocation, UploadWriter};
use super::{now_unix, Store};
use crate::core::{Algorithm, Digest, Hasher, RepoName};

/// An upload session (a cheap handle; clones name the same session).
///
/// Exclusive use is arbitrated by a `tokio::sync::Mutex`, whose futures need no tokio runtime:
/// waiting for a session costs a parked task, never a thread.
#[derive(Clone)]
pub struct UploadSession(Arc<Mutex<SessionState>>);

/// The in-memory state of one session.
struct SessionState {
    id: String,
    repo: RepoName,
    algorithm: Algorithm,
    hasher: Option<Hasher>,
    offset: u64,
    /// Set once the session is committed or cancelled: a request that was waiting for the
    /// session must then answer "upload unknown".
    closed: bool,
}

impl SessionState {
    /// The hash of the bytes so far, re-reading the file if it is not known (after a restart or
    /// an I/O error); `offset` then becomes the file's length.
    fn take_hasher(&mut self, path: &Path) -> Result<Hasher> {
        match self.hasher.take() {
            Some(h) => Ok(h),
            None => {
                let (hasher, len) = hash_file(path, self.algorithm)?;
                self.offset = len;
                Ok(hasher)
            }
        }
    }
}

/// Exclusive use of a live session, held by one request.
pub struct SessionClaim(OwnedMutexGuard<SessionState>);

impl UploadSession {
    fn new(state: SessionState) -> UploadSession {
        UploadSession(Arc::new(Mutex::new(state)))
    }

    /// Waits for exclusive use of the session. Fails with `UploadUnknown` when the request that
    /// held it meanwhile committed or cancelled it.
    pub async fn claim(&self) -> Result<SessionClaim> {
        let state = self.0.clone().lock_owned().await;
        if state.closed {
            return Err(StoreError::UploadUnknown);
        }
        Ok(SessionClaim(state))
    }

    /// Exclusive use if nobody has it right now.
    pub(super) fn try_claim(&self) -> Option<SessionClaim> {
        let state = self.0.clone().try_lock_owned().ok()?;
        (!state.closed).then_some(SessionClaim(state))
    }
}

impl SessionClaim {
    /// The session's id (a canonical UUID).
    pub fn id(&self) -> &str {
        &self.0.id
    }
    pub fn repo(&self) -> &RepoName {
        &self.0.repo
    }
    /// Bytes acknowledged so far.
    pub fn offset(&self) -> u64 {
        self.0.offset
    }
}

/// How a chunk's request body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendEnd {
    /// The body was received completely.
    Complete,
    /// The body was cut off (client gone, protocol error): what arrived is kept.
    Interrupted,
}

/// One chunk being appended to a claimed session. Blocking: runs on a thread that may do file
/// I/O. Memory is bounded by the upload writer (see `upload_writer`).
pub struct ChunkAppend<'c> {
    claim: &'c mut SessionClaim,
    path: PathBuf,
    disk: Disk,
    writer: UploadWriter,
    /// Fed every byte written; back in the session when the chunk ends whole.
    hasher: Hasher,
    /// The session's length when the chunk started.
    start: u64,
    /// The chunk's declared length (`Content-Range`), if any.
    declared: Option<u64>,
    received: u64,
    failed: Option<StoreError>,
}

impl ChunkAppend<'_> {
    /// Appends `batch` (hashing each byte once). After a failure, later batches are dropped and
    /// `finish` reports the failure; returns whether the caller should go on sending.
    pub fn write(&mut self, batch: Vec<Bytes>) -> bool {
        if self.failed.is_some() {
            return false;
        }
        for chunk in batch {
            self.hasher.update(&chunk);
            self.received += chunk.len() as u64;
            if let Err(e) = self.writer.push(chunk) {
                self.failed = Some(e);
                return false;
            }
        }
        true
    }

    /// Ends the chunk: the session's new length, or why the chunk is not (wholly) in the upload.
    /// On every path `offset` and the hash describe the file exactly afterwards, so the client
    /// can resume from `offset`.
    pub fn finish(self, end: AppendEnd) -> Result<u64> {
        let ChunkAppend { claim, path, disk, writer, hasher, start, declared, received, failed } = self;
        let written = match failed {
            Some(e) => Err(e),
            None => writer.finish(),
        };
        let state = &mut *claim.0;
        match (written, declared) {
            (Err(e), _) => {
                // What reached the file is unknown: re-derive both from the file next time.
                state.hasher = None;
                state.offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(start);
                Err(e)
            }
            (Ok(()), Some(declared)) if end == AppendEnd::Complete && received != declared => {
                state.hasher = None;
                match disk.truncate(&path, start) {
                    Ok(()) => {
                        state.offset = start;
                        Err(StoreError::ChunkLength { received, declared })
                    }
                    Err(e) => {
                        state.offset = fs::metadata(&path).map(|m| m.len()).unwrap_or(start);
                        Err(e)
                    }
                }
            }
            (Ok(()), _) => {
                state.hasher = Some(hasher);
                state.offset = start + received;
                Ok(state.offset)
            }
        }
    }
}

/// Read buffer for re-hashing a partial upload.
const READ_BUFFER: usize = 1 << 20;

fn hash_file(path: &Path, algorithm: Algorithm) -> Result<(Hasher, u64)> {
    let mut f = File::open(path).at("open", path)?;
    let mut h = algorithm.hasher();
    let mut buf = vec![0u8; READ_BUFFER];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).at("read", path)?;
        if n == 0 {
            return Ok((h, len));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}

/// Canonicalises an upload id from a URL; anything that is not a UUID is unknown.
fn parse_upload_id(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s).ok().map(|u| u.hyphenated().to_string())
}

impl Store {
    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, UploadSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an upload session for `repo`, hashing with `algorithm`.
    pub fn create_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<UploadSession> {
        self.ensure_free_space(0)?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.disk.create_new(&self.paths.upload(&id))?;
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.insert(id.as_str(), (repo.as_str(), algorithm.name(), now_unix()))?;
        self.disk.commit(txn)?;
        let session = UploadSession::new(SessionState {
            id: id.clone(),
            repo: repo.clone(),
            algorithm,
            hasher: Some(algorithm.hasher()),
            offset: 0,
            closed: false,
        });
        self.sessions_lock().insert(id, session.clone());
        Ok(session)
    }

    /// Finds the session `id` of `repo` (loading it from metadata after a restart).
    pub fn upload(&self, repo: &RepoName, id: &str) -> Result<UploadSession> {
        let id = parse_upload_id(id).ok_or(StoreError::UploadUnknown)?;
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
        let session = UploadSession::new(SessionState {
            id: id.clone(),
            repo: repo.clone(),
            algorithm,
            hasher: None,
            offset,
            closed: false,
        });
        sessions.insert(id, session.clone());
        Ok(session)
    }

    /// Starts appending a chunk at the end of the claimed session. `start` is where the client
    /// says the chunk begins and `declared` its length (a `Content-Range`), if it said so;
    /// `announced` is the request body's length if known in advance (space is allocated for it).
    /// Blocking (may re-hash the file after a restart).
    pub fn begin_append<'c>(
        &self,
        claim: &'c mut SessionClaim,
        start: Option<u64>,
        declared: Option<u64>,
        announced: Option<u64>,
    ) -> Result<ChunkAppend<'c>> {
        self.ensure_free_space(announced.unwrap_or(0))?;
        let state = &mut *claim.0;
        if let Some(start) = start.filter(|&s| s != state.offset) {
            return Err(StoreError::ChunkOutOfOrder { start, offset: state.offset });
        }
        let path = self.paths.upload(&state.id);
        let hasher = state.take_hasher(&path)?;
        let writer = match UploadWriter::new(self.disk.clone(), &path, state.offset, announced) {
            Ok(w) => w,
            Err(e) => {
                state.hasher = Some(hasher);
                return Err(e);
            }
        };
        let start = state.offset;
        Ok(ChunkAppend {
            claim,
            path,
            disk: self.disk.clone(),
            writer,
            hasher,
            start,
            declared,
            received: 0,
            failed: None,
        })
    }

    /// Verifies the session's content against `expected` and commits it as a blob of the
    /// session's repository. On a mismatch the session is cancelled (nothing becomes visible).
    pub fn commit_upload(&self, mut claim: SessionClaim, expected: &Digest) -> Result<()> {
        let path = self.paths.upload(&claim.0.id);
        let state = &mut *claim.0;
        let actual = if expected.algorithm() == state.algorithm {
            let hasher = state.take_hasher(&path)?;
            let digest = hasher.clone().finish();
            state.hasher = Some(hasher);
            digest
        } else {
            hash_file(&path, expected.algorithm())?.0.finish()
        };
        if &actual != expected {
            self.cancel_upload(claim)?;
            return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
        }
        let file = fs::OpenOptions::new().write(true).open(&path).at("open", &path)?;
        trim_preallocation(&file).at("truncate", &path)?;
        self.disk.sync(&file, &path)?;
        drop(file);
        // The file becomes the blob; in the same transaction that records the link, the session
        // ends. A crash before that commit leaves the session as it was (resumable), one after it
        // leaves an upload file without a record (swept at start-up).
        {
            let _guard = self.lock();
            self.place_global(&path, expected)?;
            self.link_into_repo(&state.repo, expected)?;
            let txn = self.db.begin_write()?;
            Self::record_repo_blob(&txn, &state.repo, expected, state.offset)?;
            txn.open_table(UPLOADS)?.remove(state.id.as_str())?;
            self.disk.commit(txn)?;
        }
        state.closed = true;
        self.sessions_lock().remove(&state.id);
        if let Err(e) = self.disk.remove_if_exists(&path) {
            log::warn!("committed upload {}: its file stays until the next start: {e}", state.id);
        }
        Ok(())
    }

    /// Ends a session: forgets it and removes its file.
    pub fn cancel_upload(&self, mut claim: SessionClaim) -> Result<()> {
        self.forget(&mut claim)?;
        self.disk.remove_if_exists(&self.paths.upload(&claim.0.id))
    }

    /// Ends a session's life in memory and in metadata (not its file). Requests waiting for
    /// the session see `closed`; later lookups find no record.
    fn forget(&self, claim: &mut SessionClaim) -> Result<()> {
        let state = &mut *claim.0;
        state.closed = true;
        let mut sessions = self.sessions_lock();
        sessions.remove(&state.id);
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.remove(state.id.as_str())?;
        self.disk.commit(txn)
    }

    /// Removes uploads whose file has not been written to for `age` (abandoned pushes).
    /// Returns how many were purged. Sessions in use right now are skipped.
    pub fn purge_uploads(&self, age: std::time::Duration) -> Result<usize> {
        let records: Vec<(String, String)> = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(UPLOADS)?;
            let mut v = Vec::new();
            for e in table.iter()? {
                let (k, v2) = e?;
                v.push((k.value().to_string(), v2.value().0.to_string()));
            }
            v
        };
        let mut purged = 0;
        for (id, owner) in records {
            let idle = fs::metadata(self.paths.upload(&id))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(std::time::Duration::MAX);
            if idle < age {
                continue;
            }
            let Ok(repo) = RepoName::parse(&owner) else { continue };
            // A session in use right now is not abandoned.
            let Some(claim) = self.upload(&repo, &id)?.try_claim() else { continue };
            self.cancel_upload(claim)?;
            purged += 1;
        }
        Ok(purged)
    }
}
