//! Upload sessions: `uploads/<uuid>` files that grow chunk by chunk and become blobs on commit.
//!
//! An [`UploadSession`] is a handle; one request at a time has exclusive use of it through a
//! [`SessionClaim`] ([`UploadSession::claim`] waits for it). With the claim, a request appends
//! one chunk ([`Store::begin_append`] → [`ChunkAppend::write`]… → [`ChunkAppend::finish`]), then
//! may commit ([`Store::commit_upload`]) or cancel ([`Store::cancel_upload`]). The store applies,
//! rolls back and reports chunks itself; callers never see the file.
//!
//! A [`ChunkAppend`] owns its claim and is moved to a blocking thread for each batch it writes,
//! so a request whose client sends nothing holds no thread. Without the claim, anyone may read
//! a session's [`progress`](UploadSession::progress) (what its file holds, also while a chunk
//! streams in) and ask an append in flight to stop ([`UploadSession::request_cancel`]).
//!
//! Invariants:
//! - A session's file holds exactly the bytes acknowledged so far, and `offset` is its length
//!   (while a chunk is being appended, the file may hold more: the chunk's bytes so far).
//! - `written` is what the session reports: `offset`, plus during the append of a stream the
//!   bytes written to the file so far (never bytes still in memory; a declared chunk's bytes
//!   count only once it is whole).
//! - `hasher`, when present, has been fed exactly those bytes, so each byte is hashed once.
//!   After a restart (or an I/O error) it is `None` and is rebuilt by re-reading the file.
//! - The chunk contract (README "Chunked uploads"): a chunk with a declared place and length
//!   (`Content-Range`) is wholly in the upload or not at all: a body that ends short or is cut
//!   off (the client went away) is cut back off, and until it is whole the session reports the
//!   offset before it, so a retry of the same chunk fits. A body without a `Content-Range` is a
//!   stream: what arrived is kept when it is cut off, and the session reports it while it
//!   streams, so the client resumes from there. A chunk that runs out of space (the disk, or the
//!   free-space reserve) is cut back off either way, so the space comes back at once.
//! - `UPLOADS[uuid]` exists ⇔ the session is live; the start-up sweep removes files without a
//!   record and records without a file.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use redb::ReadableTable;
use tokio::sync::{Mutex, Notify, OwnedMutexGuard};

use super::disk::Disk;
use super::error::{IoContext, Result, StoreError};
use super::meta::UPLOADS;
use super::space::FreeSpace;
use super::upload_writer::{trim_preallocation, UploadWriter};
use super::{now_unix, Store};
use crate::core::{Algorithm, Digest, Hasher, RepoName};

/// An upload session (a cheap handle; clones name the same session).
///
/// Exclusive use is arbitrated by a `tokio::sync::Mutex`, whose futures need no tokio runtime:
/// waiting for a session costs a parked task, never a thread.
#[derive(Clone)]
pub struct UploadSession(Arc<Session>);

/// One session: what never changes, what may be read without the claim, and the claimed state.
struct Session {
    id: String,
    repo: RepoName,
    algorithm: Algorithm,
    /// Bytes in the file (see the invariants).
    written: AtomicU64,
    /// Set once the session is committed or cancelled: a request that was waiting for the
    /// session must then answer "upload unknown".
    closed: AtomicBool,
    /// Raised by a cancel that found the session in use; the append in flight stops.
    cancel_requested: AtomicBool,
    cancel: Notify,
    state: Arc<Mutex<SessionState>>,
}

/// The claimed state of one session.
struct SessionState {
    hasher: Option<Hasher>,
    offset: u64,
}

impl SessionState {
    /// The hash of the bytes so far, re-reading the file if it is not known (after a restart or
    /// an I/O error); `offset` then becomes the file's length.
    fn take_hasher(&mut self, path: &Path, algorithm: Algorithm) -> Result<Hasher> {
        match self.hasher.take() {
            Some(h) => Ok(h),
            None => {
                let (hasher, len) = hash_file(path, algorithm)?;
                self.offset = len;
                Ok(hasher)
            }
        }
    }
}

/// Exclusive use of a live session, held by one request.
pub struct SessionClaim {
    session: UploadSession,
    state: OwnedMutexGuard<SessionState>,
}

impl UploadSession {
    fn new(id: String, repo: RepoName, algorithm: Algorithm, hasher: Option<Hasher>, offset: u64) -> UploadSession {
        UploadSession(Arc::new(Session {
            id,
            repo,
            algorithm,
            written: AtomicU64::new(offset),
            closed: AtomicBool::new(false),
            cancel_requested: AtomicBool::new(false),
            cancel: Notify::new(),
            state: Arc::new(Mutex::new(SessionState { hasher, offset })),
        }))
    }

    /// Waits for exclusive use of the session. Fails with `UploadUnknown` when the request that
    /// held it meanwhile committed or cancelled it.
    pub async fn claim(&self) -> Result<SessionClaim> {
        let state = self.0.state.clone().lock_owned().await;
        self.claimed(state).ok_or(StoreError::UploadUnknown)
    }

    /// Exclusive use if nobody has it right now.
    pub fn try_claim(&self) -> Option<SessionClaim> {
        let state = self.0.state.clone().try_lock_owned().ok()?;
        self.claimed(state)
    }

    fn claimed(&self, state: OwnedMutexGuard<SessionState>) -> Option<SessionClaim> {
        (!self.0.closed.load(Ordering::Acquire)).then(|| SessionClaim { session: self.clone(), state })
    }

    pub fn id(&self) -> &str {
        &self.0.id
    }
    pub fn repo(&self) -> &RepoName {
        &self.0.repo
    }

    /// What the session's file holds right now, without waiting for a request that appends to
    /// it; `None` once the session is committed or cancelled.
    pub fn progress(&self) -> Option<u64> {
        let written = self.0.written.load(Ordering::Acquire);
        (!self.0.closed.load(Ordering::Acquire)).then_some(written)
    }

    /// Asks the request appending to the session, if any, to stop at once (see
    /// [`cancel_requested`](Self::cancel_requested)); the caller then claims the session.
    pub fn request_cancel(&self) {
        self.0.cancel_requested.store(true, Ordering::Release);
        self.0.cancel.notify_waiters();
    }

    /// Resolves when a cancel of the session has been requested.
    pub async fn cancel_requested(&self) {
        loop {
            let notified = self.0.cancel.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.cancel_requested.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl SessionClaim {
    /// The session's id (a canonical UUID).
    pub fn id(&self) -> &str {
        self.session.id()
    }
    pub fn repo(&self) -> &RepoName {
        self.session.repo()
    }
    /// Bytes acknowledged so far.
    pub fn offset(&self) -> u64 {
        self.state.offset
    }
    /// The session claimed.
    pub fn session(&self) -> &UploadSession {
        &self.session
    }

    /// Sets the acknowledged length (and what the file holds).
    fn set_offset(&mut self, offset: u64) {
        self.state.offset = offset;
        self.session.0.written.store(offset, Ordering::Release);
    }

    /// Marks the session committed or cancelled.
    fn close(&mut self) {
        self.session.0.closed.store(true, Ordering::Release);
    }
}

/// One chunk being appended to a claimed session; it owns the claim until [`finish`](Self::finish)
/// gives it back. Its methods block (file I/O): call them where blocking is allowed, e.g. one
/// `spawn_blocking` per batch. Memory is bounded by the upload writer (see `upload_writer`).
pub struct ChunkAppend {
    claim: SessionClaim,
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
    /// The free-space reserve, checked every `SPACE_CHECK_EVERY` bytes received.
    space: FreeSpace,
    checked_at: u64,
}

/// How often a streaming chunk checks the free-space reserve (one `statvfs` each time).
const SPACE_CHECK_EVERY: u64 = 8 << 20;

impl ChunkAppend {
    /// Appends `batch` (hashing each byte once) and writes it to the file. After a failure,
    /// later batches are dropped and `finish` reports the failure; returns whether the caller
    /// should go on sending.
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
        if self.received >= self.checked_at + SPACE_CHECK_EVERY {
            self.checked_at = self.received;
            if let Err(e) = self.space.ensure_now() {
                self.failed = Some(e);
                return false;
            }
        }
        if let Err(e) = self.writer.write_gathered() {
            self.failed = Some(e);
            return false;
        }
        if self.declared.is_none() {
            self.claim.session.0.written.store(self.start + self.received, Ordering::Release);
        }
        true
    }

    /// The session being appended to.
    pub fn session(&self) -> &UploadSession {
        &self.claim.session
    }

    /// Ends the chunk: gives the claim back with the session's new length, or why the chunk is
    /// not (wholly) in the upload. On every path `offset` and the hash describe the file exactly
    /// afterwards, so the client can resume from `offset`.
    pub fn finish(self) -> (SessionClaim, Result<u64>) {
        let ChunkAppend { mut claim, path, disk, writer, hasher, start, declared, received, failed, .. } = self;
        let written = match failed {
            Some(e) => Err(e),
            None => writer.finish(),
        };
        let file_length = || fs::metadata(&path).map(|m| m.len()).unwrap_or(start);
        let result = match (written, declared) {
            // Out of space: the chunk's bytes go (the space comes back at once); the client
            // resumes from the chunk's start once there is room.
            (Err(e), _) if e.is_out_of_space() => {
                claim.state.hasher = None;
                match disk.truncate(&path, start) {
                    Ok(()) => claim.set_offset(start),
                    Err(_) => claim.set_offset(file_length()),
                }
                Err(e)
            }
            (Err(e), _) => {
                // What reached the file is unknown: re-derive both from the file next time.
                claim.state.hasher = None;
                claim.set_offset(file_length());
                Err(e)
            }
            // A declared chunk that is not whole, however its body ended.
            (Ok(()), Some(declared)) if received != declared => {
                claim.state.hasher = None;
                match disk.truncate(&path, start) {
                    Ok(()) => {
                        claim.set_offset(start);
                        Err(StoreError::ChunkLength { received, declared })
                    }
                    Err(e) => {
                        claim.set_offset(file_length());
                        Err(e)
                    }
                }
            }
            (Ok(()), _) => {
                claim.state.hasher = Some(hasher);
                claim.set_offset(start + received);
                Ok(start + received)
            }
        };
        (claim, result)
    }
}

/// Read buffer for re-hashing a partial upload.
const READ_BUFFER: usize = 1 << 20;

pub(super) fn hash_file(path: &Path, algorithm: Algorithm) -> Result<(Hasher, u64)> {
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
        self.check_quota_room(repo)?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.disk.create_new(&self.paths.upload(&id))?;
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.insert(id.as_str(), (repo.as_str(), algorithm.name(), now_unix()))?;
        self.disk.commit(txn)?;
        let session = UploadSession::new(id.clone(), repo.clone(), algorithm, Some(algorithm.hasher()), 0);
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
        let session = UploadSession::new(id.clone(), repo.clone(), algorithm, None, offset);
        sessions.insert(id, session.clone());
        Ok(session)
    }

    /// Starts appending a chunk at the end of the claimed session. `start` is where the client
    /// says the chunk begins and `declared` its length (a `Content-Range`), if it said so;
    /// `announced` is the request body's length if known in advance (space is allocated for it).
    /// Blocking (may re-hash the file after a restart). A refusal gives the claim back.
    pub fn begin_append(
        &self,
        mut claim: SessionClaim,
        start: Option<u64>,
        declared: Option<u64>,
        announced: Option<u64>,
    ) -> std::result::Result<ChunkAppend, (SessionClaim, StoreError)> {
        if let Err(e) = self.ensure_free_space(announced.unwrap_or(0)) {
            return Err((claim, e));
        }
        if let Some(start) = start.filter(|&s| s != claim.state.offset) {
            let offset = claim.state.offset;
            return Err((claim, StoreError::ChunkOutOfOrder { start, offset }));
        }
        let path = self.paths.upload(claim.id());
        let hasher = match claim.state.take_hasher(&path, claim.session.0.algorithm) {
            Ok(h) => h,
            Err(e) => return Err((claim, e)),
        };
        let offset = claim.state.offset;
        claim.set_offset(offset);
        let writer = match UploadWriter::new(self.disk.clone(), &path, offset, announced) {
            Ok(w) => w,
            Err(e) => {
                claim.state.hasher = Some(hasher);
                return Err((claim, e));
            }
        };
        Ok(ChunkAppend {
            claim,
            path,
            disk: self.disk.clone(),
            writer,
            hasher,
            start: offset,
            declared,
            received: 0,
            failed: None,
            space: self.space.clone(),
            checked_at: 0,
        })
    }

    /// Verifies the session's content against `expected` and commits it as a blob of the
    /// session's repository. On a mismatch the session is cancelled (nothing becomes visible).
    pub fn commit_upload(&self, mut claim: SessionClaim, expected: &Digest) -> Result<()> {
        let path = self.paths.upload(claim.id());
        let algorithm = claim.session.0.algorithm;
        let (id, repo) = (claim.id().to_string(), claim.repo().clone());
        let state = &mut *claim.state;
        let actual = if expected.algorithm() == algorithm {
            let hasher = state.take_hasher(&path, algorithm)?;
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
            let guard = self.lock();
            if let Err(e) = self.check_quota(&repo, expected, state.offset) {
                // Its bytes could never be committed: the session ends.
                drop(guard);
                self.cancel_upload(claim)?;
                return Err(e);
            }
            let healing = self.prepare_heal(expected)?;
            self.place_global(&path, expected)?;
            self.link_into_repo(&repo, expected)?;
            let txn = self.db.begin_write()?;
            Self::record_repo_blob(&txn, &repo, expected, state.offset)?;
            if healing {
                self.finish_heal(&txn, expected)?;
            }
            txn.open_table(UPLOADS)?.remove(id.as_str())?;
            self.disk.commit(txn)?;
        }
        claim.close();
        self.sessions_lock().remove(&id);
        if let Err(e) = self.disk.remove_if_exists(&path) {
            log::warn!("committed upload {id}: its file stays until the next start: {e}");
        }
        Ok(())
    }

    /// Ends a session: forgets it and removes its file.
    pub fn cancel_upload(&self, mut claim: SessionClaim) -> Result<()> {
        self.forget(&mut claim)?;
        self.disk.remove_if_exists(&self.paths.upload(claim.id()))
    }

    /// Ends a session's life in memory and in metadata (not its file). Requests waiting for
    /// the session see `closed`; later lookups find no record.
    fn forget(&self, claim: &mut SessionClaim) -> Result<()> {
        claim.close();
        let mut sessions = self.sessions_lock();
        sessions.remove(claim.id());
        let txn = self.db.begin_write()?;
        txn.open_table(UPLOADS)?.remove(claim.id())?;
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
