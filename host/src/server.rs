//! The HTTP server: accepts connections, tells HTTP/1.1 from HTTP/2 (prior knowledge) by
//! peeking at a connection's first bytes, serves it through hyper, and drains in-flight
//! requests on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::service::HttpService;
use pyhost_core::config::ServerConfig;

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How many bytes of the preface settle the question: `PRI * HTTP/2.0` is no HTTP/1 request
/// line (hyper refuses any version but 1.x), so a match that long is HTTP/2.
const H2_DECISIVE: usize = "PRI * HTTP/2.0".len();

/// How far beyond `server.max_headers` and `server.max_head_size` hyper and h2 read a head, as
/// a multiple of the limit. Inside this margin a head over a limit still reaches the service,
/// which refuses it with its usual JSON body and `x-request-id` (`service.rs`); only a head
/// beyond it gets the libraries' own bare 431. Some bound must stay with the libraries, to cap
/// what a connection buffers before anything is answered.
const HEAD_MARGIN: usize = 2;

/// The bound hyper and h2 enforce themselves for a limit the service enforces.
fn library_bound(limit: usize) -> usize {
    limit.saturating_mul(HEAD_MARGIN)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests up to `server.shutdown_grace` to finish. Returns whether everything drained in time.
pub async fn serve(
    listener: TcpListener,
    service: Arc<HttpService>,
    shutdown: impl Future<Output = ()>,
    server: &ServerConfig,
) -> bool {
    let grace = server.shutdown_grace;
    let protocols = Arc::new(Protocols::new(server));
    let graceful = GracefulShutdown::new();
    // Connections that have not sent their first bytes yet are not hyper's: they wait on this
    // instead, and close when shutdown begins.
    let (stop_sniffing, sniffing) = watch::channel(());
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
        let connection = Connection {
            stream,
            peer,
            service: service.clone(),
            protocols: protocols.clone(),
            // Taken here, before shutdown can begin, so that no connection misses the signal.
            watcher: graceful.watcher(),
            stop: sniffing.clone(),
        };
        tokio::spawn(connection.run());
    }
    // Closing the listener refuses new connections while the old ones drain.
    drop(listener);
    drop(stop_sniffing);
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

/// The protocol builders, configured once from `[server]` and shared by every connection.
///
/// `undecided` carries the same settings as `http1` and `http2`. hyper-util's builder could
/// serve all three cases (`http1_only()` / `http2_only()` copies of it), but its connection
/// future is sized for either protocol: about 1 KiB more per connection than hyper's own
/// HTTP/1 connection (15.2 against 14.2 KiB for each of 1,000 idle keep-alive connections).
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// For a client whose first bytes could still become either protocol; it reads until
    /// they tell, which the peek cannot.
    undecided: auto::Builder<TokioExecutor>,
    header_timeout: Duration,
}

impl Protocols {
    fn new(server: &ServerConfig) -> Self {
        // The limits themselves are the service's to enforce, with a JSON answer; the
        // libraries only stop a head far beyond them.
        let max_headers = library_bound(server.max_headers);
        let max_buf_size = library_bound(server.max_head_size);
        let max_header_list = u32::try_from(max_buf_size).unwrap_or(u32::MAX);
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // Bounds both a slow request head (slowloris) and an idle keep-alive connection:
            // hyper starts this timer whenever it waits for a request head.
            .header_read_timeout(server.header_timeout)
            .max_headers(max_headers)
            .max_buf_size(max_buf_size);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(max_header_list);
        let mut undecided = auto::Builder::new(TokioExecutor::new());
        undecided
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_timeout)
            .max_headers(max_headers)
            .max_buf_size(max_buf_size);
        undecided
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(max_header_list);
        Self {
            http1,
            http2,
            undecided,
            header_timeout: server.header_timeout,
        }
    }
}

/// The protocol a connection's first bytes announce.
#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// A strict prefix of the HTTP/2 preface, too short to tell.
    Undecided,
}

impl Protocol {
    fn of(first: &[u8]) -> Self {
        let length = first.len().min(H2_PREFACE.len());
        if first[..length] != H2_PREFACE[..length] {
            Self::Http1
        } else if length >= H2_DECISIVE {
            Self::Http2
        } else {
            Self::Undecided
        }
    }
}

/// One accepted connection, before its protocol is known.
struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    service: Arc<HttpService>,
    protocols: Arc<Protocols>,
    watcher: Watcher,
    stop: watch::Receiver<()>,
}

impl Connection {
    /// Serves the connection to its end.
    ///
    /// The first bytes are peeked, not read, so hyper's own first read takes the whole request
    /// head into its buffer (hyper-util's auto builder reads the first 24 bytes itself and hands
    /// them back as a separate first read, which makes hyper grow its 8 KiB read buffer to
    /// 16 KiB on every connection). A client that sends nothing within `header_timeout` is
    /// disconnected, as one that stalls mid-head is.
    async fn run(mut self) {
        let timeout = self.protocols.header_timeout;
        let protocol = tokio::select! {
            sniffed = tokio::time::timeout(timeout, sniff(&self.stream)) => match sniffed {
                Ok(Ok(Some(protocol))) => protocol,
                // Closed before sending anything, or a socket error: nothing to answer.
                Ok(Ok(None) | Err(_)) => return,
                Err(_) => {
                    tracing::debug!("connection from {} sent nothing in time; closed", self.peer);
                    return;
                }
            },
            _ = self.stop.changed() => return,
        };
        let Self {
            stream,
            peer,
            service,
            protocols,
            watcher,
            stop: _,
        } = self;
        let io = TokioIo::new(stream);
        // `map`, not an `async` block around the await: the block would hold the request's
        // future twice, once captured and once being awaited.
        let service =
            service_fn(move |request| service.handle(request, Some(peer)).map(Ok::<_, Infallible>));
        // The HTTP/1 connection stays inline in the task; the rarer ones are boxed so that
        // every connection's task is not sized for the largest.
        let result = match protocol {
            Protocol::Http1 => watcher
                .watch(protocols.http1.serve_connection(io, service))
                .await
                .map_err(Into::into),
            Protocol::Http2 => {
                Box::pin(watcher.watch(protocols.http2.serve_connection(io, service)))
                    .await
                    .map_err(Into::into)
            }
            Protocol::Undecided => {
                Box::pin(
                    watcher.watch(
                        protocols
                            .undecided
                            .serve_connection(io, service)
                            .into_owned(),
                    ),
                )
                .await
            }
        };
        if let Err(err) = result {
            let err: Box<dyn std::error::Error + Send + Sync> = err;
            tracing::debug!("connection from {peer} ended with an error: {err}");
        }
    }
}

/// Waits for the client's first bytes and names the protocol they start, leaving them in the
/// socket. `None` when the client closed without sending anything.
async fn sniff(stream: &TcpStream) -> io::Result<Option<Protocol>> {
    let mut first = [0u8; H2_PREFACE.len()];
    let length = stream.peek(&mut first).await?;
    Ok((length > 0).then(|| Protocol::of(&first[..length])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_request_line_is_http1() {
        assert_eq!(Protocol::of(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::of(b"POST /echo HTTP/1.1\r\n"), Protocol::Http1);
        assert_eq!(Protocol::of(b"G"), Protocol::Http1);
        assert_eq!(Protocol::of(b"PRI /x HTTP/1.1\r\n"), Protocol::Http1);
    }

    #[test]
    fn the_preface_is_http2_once_it_is_decisive() {
        assert_eq!(Protocol::of(H2_PREFACE), Protocol::Http2);
        assert_eq!(Protocol::of(&H2_PREFACE[..H2_DECISIVE]), Protocol::Http2);
        assert_eq!(
            Protocol::of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"),
            Protocol::Http2
        );
    }

    #[test]
    fn a_short_prefix_of_the_preface_is_undecided() {
        assert_eq!(Protocol::of(b"P"), Protocol::Undecided);
        assert_eq!(Protocol::of(b"PRI * HTTP/2"), Protocol::Undecided);
    }
}
