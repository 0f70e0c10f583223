//! The OCI Distribution API over hyper.
//!
//! `server` accepts connections, `router` maps paths to routes, `handlers` implement them on
//! top of `store::Store`, and `error` turns every failure into OCI error JSON exactly once.

pub mod auth;
pub mod body;
pub mod error;
pub mod handlers;
pub mod router;
pub mod server;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::{Config, LiveSettings, Reload};
use crate::core::access::{Action, Identity, Policy};
use crate::core::{Digest, ErrorCode, RepoName};
use crate::store::{Store, StoreError};
use auth::{Authenticator, Verdict};
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
    /// The configuration pier started with (listen address, data directory, TLS and htpasswd
    /// paths, URLs: what a reload cannot change).
    pub config: Config,
    /// `None` when authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    /// What a reload (SIGHUP) can change; each request works on one snapshot.
    settings: std::sync::RwLock<Arc<Settings>>,
    /// Connections accepted so far (the watchdog checks that it moves).
    pub accepted: std::sync::atomic::AtomicU64,
}

/// The part of the configuration that SIGHUP reloads.
pub struct Settings {
    pub policy: Policy,
    pub extra_headers: Vec<(HeaderName, HeaderValue)>,
    pub read_only: bool,
    pub access_log: bool,
}

impl Settings {
    fn new(live: &LiveSettings, authenticated: bool) -> Settings {
        let extra_headers = live
            .headers
            .iter()
            .filter_map(|(k, v)| Some((HeaderName::from_bytes(k.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
            .collect();
        let policy = match (authenticated, &live.access) {
            (false, _) => Policy::Open,
            (true, None) => Policy::AuthenticatedOnly,
            (true, Some(rules)) => Policy::Rules(rules.clone()),
        };
        Settings { policy, extra_headers, read_only: live.read_only, access_log: live.access_log }
    }
}

impl State {
    pub fn new(store: Arc<Store>, config: Config, auth: Option<Arc<Authenticator>>) -> State {
        let settings = std::sync::RwLock::new(Arc::new(Settings::new(&config.live_settings(), auth.is_some())));
        State { store, config, auth, settings, accepted: std::sync::atomic::AtomicU64::new(0) }
    }

    /// The current reloadable settings.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().map(|s| s.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Applies a re-read configuration: its live settings (see [`Reload::plan`]) take effect
    /// now; the keys of anything else that changed are returned, since they need a restart.
    pub fn reconfigure(&self, new: &Config) -> Vec<String> {
        let Reload { live, restart_needed } = Reload::plan(&self.config, new);
        let mut restart: Vec<String> = restart_needed.into_iter().map(String::from).collect();
        if live.access.is_some() && self.auth.is_none() {
            restart.push(String::from("access (needs auth.htpasswd, which needs a restart)"));
        }
        log::set_max_level(live.log_level);
        self.store.set_delete_enabled(live.delete_enabled);
        let settings = Arc::new(Settings::new(&live, self.auth.is_some()));
        if let Ok(mut s) = self.settings.write() {
            *s = settings;
        }
        restart
    }
}

/// What a handler needs to know about the request besides its body.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub settings: Arc<Settings>,
    pub identity: Identity,
    pub method: Method,
    pub headers: http::HeaderMap,
    /// The request URI's authority (HTTP/2 `:authority`), if any.
    pub authority: Option<String>,
    pub query: Vec<(String, String)>,
}

impl Ctx<'_> {
    /// Whether the caller may do `action` to `repo`.
    pub fn may(&self, action: Action, repo: &str) -> bool {
        self.settings.policy.allows(&self.identity, action, repo)
    }

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
            .unwrap_or_else(|| if cfg.tls.is_some() { "https".into() } else { "http".into() });
        // HTTP/2 requests carry the host in the `:authority` pseudo-header, not in `Host`.
        let host = self
            .header("x-forwarded-host")
            .map(first)
            .or_else(|| self.header(http::header::HOST).map(str::to_string))
            .or_else(|| self.authority.clone());
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
        self.check_algorithm(d.algorithm())?;
        Ok(d)
    }

    /// Refuses algorithms that this registry does not accept (blake3 is an opt-in).
    pub fn check_algorithm(&self, alg: crate::core::Algorithm) -> Result<(), HttpError> {
        if alg == crate::core::Algorithm::Blake3 && !self.state.config.blake3 {
            return Err(HttpError::new(
                ErrorCode::DigestInvalid,
                "blake3 digests are not enabled on this registry (storage.digests.blake3)",
            ));
        }
        Ok(())
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

/// The hyper service: authentication, dispatch, the headers every response carries, the
/// request log.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let settings = state.settings();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (user, result) = match authenticate(&state, &req, peer).await {
        Ok(identity) => {
            let user = match &identity {
                Identity::User(u) => u.clone(),
                Identity::Anonymous => String::from("-"),
            };
            (user, dispatch(&state, &settings, req, identity).await)
        }
        Err(e) => (String::from("-"), Err(e)),
    };
    let mut resp = result.unwrap_or_else(HttpError::into_response);
    let h = resp.headers_mut();
    h.insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    for (k, v) in &settings.extra_headers {
        h.append(k.clone(), v.clone());
    }
    if settings.access_log {
        let status = resp.status().as_u16();
        let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        let bytes: u64 =
            resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
        let (repository, digest) = match router::route(path.strip_prefix(state.config.prefix.as_str()).unwrap_or(&path))
        {
            Route::Blob(n, d) | Route::Referrers(n, d) => (n, d),
            Route::Manifest(n, r) => (n, if r.contains(':') { r } else { "" }),
            Route::Tags(n) | Route::UploadStart(n) | Route::Upload(n, _) => (n, ""),
            Route::Base | Route::Catalog | Route::NotFound => ("", ""),
        };
        let remote = peer.ip().to_string();
        log::info!(
            target: "pier::request",
            method = method.as_str(), path = path.as_str(), status = status, duration_ms = ms, bytes = bytes,
            remote_addr = remote.as_str(), user = user.as_str(), repository = repository, digest = digest;
            "{remote} {user} {method} {path} {status} {bytes}B {ms:.1}ms"
        );
    }
    Ok(resp)
}

/// 401 with the Basic challenge.
fn unauthorized(state: &State, message: &str) -> HttpError {
    let realm = state.auth.as_ref().map_or("pier", |a| a.realm.as_str());
    HttpError::new(ErrorCode::Unauthorized, message)
        .header(http::header::WWW_AUTHENTICATE, format!("Basic realm=\"{}\"", realm.replace('"', "'")))
}

/// Who sent the request: anonymous, a verified user, or an error for bad credentials (answered
/// late when the address keeps failing).
async fn authenticate(state: &State, req: &Request<Incoming>, peer: SocketAddr) -> Result<Identity, HttpError> {
    let Some(auth) = &state.auth else { return Ok(Identity::Anonymous) };
    let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let verdict = match auth.verify_fast(header.as_deref()) {
        Some(v) => v,
        None => {
            let (a, h) = (auth.clone(), header.clone());
            tokio::task::spawn_blocking(move || a.verify_blocking(h.as_deref())).await.map_err(HttpError::internal)?
        }
    };
    match verdict {
        Verdict::Anonymous => Ok(Identity::Anonymous),
        Verdict::User(u) => Ok(Identity::User(u)),
        Verdict::Invalid => {
            let who = header.as_deref().and_then(auth::parse_basic).map(|(u, _)| u);
            match &who {
                Some(u) => log::warn!("authentication failed for user {u:?} from {}", peer.ip()),
                None => log::warn!("malformed Authorization header from {}", peer.ip()),
            }
            let delay = auth.record_failure(peer.ip());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Err(unauthorized(state, "invalid credentials"))
        }
    }
}

/// The repository action a route needs (`None`: not about one repository).
fn required_action<'r>(route: &Route<'r>, method: &Method) -> Option<(Action, &'r str)> {
    let write = |name| if *method == Method::DELETE { (Action::Delete, name) } else { (Action::Push, name) };
    match *route {
        Route::Tags(n) | Route::Referrers(n, _) => Some((Action::Pull, n)),
        Route::Blob(n, _) | Route::Manifest(n, _) if *method == Method::GET || *method == Method::HEAD => {
            Some((Action::Pull, n))
        }
        Route::Blob(n, _) | Route::Manifest(n, _) => Some(write(n)),
        Route::UploadStart(n) | Route::Upload(n, _) => Some((Action::Push, n)),
        Route::Base | Route::Catalog | Route::NotFound => None,
    }
}

async fn dispatch(state: &State, settings: &Arc<Settings>, req: Request<Incoming>, identity: Identity) -> HttpResult {
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
    let m = &parts.method;
    // Authorization: 401 when anonymous (so clients send credentials), 403 when authenticated.
    let deny = |what: &str| match identity {
        Identity::Anonymous => unauthorized(state, &format!("authentication required to {what}")),
        Identity::User(_) => HttpError::new(ErrorCode::Denied, format!("not allowed to {what}")),
    };
    if state.auth.is_some() {
        match route {
            Route::Base if identity == Identity::Anonymous => {
                return Err(unauthorized(state, "authentication required"))
            }
            Route::Catalog if !settings.policy.may_pull_somewhere(&identity) => return Err(deny("list repositories")),
            _ => {}
        }
        if let Some((action, name)) = required_action(&route, m) {
            if !settings.policy.allows(&identity, action, name) {
                let verb = match action {
                    Action::Pull => "pull from",
                    Action::Push => "push to",
                    Action::Delete => "delete from",
                };
                return Err(deny(&format!("{verb} this repository")));
            }
        }
    }
    let writes = matches!(*m, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if settings.read_only && writes && route != Route::NotFound {
        return Err(HttpError::new(
            ErrorCode::Unsupported,
            "the registry is in read-only mode (storage.maintenance.readonly)",
        ));
    }
    let ctx = Ctx {
        state,
        settings: settings.clone(),
        identity,
        method: parts.method.clone(),
        headers: parts.headers,
        authority: parts.uri.authority().map(|a| a.to_string()),
        query: parse_query(parts.uri.query()),
    };
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
