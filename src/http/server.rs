//! The connection loop: hyper's HTTP/1 server over any listener (plain TCP
//! or TLS), with the edge limits `axum::serve` leaves unset — a deadline
//! for a request's headers (a slow-loris client is disconnected), a cap on
//! their number (431), and a cap on open connections (503 past it) — and
//! graceful shutdown: stop accepting, let open connections finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::serve::Listener;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::ClientAddress;
use crate::config::ServerConfig;

/// The limits every connection is served with.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    pub max_connections: usize,
}

impl EdgeLimits {
    pub fn from_config(server: &ServerConfig) -> Self {
        EdgeLimits {
            header_read_timeout: Duration::from_secs(server.header_read_timeout_seconds),
            max_headers: server.max_headers,
            max_connections: server.max_connections,
        }
    }
}

/// What a connection past the cap gets before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 115\r\n\r\n\
{\"error\":{\"message\":\"too many open connections; retry shortly\",\"type\":\"server_error\",\"param\":null,\"code\":\"busy\"}}";

/// Serves `router` on every connection `listener` accepts until `shutdown`
/// completes, then stops accepting and waits for open connections to end
/// (idle ones are closed at once; the caller bounds the wait).
pub async fn serve<L, F>(mut listener: L, router: Router, limits: EdgeLimits, shutdown: F)
where
    L: Listener<Addr = SocketAddr>,
    F: Future<Output = ()> + Send,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%address, limit = limits.max_connections, "connection refused: too many open");
            connections.spawn(async move {
                let mut io = io;
                let answer = async {
                    io.write_all(BUSY).await?;
                    io.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
            });
            continue;
        };
        // The router answers every request; each learns its client's
        // address as `ConnectInfo`, as `axum::serve` would have told it.
        let connection_router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo(ClientAddress(address)));
            // A Router is always ready: no `poll_ready` needed.
            tower_service::Service::call(&mut connection_router.clone(), request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_headers);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %address, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
}
