//! The protocol builders, configured once from `[server]` and the connection limits, and the
//! peek at a connection's first bytes that tells HTTP/1.1 from HTTP/2 (prior knowledge).

use std::io;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::limits::{self, ConnectionLimits};
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

/// How many header lines hyper parses into arrays on the stack: its default. A larger bound
/// puts both arrays on the heap for every request (two allocations, by callgrind).
const HYPER_INLINE_HEADERS: usize = 100;

/// hyper's bound on header lines: as many as it parses on the stack while the service's limit
/// is below that (so the margin is at least the limit's, and often more), else the margin.
fn hyper_max_headers(limit: usize) -> usize {
    if limit < HYPER_INLINE_HEADERS {
        HYPER_INLINE_HEADERS
    } else {
        library_bound(limit)
    }
}

// The settings as one list per protocol, applied to hyper's own builders and to the ones
// hyper-util's protocol-detecting builder hands out: those are other types with the same
// methods, so a function cannot take both.
macro_rules! http1_settings {
    ($builder:expr, $server:expr, $max_headers:expr, $max_buf_size:expr) => {
        $builder
            .timer(TokioTimer::new())
            // Bounds both a slow request head (slowloris) and an idle keep-alive connection:
            // hyper starts this timer whenever it waits for a request head.
            .header_read_timeout($server.header_timeout)
            .max_headers($max_headers)
            // Also bounds hyper's write queue: it asks the body for another piece only below it.
            .max_buf_size($max_buf_size)
    };
}

macro_rules! http2_settings {
    ($builder:expr, $connections:expr, $max_header_list:expr) => {
        // Windows are what a client may send unasked; the streams bound is also how many
        // responses one connection can leave waiting on a closed window (`limits.rs`).
        $builder
            .timer(TokioTimer::new())
            .max_header_list_size($max_header_list)
            .max_concurrent_streams($connections.h2_max_concurrent_streams)
            .initial_stream_window_size(limits::H2_STREAM_WINDOW)
            .initial_connection_window_size(limits::H2_CONNECTION_WINDOW)
            .max_send_buf_size(limits::H2_MAX_SEND_BUF)
    };
}

/// The protocol builders, shared by every connection.
///
/// `undecided` carries the same settings as `http1` and `http2`. hyper-util's builder could
/// serve all three cases (`http1_only()` / `http2_only()` copies of it), but its connection
/// future is sized for either protocol: about 1 KiB more per connection than hyper's own
/// HTTP/1 connection (15.2 against 14.2 KiB for each of 1,000 idle keep-alive connections).
pub(super) struct Protocols {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
    /// For a client whose first bytes could still become either protocol; it reads until
    /// they tell, which the peek cannot.
    pub undecided: auto::Builder<TokioExecutor>,
}

impl Protocols {
    pub(super) fn new(server: &ServerConfig, connections: &ConnectionLimits) -> Self {
        // The limits themselves are the service's to enforce, with a JSON answer; the
        // libraries only stop a head far beyond them.
        let max_headers = hyper_max_headers(server.max_headers);
        let max_buf_size = library_bound(server.max_head_size);
        let max_header_list = u32::try_from(max_buf_size).unwrap_or(u32::MAX);
        let mut http1 = http1::Builder::new();
        http1_settings!(http1, server, max_headers, max_buf_size);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2_settings!(http2, connections, max_header_list);
        let mut undecided = auto::Builder::new(TokioExecutor::new());
        http1_settings!(undecided.http1(), server, max_headers, max_buf_size);
        http2_settings!(undecided.http2(), connections, max_header_list);
        Self {
            http1,
            http2,
            undecided,
        }
    }
}

/// The protocol a connection's first bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
    /// A strict prefix of the HTTP/2 preface, too short to tell.
    Undecided,
}

impl Protocol {
    pub(super) fn of(first: &[u8]) -> Self {
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

/// Waits for the client's first bytes and names the protocol they start, leaving them in the
/// socket. `None` when the client closed without sending anything.
pub(super) async fn sniff(stream: &TcpStream) -> io::Result<Option<Protocol>> {
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
