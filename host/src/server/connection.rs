//! One accepted connection from its first byte to its close: the protocol peek, hyper serving
//! it, and the watch that closes it when its responses stop moving, when it has been idle too
//! long (HTTP/2; hyper's own timer does it for HTTP/1), or when the drain says so.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::FutureExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::Shared;
use super::limits::ConnectionLimits;
use super::outbox::Outbox;
use super::protocols::{Protocol, sniff};
use super::wire::Wire;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One accepted connection, before its protocol is known.
pub(super) struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub shared: Arc<Shared>,
    /// Its place under `max_connections`, given back when the connection ends (none for a
    /// connection taken from the backlog once the drain has begun: see `accept::sweep`).
    pub slot: Option<OwnedSemaphorePermit>,
}

/// How a connection ended, when not by the client closing or the protocol finishing.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("{0}")]
    Protocol(BoxError),
    #[error("no response bytes taken for {0:.1}s; closed")]
    Stalled(f64),
}

impl Connection {
    /// Serves the connection to its end.
    ///
    /// The first bytes are peeked, not read, so hyper's own first read takes the whole request
    /// head into its buffer (hyper-util's auto builder reads the first 24 bytes itself and hands
    /// them back as a separate first read, which makes hyper grow its 8 KiB read buffer to
    /// 16 KiB on every connection). A client that sends nothing within `header_timeout` is
    /// disconnected, as one that stalls mid-head is.
    pub(super) async fn run(self) {
        let Self {
            stream,
            peer,
            shared,
            slot,
        } = self;
        let Some(protocol) = first_bytes(&stream, peer, &shared).await else {
            return;
        };
        let outbox = Outbox::new(
            shared.budget.clone(),
            shared.drain.clone(),
            shared.limits.connection_response_buffer,
        );
        let outbox = Arc::new(if protocol == Protocol::Http1 {
            outbox.http1()
        } else {
            outbox
        });
        let io = TokioIo::new(Wire::new(stream, outbox.clone()));
        let http1 = protocol != Protocol::Http2;
        let service = shared.service.clone();
        let requests = outbox.clone();
        // `map`, not an `async` block around the await: the block would hold the request's
        // future twice, once captured and once being awaited.
        let service = service_fn(move |request| {
            let guard = requests.begin();
            service
                .handle(request, Some(peer))
                .map(move |response| Ok::<_, Infallible>(guard.respond(response, http1)))
        });
        let protocols = &shared.protocols;
        let watch = Watch::new(protocol, &shared.limits);
        // The HTTP/1 connection stays inline in the task; the rarer ones are boxed so that
        // every connection's task is not sized for the largest.
        let result = match protocol {
            Protocol::Http1 => {
                drive(
                    protocols
                        .http1
                        .serve_connection(io, service)
                        .with_upgrades(),
                    |connection| connection.graceful_shutdown(),
                    watch,
                    &outbox,
                    &shared,
                )
                .await
            }
            Protocol::Http2 => {
                Box::pin(drive(
                    protocols.http2.serve_connection(io, service),
                    |connection| connection.graceful_shutdown(),
                    watch,
                    &outbox,
                    &shared,
                ))
                .await
            }
            Protocol::Undecided => {
                Box::pin(drive(
                    protocols
                        .undecided
                        .serve_connection_with_upgrades(io, service)
                        .into_owned(),
                    |connection| connection.graceful_shutdown(),
                    watch,
                    &outbox,
                    &shared,
                ))
                .await
            }
        };
        drop(slot);
        if let Err(err) = result {
            tracing::debug!("connection from {peer} ended: {err}");
        }
    }
}

/// Waits for the connection's first bytes, within `header_timeout`, or once the drain has
/// begun within its linger (see `drain.rs`).
async fn first_bytes(stream: &TcpStream, peer: SocketAddr, shared: &Shared) -> Option<Protocol> {
    let timeout = shared.limits.idle_timeout;
    let mut sniffed = pin!(tokio::time::timeout(timeout, sniff(stream)));
    let outcome = tokio::select! {
        outcome = &mut sniffed => outcome,
        () = shared.drain.begun() => {
            let linger = shared.limits.drain_linger;
            tokio::time::timeout(linger, sniffed).await.unwrap_or_else(Err)
        }
    };
    match outcome {
        Ok(Ok(protocol)) => protocol,
        // A socket error: nothing to answer.
        Ok(Err(_)) => None,
        Err(_) => {
            tracing::debug!("connection from {peer} sent nothing in time; closed");
            None
        }
    }
}

/// Polls `connection` to its end, acting on the drain and on what [`Watch`] sees.
async fn drive<C, E>(
    connection: C,
    mut graceful_shutdown: impl FnMut(Pin<&mut C>),
    mut watch: Watch,
    outbox: &Outbox,
    shared: &Shared,
) -> Result<(), End>
where
    C: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let mut connection = pin!(connection);
    let mut begun = pin!(shared.drain.begun());
    let mut draining = false;
    let mut registered: Option<Waker> = None;
    poll_fn(|cx| {
        loop {
            // Polling the drain's future takes its waiter list's lock; the task's waker does
            // not change, so it is polled once (again only if the waker does) and the flag,
            // one atomic load, is read on every other poll.
            let signalled = !draining
                && (shared.drain.has_begun()
                    || (!registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && {
                        registered = Some(cx.waker().clone());
                        begun.as_mut().poll(cx).is_ready()
                    }));
            if signalled {
                draining = true;
                if watch.protocol != Protocol::Http1 {
                    graceful_shutdown(connection.as_mut());
                }
                // HTTP/1: see `drain.rs`. HTTP/2: a client that does not answer the GOAWAY's
                // PING would keep the connection to the end of the grace period.
                watch.linger(shared.limits.drain_linger, &shared.limits, outbox);
            }
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(result.map_err(|err| End::Protocol(err.into())));
            }
            match watch.poll(cx, outbox) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Verdict::Stalled) => {
                    let seconds = shared.limits.send_timeout.as_secs_f64();
                    return Poll::Ready(Err(End::Stalled(seconds)));
                }
                // GOAWAY, then the connection ends when h2 has sent it and the client has
                // answered its PING: poll it again. A client that never answers is closed
                // after another idle timeout.
                Poll::Ready(Verdict::Idle) => {
                    graceful_shutdown(connection.as_mut());
                    watch.linger(shared.limits.idle_timeout, &shared.limits, outbox);
                }
                // Nothing came during the linger, nothing is being read: close.
                Poll::Ready(Verdict::Lingered) => return Poll::Ready(Ok(())),
            }
        }
    })
    .await
}

/// What a [`Watch`] tick found.
enum Verdict {
    /// Responses are held and none of their bytes were taken for `send_timeout`, or the
    /// socket refused every write for that long.
    Stalled,
    /// An HTTP/2 connection without a request for the idle timeout.
    Idle,
    /// A connection told to finish (the drain, or a GOAWAY for idleness) that stayed idle
    /// for its linger.
    Lingered,
}

/// How many ticks make up a timeout: a timeout fires between itself and a quarter more.
const TICKS_PER_TIMEOUT: u32 = 4;

/// The timers of one connection, driven by ticks of one lazily made `Sleep`.
///
/// Each check counts consecutive ticks in which its counter did not move. The timer runs only
/// while a check needs it: while the connection holds response bytes or its socket refuses
/// writes (after hyper's poll, which normally has written a response out already, so a
/// response to a client that reads arms nothing), always for HTTP/2 idleness, and during the drain's linger. The cost on a
/// request's way is one atomic load per poll of the connection.
struct Watch {
    protocol: Protocol,
    tick: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
    send: Check,
    /// Writes refused by the socket without a byte written since.
    write: Check,
    /// HTTP/2 (or not yet known) and not already closing for idleness.
    idle: Option<Check>,
    linger: Option<Check>,
    sending: bool,
    blocked: bool,
}

/// One timeout, counted in ticks.
struct Check {
    seen: u64,
    /// Whole ticks without movement; -1 while the first tick is a partial one.
    quiet: i64,
    needed: i64,
}

impl Check {
    /// A check that starts now, `seen` the counter's value; `aligned` when the next tick is a
    /// whole tick away.
    fn new(timeout: Duration, tick: Duration, seen: u64, aligned: bool) -> Self {
        let ticks = timeout.as_secs_f64() / tick.as_secs_f64().max(1e-3);
        Self {
            seen,
            quiet: if aligned { 0 } else { -1 },
            // Quiet for `needed` whole ticks after the tick that saw the last movement.
            needed: (ticks.ceil() as i64).max(1),
        }
    }

    /// One tick: whether the counter has now been still for the whole timeout.
    fn still(&mut self, now: u64, busy: bool) -> bool {
        if busy || now != self.seen {
            self.seen = now;
            self.quiet = 0;
            return false;
        }
        self.quiet += 1;
        self.quiet >= self.needed
    }
}

impl Watch {
    fn new(protocol: Protocol, limits: &ConnectionLimits) -> Self {
        let shortest = if protocol == Protocol::Http1 {
            limits.send_timeout
        } else {
            limits.send_timeout.min(limits.idle_timeout)
        };
        let tick = tick_for(shortest);
        Self {
            protocol,
            tick,
            sleep: None,
            armed: false,
            send: Check::new(limits.send_timeout, tick, 0, true),
            write: Check::new(limits.send_timeout, tick, 0, true),
            idle: (protocol != Protocol::Http1)
                .then(|| Check::new(limits.idle_timeout, tick, 0, true)),
            linger: None,
            sending: false,
            blocked: false,
        }
    }

    /// Closes the connection once it has been idle for `linger`; the timer restarts, with
    /// ticks no longer than the linger's.
    fn linger(&mut self, linger: Duration, limits: &ConnectionLimits, outbox: &Outbox) {
        self.tick = self.tick.min(tick_for(linger));
        self.send = Check::new(limits.send_timeout, self.tick, outbox.progress(), true);
        self.write = Check::new(limits.send_timeout, self.tick, outbox.writes().1, true);
        self.idle = None;
        self.linger = Some(Check::new(linger, self.tick, outbox.events(), true));
        self.armed = false;
    }

    fn poll(&mut self, cx: &mut Context<'_>, outbox: &Outbox) -> Poll<Verdict> {
        loop {
            let sending = outbox.held() > 0;
            if sending && !self.sending {
                self.send.seen = outbox.progress();
                self.send.quiet = if self.armed { -1 } else { 0 };
            }
            self.sending = sending;
            let (blocked, written) = outbox.writes();
            if blocked && !self.blocked {
                self.write.seen = written;
                self.write.quiet = if self.armed { -1 } else { 0 };
            }
            self.blocked = blocked;
            if !sending && !blocked && self.idle.is_none() && self.linger.is_none() {
                // A timer left registered fires once into an idle poll; cheaper than a reset.
                self.armed = false;
                return Poll::Pending;
            }
            let tick = self.tick;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(tick)));
            if !self.armed {
                sleep.as_mut().reset(Instant::now() + tick);
                self.armed = true;
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // From now, not from the deadline: a runtime held up past several ticks must not
            // have them all counted at once against the client.
            sleep.as_mut().reset(Instant::now() + tick);
            if sending && self.send.still(outbox.progress(), false) {
                return Poll::Ready(Verdict::Stalled);
            }
            let (blocked, written) = outbox.writes();
            if blocked && self.write.still(written, false) {
                return Poll::Ready(Verdict::Stalled);
            }
            let busy = sending || outbox.open() > 0;
            if let Some(idle) = &mut self.idle
                && idle.still(outbox.events(), busy)
            {
                self.idle = None;
                return Poll::Ready(Verdict::Idle);
            }
            if let Some(linger) = &mut self.linger
                && linger.still(outbox.events(), busy)
            {
                return Poll::Ready(Verdict::Lingered);
            }
        }
    }
}

fn tick_for(timeout: Duration) -> Duration {
    (timeout / TICKS_PER_TIMEOUT).max(Duration::from_millis(10))
}
