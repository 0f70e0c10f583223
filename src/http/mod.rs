//! The OCI Distribution API over hyper.
//!
//! `server` accepts connections, `router` maps paths to routes, `handlers` implement them on
//! top of `store::Store`, and `error` turns every failure into OCI error JSON exactly once.

pub mod body;
pub mod error;
pub mod handlers;
pub mod router;
pub mod server;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Config;
use crate::core::{Digest, ErrorCode, RepoName};
use crate::store::{Store, StoreError};
use body::ResponseBody;
use error::HttpError;
use router::Route;

pub type HttpResult = Result<Response<ResponseBody>, HttpError>;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// Shared by every connection.
pub struct State {
    pub store: Arc<Store>,
    pub config: Config,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
}

impl State {
    pub fn new(store: Arc<Store>, config: Config) -> State {
        let extra_headers = config
            .headers
            .iter()
            .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
            .collect();
        State { store, config, extra_headers }
    }
}

/// What a handler needs to know about the request besides its body.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub method: Method,
    pub headers: http::HeaderMap,
    pub query: Vec<(String, String)>,
}

impl Ctx<'_> {
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn query_all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.query.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, name: impl http::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A URL for `path` (which starts with `/v2/`) as clients should follow it: relative when
    /// `http.relativeurls`, else based on `http.host`, else on the request's forwarded or
    /// `Host` headers. `http.prefix` is always included.
    pub fn url(&self, path: &str) -> String {
        let cfg = &self.state.config;
        let prefix = cfg.prefix.as_str();
        if cfg.relative_urls {
            return format!("{prefix}{path}");
        }
        if let Some(host) = &cfg.host {
            return format!("{host}{prefix}{path}");
        }
        let first = |v: &str| v.split(',').next().unwrap_or("").trim().to_string();
        let proto = self
            .header("x-forwarded-proto")
            .map(first)
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| "http".into());
        let host =
            self.header("x-forwarded-host").map(first).or_else(|| self.header(http::header::HOST).map(str::to_string));
        match host {
            Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => {
                format!("{proto}://{h}{prefix}{path}")
            }
            _ => format!("{prefix}{path}"),
        }
    }

    pub fn repo(&self, name: &str) -> Result<RepoName, HttpError> {
        Ok(RepoName::parse(name)?)
    }

    pub fn digest(&self, s: &str) -> Result<Digest, HttpError> {
        let d = Digest::parse(s)?;
        if d.algorithm() == crate::core::Algorithm::Blake3 && !self.state.config.blake3 {
            return Err(HttpError::new(
                ErrorCode::DigestInvalid,
                "blake3 digests are not enabled on this registry (storage.digests.blake3)",
            ));
        }
        Ok(d)
    }
}

/// Runs a blocking store operation off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f).await.map_err(HttpError::internal)?.map_err(HttpError::from)
}

/// A response builder with the given status.
pub fn reply(status: StatusCode) -> http::response::Builder {
    Response::builder().status(status)
}

/// Finishes a builder, turning an invalid header into an internal error.
pub fn finish(b: http::response::Builder, body: ResponseBody) -> HttpResult {
    b.body(body).map_err(HttpError::internal)
}

/// Percent-decodes a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The hyper service: dispatch, then the headers every response carries, then the request log.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match dispatch(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    for (k, v) in &state.extra_headers {
        h.append(k.clone(), v.clone());
    }
    log::info!(
        target: "pier::request",
        "{method} {path} {} {:.1}ms",
        resp.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(resp)
}

async fn dispatch(state: &State, req: Request<Incoming>) -> HttpResult {
    let raw_path = req.uri().path().to_string();
    let path = match state.config.prefix.as_str() {
        "" => raw_path.as_str(),
        p => match raw_path.strip_prefix(p) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => return Err(not_found()),
        },
    };
    let route = router::route(path);
    let (parts, body) = req.into_parts();
    let ctx =
        Ctx { state, method: parts.method.clone(), headers: parts.headers, query: parse_query(parts.uri.query()) };
    let m = &ctx.method;
    use handlers::{blobs, listing, manifests, uploads};
    match route {
        Route::Base if m == Method::GET || m == Method::HEAD => {
            let b = reply(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::CONTENT_LENGTH, "2");
            finish(b, if m == Method::HEAD { ResponseBody::empty() } else { ResponseBody::full(&b"{}"[..]) })
        }
        Route::Catalog if m == Method::GET => listing::catalog(&ctx).await,
        Route::Tags(name) if m == Method::GET => listing::tags(&ctx, name).await,
        Route::Referrers(name, d) if m == Method::GET => listing::referrers(&ctx, name, d).await,
        Route::Blob(name, d) if m == Method::GET || m == Method::HEAD => blobs::get(&ctx, name, d).await,
        Route::Blob(name, d) if m == Method::DELETE => blobs::delete(&ctx, name, d).await,
        Route::UploadStart(name) if m == Method::POST => uploads::start(&ctx, name, body).await,
        Route::Upload(name, id) if m == Method::PATCH => uploads::patch(&ctx, name, id, body).await,
        Route::Upload(name, id) if m == Method::PUT => uploads::put(&ctx, name, id, body).await,
        Route::Upload(name, id) if m == Method::GET => uploads::status(&ctx, name, id).await,
        Route::Upload(name, id) if m == Method::DELETE => uploads::cancel(&ctx, name, id).await,
        Route::Manifest(name, r) if m == Method::GET || m == Method::HEAD => manifests::get(&ctx, name, r).await,
        Route::Manifest(name, r) if m == Method::PUT => manifests::put(&ctx, name, r, body).await,
        Route::Manifest(name, r) if m == Method::DELETE => manifests::delete(&ctx, name, r).await,
        Route::NotFound => Err(not_found()),
        route => Err(HttpError::new(ErrorCode::Unsupported, format!("method {m} is not allowed here"))
            .header(http::header::ALLOW, allowed_methods(&route))),
    }
}

/// A path that is not part of the API: 404 with the spec's `UNSUPPORTED` code.
fn not_found() -> HttpError {
    HttpError::new(ErrorCode::Unsupported, "no such endpoint in the OCI distribution API").status(404)
}

/// The `Allow` header of a 405.
fn allowed_methods(route: &Route<'_>) -> &'static str {
    match route {
        Route::Base => "GET, HEAD",
        Route::Catalog | Route::Tags(_) | Route::Referrers(..) => "GET",
        Route::Blob(..) => "GET, HEAD, DELETE",
        Route::UploadStart(_) => "POST",
        Route::Upload(..) => "GET, PATCH, PUT, DELETE",
        Route::Manifest(..) => "GET, HEAD, PUT, DELETE",
        Route::NotFound => "",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_decoding() {
        let q = super::parse_query(Some(
            "n=2&last=a%2Fb&artifactType=application%2Fvnd.x%2Bjson&tag=a&tag=b&bad=%zz&trail=%4",
        ));
        assert_eq!(q[1], ("last".to_string(), "a/b".to_string()));
        assert_eq!(q[2].1, "application/vnd.x+json");
        assert_eq!(q.iter().filter(|(k, _)| k == "tag").count(), 2);
        assert_eq!(q[5].1, "%zz");
        assert_eq!(q[6].1, "%4");
    }
}
