//! What one connection, and all of them together, may hold: the server's connection and
//! response limits, each with its default, built in one place ([`ConnectionLimits::new`]).
//!
//! Only some of these are `[server]` keys today; the others are constants here until the
//! config file names them (each is marked `config key`), so wiring one is a matter of reading
//! it in `new`.

use std::time::Duration;

use crate::config::ServerConfig;

/// `server.max_connections` when the config names none (config key): open connections at
/// once; beyond it new ones wait in the listen backlog. An idle HTTP/1 connection costs about
/// 15 KiB, an idle HTTP/2 one a little more, so 4,096 idle ones stay under about 80 MiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// File descriptors kept back from `max_connections` under the open-files limit: the
/// listener, the interpreter's and the handlers' own files, the key-value store, stdio.
pub const RESERVED_FDS: u64 = 64;

/// `server.response_buffer` (config key): response bytes held at once, across all
/// connections, for clients that have not taken them yet. A response that would pass it is
/// answered 503 instead, unless nothing else is held.
pub const DEFAULT_RESPONSE_BUFFER: usize = 64 << 20;

/// `server.connection_response_buffer` (config key): the same for one connection (its HTTP/2
/// streams together). A connection's first response is taken whatever its size, so HTTP/1,
/// one response at a time, is never refused by it.
pub const DEFAULT_CONNECTION_RESPONSE_BUFFER: usize = 8 << 20;

/// `server.h2_max_concurrent_streams` (config key): streams a client may have open on one
/// HTTP/2 connection. RFC 9113 §6.5.2 recommends no fewer than 100; hyper's default is 200.
/// A stream with response data the client's window does not let out stays open, so this
/// also bounds how many small responses one connection can leave waiting.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The HTTP/2 receive window of one stream (not a config key): request body bytes a client
/// may send before the handler reads them. A quarter of hyper's 1 MiB, which is also the
/// default body limit: a stream rarely needs more in flight, and 100 streams cannot then
/// claim the connection's whole window.
pub const H2_STREAM_WINDOW: u32 = 256 << 10;

/// The HTTP/2 receive window of a connection (not a config key): unread request body bytes
/// one connection may leave in the server, whatever its streams. hyper's default.
pub const H2_CONNECTION_WINDOW: u32 = 1 << 20;

/// h2's per-stream send buffer (not a config key): response bytes it takes from hyper ahead
/// of what the client's window lets out. One chunk of [`CHUNK`]: h2 then asks for the next
/// chunk only as the window opens. (The whole response is held and charged either way; this
/// bounds h2's copy of it, not the response.)
pub const H2_MAX_SEND_BUF: usize = CHUNK;

/// The size of the pieces a response body is handed to hyper in. Sending progress is counted
/// in whole pieces (a piece counts once the client has taken all of it), so `send_timeout`
/// asks a client to take at least this much per timeout.
pub const CHUNK: usize = 64 << 10;

/// After SIGTERM, how long an idle HTTP/1 connection is kept open for one more request
/// (answered with `Connection: close`) before it is closed (not a config key). HTTP/1 has no
/// way to tell a client to stop sending, so the close of an idle connection always races
/// with a request the client may be sending; a client in a keep-alive loop sends its next
/// request at once, well within this. HTTP/2 needs none: its GOAWAY names the last stream
/// the server will answer.
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// The limits one server enforces on its connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a response may wait on its client without any piece of it being taken
    /// before the connection is closed. `server.send_timeout` (config key), default
    /// `server.body_timeout`: the same patience for a client's sending as for its reading.
    pub send_timeout: Duration,
    /// How long an HTTP/2 connection with no open stream is kept: `server.header_timeout`,
    /// the keep-alive timeout HTTP/1 connections get from hyper.
    pub idle_timeout: Duration,
    /// See [`DEFAULT_RESPONSE_BUFFER`].
    pub response_buffer: usize,
    /// See [`DEFAULT_CONNECTION_RESPONSE_BUFFER`].
    pub connection_response_buffer: usize,
    /// See [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`].
    pub h2_max_concurrent_streams: u32,
    /// See [`DRAIN_LINGER`].
    pub drain_linger: Duration,
}

impl ConnectionLimits {
    /// The limits for `server`, with `open_files` the soft `RLIMIT_NOFILE` in force (see
    /// [`super::fd_limit`]): `max_connections` never exceeds what it leaves after
    /// [`RESERVED_FDS`], so that accepting never runs the process out of descriptors.
    pub fn new(server: &ServerConfig, open_files: Option<u64>) -> Self {
        let by_fds = open_files
            .map(|limit| usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX))
            .unwrap_or(usize::MAX);
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS.min(by_fds).max(1),
            send_timeout: server.body_timeout,
            idle_timeout: server.header_timeout,
            response_buffer: DEFAULT_RESPONSE_BUFFER,
            connection_response_buffer: DEFAULT_CONNECTION_RESPONSE_BUFFER,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            drain_linger: DRAIN_LINGER,
        }
    }
}
