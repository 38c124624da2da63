//! The accept loop: one connection per slot of `max_connections`, and a back-off when the
//! process is out of descriptors or memory instead of a loop that spins on the error.
//!
//! A slot is taken before `accept` is called, so at the limit the loop simply stops calling
//! it: new connections wait in the kernel's listen backlog (and beyond it, the client's SYN
//! retries) until a connection ends. Cost: one semaphore acquire and release per connection;
//! nothing per request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::throttle::Throttle;

/// The first pause after a resource error; it doubles on each one after, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown` resolves, handing each to `serve` with its slot.
pub(super) async fn accept_until(
    listener: &TcpListener,
    slots: Arc<Semaphore>,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let warnings = Throttle::new(Duration::from_secs(10));
    let mut pause = FIRST_PAUSE;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => return,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                pause = FIRST_PAUSE;
                serve(stream, peer, slot);
            }
            // One connection's trouble (reset before it was accepted, ...): next one.
            Err(err) if !is_resource_error(&err) => {
                tracing::debug!("accept failed: {err}");
            }
            Err(err) => {
                warnings.warn(|suppressed| {
                    tracing::warn!(
                        "accept failed: {err}; pausing new connections (up to {:.0}s at a time, \
                         {suppressed} more failures since the last warning)",
                        MAX_PAUSE.as_secs_f64()
                    );
                });
                drop(slot);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut shutdown => return,
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Takes every connection waiting in the listen backlog, without waiting for more: called once
/// the drain has begun, just before the listener is closed, which would reset them. They are
/// served past `max_connections` (the backlog bounds them) and drained like the others: their
/// first request is answered with `Connection: close`.
///
/// The accept is a system call of its own rather than tokio's, which answers from the readiness
/// it last saw and could report an empty backlog that is not.
pub(super) fn sweep(listener: &TcpListener, mut serve: impl FnMut(TcpStream, SocketAddr)) {
    let socket = socket2::SockRef::from(listener);
    let mut taken = 0usize;
    loop {
        let (stream, peer) = match socket.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // Empty (WouldBlock), or out of descriptors: nothing more can be taken.
            Err(_) => break,
        };
        let Some(peer) = peer.as_socket() else {
            continue;
        };
        let stream = std::net::TcpStream::from(stream);
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        taken += 1;
        serve(stream, peer);
    }
    if taken > 0 {
        tracing::info!(
            "shutting down: serving {taken} connections that were waiting to be accepted"
        );
    }
}

/// Errors that say the process, not the connection, is short of something: retrying at once
/// fails the same way.
fn is_resource_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_exhaustion_is_a_resource_error() {
        assert!(is_resource_error(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_resource_error(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_resource_error(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
