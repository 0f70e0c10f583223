//! A remote registry as a [`BundleSource`]: `pier export --from https://upstream ...` builds a
//! bundle on a machine without pier data, reading an OCI Distribution registry over HTTP(S).
//!
//! - `transport`: hyper's pooling client over TCP or rustls (HTTP/1.1, HTTP/2 by ALPN), its
//!   own runtime behind blocking calls, timeouts, bounded retries.
//! - `auth`: anonymous, Basic, and the Bearer token flow; tokens cached per scope.
//! - `options`: the command-line options (`--from`, `--username`, `--password-stdin`, `--ca`).
//! - `error`: [`RemoteError`] and its mapping into [`SourceError`].
//!
//! Invariants:
//! - Remote answers are hostile input: manifests are read whole only up to
//!   [`MAX_MANIFEST_BYTES`], JSON lists and token answers up to [`MAX_JSON_BYTES`]; blobs are
//!   streamed (one frame at a time), their size taken from `Content-Length` and enforced (fewer
//!   or more bytes are an error); names, tags and digests the registry lists are parsed
//!   (`RepoName`, `Tag`, `Digest`) before use.
//! - A manifest's bytes hash to the digest asked for and to `Docker-Content-Digest` when the
//!   registry sends one; what they hash to is the digest returned.
//! - Redirects (Distribution may send blob GETs to its storage) are followed at most
//!   [`MAX_REDIRECTS`] times, never from `https` down to `http`; credentials and tokens are sent
//!   to the registry's own origin (and its token realm) only: a redirect to another origin is
//!   followed without any `Authorization` header (a pre-signed storage URL needs none, and the
//!   storage host must not learn the user's password or token).
//! - Pagination links (`Link: <...>; rel="next"`) are followed on the registry's origin only;
//!   a page seen twice, or more than [`MAX_LIST_ENTRIES`] entries, end the listing with an
//!   error (no loop, no unbounded growth).

mod auth;
mod error;
pub mod options;
mod transport;

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, LOCATION, RANGE};
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub use auth::{Credentials, Secret};
pub use error::RemoteError;
pub use transport::Timeouts;

use crate::bundle::source::{BundleSource, FetchedBlob, FetchedManifest, SourceError};
use crate::core::manifest::{
    Manifest, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST,
};
use crate::core::{Algorithm, Digest, RepoName, Tag};
use transport::{origin, Transport};

/// Largest JSON list page (catalog, tags, referrers) or token answer read.
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
/// Most entries gathered from one paged list (repositories, tags, referrers): a registry that
/// keeps sending new pages is refused rather than followed until memory runs out.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;
/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// Where Debian (and most distributions) keep the system's trusted roots.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Entries asked for per catalog or tag-list page, unless configured otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// Every manifest type an export can carry.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How to reach a remote registry.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `https://host[:port][/prefix]` or `http://...`; no user info.
    pub url: String,
    pub credentials: Option<Credentials>,
    /// PEM files of more trusted roots (`--ca FILE`), besides the system's.
    pub ca_files: Vec<PathBuf>,
    pub timeouts: Timeouts,
    /// Entries asked for per catalog or tag-list page (`n`); the registry may send fewer, and
    /// `Link` headers lead to the rest.
    pub page_size: u32,
}

impl RemoteConfig {
    /// Anonymous, the system's roots only, default timeouts and pages.
    pub fn new(url: &str) -> RemoteConfig {
        RemoteConfig {
            url: url.to_string(),
            credentials: None,
            ca_files: Vec::new(),
            timeouts: Timeouts::default(),
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// The registry's base: scheme, authority and path prefix (before `/v2/`).
#[derive(Clone, Debug)]
struct BaseUrl {
    scheme: String,
    authority: String,
    /// Empty or `/prefix` (no trailing slash).
    prefix: String,
}

impl BaseUrl {
    fn parse(url: &str) -> Result<BaseUrl, RemoteError> {
        let bad = |why: &str| RemoteError::BadUrl { url: url.to_string(), why: why.to_string() };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") => "http",
            Some(_) => return Err(bad("the scheme must be https:// or http://")),
            None => return Err(bad("give the scheme: https://HOST or http://HOST")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials do not go in the URL (they would show in the process list): use --username with --password-stdin or PIER_REMOTE_PASSWORD",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a registry URL has no query"));
        }
        let mut prefix = uri.path().trim_end_matches('/').to_string();
        if let Some(p) = prefix.strip_suffix("/v2") {
            prefix = p.to_string();
        }
        Ok(BaseUrl { scheme: scheme.to_string(), authority: authority.as_str().to_string(), prefix })
    }

    /// `scheme://authority/prefix` + `path_and_query` (which starts with `/v2/`).
    fn uri(&self, what: &str, path_and_query: &str) -> Result<Uri, RemoteError> {
        format!("{}://{}{}{}", self.scheme, self.authority, self.prefix, path_and_query).parse().map_err(|e| {
            RemoteError::Invalid {
                what: what.to_string(),
                detail: format!("cannot make a URL of {path_and_query:?}: {e}"),
            }
        })
    }
}

/// A remote OCI Distribution registry, read through its API.
pub struct RemoteRegistry {
    base: BaseUrl,
    /// `scheme://host:port` of the registry: where credentials may go.
    origin: String,
    transport: Transport,
    auth: auth::Auth,
    page_size: u32,
}

/// The TLS client configuration: the system's roots (if the file is there) and `ca_files`.
fn tls_config(ca_files: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>, RemoteError> {
    let mut roots = rustls::RootCertStore::empty();
    if Path::new(SYSTEM_ROOTS).exists() {
        let certs = CertificateDer::pem_file_iter(SYSTEM_ROOTS)
            .map_err(|e| RemoteError::CaFile { path: PathBuf::from(SYSTEM_ROOTS), why: e.to_string() })?;
        // The system bundle is tolerated as it is: an unparsable entry is skipped.
        let (_added, _skipped) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
    }
    for path in ca_files {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| RemoteError::CaFile { path: path.clone(), why: e.to_string() })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RemoteError::CaFile { path: path.clone(), why: e.to_string() })?;
        if certs.is_empty() {
            return Err(RemoteError::CaFile { path: path.clone(), why: String::from("no PEM certificate in it") });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| RemoteError::CaFile { path: path.clone(), why: e.to_string() })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The registry's explanation from an error body (`{"errors":[{"code","message"}]}`), or the
/// start of a text body; empty when there is none.
pub(crate) fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<OneError>,
    }
    #[derive(serde::Deserialize)]
    struct OneError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(errors) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = errors
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .collect();
        return parts.join("; ");
    }
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    if let Ok(e) = serde_json::from_slice::<OAuthError>(body) {
        return if e.error_description.is_empty() { e.error } else { format!("{}: {}", e.error, e.error_description) };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.chars().filter(|c| !c.is_control()).collect::<String>().trim().to_string()
}

/// `repository:NAME:pull`: the scope of every read of `repo`.
fn pull_scope(repo: &RepoName) -> String {
    format!("repository:{repo}:pull")
}

const CATALOG_SCOPE: &str = "registry:catalog:*";

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(text) = value.to_str() else { continue };
        for link in text.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else { continue };
            let Some(end) = rest.find('>') else { continue };
            let params = &rest[end + 1..];
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
            });
            if is_next {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

/// Resolves `location` (absolute, or origin-relative `/path`) against `current`.
fn resolve(current: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = current.scheme_str()?;
        let authority = current.authority()?;
        return format!("{scheme}://{authority}{location}").parse().ok();
    }
    None
}

impl RemoteRegistry {
    /// A client for `config.url`; nothing is sent yet.
    pub fn connect(config: &RemoteConfig) -> Result<RemoteRegistry, RemoteError> {
        let base = BaseUrl::parse(&config.url)?;
        let tls = tls_config(&config.ca_files)?;
        let transport = Transport::new(tls, config.timeouts)?;
        let origin_uri = base.uri("registry", "/v2/")?;
        Ok(RemoteRegistry {
            origin: origin(&origin_uri),
            auth: auth::Auth::new(config.credentials.clone(), base.scheme == "https"),
            base,
            transport,
            page_size: config.page_size.max(1),
        })
    }

    /// `GET /v2/`: whether the registry answers and accepts the credentials (the version check
    /// of the API), so that a command fails before it starts writing.
    pub fn check(&self) -> Result<(), RemoteError> {
        // The origin follows in connection errors; a denial names the registry's own reason.
        let what = "registry";
        let uri = self.base.uri(what, "/v2/")?;
        self.transport.block_on(async {
            let response = self.get(what, &uri, "", None, None).await?;
            let response = self.expect_ok(what, response).await?;
            drop(response);
            Ok(())
        })
    }

    /// A GET to the registry with the `Authorization` for `scope` (empty: the base check, any
    /// scope), acting on one 401 challenge, following redirects (see the module invariants).
    async fn get(
        &self,
        what: &str,
        uri: &Uri,
        scope: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<Response<Incoming>, RemoteError> {
        let mut current = uri.clone();
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let same_origin = origin(&current) == self.origin;
            let mut headers = HeaderMap::new();
            if let Some(accept) = accept {
                if let Ok(value) = HeaderValue::from_str(accept) {
                    headers.insert(ACCEPT, value);
                }
            }
            if let Some(from) = range_from {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes={from}-")) {
                    headers.insert(RANGE, value);
                }
            }
            let mut sent_auth = false;
            if same_origin {
                if let Some(value) = self.auth.header_for(&self.transport, scope).await? {
                    headers.insert(AUTHORIZATION, value);
                    sent_auth = true;
                }
            }
            let response = self.transport.get(what, &current, &headers).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && same_origin && !challenged {
                challenged = true;
                let challenges = auth::parse_challenges(response.headers());
                if self.auth.on_challenge(&self.transport, &challenges, scope, sent_auth).await? {
                    continue;
                }
                // Nothing more to try: the caller reports the registry's 401.
                return Ok(response);
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).unwrap_or("").to_string();
                drop(response);
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(RemoteError::Invalid {
                        what: what.to_string(),
                        detail: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                let Some(next) = resolve(&current, &location) else {
                    return Err(RemoteError::Invalid {
                        what: what.to_string(),
                        detail: format!("a redirect ({status}) to {location:?}, which is not an http(s) URL"),
                    });
                };
                if current.scheme_str() == Some("https") && next.scheme_str() != Some("https") {
                    return Err(RemoteError::Invalid {
                        what: what.to_string(),
                        detail: format!("a redirect from https down to {}: refused", origin(&next)),
                    });
                }
                current = next;
                continue;
            }
            return Ok(response);
        }
    }

    /// `response` if its status is 200; else the error its status and body say.
    async fn expect_ok(&self, what: &str, response: Response<Incoming>) -> Result<Response<Incoming>, RemoteError> {
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let body = self.transport.read_capped(what, response.into_body(), MAX_JSON_BYTES).await.unwrap_or_default();
        let detail = error_detail(&body);
        let what = what.to_string();
        Err(match status {
            StatusCode::NOT_FOUND => RemoteError::NotFound { what, detail },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RemoteError::Denied {
                what,
                detail: if detail.is_empty() { status.to_string() } else { format!("{status}: {detail}") },
            },
            _ => RemoteError::Status { what, status: status.as_u16(), detail },
        })
    }

    /// Every entry of a paged JSON list (`key` of each page), following `Link` headers.
    fn list_pages(&self, what: &str, first: &str, scope: &str, key: &str) -> Result<Vec<String>, RemoteError> {
        self.transport.block_on(async {
            let mut entries = Vec::new();
            let mut seen = HashSet::new();
            let mut next = Some(self.base.uri(what, first)?);
            while let Some(uri) = next.take() {
                if !seen.insert(uri.to_string()) {
                    return Err(RemoteError::Invalid {
                        what: what.to_string(),
                        detail: format!("the pages loop back to {uri}"),
                    });
                }
                let response = self.get(what, &uri, scope, None, None).await?;
                let response = self.expect_ok(what, response).await?;
                if let Some(link) = next_link(response.headers()) {
                    let target = resolve(&uri, &link).filter(|t| origin(t) == self.origin).ok_or_else(|| {
                        RemoteError::Invalid {
                            what: what.to_string(),
                            detail: format!("a next page elsewhere: {link:?}"),
                        }
                    })?;
                    next = Some(target);
                }
                let body = self.transport.read_capped(what, response.into_body(), MAX_JSON_BYTES).await?;
                let page: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| RemoteError::Invalid { what: what.to_string(), detail: format!("not JSON: {e}") })?;
                match &page[key] {
                    serde_json::Value::Null => {}
                    serde_json::Value::Array(items) => {
                        for item in items {
                            let Some(text) = item.as_str() else {
                                return Err(RemoteError::Invalid {
                                    what: what.to_string(),
                                    detail: format!("{key:?} holds a non-string: {item}"),
                                });
                            };
                            entries.push(text.to_string());
                        }
                        if entries.len() > MAX_LIST_ENTRIES {
                            return Err(too_many(what));
                        }
                    }
                    other => {
                        return Err(RemoteError::Invalid {
                            what: what.to_string(),
                            detail: format!("{key:?} is not a list: {other}"),
                        })
                    }
                }
            }
            Ok(entries)
        })
    }

    /// The manifest `reference` (a tag or `expected`'s digest) of `repo`, verified.
    fn fetch_manifest(
        &self,
        repo: &RepoName,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<FetchedManifest, RemoteError> {
        let sep = if expected.is_some() { '@' } else { ':' };
        let what = format!("manifest {repo}{sep}{reference}");
        let uri = self.base.uri(&what, &format!("/v2/{repo}/manifests/{reference}"))?;
        let invalid = |detail: String| RemoteError::Invalid { what: what.clone(), detail };
        let (content_type, announced, bytes) = self.transport.block_on(async {
            let response = self.get(&what, &uri, &pull_scope(repo), Some(MANIFEST_ACCEPT), None).await?;
            let response = self.expect_ok(&what, response).await?;
            let headers = response.headers();
            let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let announced = match headers.get("docker-content-digest") {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .ok()
                        .and_then(|t| Digest::parse(t.trim()).ok())
                        .ok_or_else(|| invalid(format!("Docker-Content-Digest {v:?} is not a digest")))?,
                ),
            };
            if let Some(length) = content_length(headers) {
                if length > MAX_MANIFEST_BYTES as u64 {
                    return Err(invalid(format!(
                        "{length} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have"
                    )));
                }
            }
            let bytes = self.transport.read_capped(&what, response.into_body(), MAX_MANIFEST_BYTES).await?;
            Ok::<_, RemoteError>((content_type, announced, bytes))
        })?;
        if let Some(expected) = expected {
            let got = Digest::of(expected.algorithm(), &bytes);
            if got != *expected {
                return Err(invalid(format!("the registry sent bytes that hash to {got}")));
            }
        }
        if let Some(announced) = &announced {
            let got = Digest::of(announced.algorithm(), &bytes);
            if got != *announced {
                return Err(invalid(format!("Docker-Content-Digest says {announced}, the bytes hash to {got}")));
            }
        }
        let digest = expected.cloned().or(announced).unwrap_or_else(|| Digest::of(Algorithm::Sha256, &bytes));
        let parsed = Manifest::parse(content_type.as_deref(), &bytes).map_err(|e| invalid(e.to_string()))?;
        let media_type = match parsed.media_type.as_str() {
            OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_MANIFEST_LIST => parsed.media_type,
            other => return Err(invalid(format!("media type {other:?} is not a manifest type"))),
        };
        Ok(FetchedManifest { digest, media_type, bytes })
    }

    /// The digests an image index lists (the referrers API's answer, or the fallback tag's).
    fn index_digests(what: &str, bytes: &[u8]) -> Result<Vec<Digest>, RemoteError> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            digest: String,
        }
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| RemoteError::Invalid { what: what.to_string(), detail: format!("not an image index: {e}") })?;
        index
            .manifests
            .iter()
            .map(|m| {
                Digest::parse(&m.digest).map_err(|e| RemoteError::Invalid {
                    what: what.to_string(),
                    detail: format!("{:?} is not a digest: {e}", m.digest),
                })
            })
            .collect()
    }

    fn referrers_of(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Digest>, RemoteError> {
        let what = format!("referrers of {repo}@{subject}");
        let answer = self.transport.block_on(async {
            let mut digests = Vec::new();
            let mut seen = HashSet::new();
            let mut next = Some(self.base.uri(&what, &format!("/v2/{repo}/referrers/{subject}"))?);
            while let Some(uri) = next.take() {
                if !seen.insert(uri.to_string()) {
                    return Err(RemoteError::Invalid {
                        what: what.clone(),
                        detail: format!("the pages loop back to {uri}"),
                    });
                }
                let response = self.get(&what, &uri, &pull_scope(repo), Some(OCI_INDEX), None).await?;
                if response.status() == StatusCode::NOT_FOUND {
                    // No referrers API (Distribution 2.8): the tag schema instead.
                    return Ok(None);
                }
                let response = self.expect_ok(&what, response).await?;
                if let Some(link) = next_link(response.headers()) {
                    let target = resolve(&uri, &link).filter(|t| origin(t) == self.origin).ok_or_else(|| {
                        RemoteError::Invalid { what: what.clone(), detail: format!("a next page elsewhere: {link:?}") }
                    })?;
                    next = Some(target);
                }
                let body = self.transport.read_capped(&what, response.into_body(), MAX_JSON_BYTES).await?;
                digests.extend(Self::index_digests(&what, &body)?);
                if digests.len() > MAX_LIST_ENTRIES {
                    return Err(too_many(&what));
                }
            }
            Ok(Some(digests))
        })?;
        if let Some(digests) = answer {
            return Ok(digests);
        }
        let Ok(tag) = Tag::parse(&format!("{}-{}", subject.algorithm().name(), subject.hex())) else {
            return Ok(Vec::new());
        };
        match self.fetch_manifest(repo, tag.as_str(), None) {
            Ok(index) => Self::index_digests(&what, &index.bytes),
            Err(RemoteError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn open(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedBlob<'_>, RemoteError> {
        let what = format!("blob {repo}@{digest}");
        let uri = self.base.uri(&what, &format!("/v2/{repo}/blobs/{digest}"))?;
        let (size, body) = self.transport.block_on(async {
            let response = self.get(&what, &uri, &pull_scope(repo), None, None).await?;
            let response = self.expect_ok(&what, response).await?;
            let size = content_length(response.headers()).ok_or_else(|| RemoteError::Invalid {
                what: what.clone(),
                detail: String::from("the answer has no valid Content-Length"),
            })?;
            Ok::<_, RemoteError>((size, response.into_body()))
        })?;
        let reader = BlobReader {
            registry: self,
            uri,
            scope: pull_scope(repo),
            body,
            chunk: Bytes::new(),
            offset: 0,
            size,
            resumes_left: transport::RETRIES,
            what,
        };
        Ok(FetchedBlob { size, reader: Box::new(reader) })
    }

    /// The rest of a blob from byte `from` on (`Range`), after its download broke: the body of
    /// a 206 whose `Content-Range` starts exactly there and names the same total size.
    async fn resume(&self, what: &str, uri: &Uri, scope: &str, from: u64, size: u64) -> Result<Incoming, RemoteError> {
        let response = self.get(what, uri, scope, None, Some(from)).await?;
        if response.status() != StatusCode::PARTIAL_CONTENT {
            let status = response.status();
            let response = self.expect_ok(what, response).await?;
            drop(response);
            return Err(RemoteError::Invalid {
                what: what.to_string(),
                detail: format!("the registry answered {status}, not 206, to a range request"),
            });
        }
        let range = response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let wanted = format!("bytes {from}-{}/", size.saturating_sub(1));
        let total_ok = range.strip_prefix(&wanted).is_some_and(|t| t == "*" || t == size.to_string());
        if !total_ok {
            return Err(RemoteError::Invalid {
                what: what.to_string(),
                detail: format!("Content-Range {range:?} is not the rest asked for ({wanted}{size})"),
            });
        }
        Ok(response.into_body())
    }
}

fn too_many(what: &str) -> RemoteError {
    RemoteError::Invalid { what: what.to_string(), detail: format!("more than {MAX_LIST_ENTRIES} entries") }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A blob's body as `Read`: one frame at a time, exactly `Content-Length` bytes or an error.
/// A download that breaks (connection reset, idle timeout) resumes where it stopped with a
/// range request, at most [`transport::RETRIES`] times per blob.
struct BlobReader<'a> {
    registry: &'a RemoteRegistry,
    uri: Uri,
    scope: String,
    body: Incoming,
    chunk: Bytes,
    /// Bytes handed out so far.
    offset: u64,
    size: u64,
    resumes_left: u32,
    what: String,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                if self.offset.saturating_add(n as u64) > self.size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: more bytes than its Content-Length", self.what),
                    ));
                }
                buf[..n].copy_from_slice(&self.chunk[..n]);
                self.chunk.advance(n);
                self.offset += n as u64;
                return Ok(n);
            }
            if buf.is_empty() {
                return Ok(0);
            }
            let transport = &self.registry.transport;
            let broken = match transport.block_on(transport.next_data(&mut self.body)) {
                Ok(Some(data)) => {
                    self.chunk = data;
                    continue;
                }
                Ok(None) if self.offset == self.size => return Ok(0),
                Ok(None) => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the registry ended it {} bytes short", self.size - self.offset),
                ),
                Err(e) => e,
            };
            if self.resumes_left == 0 {
                return Err(io::Error::new(broken.kind(), format!("{}: {broken}", self.what)));
            }
            self.resumes_left -= 1;
            log::debug!("{}: {broken}; resuming at byte {}", self.what, self.offset);
            let resumed =
                transport.block_on(self.registry.resume(&self.what, &self.uri, &self.scope, self.offset, self.size));
            match resumed {
                Ok(body) => self.body = body,
                Err(e) => {
                    return Err(io::Error::new(
                        broken.kind(),
                        format!("{}: {broken}; resuming at byte {} failed: {e}", self.what, self.offset),
                    ))
                }
            }
        }
    }
}

impl BundleSource for RemoteRegistry {
    fn repositories(&self) -> Result<Vec<RepoName>, SourceError> {
        let what = "catalog";
        let names =
            self.list_pages(what, &format!("/v2/_catalog?n={}", self.page_size), CATALOG_SCOPE, "repositories")?;
        let mut repos = names
            .iter()
            .map(|n| {
                RepoName::parse(n).map_err(|e| RemoteError::Invalid {
                    what: what.to_string(),
                    detail: format!("{n:?} is not a repository name: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        repos.sort();
        repos.dedup();
        Ok(repos)
    }

    fn tags(&self, repo: &RepoName) -> Result<Vec<Tag>, SourceError> {
        let what = format!("tags of {repo}");
        let names =
            self.list_pages(&what, &format!("/v2/{repo}/tags/list?n={}", self.page_size), &pull_scope(repo), "tags")?;
        let mut tags = names
            .iter()
            .map(|t| {
                Tag::parse(t).map_err(|e| RemoteError::Invalid {
                    what: what.clone(),
                    detail: format!("{t:?} is not a tag: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<FetchedManifest, SourceError> {
        Ok(self.fetch_manifest(repo, tag.as_str(), None)?)
    }

    fn manifest_by_digest(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedManifest, SourceError> {
        Ok(self.fetch_manifest(repo, digest.as_str(), Some(digest))?)
    }

    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Digest>, SourceError> {
        Ok(self.referrers_of(repo, subject)?)
    }

    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<FetchedBlob<'_>, SourceError> {
        Ok(self.open(repo, digest)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_a_prefix_and_refuse_credentials_and_other_schemes() {
        let b = BaseUrl::parse("https://r.example:5000/mirror/").unwrap();
        assert_eq!(b.uri("t", "/v2/").unwrap().to_string(), "https://r.example:5000/mirror/v2/");
        let b = BaseUrl::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_eq!(b.uri("t", "/v2/a/tags/list").unwrap().to_string(), "http://127.0.0.1:5000/v2/a/tags/list");
        assert!(
            matches!(BaseUrl::parse("https://u:pw@r.example"), Err(RemoteError::BadUrl { why, .. }) if !why.contains("pw"))
        );
        assert!(BaseUrl::parse("ftp://r.example").is_err());
        assert!(BaseUrl::parse("r.example:5000").is_err());
        assert!(BaseUrl::parse("https://r.example/?x=1").is_err());
    }

    #[test]
    fn next_links_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(LINK, HeaderValue::from_static("</v2/_catalog?n=2&last=b>; rel=\"next\""));
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?n=2&last=b"));
        let mut h = HeaderMap::new();
        h.append(LINK, HeaderValue::from_static("<https://x/prev>; rel=prev, <https://x/next>; rel=next"));
        assert_eq!(next_link(&h).as_deref(), Some("https://x/next"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn locations_resolve_against_the_current_request() {
        let cur: Uri = "https://r.example:5000/v2/a/blobs/sha256:00".parse().unwrap();
        assert_eq!(resolve(&cur, "/storage/x?sig=1").unwrap().to_string(), "https://r.example:5000/storage/x?sig=1");
        assert_eq!(resolve(&cur, "http://s3.example/b").unwrap().to_string(), "http://s3.example/b");
        assert!(resolve(&cur, "//evil.example/x").is_none());
        assert!(resolve(&cur, "relative").is_none());
        assert_eq!(origin(&cur), "https://r.example:5000");
        assert_eq!(origin(&"https://R.example/x".parse().unwrap()), "https://r.example:443");
    }

    #[test]
    fn error_details_come_from_the_registry_body() {
        assert_eq!(
            error_detail(br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(
            error_detail(br#"{"error":"invalid_grant","error_description":"bad password"}"#),
            "invalid_grant: bad password"
        );
        assert_eq!(error_detail(b"404 page not found\n"), "404 page not found");
        assert_eq!(error_detail(b""), "");
    }
}
