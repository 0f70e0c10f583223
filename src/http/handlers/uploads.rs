//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, single-request push or mount),
//! `PATCH` (chunked with `Content-Range`, or streamed), `PUT ?digest=` (commit), `GET` (status),
//! `DELETE` (cancel).
//!
//! Bodies are streamed to a blocking writer thread through a bounded channel, so memory stays
//! constant whatever the blob size, and each byte is hashed exactly once on its way to disk.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{blocking, finish, reply, HttpResult};
use crate::core::access::Action;
use crate::core::range::ContentRange;
use crate::core::{Algorithm, Digest, ErrorCode, RepoName};
use crate::http::body::ResponseBody;
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::{CHUNK_MIN_LENGTH, CONTENT_DIGEST, UPLOAD_UUID};
use crate::store::UploadSession;

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

type Session = OwnedMutexGuard<UploadSession>;

fn range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// 202 with the session's `Location`, `Range` and id.
fn accepted(ctx: &Ctx<'_>, session: &UploadSession) -> HttpResult {
    let location = ctx.url(&format!("/v2/{}/blobs/uploads/{}", session.repo, session.id));
    finish(
        reply(StatusCode::ACCEPTED)
            .header(header::LOCATION, location)
            .header(header::RANGE, range_header(session.offset))
            .header(UPLOAD_UUID, session.id.as_str())
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
    let session = session.lock_owned().await;
    match digest {
        // Single-request push: the body is the whole blob.
        Some(digest) => {
            let (session, res) = append(ctx, session, body).await?;
            if let Err(e) = res {
                let store = ctx.state.store.clone();
                let mut session = session;
                blocking(move || store.cancel_upload(&mut session)).await?;
                return Err(e);
            }
            commit(ctx, session, digest).await
        }
        None => accepted(ctx, &session),
    }
}

/// Streams the request body onto the end of the session's file.
async fn append(
    ctx: &Ctx<'_>,
    mut session: Session,
    mut body: Incoming,
) -> Result<(Session, Result<u64, HttpError>), HttpError> {
    let path = ctx.state.store.paths().upload(&session.id);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(WRITE_AHEAD);
    let announced = http_body::Body::size_hint(&body).exact();
    let writer = tokio::task::spawn_blocking(move || {
        let r = session.append_stream(&path, &mut rx, announced);
        (session, r)
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
                        if tx.send(std::mem::take(&mut batch)).await.is_err() {
                            break; // writer failed; its error is reported below
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
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let (session, written) = writer.await.map_err(HttpError::internal)?;
    let result = match (written, body_error) {
        (Err(e), _) => Err(HttpError::internal(format!("writing upload {}: {e}", session.id))),
        (Ok(_), Some(e)) => Err(HttpError::new(ErrorCode::BlobUploadInvalid, format!("request body interrupted: {e}"))),
        (Ok(n), None) => Ok(n),
    };
    Ok((session, result))
}

async fn commit(ctx: &Ctx<'_>, session: Session, digest: Digest) -> HttpResult {
    let store = ctx.state.store.clone();
    let d = digest.clone();
    let repo = session.repo.clone();
    blocking(move || {
        let mut session = session;
        store.commit_upload(&mut session, &d)
    })
    .await?;
    created(ctx, &repo, &digest)
}

async fn session(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<Arc<Mutex<UploadSession>>, HttpError> {
    let repo = ctx.repo(name)?;
    let store = ctx.state.store.clone();
    let id = id.to_string();
    blocking(move || store.upload(&repo, &id)).await
}

/// Finds a session and waits for exclusive use of it; it may have been committed or cancelled
/// meanwhile by the request that held it.
async fn open(ctx: &Ctx<'_>, name: &str, id: &str) -> Result<Session, HttpError> {
    let session = session(ctx, name, id).await?.lock_owned().await;
    if session.closed {
        return Err(HttpError::code(ErrorCode::BlobUploadUnknown));
    }
    Ok(session)
}

/// Checks a chunk's `Content-Range` against the session: it must start where the upload ends.
fn check_range(ctx: &Ctx<'_>, session: &UploadSession) -> Result<Option<ContentRange>, HttpError> {
    let Some(h) = ctx.header(header::CONTENT_RANGE) else { return Ok(None) };
    let range = ContentRange::parse(h)
        .map_err(|_| HttpError::new(ErrorCode::BlobUploadInvalid, format!("malformed Content-Range {h:?}")))?;
    if range.start != session.offset {
        return Err(HttpError::new(
            ErrorCode::BlobUploadInvalid,
            format!("chunk starts at {} but the upload has {} bytes", range.start, session.offset),
        )
        .status(416)
        .header(header::RANGE, range_header(session.offset))
        .header(header::LOCATION, ctx.url(&format!("/v2/{}/blobs/uploads/{}", session.repo, session.id)))
        .header(UPLOAD_UUID, session.id.clone()));
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

/// Appends a chunk, enforcing its declared range: a chunk that arrives short is cut back off,
/// so that a chunk is either wholly in the upload or not at all.
async fn append_chunk(ctx: &Ctx<'_>, session: Session, body: Incoming) -> Result<Session, HttpError> {
    let range = check_range(ctx, &session)?;
    let before = session.offset;
    let (mut session, res) = append(ctx, session, body).await?;
    let written = res?;
    if let Some(range) = range {
        if written != range.len() {
            let path = ctx.state.store.paths().upload(&session.id);
            let truncate = std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(before));
            session.hasher = None;
            session.offset = before;
            if let Err(e) = truncate {
                return Err(HttpError::internal(format!("truncating upload {}: {e}", session.id)));
            }
            return Err(HttpError::new(
                ErrorCode::SizeInvalid,
                format!("chunk has {written} bytes, Content-Range says {}", range.len()),
            )
            .status(416));
        }
    }
    Ok(session)
}

pub async fn patch(ctx: &Ctx<'_>, name: &str, id: &str, body: Incoming) -> HttpResult {
    let session = open(ctx, name, id).await?;
    let session = append_chunk(ctx, session, body).await?;
    accepted(ctx, &session)
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
    let session = open(ctx, name, id).await?;
    let session = append_chunk(ctx, session, body).await?;
    commit(ctx, session, digest).await
}

pub async fn status(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let session = open(ctx, name, id).await?;
    finish(
        reply(StatusCode::NO_CONTENT)
            .header(header::LOCATION, ctx.url(&format!("/v2/{}/blobs/uploads/{}", session.repo, session.id)))
            .header(header::RANGE, range_header(session.offset))
            .header(UPLOAD_UUID, session.id.as_str())
            .header(CHUNK_MIN_LENGTH, CHUNK_MIN),
        ResponseBody::empty(),
    )
}

pub async fn cancel(ctx: &Ctx<'_>, name: &str, id: &str) -> HttpResult {
    let mut session = open(ctx, name, id).await?;
    let store = ctx.state.store.clone();
    blocking(move || store.cancel_upload(&mut session)).await?;
    finish(reply(StatusCode::NO_CONTENT).header(header::CONTENT_LENGTH, 0), ResponseBody::empty())
}
