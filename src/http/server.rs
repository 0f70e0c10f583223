//! Listening, accepting and serving connections (HTTP/1.1, and HTTP/2 with prior knowledge),
//! with idle timeouts, connection bounds (`limits`) and graceful shutdown.
//!
//! The accept loop never waits for a bound: a connection over `limits.connections` or
//! `limits.connectionsperclient` is accepted, answered and closed, so the listener keeps
//! draining and the watchdog's probe connection is always taken.
//!
//! Timeouts are idle timeouts: a connection is dropped only when no byte has moved in either
//! direction for `http.idletimeout` while the server waits on the socket. A 5 GiB upload over a
//! slow link never hits a limit on total time.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use super::limits::Refusal;
use super::State;

/// Binds `http.addr`. `:5000` means every address (IPv6 and IPv4 where available).
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    if let Some(port) = addr.strip_prefix(':') {
        return match TcpListener::bind(format!("[::]:{port}")).await {
            Ok(l) => Ok(l),
            Err(_) => TcpListener::bind(format!("0.0.0.0:{port}")).await,
        };
    }
    TcpListener::bind(addr).await
}

/// Serves connections from every listener (over TLS when `tls` is set) until `shutdown`
/// resolves, then waits up to `drain` for in-flight requests.
pub async fn serve(
    state: Arc<State>,
    listeners: Vec<TcpListener>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.idle_timeout);
    // Adaptive flow-control windows: large uploads over HTTP/2 are not throttled by the 64 KiB default.
    // A stream's response body holds at most two small buffers (see `body`), and streams per
    // connection are bounded, so one connection cannot hold more than a few MiB.
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_concurrent_streams(state.config.limits.streams_per_connection);
    let builder = Arc::new(builder);
    // Every listener feeds one queue of accepted connections.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::channel::<(TcpStream, SocketAddr)>(64);
    for listener in listeners {
        let (conn_tx, mut stop_rx) = (conn_tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(c) => {
                            if conn_tx.send(c).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            log::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    _ = stop_rx.changed() => break,
                }
            }
        });
    }
    drop(conn_tx);
    let mut refused = RefusalLog::default();
    let lingering_refusals = Arc::new(tokio::sync::Semaphore::new(MAX_LINGERING_REFUSALS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            Some(c) = conn_rx.recv() => {
                state.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                c
            }
            () = &mut shutdown => break,
            else => break,
        };
        let admitted = match state.bounds.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                refused.note(refusal, peer);
                // A flood of refused connections must not become a flood of lingering ones:
                // past the bound a refused connection is closed at once, without an answer.
                if let (None, Ok(place)) = (&tls, lingering_refusals.clone().try_acquire_owned()) {
                    tokio::spawn(refuse(stream, refusal, place));
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (state, builder, watcher, tls) = (state.clone(), builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let _admitted = admitted;
            let timeout = state.config.idle_timeout;
            match tls {
                None => serve_connection(state, &builder, watcher, IdleTimeout::new(stream, timeout), peer).await,
                Some(acceptor) => {
                    // A client speaking plain HTTP to the TLS port gets a readable answer.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
                        Ok(Ok(1)) if first[0] != 0x16 => {
                            use tokio::io::AsyncWriteExt;
                            let mut stream = stream;
                            let _ = stream.write_all(super::tls::PLAIN_HTTP_ON_TLS_PORT).await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                        Ok(Ok(1)) => {}
                        _ => return,
                    }
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(state, &builder, watcher, IdleTimeout::new(tls_stream, timeout), peer)
                                .await
                        }
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    log::info!("stopped accepting; waiting up to {}s for in-flight requests", drain.as_secs());
    tokio::select! {
        () = graceful.shutdown() => log::info!("all connections closed"),
        () = tokio::time::sleep(drain) => log::warn!("drain deadline reached; closing remaining connections"),
    }
    Ok(())
}

/// How many refused connections may be answering and lingering at once (each holds a socket
/// and a few KiB for at most `REFUSAL_LINGER`); past it, refused connections are just closed.
const MAX_LINGERING_REFUSALS: usize = 256;

/// How long a refused connection is read and discarded after its answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Answers a plain-HTTP connection over a bound and closes it: it gets the complete `429`/`503`
/// answer, then the request is read and discarded for a moment so that closing does not reset
/// the connection before the client has read the answer. TLS connections are closed without an
/// answer by the caller (a handshake to say "too busy" would cost what the bound saves), and so
/// is any refused connection while `MAX_LINGERING_REFUSALS` others are lingering (`_place`).
async fn refuse(mut stream: TcpStream, refusal: Refusal, _place: tokio::sync::OwnedSemaphorePermit) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let linger = async {
        stream.write_all(refusal.http_response()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

/// Logs refused connections at most once a second (a flood must not flood the journal too).
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    since_last: u64,
}

impl RefusalLog {
    fn note(&mut self, refusal: Refusal, peer: SocketAddr) {
        self.since_last += 1;
        if self.last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let why = match refusal {
            Refusal::Server => "limits.connections reached",
            Refusal::Client => "limits.connectionsperclient reached",
        };
        log::warn!("refused {} connection(s) ({why}; latest from {peer})", self.since_last);
        self.last = Some(Instant::now());
        self.since_last = 0;
    }
}

async fn serve_connection<S>(
    state: Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    io: IdleTimeout<S>,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| super::service::handle(state.clone(), req, peer));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        log::debug!("connection from {peer}: {e}");
    }
}

/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much a closing connection reads and discards at most.
const LINGER_BYTES: usize = 64 << 20;

/// A stream that fails with `TimedOut` when a read or write has waited `timeout` without any
/// progress. Any progress in either direction restarts the clock.
///
/// Its shutdown is a lingering close (as nginx's `lingering_close`): the write side is shut
/// (the answer is complete, FIN follows it), then what the client still sends is read and
/// discarded until it closes its side, for at most `LINGER_TIME` and `LINGER_BYTES`. Closing a
/// socket with unread data makes the kernel reset the connection, and a client still writing a
/// request body (a chunk answered 416 or 401 before it was read) would see `broken pipe` or
/// `connection reset` instead of the answer.
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    /// Bytes discarded so far, once the shutdown has begun.
    lingering: Option<usize>,
}

impl<S> IdleTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        IdleTimeout { inner, timeout, sleep: Box::pin(tokio::time::sleep(timeout)), lingering: None }
    }

    fn progress(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let discarded = match this.lingering {
            Some(n) => n,
            None => {
                match Pin::new(&mut this.inner).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other,
                }
                this.sleep.as_mut().reset(Instant::now() + LINGER_TIME);
                this.lingering = Some(0);
                0
            }
        };
        let mut discarded = discarded;
        let mut sink = [0u8; 8192];
        loop {
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // The client closed its side (or the connection broke): done.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    discarded += buf.filled().len();
                    this.lingering = Some(discarded);
                    if discarded >= LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending => {
                    return match this.sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}
