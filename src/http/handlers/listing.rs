//! Listings: `GET /v2/_catalog`, `GET /v2/<name>/tags/list` (both with `n`/`last` pagination
//! and RFC 5988 `Link` headers) and `GET /v2/<name>/referrers/<digest>` (in pages of at most
//! `REFERRERS_PAGE_BYTES` of descriptors, with a `Link` to the next).

use http::{header, StatusCode};

use super::{blocking, finish, reply, HttpResult};
use crate::core::access::Action;
use crate::core::manifest::{Descriptor, ImageIndex, OCI_INDEX};
use crate::core::{Digest, ErrorCode};
use crate::http::body::ResponseBody;
use crate::http::context::Ctx;
use crate::http::error::HttpError;
use crate::http::query;
use crate::http::OCI_FILTERS_APPLIED;
use crate::store::Page;

/// Parses `n` (absent = everything).
fn page_size(ctx: &Ctx<'_>) -> Result<Option<usize>, HttpError> {
    match ctx.query("n") {
        None | Some("") => Ok(None),
        Some(n) => n
            .parse::<usize>()
            .map(Some)
            .map_err(|_| HttpError::new(ErrorCode::Unsupported, format!("n={n:?} is not a number")).status(400)),
    }
}

fn json_page(ctx: &Ctx<'_>, path: &str, n: Option<usize>, page: &Page, body: serde_json::Value) -> HttpResult {
    let mut b = reply(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        let prefix = &ctx.state.config.prefix;
        b = b.header(header::LINK, format!("<{prefix}{path}?n={n}&last={}>; rel=\"next\"", query::encode(last)));
    }
    let bytes = serde_json::to_vec(&body).map_err(HttpError::internal)?;
    finish(b.header(header::CONTENT_LENGTH, bytes.len()), ResponseBody::full(bytes))
}

pub async fn catalog(ctx: &Ctx<'_>) -> HttpResult {
    let n = page_size(ctx)?;
    let last = ctx.query("last").map(str::to_string);
    let store = ctx.state.store.clone();
    // Only what the caller may pull is listed (pagination counts listed names only).
    let (settings, identity) = (ctx.settings.clone(), ctx.identity.clone());
    let visible = move |repo: &str| settings.access.allows(&identity, Action::Pull, repo);
    let page = blocking(move || store.catalog(n, last.as_deref(), &visible)).await?;
    json_page(ctx, "/v2/_catalog", n, &page, serde_json::json!({ "repositories": page.items }))
}

pub async fn tags(ctx: &Ctx<'_>, name: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    let n = page_size(ctx)?;
    let last = ctx.query("last").map(str::to_string);
    let store = ctx.state.store.clone();
    let r = repo.clone();
    let page = blocking(move || store.tags(&r, n, last.as_deref())).await?;
    json_page(
        ctx,
        &format!("/v2/{repo}/tags/list"),
        n,
        &page,
        serde_json::json!({ "name": repo.as_str(), "tags": page.items }),
    )
}

/// The most descriptor JSON one referrers response carries; more follow on the next page
/// (`Link: <...?last=DIGEST>; rel="next"`, as the distribution-spec allows).
const REFERRERS_PAGE_BYTES: usize = 1 << 20;

pub async fn referrers(ctx: &Ctx<'_>, name: &str, digest: &str) -> HttpResult {
    let repo = ctx.repo(name)?;
    let subject = Digest::parse(digest)?;
    let filter = ctx.query("artifactType").map(str::to_string);
    let after = ctx.query("last").map(Digest::parse).transpose()?;
    let store = ctx.state.store.clone();
    let (r, s, f) = (repo.clone(), subject.clone(), filter.clone());
    let page =
        blocking(move || store.referrers(&r, &s, f.as_deref(), after.as_ref(), REFERRERS_PAGE_BYTES, json_length))
            .await?;
    let body = serde_json::to_vec(&ImageIndex::new(page.manifests)).map_err(HttpError::internal)?;
    let mut b =
        reply(StatusCode::OK).header(header::CONTENT_TYPE, OCI_INDEX).header(header::CONTENT_LENGTH, body.len());
    if let Some(last) = page.next {
        let mut next = format!("{}/v2/{repo}/referrers/{subject}?last={last}", ctx.state.config.prefix);
        if let Some(f) = &filter {
            next.push_str(&format!("&artifactType={}", query::encode(f)));
        }
        b = b.header(header::LINK, format!("<{next}>; rel=\"next\""));
    }
    if filter.is_some() {
        b = b.header(OCI_FILTERS_APPLIED, "artifactType");
    }
    finish(b, ResponseBody::full(body))
}

/// The length of a descriptor's JSON, counted without building it.
fn json_length(descriptor: &Descriptor) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; a descriptor that would not serialize weighs nothing
    // here and fails the response's own serialization.
    let _ = serde_json::to_writer(&mut count, descriptor);
    count.0
}
