//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, single-request push or mount),
//! `PATCH` (chunked with `Content-Range`, or streamed), `PUT ?digest=` (commit), `GET` (status),
//! `DELETE` (cancel).
//!
//! A request body is fed to the store's `ChunkAppend` on a blocking thread through a bounded
//! channel, so memory stays constant whatever the blob size; the store writes, hashes (each byte
//! once), rolls back a short chunk and reports the session's length.

use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{blocking, finish, reply, HttpResult};
use crate::core::access::Action;
use crate::core::range::ContentRange;
use crate::core::{Algorithm, Digest, ErrorCode, RepoName};
use crate::http::body::ResponseBody;
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::{CHUNK_MIN_LENGTH, CONTENT_DIGEST, UPLOAD_UUID};
use crate::store::{AppendEnd, SessionClaim, StoreError};

/// Advertised in `OCI-Chunk-Min-Length`: a hint for efficient chunking. Smaller chunks are
/// still accepted.
pub const CHUNK_MIN: u64 = 1024 * 1024;
/// Body bytes handed to the writer thread at a time. Chunks are batched on the connection's side
/// because a slow client delivers many small chunks, and one thread wake-up per chunk cost more
/// CPU than the data itself (a 4 GiB PUT from a client reading from disk: ~16,000 chunks).
const BATCH: usize = 1 << 20;
/// Batches in flight between the connection and the writer thread. With the batch being filled
/// and the one being written, an upload holds at most ~4 MiB (see `keep_freed_buffers` in main.rs).
const WRITE_AHEAD: usize = 2;

/// What the connection hands to the writer thread.
enum Feed {
    Data(Vec<Bytes>),
    /// The body is over; nothing follows.
    End(AppendEnd),
}

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

fn session_url(ctx: &Ctx<'_>, claim: &SessionClaim) -> String {
    ctx.url(&format!("/v2/{}/blobs/uploads/{}", claim.repo(), claim.id()))
}

/// 202 with the session's `Location`, `Range` and id.
fn accepted(ctx: &Ctx<'_>, claim: &SessionClaim) -> HttpResult {
    finish(
        reply(StatusCode::ACCEPTED)
            .header(header::LOCATION, session_url(ctx, claim))
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
    mut claim: SessionClaim,
    range: Option<ContentRange>,
    mut body: Incoming,
) -> Result<(SessionClaim, Result<u64, HttpError>), HttpError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Feed>(WRITE_AHEAD);
    let announced = http_body::Body::size_hint(&body).exact();
    let store = ctx.state.store.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let appended = (|| {
            let mut append =
                store.begin_append(&mut claim, range.map(|r| r.start), range.map(|r| r.len()), announced)?;
            // A sender dropped without `End` is a request that went away mid-body.
            let mut end = AppendEnd::Interrupted;
            while let Some(feed) = rx.blocking_recv() {
                match feed {
                    Feed::Data(batch) => {
                        if !append.write(batch) {
                            break; // the write failed; `finish` reports it
                        }
                    }
                    Feed::End(e) => {
                        end = e;
                        break;
                    }
                }
            }
            append.finish(end)
        })();
        (claim, appended)
    });
    let mut body_error = None;
    let (mut batch, mut batch_len) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(data) = f.into_data() {
                    batch_len += data.len();
                    batch.push(data);
                    if batch_len >= BATCH {
                        batch_len = 0;
                        if tx.send(Feed::Data(std::mem::take(&mut batch))).await.is_err() {
                            break; // the writer stopped; its error is reported below
                        }
                    }
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    // What arrived before the end (or an interruption) is written too: the client may resume.
    if !batch.is_empty() {
        let _ = tx.send(Feed::Data(batch)).await;
    }
    let end = if body_error.is_some() { AppendEnd::Interrupted } else { AppendEnd::Complete };
    let _ = tx.send(Feed::End(end)).await;
    drop(tx);
    let (claim, appended) = writer.await.map_err(HttpError::internal)?;
    let result = match (appended, body_error) {
        (Err(e), _) => Err(HttpError::from(e)),
        (Ok(_), Some(e)) => Err(HttpError::new(ErrorCode::BlobUploadInvalid, format!("request body interrupted: {e}"))),
        (Ok(n), None) => Ok(n),
    };
    Ok((claim, result))
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
    let repo = ctx.repo(name)?;
    let store = ctx.state.store.clone();
    let id = id.to_string();
    let session = blocking(move || store.upload(&repo, &id)).await?;
    Ok(session.claim().await?)
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
            .header(header::LOCATION, session_url(ctx, claim))
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

pub async fn status(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let claim = open(ctx, name, id).await?;
    finish(
        reply(StatusCode::NO_CONTENT)
            .header(header::LOCATION, session_url(ctx, &claim))
            .header(header::RANGE, range_header(claim.offset()))
            .header(UPLOAD_UUID, claim.id())
            .header(CHUNK_MIN_LENGTH, CHUNK_MIN),
        ResponseBody::empty(),
    )
}

pub async fn cancel(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let claim = open(ctx, name, id).await?;
    let store = ctx.state.store.clone();
    blocking(move || store.cancel_upload(claim)).await?;
    finish(reply(StatusCode::NO_CONTENT).header(header::CONTENT_LENGTH, 0), ResponseBody::empty())
}
