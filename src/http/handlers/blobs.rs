//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`, with single-range requests.

use http::{header, Method, StatusCode};

use super::{blocking, finish, reply, HttpResult};
use crate::core::range::{parse_range, RangeError};
use crate::core::{Digest, ErrorCode};
use crate::http::body::{BlobBody, ResponseBody};
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::CONTENT_DIGEST;

pub async fn get(ctx: &Ctx<'_>, name: &str, digest: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    let digest = Digest::parse(digest)?;
    let store = ctx.state.store.clone();
    let blob = {
        let (repo, digest) = (repo.clone(), digest.clone());
        blocking(move || store.open_blob(&repo, &digest)).await?
    };
    let size = blob.size();
    let (status, start, len) = match ctx.header(header::RANGE) {
        None => (StatusCode::OK, 0, size),
        Some(r) => match parse_range(r, size) {
            Ok(range) => (StatusCode::PARTIAL_CONTENT, range.start, range.len()),
            // RFC 9110: a server may ignore a range it cannot parse.
            Err(RangeError::Malformed) => (StatusCode::OK, 0, size),
            Err(RangeError::Unsatisfiable) => {
                return Err(HttpError::new(
                    ErrorCode::RangeInvalid,
                    format!("requested range not satisfiable: {r:?} for a blob of {size} bytes"),
                )
                .header(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
        },
    };
    let mut b = reply(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(CONTENT_DIGEST, digest.as_str())
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "max-age=31536000");
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", start, start + len - 1));
    }
    let body = if ctx.method == Method::HEAD || len == 0 {
        ResponseBody::empty()
    } else {
        let permit = ctx.state.bounds.start_transfer()?;
        ResponseBody::Blob(Box::new(BlobBody::new(blob, start, len, permit)))
    };
    finish(b, body)
}

pub async fn delete(ctx: &Ctx<'_>, name: &str, digest: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    let digest = Digest::parse(digest)?;
    let store = ctx.state.store.clone();
    blocking(move || store.delete_blob(&repo, &digest)).await?;
    finish(reply(StatusCode::ACCEPTED).header(header::CONTENT_LENGTH, 0), ResponseBody::empty())
}
