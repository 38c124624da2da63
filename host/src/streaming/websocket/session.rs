//! One accepted WebSocket connection on tokio, from the upgrade to the close: the protocol
//! (tokio-tungstenite: framing, masking, fragments, ping/pong, the close handshake, UTF-8 and
//! size checks) on one side, the handler's two channels on the other.
//!
//! Two halves run side by side in the connection's task, so that neither direction can hold
//! up the other (a handler busy sending while its client sends too must not deadlock):
//! - the **reader** hands each message to the handler, waiting while the handler's queue is
//!   full, so a client cannot send faster than its handler reads (TCP pushes back);
//! - the **writer** sends what the handler queues, a batch at a time; the handler's `send_*`
//!   waits while that queue is full, so a client that does not read costs the queue, the
//!   protocol's write buffer and the kernel's socket buffer, no more. A batch that cannot be
//!   written within `server.send_timeout` drops the connection.
//!
//! Whichever way the connection ends, its close code is recorded in the [`CloseStatus`] the
//! handler's socket shares before the channels are dropped, so the handler's pending or next
//! receive or send raises `WebSocketDisconnect` with that code. No GIL anywhere here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::{CloseStatus, Incoming, Outgoing, Settings};
use crate::slots::Slot;
use crate::streaming::body::HandlerReply;
use crate::streaming::channel::{TokioReceiver, TokioSender};

/// How long the peer has to answer a close frame the server sent.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages written in one go when the handler has queued several.
const BATCH: usize = 32;

/// The close codes of RFC 6455 section 7.4.1 the server uses.
mod code {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const GOING_AWAY: u16 = 1001;
    pub(super) const PROTOCOL_ERROR: u16 = 1002;
    pub(super) const NO_STATUS: u16 = 1005;
    pub(super) const ABNORMAL: u16 = 1006;
    pub(super) const INVALID_DATA: u16 = 1007;
    pub(super) const TOO_BIG: u16 = 1009;
    pub(super) const INTERNAL_ERROR: u16 = 1011;
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Everything one accepted connection needs.
pub(super) struct Session {
    pub(super) upgrade: OnUpgrade,
    pub(super) incoming: TokioSender<Incoming>,
    pub(super) outgoing: TokioReceiver<Outgoing>,
    /// The handler's outcome: how to close once it returns (or raises).
    pub(super) finished: oneshot::Receiver<HandlerReply>,
    pub(super) status: Arc<CloseStatus>,
    pub(super) settings: Arc<Settings>,
    /// Cancelled when the server shuts down: close with 1001.
    pub(super) closing: CancellationToken,
    pub(super) request_id: Arc<str>,
    /// The connection's place under `[websocket] max_connections`, held until the handler
    /// has returned, not only until the connection closes: the handler is what costs.
    pub(super) slot: Slot,
}

impl Session {
    /// Serves the connection to its end, then waits for the handler to finish.
    pub(super) async fn run(self) {
        let Self {
            upgrade,
            incoming,
            mut outgoing,
            mut finished,
            status,
            settings,
            closing,
            request_id,
            slot,
        } = self;
        let mut handler_done = false;
        match upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(settings.protocol),
                )
                .await;
                let mut halves = Halves {
                    incoming: &incoming,
                    outgoing: &mut outgoing,
                    finished: &mut finished,
                    handler_done: &mut handler_done,
                    status: &status,
                    settings: &settings,
                    closing: &closing,
                };
                halves.converse(socket).await;
            }
            Err(err) => {
                tracing::debug!("request {request_id}: the WebSocket upgrade failed: {err}");
            }
        }
        // Whatever ended it, the handler learns how from its next (or pending) call.
        status.set(code::ABNORMAL, "");
        drop(incoming);
        drop(outgoing);
        if !handler_done {
            let _ = finished.await;
        }
        drop(slot);
    }
}

/// The two directions of one connection, borrowing the session's parts.
struct Halves<'a> {
    incoming: &'a TokioSender<Incoming>,
    outgoing: &'a mut TokioReceiver<Outgoing>,
    finished: &'a mut oneshot::Receiver<HandlerReply>,
    handler_done: &'a mut bool,
    status: &'a CloseStatus,
    settings: &'a Settings,
    closing: &'a CancellationToken,
}

/// What the pings go by: whether the client was heard from since the last ping.
struct Liveness {
    /// Set by the reader on every frame (a pong included), cleared by each ping.
    heard: AtomicBool,
    /// The reader is waiting for the handler to take a message, so it reads no frames (no
    /// pongs either): the client sent something recently, and is not taken for gone.
    handing_over: AtomicBool,
}

impl Liveness {
    /// At a ping: whether the client has shown it is there since the last one.
    fn still_there(&self) -> bool {
        self.heard.swap(false, Ordering::Relaxed) || self.handing_over.load(Ordering::Relaxed)
    }
}

/// Why the reader stopped reading.
enum ReadEnd {
    /// The connection is over (closed, reset, or the close handshake finished).
    Closed,
    /// The client broke the protocol: close with this code and reason, then drop it.
    Fail(u16, &'static str),
}

impl Halves<'_> {
    async fn converse(&mut self, socket: Socket) {
        let (mut sink, mut stream) = socket.split();
        let alive = Liveness {
            heard: AtomicBool::new(true),
            handing_over: AtomicBool::new(false),
        };
        let (fail_tx, fail_rx) = oneshot::channel::<(u16, &'static str)>();
        let incoming = self.incoming;
        let status = self.status;
        let reader = async {
            let end = read(&mut stream, incoming, status, &alive).await;
            match end {
                // The writer sends the close frame; the reader has nothing more to do.
                ReadEnd::Fail(code, reason) => {
                    status.set(code, reason);
                    let _ = fail_tx.send((code, reason));
                    std::future::pending::<()>().await;
                }
                ReadEnd::Closed => {}
            }
        };
        let writer = self.write(&mut sink, &alive, fail_rx);
        // Either half ending ends the connection: the reader once the peer has closed (or
        // vanished), the writer once the server's close has been answered or timed out, or
        // a send stalled, or a ping went unanswered.
        tokio::select! {
            () = reader => {}
            () = writer => {}
        }
    }

    /// Sends what the handler queues until the connection is closed from this side.
    async fn write(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        alive: &Liveness,
        mut fail: oneshot::Receiver<(u16, &'static str)>,
    ) {
        let send_timeout = self.settings.send_timeout;
        let mut ping = self.settings.ping_interval.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        // Set once a close frame is sent: the peer then has `CLOSE_TIMEOUT` to answer it.
        let mut close_sent: Option<tokio::time::Instant> = None;
        let mut outgoing_open = true;
        loop {
            let close_deadline = close_sent.map(|sent| sent + CLOSE_TIMEOUT);
            tokio::select! {
                item = self.outgoing.recv(), if outgoing_open && close_sent.is_none() => {
                    let Some(item) = item else {
                        // The handler's socket is gone; its end (`finished`) comes next.
                        outgoing_open = false;
                        continue;
                    };
                    match send_batch(sink, item, self.outgoing, self.status, send_timeout).await {
                        Sent::Open => {}
                        Sent::Closing => close_sent = Some(tokio::time::Instant::now()),
                        Sent::Failed => return,
                    }
                }
                reply = &mut *self.finished, if !*self.handler_done => {
                    *self.handler_done = true;
                    if close_sent.is_some() {
                        continue;
                    }
                    // What the handler sent before it returned goes out first.
                    let mut drained = Vec::new();
                    while let Some(Some(item)) = self.outgoing.recv().now_or_never() {
                        drained.push(item);
                    }
                    let raised = !matches!(&reply, Ok(reply) if reply.reply.status.as_u16() < 400);
                    let (code, reason) = if raised {
                        (code::INTERNAL_ERROR, "internal error")
                    } else {
                        (code::NORMAL, "")
                    };
                    drained.push(Outgoing::Close(code, reason.to_owned()));
                    let mut items = drained.into_iter();
                    while let Some(item) = items.next() {
                        match send_batch(sink, item, &mut Drained(&mut items), self.status, send_timeout).await {
                            Sent::Open => {}
                            Sent::Closing => {
                                close_sent = Some(tokio::time::Instant::now());
                                break;
                            }
                            Sent::Failed => return,
                        }
                    }
                }
                failed = &mut fail => {
                    if let Ok((code, reason)) = failed {
                        // Best effort: the client broke the protocol, it is dropped either way.
                        let frame = close_frame(code, reason);
                        let _ = tokio::time::timeout(send_timeout, sink.send(frame)).await;
                    }
                    return;
                }
                () = self.closing.cancelled(), if close_sent.is_none() => {
                    self.status.set(code::GOING_AWAY, "server shutting down");
                    let frame = close_frame(code::GOING_AWAY, "server shutting down");
                    if tokio::time::timeout(send_timeout, sink.send(frame)).await.is_err() {
                        return;
                    }
                    close_sent = Some(tokio::time::Instant::now());
                }
                () = tick(&mut ping), if ping.is_some() && close_sent.is_none() => {
                    if !alive.still_there() {
                        tracing::debug!("a WebSocket client did not answer a ping in time; dropped");
                        return;
                    }
                    let sent = tokio::time::timeout(send_timeout, sink.send(Message::Ping(Bytes::new()))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        return;
                    }
                }
                () = sleep_until(close_deadline), if close_deadline.is_some() => return,
            }
        }
    }
}

async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where more items of a batch come from: the handler's queue, or what was drained from it.
trait More {
    fn next_now(&mut self) -> Option<Outgoing>;
}

impl More for TokioReceiver<Outgoing> {
    fn next_now(&mut self) -> Option<Outgoing> {
        self.recv().now_or_never().flatten()
    }
}

struct Drained<'a, I: Iterator<Item = Outgoing>>(&'a mut I);

impl<I: Iterator<Item = Outgoing>> More for Drained<'_, I> {
    fn next_now(&mut self) -> Option<Outgoing> {
        self.0.next()
    }
}

/// How a batch went.
enum Sent {
    /// Written; the connection stays open.
    Open,
    /// Written, and it ended with a close frame.
    Closing,
    /// The connection failed or stalled past `send_timeout`.
    Failed,
}

/// Writes `first` and whatever else is queued already (up to [`BATCH`]), then flushes once,
/// all within `send_timeout`.
async fn send_batch(
    sink: &mut futures_util::stream::SplitSink<Socket, Message>,
    first: Outgoing,
    more: &mut impl More,
    status: &CloseStatus,
    send_timeout: Duration,
) -> Sent {
    let batch = async {
        let mut item = Some(first);
        let mut count = 0;
        while let Some(next) = item.take() {
            let closing = matches!(next, Outgoing::Close(..));
            if let Outgoing::Close(code, reason) = &next {
                status.set(*code, reason);
            }
            sink.feed(next.into_message()).await?;
            count += 1;
            if closing {
                sink.flush().await?;
                return Ok::<_, WsError>(Sent::Closing);
            }
            if count < BATCH {
                item = more.next_now();
            }
        }
        sink.flush().await?;
        Ok(Sent::Open)
    };
    match tokio::time::timeout(send_timeout, batch).await {
        Ok(Ok(sent)) => sent,
        Ok(Err(err)) => {
            tracing::debug!("a WebSocket send failed: {err}");
            Sent::Failed
        }
        Err(_) => {
            tracing::debug!(
                "a WebSocket client took nothing for {:.1}s; dropped",
                send_timeout.as_secs_f64()
            );
            Sent::Failed
        }
    }
}

/// Hands each message to the handler until the connection ends or the client breaks the
/// protocol.
async fn read(
    stream: &mut futures_util::stream::SplitStream<Socket>,
    incoming: &TokioSender<Incoming>,
    status: &CloseStatus,
    alive: &Liveness,
) -> ReadEnd {
    while let Some(message) = stream.next().await {
        alive.heard.store(true, Ordering::Relaxed);
        let item = match message {
            Ok(Message::Text(text)) => Incoming::Text(text),
            Ok(Message::Binary(bytes)) => Incoming::Binary(bytes),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(frame)) => {
                // tungstenite answers it (or it answers ours); reading on flushes that
                // answer and ends the stream once the handshake is complete.
                match frame {
                    Some(frame) => status.set(u16::from(frame.code), &frame.reason),
                    None => status.set(code::NO_STATUS, ""),
                }
                continue;
            }
            Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                return ReadEnd::Fail(code::TOO_BIG, "message too big");
            }
            Err(WsError::Utf8(_)) => {
                return ReadEnd::Fail(code::INVALID_DATA, "invalid UTF-8 in a text message");
            }
            Err(WsError::Protocol(err)) => {
                tracing::debug!("a WebSocket client broke the protocol: {err}");
                return ReadEnd::Fail(code::PROTOCOL_ERROR, "protocol error");
            }
            Err(err) => {
                tracing::debug!("a WebSocket connection failed: {err}");
                return ReadEnd::Closed;
            }
        };
        // Waits while the handler's queue is full: the client is read no faster than the
        // handler reads. A handler that is gone drops what comes.
        alive.handing_over.store(true, Ordering::Relaxed);
        let _ = incoming.send(item).await;
        alive.handing_over.store(false, Ordering::Relaxed);
    }
    ReadEnd::Closed
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

impl Outgoing {
    fn into_message(self) -> Message {
        match self {
            Outgoing::Text(text) => Message::Text(text),
            Outgoing::Binary(bytes) => Message::Binary(bytes),
            Outgoing::Close(code, reason) => close_frame(code, &reason),
        }
    }
}
