//! The HTTP side of the remote client: hyper 1's pooling client (HTTP/1.1, and HTTP/2 where TLS
//! negotiates it by ALPN) over TCP or rustls, on a runtime of the client's own, with blocking
//! entry points for [`BundleSource`](crate::bundle::source::BundleSource)'s blocking methods.
//!
//! Invariants:
//! - Every wait is bounded: connecting (TCP and the TLS handshake) by `connect_timeout`, the
//!   response head and each body read by `idle_timeout`.
//! - Only GETs are sent (idempotent), so an attempt that failed before any response (connection
//!   refused, reset, timeout) and a 502/503/504 are retried, at most [`RETRIES`] times with a
//!   growing pause; an answer in progress is never retried (the caller sees the error).
//! - Bodies are never collected whole except through [`read_capped`] (manifests, JSON lists,
//!   tokens), which refuses more than its cap, whatever `Content-Length` says.
//! - The runtime is never entered from async code: blocking calls come from plain threads
//!   (the export runs on a thread of its own).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::error::{chain, RemoteError};

/// Attempts after the first one, for failures before any answer and for 502/503/504.
pub(super) const RETRIES: u32 = 3;
/// The pause before the first retry; doubled for each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(250);

/// How long to wait, and where.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// TCP connect plus the TLS handshake.
    pub connect: Duration,
    /// The response head, and each read of a body.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_secs(30), idle: Duration::from_secs(120) }
    }
}

/// A connection: plain TCP or TLS over it (boxed: the TLS state is large).
enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, session) = s.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

/// Connects TCP (hyper-util's connector: happy eyeballs, connect timeout), then TLS for
/// `https` URIs with the host as the server name.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector,
    tls: TlsConnector,
    handshake_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
            let stream = tower_service::Service::<Uri>::call(&mut tcp, uri).await?;
            if !https {
                return Ok(Stream::Plain(stream));
            }
            let name = ServerName::try_from(host.ok_or("the URL has no host")?)?;
            let tls_stream = tokio::time::timeout(handshake_timeout, tls.connect(name, stream.into_inner()))
                .await
                .map_err(|_| "the TLS handshake timed out")??;
            Ok(Stream::Tls(Box::new(TokioIo::new(tls_stream))))
        })
    }
}

/// The client: its runtime, the pooled connections, the timeouts.
pub(super) struct Transport {
    runtime: tokio::runtime::Runtime,
    client: Client<Connector, Empty<Bytes>>,
    pub(super) timeouts: Timeouts,
}

/// `scheme://host:port` of a URI, for messages and for deciding what is the same origin.
pub(super) fn origin(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let port = uri.port_u16().map(|_| String::new()).unwrap_or_else(|| match scheme {
        "https" => String::from(":443"),
        "http" => String::from(":80"),
        _ => String::new(),
    });
    format!("{scheme}://{}{port}", authority.to_ascii_lowercase())
}

impl Transport {
    pub(super) fn new(tls: Arc<rustls::ClientConfig>, timeouts: Timeouts) -> Result<Transport, RemoteError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pier-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Setup(format!("runtime: {e}")))?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(timeouts.connect));
        let connector = Connector { tcp, tls: TlsConnector::from(tls), handshake_timeout: timeouts.connect };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Transport { runtime, client, timeouts })
    }

    /// Runs `future` to its end on the client's runtime (from a plain thread).
    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// One GET of `uri` with `headers`; retried (bounded) when no answer came or the answer was
    /// 502/503/504. `what` names the request in errors.
    pub(super) async fn get(
        &self,
        what: &str,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>, RemoteError> {
        let mut attempt = 0;
        loop {
            let mut request = Request::get(uri.clone()).body(Empty::new()).map_err(|e| RemoteError::Invalid {
                what: what.to_string(),
                detail: format!("cannot build a request for {uri}: {e}"),
            })?;
            *request.headers_mut() = headers.clone();
            let failure = match tokio::time::timeout(self.timeouts.idle, self.client.request(request)).await {
                Ok(Ok(response)) => {
                    let retry = matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                    );
                    if !retry || attempt == RETRIES {
                        return Ok(response);
                    }
                    log::debug!("{what}: {uri} answered {}, retrying", response.status());
                    None
                }
                Ok(Err(e)) => {
                    Some(RemoteError::Connection { what: what.to_string(), origin: origin(uri), detail: chain(&e) })
                }
                Err(_) => Some(RemoteError::Timeout {
                    what: what.to_string(),
                    origin: origin(uri),
                    secs: self.timeouts.idle.as_secs(),
                }),
            };
            if let Some(e) = failure {
                if attempt == RETRIES {
                    return Err(e);
                }
                log::debug!("{e}; retrying");
            }
            tokio::time::sleep(FIRST_PAUSE * 2u32.pow(attempt)).await;
            attempt += 1;
        }
    }

    /// The next data of `body` (`None` at its end), waiting at most the idle timeout.
    pub(super) async fn next_data(&self, body: &mut Incoming) -> io::Result<Option<Bytes>> {
        loop {
            match tokio::time::timeout(self.timeouts.idle, body.frame()).await {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no data from the registry for {} s", self.timeouts.idle.as_secs()),
                    ))
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(io::Error::other(chain(&e))),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                    // Trailers: nothing to read.
                }
            }
        }
    }

    /// The whole of `body`, refused beyond `cap` bytes (whatever `Content-Length` said).
    pub(super) async fn read_capped(&self, what: &str, mut body: Incoming, cap: usize) -> Result<Vec<u8>, RemoteError> {
        let mut bytes = Vec::new();
        while let Some(data) = self.next_data(&mut body).await.map_err(|e| RemoteError::Connection {
            what: what.to_string(),
            origin: String::from("reading the answer"),
            detail: e.to_string(),
        })? {
            if bytes.len().saturating_add(data.len()) > cap {
                return Err(RemoteError::Invalid {
                    what: what.to_string(),
                    detail: format!("the answer is larger than {cap} bytes"),
                });
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    }
}
