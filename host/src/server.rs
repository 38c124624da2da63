//! The HTTP server: accepts connections, serves HTTP/1.1 and HTTP/2 through hyper, and drains
//! in-flight requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::service::HttpService;

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests up to `server.shutdown_grace` to finish. Returns whether everything drained in time.
pub async fn serve(
    listener: TcpListener,
    service: Arc<HttpService>,
    shutdown: impl Future<Output = ()>,
    server: &ServerConfig,
) -> bool {
    let grace = server.shutdown_grace;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Bounds both a slow request head (slowloris) and an idle keep-alive connection: hyper
        // starts this timer whenever it waits for a request head.
        .header_read_timeout(server.header_timeout)
        .max_headers(server.max_headers)
        .max_buf_size(server.max_head_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_head_size).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Usually EMFILE: back off instead of spinning, keep serving.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                service_fn(move |request| {
                    let service = service.clone();
                    async move { Ok::<_, Infallible>(service.handle(request, Some(peer)).await) }
                }),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("connection from {peer} ended with an error: {err}");
            }
        });
    }
    // Closing the listener refuses new connections while the old ones drain.
    drop(listener);
    tracing::info!(
        "shutting down: draining in-flight requests (up to {:.1}s)",
        grace.as_secs_f64()
    );
    tokio::select! {
        () = graceful.shutdown() => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over with requests still in flight; stopping anyway");
            false
        }
    }
}
