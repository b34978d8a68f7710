//! Serving connections: accept, TLS handshake, HTTP/1.1 with limits, graceful shutdown.
//!
//! The outside world sets the pace here, so everything is bounded: the number of open
//! connections (`http.max_connections`; at the limit new connections wait in the listen
//! backlog, and that is logged), the time a client may take to send a request's headers,
//! which also closes keep-alive connections idle that long (`http.header_read_timeout`),
//! the bytes of a request head (`http.max_header_size`), and the TLS handshake. A slow or
//! silent socket therefore holds a connection slot for a bounded time only.
//!
//! Each connection's handler sees the client's address as [`ConnectInfo`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, error, warn};

use super::tls::ServerTls;

/// Longest time a client may take for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one "connection limit reached" warning this often.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The bounds of serving (`[http]`).
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest time to receive a request's headers; also the idle limit of a keep-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes (at least 8 KiB).
    pub max_header_size: usize,
}

/// Serve `router` on `listener` (HTTPS with `tls`) until `shutdown` is cancelled; then stop
/// accepting, let requests in flight finish within `grace`, and close what is left.
pub async fn serve(
    listener: TcpListener,
    tls: Option<ServerTls>,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut warned_at: Option<Instant> = None;
    loop {
        while connections.try_join_next().is_some() {}
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if warned_at.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                    warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached (http.max_connections); new connections wait"
                    );
                    warned_at = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors, say: wait for some to be released.
                    error!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let (router, limits, shutdown) = (router.clone(), limits.clone(), shutdown.clone());
        connections.spawn(connection(stream, peer, tls, router, limits, shutdown, slot));
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(?grace, open = connections.len(), "requests still open after the grace period; closing them");
        connections.shutdown().await;
    }
}

/// One connection, holding its `slot` until it closes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<ServerTls>,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let Some(tls) = tls else {
        return http1(stream, peer, router, &limits, &shutdown).await;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => http1(stream, peer, router, &limits, &shutdown).await,
        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn http1<I>(io: I, peer: SocketAddr, router: Router, limits: &ServeLimits, shutdown: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                debug!(%peer, %error, "connection closed");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
