//! What one connection, and all of them together, may hold: the server's connection and
//! response limits, built in one place ([`ConnectionLimits::new`]) from the `[server]` keys
//! (`max_connections`, `send_timeout`, `response_buffer`, `connection_response_buffer`,
//! `h2_max_concurrent_streams`; their defaults are the config's) and the constants below, which
//! are not keys.

use std::time::Duration;

use pyhost_core::config::ServerConfig;

/// File descriptors kept back from `max_connections` under the open-files limit: the
/// listener, the interpreter's and the handlers' own files, the key-value store, stdio.
pub const RESERVED_FDS: u64 = 64;

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

/// The size of the pieces a response body is handed to hyper in over HTTP/2. Sending progress
/// is counted in whole pieces there (a piece counts once the client has taken all of it), so
/// `send_timeout` asks an HTTP/2 client to take at least this much per timeout. HTTP/1 bodies
/// are not cut: their progress is the socket's writes (`outbox.rs`).
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
    /// before the connection is closed: `server.send_timeout`, by default
    /// `server.body_timeout`, the same patience for a client's reading as for its sending.
    pub send_timeout: Duration,
    /// How long an HTTP/2 connection with no open stream is kept: `server.header_timeout`,
    /// the keep-alive timeout HTTP/1 connections get from hyper.
    pub idle_timeout: Duration,
    /// `server.response_buffer`: response bytes held at once, across all connections, for
    /// clients that have not taken them yet. A response that would pass it is answered 503
    /// instead, unless nothing else is held.
    pub response_buffer: usize,
    /// `server.connection_response_buffer`: the same for one connection (its HTTP/2 streams
    /// together). A connection's first response is taken whatever its size, so HTTP/1, one
    /// response at a time, is never refused by it.
    pub connection_response_buffer: usize,
    /// `server.h2_max_concurrent_streams`: streams a client may have open on one HTTP/2
    /// connection. A stream with response data the client's window does not let out stays
    /// open, so this also bounds how many small responses one connection can leave waiting.
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
            max_connections: server.max_connections.min(by_fds).max(1),
            send_timeout: server.send_timeout,
            idle_timeout: server.header_timeout,
            response_buffer: server.response_buffer,
            connection_response_buffer: server.connection_response_buffer,
            h2_max_concurrent_streams: server.h2_max_concurrent_streams,
            drain_linger: DRAIN_LINGER,
        }
    }
}
