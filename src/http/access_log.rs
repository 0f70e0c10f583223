//! The access log: one line per request (when `log.accesslog` is not disabled), with its fields
//! as structured key-values (journal fields / JSON members): method, path, status, duration,
//! bytes, remote address, user, and the repository and digest the route names.
//!
//! The line is written when the response body is finished or dropped (the client went away), so
//! `bytes` are the body bytes actually handed to the connection and `duration_ms` runs until
//! then, not until the headers were ready.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use http_body::{Frame, SizeHint};

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

/// What the log line says about a request, kept until its response body ends.
pub struct Record {
    started: Instant,
    remote: String,
    user: String,
    method: Method,
    path: String,
    status: u16,
    repository: String,
    digest: String,
}

impl Record {
    pub fn new(request: &Request<'_>, status: u16) -> Record {
        let Request { started, peer, user, method, path, route } = request;
        let (repository, digest) = subject(route);
        Record {
            started: *started,
            remote: peer.ip().to_string(),
            user: user.to_string(),
            method: (*method).clone(),
            path: path.to_string(),
            status,
            repository: repository.to_string(),
            digest: digest.to_string(),
        }
    }

    /// Logs the request to the `pier::request` target, with the body bytes sent.
    fn write(self, bytes: u64) {
        let Record { started, remote, user, method, path, status, repository, digest } = self;
        let ms = (started.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        log::info!(
            target: "pier::request",
            method = method.as_str(), path = path.as_str(), status = status, duration_ms = ms, bytes = bytes,
            remote_addr = remote.as_str(), user = user.as_str(), repository = repository.as_str(),
            digest = digest.as_str();
            "{remote} {user} {method} {path} {status} {bytes}B {ms:.1}ms"
        );
    }
}

/// A response body that counts the bytes it hands out and writes the access log line when it
/// ends or is dropped (at most once; never when the access log is off).
pub struct LoggedBody {
    inner: ResponseBody,
    record: Option<Record>,
    sent: u64,
}

impl LoggedBody {
    pub fn new(inner: ResponseBody, record: Option<Record>) -> LoggedBody {
        LoggedBody { inner, record, sent: 0 }
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(self.sent);
        }
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
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
