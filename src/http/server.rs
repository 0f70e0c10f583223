//! Listening, accepting and serving connections (HTTP/1.1, and HTTP/2 with prior knowledge),
//! with idle timeouts and graceful shutdown.
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

/// Serves connections from `listener` until `shutdown` resolves, then waits up to `drain` for
/// in-flight requests.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.idle_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let io = TokioIo::new(IdleTimeout::new(stream, state.config.idle_timeout));
        let service = service_fn(move |req| super::handle(state.clone(), req));
        let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                log::debug!("connection from {peer}: {e}");
            }
        });
    }
    log::info!("stopped accepting; waiting up to {}s for in-flight requests", drain.as_secs());
    tokio::select! {
        () = graceful.shutdown() => log::info!("all connections closed"),
        () = tokio::time::sleep(drain) => log::warn!("drain deadline reached; closing remaining connections"),
    }
    Ok(())
}

/// A stream that fails with `TimedOut` when a read or write has waited `timeout` without any
/// progress. Any progress in either direction restarts the clock.
pub struct IdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimeout {
    pub fn new(inner: TcpStream, timeout: Duration) -> Self {
        IdleTimeout { inner, timeout, sleep: Box::pin(tokio::time::sleep(timeout)) }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
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

impl AsyncRead for IdleTimeout {
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

impl AsyncWrite for IdleTimeout {
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
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
