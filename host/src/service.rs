//! One request, start to finish: route it, read and check it, dispatch it, answer it.
//!
//! Everything here runs on tokio workers and never touches Python; the only hand-off to the
//! interpreter is [`Bridge::submit`], which returns a channel the worker awaits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::bridge::Bridge;
use crate::streaming::body::{Body, Deferred, HandlerReply};
use crate::streaming::file;
use crate::streaming::request_body::BodySource;
use crate::streaming::static_files::StaticFiles;
use crate::streaming::websocket::{Deciding, Dispatch, WebSockets};
use pyhost_core::admission::{Admission, Rejection, Routed};
use pyhost_core::request::RequestData;
use pyhost_core::routing::Route;

use crate::intake::{self, Full, Intake};
use crate::logging::{LogBudget, suppressed_note};
use crate::slots::{Busy, Slot, Slots};

mod body_routes;

/// A constant: a header name given as a string is parsed on every insert (about 500
/// instructions of each request, by callgrind).
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Handler timeouts logged per second.
static TIMEOUT_LOGS: LogBudget = LogBudget::new(20);
use crate::middleware::Middleware;
use pyhost_core::config::Config;
use pyhost_core::reply::Reply;

/// The host's request handler: stateless apart from the bridge and the request counter.
pub struct HttpService {
    bridge: Arc<Bridge>,
    /// What is checked before a handler sees a request (`pyhost_core::admission`).
    admission: Admission,
    body_timeout: Duration,
    request_timeout: Option<Duration>,
    cancel_on_disconnect: bool,
    slots: Slots,
    /// What the bodies being read hold (`intake.rs`).
    intake: Arc<Intake>,
    id_prefix: String,
    next_id: AtomicU64,
    /// The request id after which this worker asks its supervisor to replace it
    /// (`server.max_requests`; `u64::MAX` outside a worker or without the limit).
    recycle_after: u64,
    /// `[cors]` and `[compression]`, when either is configured.
    middleware: Option<Middleware>,
    /// `[static]`, when configured: what its mounts take is served before routing.
    statics: Option<StaticFiles>,
    /// The limits forms are parsed under (`server.form_*`).
    forms: pyhost_core::form::FormLimits,
    /// WebSocket routes' connections (`streaming::websocket`).
    websockets: Arc<WebSockets>,
}

/// A response to send, with what the connection should do afterwards.
struct Answer {
    reply: Reply,
    /// The body, when it follows the head rather than being in `reply`.
    body: Option<Deferred>,
    head: bool,
    close: bool,
}

impl Answer {
    /// An answer after which the connection is closed: what is left of the request in the
    /// connection cannot be trusted or is not worth reading.
    fn closing(reply: Reply) -> Self {
        Self {
            reply,
            body: None,
            head: false,
            close: true,
        }
    }

    /// This answer, with the connection closed after it.
    fn closed(self) -> Self {
        Self {
            close: true,
            ..self
        }
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self {
            reply,
            body: None,
            head: false,
            close: false,
        }
    }
}

impl From<Rejection> for Answer {
    fn from(rejection: Rejection) -> Self {
        Self {
            reply: rejection.reply,
            body: None,
            head: false,
            close: rejection.close,
        }
    }
}

impl HttpService {
    /// A service dispatching to `bridge` under the limits and middleware of `config`.
    pub fn new(bridge: Arc<Bridge>, config: &Config) -> Self {
        let server = &config.server;
        let statics = StaticFiles::new(&config.statics);
        if let Some(statics) = &statics {
            statics.warn_shadowed(bridge.routes());
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id());
        // `await request.form()` on the loop thread parses under the same limits.
        crate::streaming::form::set_limits(server.forms);
        Self {
            bridge,
            admission: Admission::new(server).with_cors(config.cors.clone()),
            body_timeout: server.body_timeout,
            request_timeout: server.request_timeout,
            cancel_on_disconnect: server.cancel_on_disconnect,
            slots: Slots::new(server.max_in_flight, server.max_in_flight_per_client),
            intake: Intake::new(server.request_buffer),
            id_prefix: crate::workers::link::current().map_or_else(
                || format!("{:08x}", (seed ^ (seed >> 32)) as u32),
                crate::workers::link::Link::request_id_prefix,
            ),
            next_id: AtomicU64::new(1),
            recycle_after: crate::workers::link::current()
                .and_then(|link| link.max_requests)
                .unwrap_or(u64::MAX),
            middleware: Middleware::new(config),
            statics,
            forms: server.forms,
            websockets: Arc::new(WebSockets::new(config)),
        }
    }

    /// The open WebSocket connections, for the shutdown.
    pub(crate) fn websockets(&self) -> &WebSockets {
        &self.websockets
    }

    /// Answers one request. Never fails: every problem becomes an HTTP error response.
    ///
    /// A request without a body is checked, routed, validated and handed to its handler
    /// right here, before the returned future is first polled: that future only waits for
    /// the reply, which keeps it small. hyper holds a box the size of this future for every
    /// connection, idle or not. A request with a body is read in a future of its own, boxed.
    pub fn handle<B>(
        self: &Arc<Self>,
        request: Request<B>,
        client: Option<SocketAddr>,
    ) -> impl Future<Output = Response<Body>> + use<B>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == self.recycle_after {
            if let Some(link) = crate::workers::link::current() {
                link.send(&crate::workers::control::Message::Recycle);
            }
        }
        let request_id = request_id(&self.id_prefix, id);
        let seen = self.middleware.as_ref().map(|m| m.see(&request));
        let step = self.start(request, client, &request_id);
        let service = self.clone();
        async move {
            let mut answer = match step {
                Step::Done(answer) => answer,
                Step::Wait(pending) => service.wait(pending, &request_id).await,
                Step::ReadBody(read) => read.await,
                Step::Upgrade(deciding) => Answer::from(deciding.await),
            };
            // A file is opened and checked before the head goes out; boxed, so the future
            // of every other request does not grow by the file's.
            if matches!(answer.body, Some(Deferred::File(_)))
                && let Some(Deferred::File(job)) = answer.body.take()
            {
                (answer.reply, answer.body) =
                    Box::pin(file::resolve(job, answer.head, &request_id)).await;
            }
            if let (Some(middleware), Some(seen)) = (&service.middleware, seen) {
                middleware.finish(&seen, &mut answer.reply, answer.body.is_some());
            }
            into_response(answer, &request_id)
        }
    }

    /// Everything that needs no waiting: the checks, routing and, without a body, the
    /// hand-off to the handler.
    fn start<B>(
        self: &Arc<Self>,
        request: Request<B>,
        client: Option<SocketAddr>,
        request_id: &Arc<str>,
    ) -> Step<impl Future<Output = Answer> + use<B>>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (mut parts, body) = request.into_parts();
        // `OPTIONS` goes on to admission, which answers a CORS preflight on any path.
        if let Some(statics) = &self.statics
            && parts.method != http::Method::OPTIONS
            && statics.prefix_of(parts.uri.path()).is_some()
        {
            return Step::Done(self.take_static(statics, &mut parts));
        }
        let routed = match self.admission.route(self.bridge.routes(), &mut parts) {
            Ok(routed) => routed,
            Err(rejection) => return Step::Done(rejection.into()),
        };
        if routed.route.websocket {
            let dispatch = Dispatch {
                bridge: &self.bridge,
                admission: &self.admission,
                http_slots: &self.slots,
                request_timeout: routed.route.timeout.or(self.request_timeout),
            };
            return match self
                .websockets
                .start(dispatch, parts, routed, client, request_id.clone())
            {
                Ok(deciding) => Step::Upgrade(deciding),
                Err(reply) => Step::Done(Answer::from(reply)),
            };
        }
        let request = Admitted {
            parts,
            routed,
            client,
            request_id: request_id.clone(),
        };
        // Streamed and form routes read their bodies their own ways (`body_routes`), even
        // an empty one.
        let route = &request.routed.route;
        let own_way = route.stream || route.form.is_some();
        // Most requests (a GET) have no body at all: no read, and no body timer to arm.
        if !own_way && body.is_end_stream() {
            return match self.submit(request, Bytes::new(), BodySource::Whole) {
                Ok(pending) => Step::Wait(pending),
                Err(answer) => Step::Done(answer),
            };
        }
        let service = self.clone();
        Step::ReadBody(Box::pin(async move {
            crate::streaming::form::remember_runtime();
            let limit = service.admission.body_limit(&request.routed.route);
            if declared_length(&request.parts.headers).is_some_and(|length| length > limit) {
                return service.admission.too_large(limit).into();
            }
            if own_way {
                return if request.routed.route.stream {
                    service.serve_stream(request, body, limit).await
                } else {
                    service.serve_form(request, body, limit).await
                };
            }
            let body = match service.read_body(body, limit, request.client).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let request_id = request.request_id.clone();
            match service.submit(request, body, BodySource::Whole) {
                Ok(pending) => service.wait(pending, &request_id).await,
                Err(answer) => answer,
            }
        }))
    }

    /// A request under a `[static]` mount: held to the same head checks, then answered by
    /// [`file::resolve`] without routing or Python.
    fn take_static(&self, statics: &StaticFiles, parts: &mut http::request::Parts) -> Answer {
        if let Err(rejection) = self.admission.screen(parts) {
            return rejection.into();
        }
        match statics.take(parts) {
            Some(request) => Answer {
                reply: Reply::empty(StatusCode::OK),
                body: Some(Deferred::File(file::FileJob::Static(Box::new(request)))),
                head: parts.method == http::Method::HEAD,
                close: false,
            },
            // `prefix_of` said a mount takes it; the authority's settling keeps the path.
            None => Answer {
                reply: Reply::detail(StatusCode::NOT_FOUND, "Not Found"),
                body: None,
                head: false,
                close: false,
            },
        }
    }

    /// Reads the whole body under the size limit (the route's, `Content-Length` checked
    /// against it already) and the body timeout.
    async fn read_body<B>(
        &self,
        body: B,
        body_limit: u64,
        client: Option<SocketAddr>,
    ) -> Result<Bytes, Answer>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = usize::try_from(body_limit).unwrap_or(usize::MAX);
        let charge = self.intake.begin(client.map(|address| address.ip()), limit);
        let collected = tokio::time::timeout(self.body_timeout, collect(body, limit, charge)).await;
        let Ok(collected) = collected else {
            return Err(Answer::closing(Reply::detail(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "Request body not received within {:.1}s",
                    self.body_timeout.as_secs_f64()
                ),
            )));
        };
        match collected {
            Ok(collected) => Ok(collected),
            Err(Unread::TooLarge) => Err(self.admission.too_large(body_limit).into()),
            Err(Unread::Full(full)) => {
                let detail = match full {
                    Full::Server => {
                        "Server busy: request bodies being received fill the server's buffer; retry shortly"
                    }
                    Full::Client => {
                        "Too much request body from this address at once; retry shortly"
                    }
                };
                let mut reply = Reply::detail(StatusCode::SERVICE_UNAVAILABLE, detail);
                reply
                    .headers
                    .push((http::header::RETRY_AFTER, HeaderValue::from_static("1")));
                Err(Answer::closing(reply))
            }
            Err(Unread::Broken(err)) => Err(Answer::closing(Reply::detail(
                StatusCode::BAD_REQUEST,
                format!("Could not read the request body: {err}"),
            ))),
        }
    }

    /// Builds the request data, takes an in-flight slot and hands the request to its handler;
    /// what waiting for the reply needs.
    fn submit(
        &self,
        request: Admitted,
        body: Bytes,
        source: BodySource,
    ) -> Result<Pending, Answer> {
        let (data, route, head) = self.admit(request, body)?;
        self.dispatch(data, &route, head, source)
    }

    /// Converts and validates the request against its route: its data, the route, and
    /// whether it is a HEAD served by a GET route.
    fn admit(
        &self,
        request: Admitted,
        body: Bytes,
    ) -> Result<(RequestData, Arc<Route>, bool), Answer> {
        let Admitted {
            parts,
            routed,
            client,
            request_id,
        } = request;
        let head = routed.head;
        let route = routed.route.clone();
        let data = self
            .admission
            .admit(parts, routed, body, client, request_id)?;
        Ok((data, route, head))
    }

    /// Takes an in-flight slot and hands an admitted request to its handler.
    fn dispatch(
        &self,
        data: RequestData,
        route: &Route,
        head: bool,
        source: BodySource,
    ) -> Result<Pending, Answer> {
        let client = data.client;
        // Only now, with the request complete and valid, does it take a slot (`slots.rs`).
        // Beyond the limits a quick 503 beats an unbounded queue: memory stays bounded and
        // clients learn to back off.
        let slot = self.slots.take(client).map_err(|busy| {
            let detail = match busy {
                Busy::Server => "Server busy, retry shortly",
                Busy::Client => "Too many requests from this address at once, retry shortly",
            };
            let mut reply = Reply::detail(StatusCode::SERVICE_UNAVAILABLE, detail);
            reply
                .headers
                .push((http::header::RETRY_AFTER, HeaderValue::from_static("1")));
            Answer {
                reply,
                body: None,
                head,
                close: false,
            }
        })?;
        let timeout = route.timeout.or(self.request_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        let (key, receiver) =
            self.bridge
                .submit(route.id, route.handler_name.clone(), data, source, deadline);
        Ok(Pending {
            bridge: self.bridge.clone(),
            key,
            receiver,
            timeout,
            handler: route.handler_name.clone(),
            head,
            cancel: self.cancel_on_disconnect,
            _slot: slot,
        })
    }

    /// Waits for the handler's reply, within the route's timeout.
    async fn wait(&self, mut pending: Pending, request_id: &Arc<str>) -> Answer {
        let outcome = match pending.timeout {
            Some(timeout) => tokio::time::timeout(timeout, &mut pending.receiver)
                .await
                .ok(),
            None => Some((&mut pending.receiver).await),
        };
        let HandlerReply { reply, body } = match outcome {
            Some(Ok(reply)) => {
                pending.cancel = false;
                reply
            }
            Some(Err(_)) => {
                pending.cancel = false;
                tracing::error!(
                    "request {request_id}: the task of handler {} ended without an answer",
                    pending.handler,
                );
                Reply::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"detail": "Internal Server Error", "request_id": &**request_id}),
                )
                .into()
            }
            None => {
                pending.cancel = true;
                let seconds = pending.timeout.map_or(0.0, |t| t.as_secs_f64());
                // Slow routes are a client's to trigger: a bounded rate of these lines.
                if let Some(held_back) = TIMEOUT_LOGS.admit() {
                    tracing::warn!(
                        "request {request_id}: handler {} did not answer within {seconds}s; cancelling it{}",
                        pending.handler,
                        suppressed_note(held_back),
                    );
                }
                Reply::detail(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("Handler timed out after {seconds}s"),
                )
                .into()
            }
        };
        Answer {
            reply,
            body,
            head: pending.head,
            close: false,
        }
    }
}

/// A request handed to its handler: what waiting for the reply needs. Dropped before the
/// reply is in, it cancels the handler (the client went away: hyper drops the request's
/// future), unless the server is configured not to.
struct Pending {
    bridge: Arc<Bridge>,
    key: u64,
    receiver: oneshot::Receiver<HandlerReply>,
    timeout: Option<Duration>,
    handler: Arc<str>,
    head: bool,
    cancel: bool,
    /// The in-flight slot, held until the reply is in.
    _slot: Slot,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.cancel {
            self.bridge.cancel(self.key);
        }
    }
}

/// How far a request got before the returned future was first polled.
enum Step<F> {
    /// Answered already: an error, or a route that refused it.
    Done(Answer),
    /// Handed to its handler, whose reply is awaited.
    Wait(Pending),
    /// Routed, with a body still to read.
    ReadBody(std::pin::Pin<Box<F>>),
    /// A WebSocket upgrade, handed to its handler, which decides the answer.
    Upgrade(Deciding),
}

/// A request whose head is admitted; its body is still to be read.
struct Admitted {
    parts: http::request::Parts,
    routed: Routed,
    client: Option<SocketAddr>,
    request_id: Arc<str>,
}

/// The body length the request's `Content-Length` announces, if it is a number.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn into_response(answer: Answer, request_id: &str) -> Response<Body> {
    let Answer {
        reply,
        body: deferred,
        head,
        close,
    } = answer;
    let length = reply.body.len();
    // A HEAD request's stream is dropped unread, which stops its producer.
    let streamed = deferred.is_some();
    let body = match deferred {
        Some(Deferred::Stream(stream)) if !head => Body::streamed(stream),
        _ if head => Body::full(Bytes::new()),
        _ => Body::full(reply.body),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        headers.append(name, value);
    }
    // A file's answer says its own length.
    if head
        && !streamed
        && reply.status != StatusCode::NO_CONTENT
        && !headers.contains_key(CONTENT_LENGTH)
    {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, value);
    }
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `PREFIX-ID`, the id in hex. Written by hand into a buffer on the stack, then copied once
/// into the `Arc`: `format!` took about 830 instructions of each request (by callgrind).
fn request_id(prefix: &str, id: u64) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = id;
    loop {
        at -= 1;
        digits[at] = HEX[(rest & 0xf) as usize];
        rest >>= 4;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[at..];
    let mut buffer = [0u8; 64];
    let length = prefix.len() + 1 + digits.len();
    if length <= buffer.len() {
        buffer[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buffer[prefix.len()] = b'-';
        buffer[prefix.len() + 1..length].copy_from_slice(digits);
        if let Ok(text) = std::str::from_utf8(&buffer[..length]) {
            return Arc::from(text);
        }
    }
    let mut text = String::with_capacity(length);
    text.push_str(prefix);
    text.push('-');
    text.extend(digits.iter().map(|&digit| char::from(digit)));
    Arc::from(text)
}

/// Why a body was not read whole.
enum Unread {
    /// It passed its limit.
    TooLarge,
    /// The bodies being read hold all they may (`intake.rs`).
    Full(Full),
    /// The connection failed mid-body.
    Broken(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads `body` whole: at most `limit` bytes, each frame charged to `charge` as it comes.
async fn collect<B>(body: B, limit: usize, mut charge: intake::Charge) -> Result<Bytes, Unread>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| Unread::Broken(err.into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        length = length.saturating_add(data.len());
        if length > limit {
            return Err(Unread::TooLarge);
        }
        charge.grow(data.len()).map_err(Unread::Full)?;
        // One frame (most bodies) is kept as it came, without a copy.
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(first) = first.take() {
                    rest.reserve(length);
                    rest.extend_from_slice(&first);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(match first {
        Some(first) => first,
        None => Bytes::from(rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, read off its type: nothing is built or run.
    fn returned_size<A, B, F>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn serve_one(
        service: &Arc<HttpService>,
        request: Request<hyper::body::Incoming>,
    ) -> impl Future<Output = Response<Body>> + use<> {
        service.handle(request, None)
    }

    #[test]
    fn request_ids_are_the_prefix_and_the_number_in_hex() {
        for id in [0u64, 1, 15, 16, 0xabc, u64::MAX] {
            assert_eq!(&*request_id("7f3a.2", id), format!("7f3a.2-{id:x}"));
            let long = "p".repeat(60);
            assert_eq!(&*request_id(&long, id), format!("{long}-{id:x}"));
        }
    }

    #[test]
    fn the_request_future_is_small() {
        // hyper keeps a box this size for every connection, idle or not. With the request's
        // synchronous work inside the future (an `async fn handle`), and an `async` block
        // around it that held it twice, that box took 2,112 bytes; now it takes 432.
        let size = returned_size(serve_one);
        assert!(size <= 640, "the request future takes {size} bytes");
    }
}
