//! The HTTP server: accepts connections up to `max_connections`, tells HTTP/1.1 from HTTP/2
//! (prior knowledge) by peeking at a connection's first bytes, serves it through hyper under
//! the connection limits, and drains in-flight requests on shutdown.
//!
//! - [`limits`]: the limits and their defaults, built in one place;
//! - [`fd_limit`]: the open-files limit, raised at start;
//! - `accept`: the accept loop, its connection slots and its back-off;
//! - `protocols`: the hyper builders and the protocol peek;
//! - `connection`: one connection, and the timers that close it;
//! - `outbox`: response bytes held for clients, capped;
//! - `wire`: the socket, its writes counted and a refused write noted;
//! - `drain`: what a connection does once shutdown has begun;
//! - `throttle`: warnings that could repeat thousands of times a second.

mod accept;
mod connection;
mod drain;
pub mod fd_limit;
pub mod limits;
mod outbox;
mod protocols;
mod throttle;
mod wire;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::service::HttpService;
pub use limits::ConnectionLimits;
use pyhost_core::config::ServerConfig;

/// What every connection of one server shares.
struct Shared {
    service: Arc<HttpService>,
    protocols: protocols::Protocols,
    limits: ConnectionLimits,
    budget: Arc<outbox::Budget>,
    drain: Arc<drain::Drain>,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests up to `server.shutdown_grace` to finish. Returns whether everything drained in time.
pub async fn serve(
    listener: TcpListener,
    service: Arc<HttpService>,
    shutdown: impl Future<Output = ()>,
    server: &ServerConfig,
) -> bool {
    let open_files = fd_limit::current().ok();
    let limits = ConnectionLimits::new(server, open_files);
    tracing::info!(
        "up to {} connections (open files limit {})",
        limits.max_connections,
        open_files.map_or_else(|| "unknown".to_owned(), |limit| limit.to_string()),
    );
    let grace = server.shutdown_grace;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let shared = Arc::new(Shared {
        service,
        protocols: protocols::Protocols::new(server, &limits),
        budget: Arc::new(outbox::Budget::new(limits.response_buffer)),
        limits,
        drain: Arc::default(),
    });
    let connections = TaskTracker::new();
    let serve = |stream: tokio::net::TcpStream, peer, slot| {
        let _ = stream.set_nodelay(true);
        let connection = connection::Connection {
            stream,
            peer,
            shared: shared.clone(),
            slot,
        };
        connections.spawn(connection.run());
    };
    accept::accept_until(&listener, slots, shutdown, |stream, peer, slot| {
        serve(stream, peer, Some(slot));
    })
    .await;
    shared.drain.begin();
    shared.service.websockets().close_all();
    // What already waits in the backlog is served (drained like the rest); closing the
    // listener then refuses new connections while the old ones drain.
    accept::sweep(&listener, |stream, peer| serve(stream, peer, None));
    drop(listener);
    connections.close();
    tracing::info!(
        "shutting down: draining in-flight requests (up to {:.1}s)",
        grace.as_secs_f64()
    );
    tokio::select! {
        () = async {
            connections.wait().await;
            shared.service.websockets().wait().await;
        } => true,
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over with requests still in flight; stopping anyway");
            false
        }
    }
}
