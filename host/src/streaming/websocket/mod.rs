//! WebSocket routes (`router.websocket`): the upgrade, the socket a handler holds, and the
//! protocol, spoken in Rust.
//!
//! A request to a WebSocket route takes this way:
//! 1. [`WebSockets::start`] (a tokio worker, no GIL), right after routing: the opening
//!    handshake and its `Origin` are checked ([`pyhost_core::websocket::check`]), then the
//!    route's path, query, header and cookie declarations, exactly as for an HTTP route
//!    ([`Admission::admit`]). A failure is an HTTP answer (4xx), never an accepted socket.
//!    The connection takes a place under `[websocket] max_connections` (and its per-address
//!    share) and, for the handshake only, an ordinary in-flight slot; either full is a 503.
//! 2. The handler is dispatched like any other (the bridge's job queue), given a
//!    [`NativeSocket`](socket::NativeSocket) in place of the request, which the SDK's
//!    `pyhost.WebSocket` wraps. It decides: `accept()` sends its decision (subprotocol,
//!    headers) to the waiting worker, which answers `101 Switching Protocols` through the
//!    service's normal reply path; a handler that returns first is answered 403 (or the
//!    error it raised, or the error response it returned) through the completer as usual.
//!    No decision within `server.request_timeout` is a 504, and the handler is cancelled.
//! 3. After the 101, hyper hands the connection over (`hyper::upgrade::on`, HTTP/1.1 only:
//!    WebSocket over HTTP/2, RFC 8441, is not offered) and [`session`] speaks the protocol
//!    until the close. The in-flight slot is given back at the 101, so open sockets never
//!    lock HTTP clients out of `server.max_in_flight`; the WebSocket place is held until the
//!    handler has returned.
//!
//! Messages cross between tokio and the loop thread through the bounded channels of
//! [`crate::streaming::channel`], [`INCOMING_QUEUE`] messages towards the handler and
//! [`OUTGOING_QUEUE`] from it: memory per connection is bounded by those queues, the largest
//! message a client may send (`[websocket] max_message`), the protocol's buffers and the
//! kernel's, whatever the client does.

mod session;
pub(crate) mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    CONNECTION, RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::{HeaderName, HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig as ProtocolConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bridge::Bridge;
use crate::slots::{Busy, Slots};
use crate::streaming::body::HandlerReply;
use crate::streaming::channel;
use pyhost_core::admission::{Admission, Routed};
use pyhost_core::config::Config;
use pyhost_core::middleware::cors::OriginList;
use pyhost_core::reply::Reply;

/// Messages a connection holds for its handler before it stops reading the client.
pub(crate) const INCOMING_QUEUE: usize = 4;

/// Messages a handler may queue before its `send_*` waits for the client.
pub(crate) const OUTGOING_QUEUE: usize = 16;

/// The protocol's read buffer, allocated per connection (tungstenite's default is 128 KiB).
const READ_BUFFER: usize = 32 * 1024;

/// A message from the client, for the handler.
pub(crate) enum Incoming {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// What the handler asks to send.
pub(crate) enum Outgoing {
    Text(Utf8Bytes),
    Binary(Bytes),
    /// A close frame: code and reason.
    Close(u16, String),
}

/// How the connection closed, set once (the first to know wins) before its channels are
/// dropped, for the handler's `WebSocketDisconnect`.
#[derive(Default)]
pub(crate) struct CloseStatus(Mutex<Option<(u16, String)>>);

impl CloseStatus {
    fn set(&self, code: u16, reason: &str) {
        let mut status = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if status.is_none() {
            *status = Some((code, reason.to_owned()));
        }
    }

    /// The code and reason, once closed.
    pub(crate) fn get(&self) -> Option<(u16, String)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The handler's decision to accept: what the 101 carries besides the handshake's headers.
pub(crate) struct Accepted {
    /// The chosen subprotocol (one the client offered).
    pub(crate) protocol: Option<HeaderValue>,
    /// The handler's own response headers.
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the loop side of one socket holds: handed to the dispatcher with the job.
pub(crate) struct LoopEnds {
    pub(crate) incoming: channel::LoopReceiver<Incoming>,
    pub(crate) outgoing: channel::LoopSender<Outgoing>,
    pub(crate) accept: oneshot::Sender<Accepted>,
    /// The subprotocols the client offered, in its order.
    pub(crate) offered: Vec<String>,
    pub(crate) status: Arc<CloseStatus>,
}

/// What every connection's protocol is run with.
pub(crate) struct Settings {
    protocol: ProtocolConfig,
    ping_interval: Option<Duration>,
    send_timeout: Duration,
}

/// The answer to an upgrade request, once the handler has decided.
pub(crate) type Deciding = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The server's WebSocket connections: their limits, and their tasks for the shutdown.
pub(crate) struct WebSockets {
    settings: Arc<Settings>,
    origins: Option<OriginList>,
    slots: Slots,
    sessions: TaskTracker,
    closing: CancellationToken,
}

/// Where an upgrade request is handed to its handler, and what for.
pub(crate) struct Dispatch<'a> {
    pub(crate) bridge: &'a Arc<Bridge>,
    pub(crate) admission: &'a Admission,
    /// The service's in-flight slots, one of which the handshake takes.
    pub(crate) http_slots: &'a Slots,
    pub(crate) request_timeout: Option<Duration>,
}

impl WebSockets {
    /// The limits of `[websocket]` (and `server.send_timeout`).
    pub(crate) fn new(config: &Config) -> Self {
        let websocket = &config.websocket;
        let protocol = ProtocolConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(websocket.max_message))
            .max_frame_size(Some(websocket.max_message));
        Self {
            settings: Arc::new(Settings {
                protocol,
                ping_interval: websocket.ping_interval,
                send_timeout: config.server.send_timeout,
            }),
            origins: websocket.allowed_origins.clone(),
            slots: Slots::new(
                websocket.max_connections,
                websocket.max_connections_per_client,
            ),
            sessions: TaskTracker::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Checks and admits an upgrade request and hands it to its handler; the returned
    /// future gives the answer once the handler has decided (see the module docs).
    pub(crate) fn start(
        self: &Arc<Self>,
        dispatch: Dispatch<'_>,
        mut parts: http::request::Parts,
        routed: Routed,
        client: Option<SocketAddr>,
        request_id: Arc<str>,
    ) -> Result<Deciding, Reply> {
        let handshake = pyhost_core::websocket::check(
            &parts.method,
            parts.version,
            &parts.headers,
            self.origins.as_ref(),
        )?;
        let Some(upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            // An embedder's server that does not offer upgrades.
            return Err(Reply::detail(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded to a WebSocket",
            ));
        };
        let route = routed.route.clone();
        let data = dispatch
            .admission
            .admit(parts, routed, Bytes::new(), client, request_id.clone())
            .map_err(|rejection| rejection.reply)?;
        let slot = self.slots.take(client).map_err(|busy| {
            busy_reply(match busy {
                Busy::Server => "Too many WebSocket connections, retry shortly",
                Busy::Client => "Too many WebSocket connections from this address, retry shortly",
            })
        })?;
        let handshake_slot = dispatch.http_slots.take(client).map_err(|busy| {
            busy_reply(match busy {
                Busy::Server => "Server busy, retry shortly",
                Busy::Client => "Too many requests from this address at once, retry shortly",
            })
        })?;
        let (incoming, incoming_end) = channel::to_loop(INCOMING_QUEUE);
        let (outgoing_end, outgoing) = channel::to_tokio(OUTGOING_QUEUE);
        let (accept, mut accepted) = oneshot::channel();
        let status = Arc::new(CloseStatus::default());
        let ends = LoopEnds {
            incoming: incoming_end,
            outgoing: outgoing_end,
            accept,
            offered: handshake.protocols,
            status: status.clone(),
        };
        let bridge = dispatch.bridge.clone();
        let (key, mut finished) =
            bridge.submit_websocket(route.id, route.handler_name.clone(), data, ends);
        let request_timeout = dispatch.request_timeout;
        let this = self.clone();
        Ok(Box::pin(async move {
            let _handshake_slot = handshake_slot;
            // Dropped before a decision (the client left, the time ran out), the handler is
            // cancelled.
            let mut undecided = Undecided {
                bridge,
                key,
                armed: true,
            };
            let decision = async {
                tokio::select! {
                    biased;
                    Ok(accepted) = &mut accepted => Decision::Accepted(accepted),
                    reply = &mut finished => Decision::Ended(reply.ok()),
                }
            };
            let decision = match request_timeout {
                Some(timeout) => tokio::time::timeout(timeout, decision).await.ok(),
                None => Some(decision.await),
            };
            match decision {
                Some(Decision::Accepted(accepted)) => {
                    undecided.armed = false;
                    let reply = switching_protocols(&handshake.key, accepted);
                    this.sessions.spawn(
                        session::Session {
                            upgrade,
                            incoming,
                            outgoing,
                            finished,
                            status,
                            settings: this.settings.clone(),
                            closing: this.closing.clone(),
                            request_id,
                            slot,
                        }
                        .run(),
                    );
                    reply
                }
                Some(Decision::Ended(Some(HandlerReply { reply, .. }))) => {
                    undecided.armed = false;
                    if reply.status.as_u16() < 400 {
                        Reply::detail(StatusCode::FORBIDDEN, "WebSocket connection refused")
                    } else {
                        reply
                    }
                }
                Some(Decision::Ended(None)) => {
                    undecided.armed = false;
                    tracing::error!(
                        "request {request_id}: the task of handler {} ended without an answer",
                        route.handler_name,
                    );
                    Reply::json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &serde_json::json!({"detail": "Internal Server Error", "request_id": &*request_id}),
                    )
                }
                None => {
                    let seconds = request_timeout.map_or(0.0, |t| t.as_secs_f64());
                    tracing::warn!(
                        "request {request_id}: WebSocket handler {} neither accepted nor refused within {seconds}s; cancelling it",
                        route.handler_name,
                    );
                    Reply::detail(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("Handler timed out after {seconds}s"),
                    )
                }
            }
        }))
    }

    /// Closes every open connection with 1001 (the server is shutting down); their
    /// handlers' next receive or send raises `WebSocketDisconnect`.
    pub(crate) fn close_all(&self) {
        self.closing.cancel();
        self.sessions.close();
    }

    /// Resolves once every connection has closed and its handler has returned.
    pub(crate) async fn wait(&self) {
        self.sessions.wait().await;
    }
}

enum Decision {
    Accepted(Accepted),
    /// The handler finished without accepting (`None`: its task ended without an answer).
    Ended(Option<HandlerReply>),
}

/// Cancels the handler of an upgrade request that got no decision.
struct Undecided {
    bridge: Arc<Bridge>,
    key: u64,
    armed: bool,
}

impl Drop for Undecided {
    fn drop(&mut self) {
        if self.armed {
            self.bridge.cancel(self.key);
        }
    }
}

fn busy_reply(detail: &'static str) -> Reply {
    let mut reply = Reply::detail(StatusCode::SERVICE_UNAVAILABLE, detail);
    reply
        .headers
        .push((RETRY_AFTER, HeaderValue::from_static("1")));
    reply
}

/// The 101 that completes the handshake (RFC 6455 section 4.2.2).
fn switching_protocols(key: &HeaderValue, accepted: Accepted) -> Reply {
    let mut reply = Reply::empty(StatusCode::SWITCHING_PROTOCOLS);
    reply
        .headers
        .push((UPGRADE, HeaderValue::from_static("websocket")));
    reply
        .headers
        .push((CONNECTION, HeaderValue::from_static("Upgrade")));
    if let Ok(value) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        reply.headers.push((SEC_WEBSOCKET_ACCEPT, value));
    }
    if let Some(protocol) = accepted.protocol {
        reply.headers.push((SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    reply.headers.extend(accepted.headers);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_101_carries_the_rfc_accept_key_and_the_handlers_choices() {
        // RFC 6455 section 1.3's example.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let reply = switching_protocols(
            &key,
            Accepted {
                protocol: Some(HeaderValue::from_static("chat")),
                headers: vec![(
                    HeaderName::from_static("x-a"),
                    HeaderValue::from_static("1"),
                )],
            },
        );
        assert_eq!(reply.status, StatusCode::SWITCHING_PROTOCOLS);
        let get = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            get("sec-websocket-accept").as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(get("sec-websocket-protocol").as_deref(), Some("chat"));
        assert_eq!(get("upgrade").as_deref(), Some("websocket"));
        assert_eq!(get("x-a").as_deref(), Some("1"));
    }

    #[test]
    fn the_first_close_status_wins() {
        let status = CloseStatus::default();
        assert_eq!(status.get(), None);
        status.set(1009, "message too big");
        status.set(1006, "");
        assert_eq!(status.get(), Some((1009, "message too big".to_owned())));
    }
}
