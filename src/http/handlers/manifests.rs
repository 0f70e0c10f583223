//! `PUT`/`GET`/`HEAD`/`DELETE /v2/<name>/manifests/<reference>`.

use http::{header, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{blocking, finish, reply, HttpResult};
use crate::core::manifest::MAX_MANIFEST_BYTES;
use crate::core::name::ReferenceError;
use crate::core::{Algorithm, Digest, ErrorCode, Manifest, Reference, Tag};
use crate::http::body::ResponseBody;
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::{CONTENT_DIGEST, OCI_SUBJECT};

fn reference(s: &str) -> Result<Reference, HttpError> {
    Reference::parse(s).map_err(|e| match e {
        ReferenceError::Tag(t) => HttpError::new(ErrorCode::TagInvalid, t.to_string()),
        ReferenceError::Digest(d) => d.into(),
    })
}

/// Why a reference is neither a tag nor a digest, in words.
fn reference_error(e: &ReferenceError) -> String {
    match e {
        ReferenceError::Tag(t) => t.to_string(),
        ReferenceError::Digest(d) => d.to_string(),
    }
}

fn too_large() -> HttpError {
    HttpError::new(ErrorCode::ManifestInvalid, format!("manifest is larger than {} bytes", MAX_MANIFEST_BYTES))
        .status(413)
}

/// Reads the whole body, refusing more than `MAX_MANIFEST_BYTES`.
async fn read_capped(ctx: &Ctx<'_>, mut body: Incoming) -> Result<Vec<u8>, HttpError> {
    if ctx
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_MANIFEST_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| HttpError::new(ErrorCode::ManifestInvalid, format!("request body interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_MANIFEST_BYTES {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

pub async fn put(ctx: &Ctx<'_>, name: &str, reference_text: &str, body: Incoming) -> HttpResult {
    let repo = ctx.repo(name)?;
    let reference = reference(reference_text)?;
    let mut tags = Vec::new();
    for t in ctx.query_all("tag") {
        tags.push(Tag::parse(t).map_err(|e| HttpError::new(ErrorCode::TagInvalid, format!("{t:?}: {e}")))?);
    }
    let bytes = read_capped(ctx, body).await?;
    let manifest = Manifest::parse(ctx.header(header::CONTENT_TYPE), &bytes)?;
    for url in &manifest.urls {
        if let Some(why) = ctx.settings.manifest_urls.refusal(url) {
            return Err(HttpError::new(ErrorCode::ManifestInvalid, format!("layer URL {url:?} refused: {why}"))
                .detail(serde_json::json!({ "url": url })));
        }
    }
    let digest = match &reference {
        Reference::Digest(expected) => {
            let actual = Digest::of(expected.algorithm(), &bytes);
            if &actual != expected {
                return Err(HttpError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest has digest {actual}, not {expected}"),
                ));
            }
            actual
        }
        Reference::Tag(tag) => {
            tags.insert(0, tag.clone());
            Digest::of(Algorithm::Sha256, &bytes)
        }
    };
    let store = ctx.state.store.clone();
    let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
    {
        let (repo, digest) = (repo.clone(), digest.clone());
        blocking(move || store.put_manifest(&repo, &digest, &bytes, &manifest, &tags)).await?;
    }
    let mut b = reply(StatusCode::CREATED)
        .header(header::LOCATION, ctx.url(&format!("/v2/{repo}/manifests/{digest}")))
        .header(CONTENT_DIGEST, digest.as_str())
        .header(header::CONTENT_LENGTH, 0);
    if let Some(s) = subject {
        b = b.header(OCI_SUBJECT, s.as_str());
    }
    finish(b, ResponseBody::empty())
}

pub async fn get(ctx: &Ctx<'_>, name: &str, reference_text: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    // No manifest can be stored under a reference that is neither a tag nor a digest: asking
    // for one is asking for an unknown manifest (as Distribution and the conformance suite
    // expect), while a PUT with it is refused as invalid.
    let reference = Reference::parse(reference_text).map_err(|e| {
        HttpError::new(
            ErrorCode::ManifestUnknown,
            format!("no manifest can have the reference {reference_text:?} ({})", reference_error(&e)),
        )
    })?;
    let store = ctx.state.store.clone();
    let head = ctx.method == Method::HEAD;
    let (stored, bytes) = blocking(move || {
        let stored = match &reference {
            Reference::Tag(t) => store.resolve_tag(&repo, t)?,
            Reference::Digest(d) => store.manifest(&repo, d)?,
        };
        let bytes = if head { Vec::new() } else { store.manifest_bytes(&stored.digest)? };
        Ok((stored, bytes))
    })
    .await?;
    let b = reply(StatusCode::OK)
        .header(header::CONTENT_TYPE, stored.record.media_type.as_str())
        .header(header::CONTENT_LENGTH, stored.record.size)
        .header(CONTENT_DIGEST, stored.digest.as_str())
        .header(header::ETAG, format!("\"{}\"", stored.digest));
    finish(b, ResponseBody::full(bytes))
}

pub async fn delete(ctx: &Ctx<'_>, name: &str, reference_text: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    let reference = reference(reference_text)?;
    let store = ctx.state.store.clone();
    blocking(move || match &reference {
        Reference::Tag(t) => store.delete_tag(&repo, t),
        Reference::Digest(d) => store.delete_manifest(&repo, d),
    })
    .await?;
    finish(reply(StatusCode::ACCEPTED).header(header::CONTENT_LENGTH, 0), ResponseBody::empty())
}
