//! Responses on their way out: what they hold while a client has not taken them, the caps on
//! that (for the whole server and for one connection), and how far each connection's
//! responses have got, for the send timeout and the idle and drain checks.
//!
//! A response's bytes are one allocation, made before hyper sees them, and freed only when
//! the last byte has been written to the socket: by hyper's write queue for HTTP/1, by h2's
//! send buffer for a stream, after the client's flow-control window has let them out. A client
//! that does not read, or keeps its window at zero, keeps them. So the body is charged to the
//! budgets before it is handed to hyper, and the charge is carried by the bytes themselves
//! ([`Bytes::from_owner`]): it is released when the allocation is, wherever that happens, and
//! the budgets count exactly what is held. A response that would pass a cap is answered 503
//! instead and its bytes freed at once.
//!
//! Over HTTP/2 the body goes to hyper in pieces of [`CHUNK`], each owning its share of the
//! charge's allocation; a piece counts as taken when h2 drops it, written. That count is the
//! connection's sending progress: its streams share the socket, so the socket's writes cannot
//! tell which of them is moving. An HTTP/1 connection sends one response at a time, so every
//! byte its socket takes is that response's: its progress is its socket's writes (`wire.rs`),
//! and its bodies go to hyper uncut, as large as they come (a file's chunks, a handler's
//! buffer), which hyper then writes with fewer and larger `writev` calls.
//!
//! Hot-path cost, per response with a body: two atomic additions (the connection's count,
//! uncontended, and the server's, shared by the workers), one small allocation for the owner,
//! and the same again in reverse when the bytes are freed; per piece another allocation and
//! an atomic addition. Per request, whatever its body: two atomic additions on the
//! connection's counters when it starts and two when its response is done. No lock, no
//! system call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};

use crate::streaming::body::{Body, BoxError, Kind, Streamed};

use super::drain::Drain;
use super::limits::CHUNK;
use super::throttle::Throttle;

/// The largest body an HTTP/1 connection sends without charging it ([`Outbox::http1`]).
const UNCHARGED: usize = 16 << 10;

/// The server's budget of response bytes held for clients, shared by every connection.
pub(super) struct Budget {
    held: AtomicUsize,
    limit: usize,
    refusals: Throttle,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            limit,
            refusals: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Response bytes held now.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// Why a response was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// The connection's other responses hold its share already.
    #[error("this connection's responses already hold {held} of its {limit} bytes")]
    Connection {
        /// Bytes the connection held.
        held: usize,
        /// Its limit.
        limit: usize,
    },
    /// All connections' responses hold the server's budget already.
    #[error("responses waiting on clients already hold {held} of the server's {limit} bytes")]
    Server {
        /// Bytes held server-wide.
        held: usize,
        /// The budget.
        limit: usize,
    },
}

/// One connection's responses: what they hold, how much of them clients have taken, and how
/// many requests are open.
pub(super) struct Outbox {
    budget: Arc<Budget>,
    drain: Arc<Drain>,
    limit: usize,
    held: AtomicUsize,
    taken: AtomicU64,
    open: AtomicUsize,
    events: AtomicU64,
    /// Bytes written to the socket, and whether the last write was refused (`wire.rs`).
    written: AtomicU64,
    blocked: AtomicBool,
    /// Bodies up to this size are sent uncharged (see [`Outbox::http1`]).
    uncharged: usize,
    /// HTTP/1: bodies are not cut into pieces, and progress is counted in written bytes.
    http1: bool,
}

impl Outbox {
    /// The outbox of a new connection, drawing on `budget`, holding at most `limit` bytes.
    pub(super) fn new(budget: Arc<Budget>, drain: Arc<Drain>, limit: usize) -> Self {
        Self {
            budget,
            drain,
            limit,
            held: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            written: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            uncharged: 0,
            http1: false,
        }
    }

    /// For an HTTP/1 connection: bodies up to [`UNCHARGED`] bytes are sent without a charge.
    /// HTTP/1 has one response in flight at a time, so what such bodies hold is bounded by
    /// `max_connections` × [`UNCHARGED`], and a client that does not take them is closed by
    /// the refused writes of its socket (`wire.rs`) as for a head. The charge is an
    /// allocation and four atomic operations per response (by callgrind, about 1% of a
    /// `/hello` request); HTTP/2, whose streams can leave many responses waiting, keeps it.
    ///
    /// Bodies are also handed to hyper whole, and the connection's progress is its socket's
    /// writes (see [`Outbox::progress`]).
    pub(super) fn http1(mut self) -> Self {
        self.uncharged = UNCHARGED;
        self.http1 = true;
        self
    }

    /// A write to the socket took `bytes`.
    pub(super) fn wrote(&self, bytes: usize) {
        self.written
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.blocked.store(false, Ordering::Relaxed);
    }

    /// A write to the socket was refused: the kernel's send buffer is full.
    pub(super) fn write_blocked(&self) {
        self.blocked.store(true, Ordering::Relaxed);
    }

    /// Whether the last write to the socket was refused, and the bytes written so far.
    pub(super) fn writes(&self) -> (bool, u64) {
        (
            self.blocked.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Response bytes this connection holds.
    pub(super) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Response bytes of this connection that clients have taken so far.
    #[cfg(test)]
    fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// How far this connection's responses have got, for the send timeout: for HTTP/1 the
    /// bytes its socket has taken (one response is written at a time, so they are that
    /// response's), for HTTP/2 the body bytes of its streams that h2 has written.
    pub(super) fn progress(&self) -> u64 {
        if self.http1 {
            self.written.load(Ordering::Relaxed)
        } else {
            self.taken.load(Ordering::Relaxed)
        }
    }

    /// Requests begun whose response body hyper has not dropped yet.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Requests begun plus requests finished: unchanged between two looks, nothing happened.
    pub(super) fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Marks a request begun; the guard marks it finished when dropped.
    pub(super) fn begin(self: &Arc<Self>) -> RequestGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Turns the service's response into what hyper sends: its body charged and cut into
    /// pieces, or a 503 when the caps leave no room for it. An HTTP/1 response made once the
    /// drain has begun says `Connection: close`.
    fn admit(
        self: &Arc<Self>,
        response: Response<Body>,
        request: RequestGuard,
        http1: bool,
    ) -> Response<OutBody> {
        let (mut parts, body) = response.into_parts();
        if http1 && self.drain.has_begun() {
            parts
                .headers
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let bytes = match body.into_kind() {
            Kind::Full(bytes) => bytes,
            Kind::Stream(stream) => {
                let body = OutBody {
                    rest: Bytes::new(),
                    pieces: Some(self.clone()),
                    stream: Some(stream),
                    _request: request,
                };
                return Response::from_parts(parts, body);
            }
        };
        if bytes.len() <= self.uncharged {
            return Response::from_parts(parts, OutBody::plain(bytes, request));
        }
        match self.charge(bytes.len()) {
            Ok(charge) => {
                let length = bytes.len();
                let pieces = !self.http1 && length > CHUNK;
                let owner = Charged {
                    bytes,
                    charge,
                    count_taken: !pieces,
                };
                let body = OutBody {
                    rest: Bytes::from_owner(owner),
                    pieces: pieces.then(|| self.clone()),
                    stream: None,
                    _request: request,
                };
                Response::from_parts(parts, body)
            }
            Err(refusal) => {
                let length = bytes.len();
                drop(bytes);
                self.budget.refusals.warn(|suppressed| {
                    tracing::warn!(
                        "answered 503 instead of a {length}-byte response: {refusal} \
                         ({suppressed} more since the last warning)"
                    );
                });
                // The 503's own bytes are charged past the caps (they are a hundred bytes): a
                // client that does not take them is closed by the send timeout all the same.
                busy(parts, request, self.charge_anyway(BUSY.len()))
            }
        }
    }

    fn charge_anyway(self: &Arc<Self>, bytes: usize) -> Charge {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        self.budget.held.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            outbox: self.clone(),
            bytes,
            server: true,
        }
    }

    /// A streamed chunk: charged to the connection only. What a stream holds is bounded by
    /// its producer's channel and hyper's queue, not by the budget, and charging it there let
    /// stalled streams turn every other client's whole responses into 503s.
    fn charge_stream(self: &Arc<Self>, bytes: usize) -> Charge {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            outbox: self.clone(),
            bytes,
            server: false,
        }
    }

    fn charge(self: &Arc<Self>, bytes: usize) -> Result<Charge, Refusal> {
        // A connection or a server holding nothing takes any response: a cap below one
        // response must not make that response impossible to send.
        let before = self.held.fetch_add(bytes, Ordering::Relaxed);
        if before != 0 && before.saturating_add(bytes) > self.limit {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Refusal::Connection {
                held: before,
                limit: self.limit,
            });
        }
        let budget = &self.budget;
        let before_all = budget.held.fetch_add(bytes, Ordering::Relaxed);
        if before_all != 0 && before_all.saturating_add(bytes) > budget.limit {
            budget.held.fetch_sub(bytes, Ordering::Relaxed);
            self.held.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Refusal::Server {
                held: before_all,
                limit: budget.limit,
            });
        }
        Ok(Charge {
            outbox: self.clone(),
            bytes,
            server: true,
        })
    }
}

/// A request between its start and the drop of its response body (or of the request's
/// future, when the client went away first).
pub(super) struct RequestGuard(Arc<Outbox>);

impl RequestGuard {
    /// The request's response as hyper is to send it (see [`Outbox`]); `http1` when the
    /// connection may be HTTP/1, whose drain needs `Connection: close`.
    pub(super) fn respond(self, response: Response<Body>, http1: bool) -> Response<OutBody> {
        let outbox = self.0.clone();
        outbox.admit(response, self, http1)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.events.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bytes charged to a connection and to the server.
struct Charge {
    outbox: Arc<Outbox>,
    bytes: usize,
    /// Also charged to the server's budget.
    server: bool,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.outbox.held.fetch_sub(self.bytes, Ordering::Relaxed);
        if self.server {
            self.outbox
                .budget
                .held
                .fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

/// The owner of a response's bytes: dropped with the last of them, releasing the charge.
struct Charged {
    bytes: Bytes,
    charge: Charge,
    /// A body sent whole: its drop is also the client's taking it.
    count_taken: bool,
}

impl AsRef<[u8]> for Charged {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        if self.count_taken {
            let taken = u64::try_from(self.charge.bytes).unwrap_or(u64::MAX);
            self.charge.outbox.taken.fetch_add(taken, Ordering::Relaxed);
        }
    }
}

/// One piece of a larger body: taken by the client when dropped.
struct Piece {
    bytes: Bytes,
    outbox: Arc<Outbox>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let taken = u64::try_from(self.bytes.len()).unwrap_or(u64::MAX);
        self.outbox.taken.fetch_add(taken, Ordering::Relaxed);
    }
}

/// A response body as hyper gets it: the rest of the bytes, handed out in pieces, and for a
/// streamed body the stream they come from.
pub(super) struct OutBody {
    rest: Bytes,
    /// The connection to credit each piece to, for a body cut into pieces (HTTP/2), and to
    /// charge a stream's chunks to.
    pieces: Option<Arc<Outbox>>,
    /// Where more bytes come from once `rest` is sent: each chunk is charged to the
    /// connection (for the send timeout; not to the server's budget, see
    /// [`Outbox::charge_stream`]) and, over HTTP/2, cut into pieces. The producer is held back by its
    /// channel, so what a stream holds is bounded by hyper's and h2's buffers plus the chunk
    /// in hand.
    stream: Option<Streamed>,
    _request: RequestGuard,
}

impl OutBody {
    /// A body charged to nothing: an empty one.
    fn plain(bytes: Bytes, request: RequestGuard) -> Self {
        Self {
            rest: bytes,
            pieces: None,
            stream: None,
            _request: request,
        }
    }
}

impl http_body::Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while this.rest.is_empty() {
            let Some(stream) = &mut this.stream else {
                return Poll::Ready(None);
            };
            match stream.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.stream = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(err))) => {
                    this.stream = None;
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => {
                        let Some(outbox) = &this.pieces else {
                            return Poll::Ready(None);
                        };
                        let charge = outbox.charge_stream(data.len());
                        this.rest = Bytes::from_owner(Charged {
                            bytes: data,
                            charge,
                            count_taken: false,
                        });
                    }
                    // Trailers pass through as they are.
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
            }
        }
        let data = match &this.pieces {
            Some(outbox) if !outbox.http1 => {
                let piece = this.rest.split_to(this.rest.len().min(CHUNK));
                Bytes::from_owner(Piece {
                    bytes: piece,
                    outbox: outbox.clone(),
                })
            }
            _ => std::mem::take(&mut this.rest),
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.stream.as_ref().is_none_or(|s| s.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let rest = u64::try_from(self.rest.len()).unwrap_or(u64::MAX);
        match &self.stream {
            None => SizeHint::with_exact(rest),
            Some(stream) => {
                let more = stream.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(more.lower().saturating_add(rest));
                if let Some(upper) = more.upper() {
                    hint.set_upper(upper.saturating_add(rest));
                }
                hint
            }
        }
    }
}

/// The body of the 503 that replaces a response the caps have no room for.
const BUSY: &[u8] = br#"{"detail":"Server busy: responses waiting on slow clients fill the server's response buffer; retry shortly"}"#;

/// That 503, with the original's request id.
fn busy(parts: http::response::Parts, request: RequestGuard, charge: Charge) -> Response<OutBody> {
    let owner = Charged {
        bytes: Bytes::from_static(BUSY),
        charge,
        count_taken: true,
    };
    let body = OutBody {
        rest: Bytes::from_owner(owner),
        pieces: None,
        stream: None,
        _request: request,
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    for name in ["x-request-id", "connection"] {
        if let Some(value) = parts.headers.get(name) {
            headers.insert(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    fn response(length: usize) -> Response<crate::streaming::body::Body> {
        Response::new(crate::streaming::body::Body::full(Bytes::from(vec![
            7u8;
            length
        ])))
    }

    fn drain_body(body: &mut OutBody) -> Vec<Bytes> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut frames = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut *body).poll_frame(&mut cx) {
            frames.push(frame.into_data().unwrap_or_default());
        }
        frames
    }

    #[test]
    fn a_charge_lasts_as_long_as_the_bytes() {
        let budget = Arc::new(Budget::new(1 << 20));
        let outbox = Arc::new(Outbox::new(budget.clone(), Arc::default(), 1 << 20));
        let length = 3 * CHUNK + 5;
        let mut sent = outbox.begin().respond(response(length), false);
        assert_eq!(budget.held(), length);
        assert_eq!(outbox.open(), 1);
        let pieces = drain_body(sent.body_mut());
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.iter().map(Bytes::len).sum::<usize>(), length);
        drop(sent);
        // The body is gone but hyper still holds its pieces: still charged, still open no more.
        assert_eq!(outbox.open(), 0);
        assert_eq!(budget.held(), length);
        assert_eq!(outbox.taken(), 0);
        let mut pieces = pieces.into_iter();
        drop(pieces.next());
        assert_eq!(outbox.taken(), CHUNK as u64);
        assert_eq!(
            budget.held(),
            length,
            "a freed piece does not free the allocation"
        );
        drop(pieces);
        assert_eq!(outbox.taken(), length as u64);
        assert_eq!((budget.held(), outbox.held()), (0, 0));
    }

    #[test]
    fn a_small_body_is_one_piece_taken_when_freed() {
        let budget = Arc::new(Budget::new(1 << 20));
        let outbox = Arc::new(Outbox::new(budget.clone(), Arc::default(), 1 << 20));
        let mut sent = outbox.begin().respond(response(100), false);
        let pieces = drain_body(sent.body_mut());
        assert_eq!(pieces.len(), 1);
        drop(sent);
        assert_eq!(budget.held(), 100);
        drop(pieces);
        assert_eq!((budget.held(), outbox.taken()), (0, 100));
    }

    #[test]
    fn past_a_cap_the_answer_is_503_and_nothing_is_held() {
        let budget = Arc::new(Budget::new(1000));
        let first = Arc::new(Outbox::new(budget.clone(), Arc::default(), 600));
        let second = Arc::new(Outbox::new(budget.clone(), Arc::default(), 600));
        // Nothing held: taken whatever its size.
        let big = first.begin().respond(response(900), false);
        assert_eq!(big.status(), StatusCode::OK);
        // The connection's own cap.
        let refused = first.begin().respond(response(10), false);
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(refused);
        // The server's.
        let refused = second.begin().respond(response(200), false);
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[RETRY_AFTER], "1");
        assert_eq!(
            (budget.held(), second.held()),
            (900 + BUSY.len(), BUSY.len())
        );
        drop(refused);
        let fits = second.begin().respond(response(100), false);
        assert_eq!(fits.status(), StatusCode::OK);
        drop((big, fits));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_http1_body_goes_whole_and_its_progress_is_the_sockets() {
        let budget = Arc::new(Budget::new(1 << 20));
        let outbox = Arc::new(Outbox::new(budget.clone(), Arc::default(), 1 << 20).http1());
        let length = 3 * CHUNK + 5;
        let mut sent = outbox.begin().respond(response(length), true);
        assert_eq!(budget.held(), length);
        let pieces = drain_body(sent.body_mut());
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [length]);
        drop(sent);
        assert_eq!(outbox.progress(), 0);
        outbox.wrote(1000);
        assert_eq!(
            outbox.progress(),
            1000,
            "a write is progress, whole piece or not"
        );
        drop(pieces);
        assert_eq!((budget.held(), outbox.held()), (0, 0));
    }

    #[test]
    fn draining_http1_answers_say_close() {
        let budget = Arc::new(Budget::new(1000));
        let drain = Arc::new(Drain::default());
        let outbox = Arc::new(Outbox::new(budget, drain.clone(), 1000));
        let sent = outbox.begin().respond(response(0), true);
        assert!(sent.headers().get(CONNECTION).is_none());
        drain.begin();
        let sent = outbox.begin().respond(response(0), true);
        assert_eq!(sent.headers()[CONNECTION], "close");
        let sent = outbox.begin().respond(response(0), false);
        assert!(sent.headers().get(CONNECTION).is_none(), "not over HTTP/2");
        assert!(sent.body().is_end_stream());
    }
}
