//! The connection loop shared by the HTTPS listeners and the admin
//! listener: accept (bounded), optional TLS handshake (with a timeout),
//! HTTP/1.1 keep-alive or HTTP/2 (by ALPN), idle connections closed,
//! graceful shutdown.
//!
//! A connection holds one of `max_connections` slots for as long as it is
//! open, so none may be held by a client that does nothing: the TLS
//! handshake and each request's headers are timed, and a connection with
//! no request in flight that has moved no byte for `idle_timeout` is
//! closed, whatever it is doing (nothing after TLS, an HTTP/2 preface and
//! then silence, a keep-alive connection left open). A body that trickles
//! is bounded by the push source's body deadline.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and for each request's headers.
    pub header_timeout: Duration,
    /// A connection with no request in flight that moves no byte for this
    /// long is closed.
    pub idle_timeout: Duration,
}

/// How long in-flight requests get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection has been doing, shared by its stream, its service
/// and its idle watch.
#[derive(Debug)]
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last byte read or written.
    last_ms: AtomicU64,
    /// Requests being handled.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle_since = last.elapsed();
            if self.in_flight.load(Ordering::Relaxed) == 0 && idle_since >= limit {
                return;
            }
            let wait = limit
                .saturating_sub(idle_since)
                .max(Duration::from_millis(100));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A stream that notes when bytes move.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The client's address, in every request's extensions (for log lines
/// about refused requests).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Serves `handler` on `listener` until `shutdown` turns true, then stops
/// accepting and lets in-flight requests finish (up to [`DRAIN_TIMEOUT`]).
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    // Pings find a peer that vanished without closing; the idle watch
    // closes one that stays but does nothing.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout.max(Duration::from_secs(1))))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let activity = Activity::new();
        let handler = handler.clone();
        let counted = activity.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(PeerAddr(peer));
            let handler = handler.clone();
            let in_flight = InFlight::new(&counted);
            async move {
                let reply = handler(req).await;
                drop(in_flight);
                Ok::<_, Infallible>(reply)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let idle = limits.idle_timeout;
            let ended = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    activity.touch();
                    let io = Watched {
                        inner: stream,
                        activity: activity.clone(),
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r.err(),
                        () = activity.idle(idle) => None,
                    }
                }
                None => {
                    let io = Watched {
                        inner: tcp,
                        activity: activity.clone(),
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r.err(),
                        () = activity.idle(idle) => None,
                    }
                }
            };
            if let Some(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; closing them");
    }
}
