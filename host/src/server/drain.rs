//! Shutdown without losing a request: what every connection does once the signal has come.
//!
//! - HTTP/2: a GOAWAY at once (hyper's graceful shutdown: h2 sends one naming no stream, a
//!   PING, then one with the last stream it accepted). Streams up to it are answered, the
//!   client knows any later one was not processed, and the connection closes when they are
//!   done.
//! - HTTP/1, a request in flight: its response carries `Connection: close`, and hyper closes
//!   the connection after writing it. Every response made after the signal carries it, so a
//!   request read just after the signal is answered the same way.
//! - HTTP/1, idle: hyper's own graceful shutdown would close it at once, and that is where
//!   requests were lost: a client in a keep-alive loop sends its next request the moment it
//!   has its answer, and a request already on its way (or sitting unread in the socket) then
//!   met a closed connection. Instead the connection is kept for one more request, answered
//!   with `Connection: close`, and closed only after it has been idle for
//!   [`super::limits::DRAIN_LINGER`].
//! - Not yet sent its first bytes: served like an idle HTTP/1 connection, its first request
//!   answered with `Connection: close`, closed if nothing comes within the same linger.
//!
//! Cost per request: one atomic load (whether the drain has begun).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Whether the drain has begun, for every connection to see.
#[derive(Default)]
pub(super) struct Drain {
    begun: AtomicBool,
    token: CancellationToken,
}

impl Drain {
    /// Starts the drain: every connection is woken to act on it.
    pub(super) fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the drain has begun.
    pub(super) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Resolves when the drain begins.
    pub(super) fn begun(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}
