//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, single-request push or mount),
//! `PATCH` (chunked with `Content-Range`, or streamed), `PUT ?digest=` (commit), `GET` (status),
//! `DELETE` (cancel).
//!
//! A request body is gathered into batches on the connection's task; each batch is written (and
//! hashed, each byte once) by the store's `ChunkAppend` on a blocking thread for the time of
//! that write, while the next batch arrives. A batch is written when it reaches `BATCH` bytes or
//! has waited `BATCH_AGE`, so an upload holds at most two batches and a client that stalls holds
//! neither a thread nor more than what it sent in the last `BATCH_AGE`. The store rolls back a
//! short chunk and reports the session's length.
//!
//! While a chunk streams in, `GET` of the session answers at once with what the file holds, and
//! `DELETE` stops the chunk (its request then answers `BLOB_UPLOAD_UNKNOWN`) and cancels.

use std::time::Duration;

use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::task::JoinHandle;

use super::{blocking, finish, reply, HttpResult};
use crate::core::access::Action;
use crate::core::range::ContentRange;
use crate::core::{Algorithm, Digest, ErrorCode, RepoName};
use crate::http::body::ResponseBody;
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::{CHUNK_MIN_LENGTH, CONTENT_DIGEST, UPLOAD_UUID};
use crate::store::{ChunkAppend, SessionClaim, StoreError, UploadSession};

/// Advertised in `OCI-Chunk-Min-Length`: a hint for efficient chunking. Smaller chunks are
/// still accepted.
pub const CHUNK_MIN: u64 = 1024 * 1024;
/// Body bytes gathered before they are written. Chunks are batched on the connection's side
/// because a slow client delivers many small chunks, and one thread wake-up per chunk cost more
/// CPU than the data itself (a 4 GiB PUT from a client reading from disk: ~16,000 chunks).
const BATCH: usize = 1 << 20;
/// The longest bytes wait in a batch before they are written, whatever the batch's size.
const BATCH_AGE: Duration = Duration::from_millis(100);

/// How a body stopped being read.
enum Stop {
    /// The body ended, was cut off, or a write failed (`finish` says which).
    Ended,
    Cancelled,
}

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn session_url(ctx: &Ctx<'_>, repo: &RepoName, id: &str) -> String {
    ctx.url(&format!("/v2/{repo}/blobs/uploads/{id}"))
}

/// 202 with the session's `Location`, `Range` and id.
fn accepted(ctx: &Ctx<'_>, claim: &SessionClaim) -> HttpResult {
    finish(
        reply(StatusCode::ACCEPTED)
            .header(header::LOCATION, session_url(ctx, claim.repo(), claim.id()))
            .header(header::RANGE, range_header(claim.offset()))
            .header(UPLOAD_UUID, claim.id())
            .header(CHUNK_MIN_LENGTH, CHUNK_MIN)
            .header(header::CONTENT_LENGTH, 0),
        ResponseBody::empty(),
    )
}

/// 201 for a committed blob.
fn created(ctx: &Ctx<'_>, repo: &RepoName, digest: &Digest) -> HttpResult {
    finish(
        reply(StatusCode::CREATED)
            .header(header::LOCATION, ctx.url(&format!("/v2/{repo}/blobs/{digest}")))
            .header(CONTENT_DIGEST, digest.as_str())
            .header(header::CONTENT_LENGTH, 0),
        ResponseBody::empty(),
    )
}

/// The algorithm of a session: `digest-algorithm`, sha256 by default.
fn algorithm(ctx: &Ctx<'_>) -> Result<Algorithm, HttpError> {
    match ctx.query("digest-algorithm") {
        None => Ok(Algorithm::Sha256),
        Some(name) => Algorithm::from_name(name)
            .map_err(|_| HttpError::new(ErrorCode::DigestInvalid, format!("unsupported digest algorithm {name:?}"))),
    }
}

pub async fn start(ctx: &Ctx<'_>, name: &str, body: Incoming) -> HttpResult {
    let repo = ctx.repo(name)?;
    if let Some(mount) = ctx.query("mount") {
        let digest = Digest::parse(mount)?;
        // A mount copies access: it needs pull on the source (else a normal upload follows).
        if let Some(from) = ctx.query("from").filter(|from| ctx.may(Action::Pull, from)) {
            let from = ctx.repo(from)?;
            let store = ctx.state.store.clone();
            let (r, d) = (repo.clone(), digest.clone());
            if blocking(move || store.mount_blob(&from, &r, &d)).await? {
                return created(ctx, &repo, &digest);
            }
        }
    }
    let digest = ctx.query("digest").map(Digest::parse).transpose()?;
    let alg = match &digest {
        Some(d) => d.algorithm(),
        None => algorithm(ctx)?,
    };
    let store = ctx.state.store.clone();
    let r = repo.clone();
    let session = blocking(move || store.create_upload(&r, alg)).await?;
    let claim = session.claim().await?;
    match digest {
        // Single-request push: the body is the whole blob.
        Some(digest) => {
            let (claim, appended) = append(ctx, claim, None, body).await?;
            if let Err(e) = appended {
                let store = ctx.state.store.clone();
                blocking(move || store.cancel_upload(claim)).await?;
                return Err(e);
            }
            commit(ctx, claim, digest).await
        }
        None => accepted(ctx, &claim),
    }
}

/// Streams the request body into the session as one chunk (`range`: its declared place).
/// Returns the claim with the outcome: the session's new length, or why the chunk is not (wholly)
/// in the upload.
async fn append(
    ctx: &Ctx<'_>,
    claim: SessionClaim,
    range: Option<ContentRange>,
    mut body: Incoming,
) -> Result<(SessionClaim, Result<u64, HttpError>), HttpError> {
    let announced = http_body::Body::size_hint(&body).exact();
    let _permit = match announced {
        Some(0) => None,
        _ => Some(ctx.state.bounds.start_transfer()?),
    };
    let store = ctx.state.store.clone();
    let session = claim.session().clone();
    let begun = tokio::task::spawn_blocking(move || {
        store.begin_append(claim, range.map(|r| r.start), range.map(|r| r.len()), announced)
    })
    .await
    .map_err(HttpError::internal)?;
    let mut writer = match begun {
        Ok(append) => BatchWriter::new(append),
        Err((claim, e)) => return Ok((claim, Err(HttpError::from(e)))),
    };
    let mut body_error = None;
    let (mut batch, mut batch_len) = (Vec::new(), 0);
    let deadline = tokio::time::sleep(BATCH_AGE);
    tokio::pin!(deadline);
    let stop = loop {
        tokio::select! {
            biased;
            () = session.cancel_requested() => break Stop::Cancelled,
            () = &mut deadline, if batch_len > 0 => {
                batch_len = 0;
                if !writer.write(std::mem::take(&mut batch)).await? {
                    break Stop::Ended;
                }
            }
            frame = body.frame() => match frame {
                None => break Stop::Ended,
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    if batch_len == 0 {
                        deadline.as_mut().reset(tokio::time::Instant::now() + BATCH_AGE);
                    }
                    batch_len += data.len();
                    batch.push(data);
                    if batch_len >= BATCH {
                        batch_len = 0;
                        if !writer.write(std::mem::take(&mut batch)).await? {
                            break Stop::Ended; // the write failed; `finish` says why
                        }
                    }
                }
                Some(Err(e)) => {
                    body_error = Some(e);
                    break Stop::Ended;
                }
            },
        }
    };
    // What arrived before the end (or an interruption) is written too: a stream keeps it (the
    // client may resume), a declared chunk is whole or cut back off (see `store::upload`).
    if matches!(stop, Stop::Ended) && !batch.is_empty() {
        writer.write(batch).await?;
    }
    let (claim, appended) = writer.finish().await?;
    let result = match (stop, appended, body_error) {
        (Stop::Cancelled, _, _) => Err(HttpError::new(ErrorCode::BlobUploadUnknown, "the upload was cancelled")),
        // A body cut off is what went wrong (a declared chunk cut short is dropped because of it).
        (_, _, Some(e)) => Err(HttpError::new(ErrorCode::BlobUploadInvalid, format!("request body interrupted: {e}"))),
        (_, Err(e), None) => Err(HttpError::from(e)),
        (_, Ok(n), None) => Ok(n),
    };
    Ok((claim, result))
}

/// Writes batches with a `ChunkAppend` on blocking threads, one write in flight at a time (the
/// next batch is gathered meanwhile).
struct BatchWriter {
    idle: Option<ChunkAppend>,
    writing: Option<JoinHandle<(ChunkAppend, bool)>>,
}

impl BatchWriter {
    fn new(append: ChunkAppend) -> Self {
        BatchWriter { idle: Some(append), writing: None }
    }

    /// The append, once the write in flight (if any) is done; `false` if that write failed.
    async fn ready(&mut self) -> Result<(ChunkAppend, bool), HttpError> {
        if let Some(writing) = self.writing.take() {
            return writing.await.map_err(HttpError::internal);
        }
        self.idle.take().map(|a| (a, true)).ok_or_else(|| HttpError::internal("upload writer lost its append"))
    }

    /// Starts writing `batch` after the write in flight; `false` if a write failed (nothing more
    /// is written then).
    async fn write(&mut self, batch: Vec<Bytes>) -> Result<bool, HttpError> {
        let (mut append, ok) = self.ready().await?;
        if !ok {
            self.idle = Some(append);
            return Ok(false);
        }
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let ok = append.write(batch);
            (append, ok)
        }));
        Ok(true)
    }

    /// Waits for the last write and ends the chunk.
    async fn finish(mut self) -> Result<(SessionClaim, Result<u64, StoreError>), HttpError> {
        let (append, _) = self.ready().await?;
        tokio::task::spawn_blocking(move || append.finish()).await.map_err(HttpError::internal)
    }
}

/// A request dropped mid-chunk (hyper drops the request's future when its connection fails)
/// still ends its chunk as the contract says, so the session's offset, hash and file agree.
impl Drop for BatchWriter {
    fn drop(&mut self) {
        let (idle, writing) = (self.idle.take(), self.writing.take());
        if idle.is_none() && writing.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let append = match (idle, writing) {
                (Some(append), _) => append,
                (None, Some(writing)) => match writing.await {
                    Ok((append, _)) => append,
                    Err(_) => return,
                },
                (None, None) => return,
            };
            let _ = tokio::task::spawn_blocking(move || append.finish()).await;
        });
    }
}

async fn commit(ctx: &Ctx<'_>, claim: SessionClaim, digest: Digest) -> HttpResult {
    let store = ctx.state.store.clone();
    let d = digest.clone();
    let repo = claim.repo().clone();
    blocking(move || store.commit_upload(claim, &d)).await?;
    created(ctx, &repo, &digest)
}

/// Finds a session and waits for exclusive use of it; it may have been committed or cancelled
/// meanwhile by the request that held it.
async fn open(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<SessionClaim, HttpError> {
    Ok(find(ctx, name, id).await?.claim().await?)
}

/// Finds a session of the repository.
async fn find(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<UploadSession, HttpError> {
    let repo = ctx.repo(name)?;
    let store = ctx.state.store.clone();
    let id = id.to_string();
    blocking(move || store.upload(&repo, &id)).await
}

/// Reads a chunk's `Content-Range` and checks it against the session: it must start where the
/// upload ends (the store checks again; here the answer gets the session's headers).
fn chunk_range(ctx: &Ctx<'_>, claim: &SessionClaim) -> Result<Option<ContentRange>, HttpError> {
    let Some(h) = ctx.header(header::CONTENT_RANGE) else { return Ok(None) };
    let range = ContentRange::parse(h)
        .map_err(|_| HttpError::new(ErrorCode::BlobUploadInvalid, format!("malformed Content-Range {h:?}")))?;
    if range.start != claim.offset() {
        let refused = StoreError::ChunkOutOfOrder { start: range.start, offset: claim.offset() };
        return Err(HttpError::from(refused)
            .header(header::RANGE, range_header(claim.offset()))
            .header(header::LOCATION, session_url(ctx, claim.repo(), claim.id()))
            .header(UPLOAD_UUID, claim.id().to_string()));
    }
    if let Some(len) = ctx.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()) {
        if len != range.len() {
            return Err(HttpError::new(
                ErrorCode::SizeInvalid,
                format!("Content-Length {len} does not match Content-Range {h}"),
            ));
        }
    }
    Ok(Some(range))
}

/// Appends the request body as one chunk; an error means the chunk is not (wholly) in the upload.
async fn append_chunk(ctx: &Ctx<'_>, claim: SessionClaim, body: Incoming) -> Result<SessionClaim, HttpError> {
    let range = chunk_range(ctx, &claim)?;
    let (claim, appended) = append(ctx, claim, range, body).await?;
    appended?;
    Ok(claim)
}

pub async fn patch(ctx: &Ctx<'_>, name: &str, id: &str, body: Incoming) -> HttpResult {
    let claim = open(ctx, name, id).await?;
    let claim = append_chunk(ctx, claim, body).await?;
    accepted(ctx, &claim)
}

pub async fn put(ctx: &Ctx<'_>, name: &str, id: &str, body: Incoming) -> HttpResult {
    let digest = match ctx.query("digest") {
        Some(d) => Digest::parse(d)?,
        None => {
            return Err(HttpError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required to complete an upload",
            ))
        }
    };
    let claim = open(ctx, name, id).await?;
    let claim = append_chunk(ctx, claim, body).await?;
    commit(ctx, claim, digest).await
}

/// The session's state without claiming it: a `PATCH` streaming into it does not delay the
/// answer, which reports what the file holds so far.
pub async fn status(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let session = find(ctx, name, id).await?;
    let written = session.progress().ok_or(StoreError::UploadUnknown)?;
    finish(
        reply(StatusCode::NO_CONTENT)
            .header(header::LOCATION, session_url(ctx, session.repo(), session.id()))
            .header(header::RANGE, range_header(written))
            .header(UPLOAD_UUID, session.id())
            .header(CHUNK_MIN_LENGTH, CHUNK_MIN),
        ResponseBody::empty(),
    )
}

/// Cancels the session; a chunk streaming into it is stopped first (its request answers
/// `BLOB_UPLOAD_UNKNOWN`).
pub async fn cancel(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let session = find(ctx, name, id).await?;
    let claim = match session.try_claim() {
        Some(claim) => claim,
        None => {
            session.request_cancel();
            session.claim().await?
        }
    };
    let store = ctx.state.store.clone();
    blocking(move || store.cancel_upload(claim)).await?;
    finish(reply(StatusCode::NO_CONTENT).header(header::CONTENT_LENGTH, 0), ResponseBody::empty())
}
