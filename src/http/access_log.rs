//! The access log: one line per request (when `log.accesslog` is not disabled), with its fields
//! as structured key-values (journal fields / JSON members): method, path, status, duration,
//! bytes, remote address, user, and the repository and digest the route names.

use std::net::SocketAddr;
use std::time::Instant;

use http::{Method, Response};

use super::body::ResponseBody;
use super::router::Route;

/// The repository and digest a route names (empty when it names none; a manifest reference
/// counts as a digest when it looks like one).
fn subject<'r>(route: &Route<'r>) -> (&'r str, &'r str) {
    match *route {
        Route::Blob(n, d) | Route::Referrers(n, d) => (n, d),
        Route::Manifest(n, r) => (n, if r.contains(':') { r } else { "" }),
        Route::Tags(n) | Route::UploadStart(n) | Route::Upload(n, _) => (n, ""),
        Route::Base | Route::Catalog | Route::NotFound => ("", ""),
    }
}

/// One request, as the access log records it.
pub struct Request<'a> {
    pub started: Instant,
    pub peer: SocketAddr,
    /// The authenticated user, `-` for anonymous requests.
    pub user: &'a str,
    pub method: &'a Method,
    pub path: &'a str,
    pub route: &'a Route<'a>,
}

/// Logs `request` and its response to the `pier::request` target.
pub fn record(request: &Request<'_>, response: &Response<ResponseBody>) {
    let Request { started, peer, user, method, path, route } = request;
    let status = response.status().as_u16();
    let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let bytes: u64 =
        response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    let (repository, digest) = subject(route);
    let remote = peer.ip().to_string();
    log::info!(
        target: "pier::request",
        method = method.as_str(), path = *path, status = status, duration_ms = ms, bytes = bytes,
        remote_addr = remote.as_str(), user = *user, repository = repository, digest = digest;
        "{remote} {user} {method} {path} {status} {bytes}B {ms:.1}ms"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_of_every_route() {
        let d = "sha256:ab";
        assert_eq!(subject(&Route::Blob("r", d)), ("r", d));
        assert_eq!(subject(&Route::Referrers("r", d)), ("r", d));
        assert_eq!(subject(&Route::Manifest("r", d)), ("r", d));
        assert_eq!(subject(&Route::Manifest("r", "v1")), ("r", ""));
        assert_eq!(subject(&Route::Tags("r")), ("r", ""));
        assert_eq!(subject(&Route::UploadStart("r")), ("r", ""));
        assert_eq!(subject(&Route::Upload("r", "id")), ("r", ""));
        assert_eq!(subject(&Route::Base), ("", ""));
        assert_eq!(subject(&Route::Catalog), ("", ""));
        assert_eq!(subject(&Route::NotFound), ("", ""));
    }
}
