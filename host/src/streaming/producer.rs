//! Streamed responses: a handler's `StreamingResponse` becomes a response body hyper sends a
//! chunk at a time, produced by a task on the loop thread.
//!
//! When a handler returns a `StreamingResponse`, the completer calls [`start`]: it makes a
//! bounded [`channel`](super::channel) of [`CAPACITY`] chunks, sends the head with the tokio
//! end as the body ([`ProducerBody`]), and starts the SDK's pump (`pyhost._streaming.pump`) as
//! a task of the route's plugin, holding the loop end ([`Sink`]). The pump offers each chunk
//! and, when the channel is full, awaits room: the producer is advanced no faster than hyper
//! takes chunks, which is no faster than the client reads.
//!
//! How a stream ends, and who says so:
//! - the producer is exhausted: the pump calls `finish`, the body ends after the last chunk;
//! - the producer raises: `abort` logs it with the request id and the body ends with an error,
//!   which makes hyper cut the response short (no final chunk on HTTP/1.1, `RST_STREAM` on
//!   HTTP/2), so the client sees it is incomplete;
//! - the client goes away: hyper drops the body, whose `Drop` asks the loop thread to cancel
//!   the pump's task (the request's key in the task map, as for a handler), so the producer's
//!   `finally` blocks run; logged at info, not as an error;
//! - the producer sends nothing for `server.stream_idle_timeout`: the body ends with an error
//!   and cancels the task the same way. A stream with keep-alive bytes (an
//!   `EventSourceResponse`'s pings) sends them instead whenever it has been silent that long,
//!   and is exempt from the idle timeout.
//!
//! What a stalled reader costs: the channel's chunks ([`CAPACITY`] of whatever size the
//! producer makes them) plus what hyper holds for the connection (its write buffer for
//! HTTP/1.1, the stream's send buffer for HTTP/2), which the outbox charges to the response
//! budgets.
//!
//! GIL: [`Sink`]'s methods and [`start`] run on the loop thread with it held; [`ProducerBody`]
//! is polled by tokio and never touches Python.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};
use tokio::time::{Instant, Sleep};

use super::body::{BoxError, Streamed};
use super::channel::{self, LoopSender, Rejected, TokioReceiver};
use crate::bridge::TaskMap;
use crate::interpreter::format_exception;
use crate::logging::{LogBudget, suppressed_note};
use crate::services::identity::PluginCoroutine;

/// Chunks a stream may have produced ahead of what hyper has taken. Small: the bound on what a
/// stalled reader costs is this many chunks; a flowing stream needs only enough to cover the
/// hand-off between the threads.
pub(crate) const CAPACITY: usize = 4;

/// Disconnects logged per second (a client's to cause).
static DISCONNECT_LOGS: LogBudget = LogBudget::new(20);
/// Idle timeouts logged per second.
static IDLE_LOGS: LogBudget = LogBudget::new(20);

/// The server's stream settings, set once when the bridge starts.
static IDLE_TIMEOUT: OnceLock<Option<Duration>> = OnceLock::new();

/// Sets `server.stream_idle_timeout` (None: no limit). Called once, before any request.
pub(crate) fn configure(idle_timeout: Option<Duration>) {
    let _ = IDLE_TIMEOUT.set(idle_timeout);
}

/// How a stream's producer ended, as the pump reported it.
const OPEN: u8 = 0;
const FINISHED: u8 = 1;
const ABORTED: u8 = 2;

/// Why a streamed body ended short.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The producer raised (logged with its traceback) or was stopped before its end.
    #[error("the response's producer failed before the end of the stream")]
    Aborted,
    /// The producer sent nothing for `server.stream_idle_timeout`.
    #[error("the response's producer sent nothing for {0:?} (server.stream_idle_timeout)")]
    Idle(Duration),
}

/// The timer of one silence rule: keep-alive bytes or the idle timeout.
struct Silence {
    every: Duration,
    /// Made on the first poll: a tokio timer can only be made inside the runtime, and the
    /// body is made on the loop thread.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Silence {
    fn new(every: Duration) -> Self {
        Self { every, sleep: None }
    }

    /// Whether the stream has been silent for `every` since `last`. The timer is only moved
    /// when it fires, so a stream that flows pays one clock read per chunk, not a timer update.
    fn elapsed(&mut self, last: Instant, cx: &mut Context<'_>) -> bool {
        let due = last + self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= due {
                return true;
            }
            sleep.as_mut().reset(due);
        }
    }
}

/// The body hyper sends for a streamed response: the tokio end of the stream's channel.
pub(crate) struct ProducerBody {
    rx: TokioReceiver<Bytes>,
    end: Arc<AtomicU8>,
    key: u64,
    request_id: Arc<str>,
    last: Instant,
    keepalive: Option<(Silence, Bytes)>,
    idle: Option<Silence>,
    /// Whether the body has ended (well or not): hyper dropping it then is no disconnect.
    done: bool,
    /// Whether the body has already yielded once since it learnt the producer failed.
    yielded_before_abort: bool,
}

impl ProducerBody {
    fn fail(&mut self, error: StreamError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl http_body::Body for ProducerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                if this.keepalive.is_some() || this.idle.is_some() {
                    this.last = Instant::now();
                }
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            Poll::Ready(None) => {
                if this.end.load(Ordering::Acquire) == FINISHED {
                    this.done = true;
                    return Poll::Ready(None);
                }
                if !this.yielded_before_abort {
                    // hyper gives up what it has not written yet when the body fails: one
                    // round of Pending first lets it flush the head and the chunks before.
                    this.yielded_before_abort = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return this.fail(StreamError::Aborted);
            }
            Poll::Pending => {}
        }
        let last = this.last;
        if let Some((silence, bytes)) = &mut this.keepalive
            && silence.elapsed(last, cx)
        {
            let bytes = bytes.clone();
            this.last = Instant::now();
            // Registers the timer's waker for the next round.
            let _ = silence.elapsed(this.last, cx);
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if let Some(idle) = &mut this.idle
            && idle.elapsed(last, cx)
        {
            let every = idle.every;
            if let Some(held_back) = IDLE_LOGS.admit() {
                tracing::warn!(
                    "request {}: the stream's producer sent nothing for {:.1}s \
                     (server.stream_idle_timeout); the response is cut short{}",
                    this.request_id,
                    every.as_secs_f64(),
                    suppressed_note(held_back),
                );
            }
            channel::cancel_task(this.key);
            return this.fail(StreamError::Idle(every));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for ProducerBody {
    fn drop(&mut self) {
        if self.done || self.end.load(Ordering::Acquire) != OPEN {
            return;
        }
        // Dropped before its end: the client went away, or its connection was closed (it took
        // nothing for `server.send_timeout`, or the server is stopping).
        if let Some(held_back) = DISCONNECT_LOGS.admit() {
            tracing::info!(
                "request {}: the client went away before the end of the stream (or its \
                 connection was closed); stopping its producer{}",
                self.request_id,
                suppressed_note(held_back),
            );
        }
        channel::cancel_task(self.key);
    }
}

/// The loop end of a stream, handed to the SDK's pump.
#[pyclass(module = "pyhost", name = "StreamSink")]
pub struct Sink {
    tx: Option<LoopSender<Bytes>>,
    end: Arc<AtomicU8>,
    tasks: TaskMap,
    key: u64,
    request_id: Arc<str>,
    handler: Arc<str>,
}

impl Sink {
    /// Ends the stream as `how`; the pump's task is finished with.
    fn end(&mut self, how: u8) {
        if self.tx.is_some() {
            // Stored before the sender is dropped, so the body sees it once the channel closes.
            self.end.store(how, Ordering::Release);
            self.tx = None;
        }
        self.tasks.remove(self.key);
    }
}

#[pymethods]
impl Sink {
    /// Queues `data` unless the channel is full (then False: await `ready()` and offer again)
    /// or the client has gone (False, and `closed` is true). GIL: held.
    fn offer(&self, data: &Bound<'_, PyBytes>) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Bytes::copy_from_slice(data.as_bytes())) {
            Ok(()) => true,
            Err(Rejected::Full(_) | Rejected::Closed(_)) => false,
        }
    }

    /// A future done when `offer` may succeed or the client has gone. GIL: held.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.tx {
            Some(tx) => tx.ready(py),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the stream has ended",
            )),
        }
    }

    /// Whether nothing more can be sent: the client went away or the stream ended.
    #[getter]
    fn closed(&self) -> bool {
        self.tx.as_ref().is_none_or(LoopSender::is_closed)
    }

    /// The request's id, for the pump's log records.
    #[getter]
    fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The producer is exhausted: the body ends after the chunks already queued.
    fn finish(&mut self) {
        self.end(FINISHED);
    }

    /// The producer raised `error`: logged with the request id; the response is cut short.
    fn abort(&mut self, error: &Bound<'_, PyAny>) {
        let py = error.py();
        let traceback = format_exception(py, &PyErr::from_value(error.clone()));
        tracing::error!(
            "request {}: the stream of handler {} raised an exception after the response \
             head was sent; the response is cut short\n{traceback}",
            self.request_id,
            self.handler,
        );
        self.end(ABORTED);
    }

    /// The producer was stopped (cancelled, or its client left): the response, if the client
    /// is still there, is cut short.
    fn close(&mut self) {
        if self.tx.as_ref().is_some_and(|tx| !tx.is_closed()) {
            tracing::debug!(
                "request {}: the stream's producer was stopped before its end",
                self.request_id
            );
        }
        self.end(ABORTED);
    }
}

/// `pyhost._streaming.pump`, `asyncio.Task` and `pyhost.StreamingResponse`, looked up once.
struct Lookups {
    pump: Py<PyAny>,
    task: Py<PyAny>,
    response: Py<PyType>,
}

static LOOKUPS: pyo3::sync::PyOnceLock<Lookups> = pyo3::sync::PyOnceLock::new();

fn lookups(py: Python<'_>) -> PyResult<&Lookups> {
    LOOKUPS.get_or_try_init(py, || {
        Ok(Lookups {
            pump: py.import("pyhost._streaming")?.getattr("pump")?.unbind(),
            task: py.import("asyncio")?.getattr("Task")?.unbind(),
            response: py
                .import("pyhost.responses")?
                .getattr("StreamingResponse")?
                .cast_into::<PyType>()?
                .unbind(),
        })
    })
}

/// Whether a handler's `result` is a `StreamingResponse`. A subtype test on the MRO, like the
/// completer's for `Response`: every result a handler returns pays it. GIL: held.
pub(crate) fn is_streaming(result: &Bound<'_, PyAny>) -> bool {
    let py = result.py();
    let Ok(lookups) = lookups(py) else {
        return false;
    };
    // SAFETY: the GIL is held; both pointers are live type objects.
    unsafe {
        pyo3::ffi::PyType_IsSubtype(
            pyo3::ffi::Py_TYPE(result.as_ptr()),
            lookups.response.bind(py).as_type_ptr(),
        ) != 0
    }
}

/// What a streamed response needs from its request.
pub(crate) struct Origin<'a> {
    pub key: u64,
    pub plugin: u32,
    pub request_id: &'a Arc<str>,
    pub handler: &'a Arc<str>,
    pub tasks: &'a TaskMap,
    /// A HEAD request: the head alone is sent, and the producer never runs.
    pub head: bool,
}

/// A started stream: the body to send after the head, and the pump's task, to be recorded
/// under the request's key once the head is sent.
pub(crate) struct Started {
    pub body: Streamed,
    pub task: Option<Py<PyAny>>,
}

/// Sets up the stream of `response` (a `StreamingResponse`): its channel, its body and the
/// pump's task (created, not yet run). GIL: held (`response`), loop thread.
pub(crate) fn start(response: &Bound<'_, PyAny>, origin: Origin<'_>) -> PyResult<Started> {
    let py = response.py();
    if origin.head {
        let empty = http_body_util::Empty::<Bytes>::new();
        return Ok(Started {
            body: Box::pin(http_body_util::BodyExt::map_err(
                empty,
                |never| match never {},
            )),
            task: None,
        });
    }
    let keepalive = keepalive_of(response)?;
    let (tx, rx) = channel::to_tokio::<Bytes>(CAPACITY);
    let end = Arc::new(AtomicU8::new(OPEN));
    let sink = Py::new(
        py,
        Sink {
            tx: Some(tx),
            end: end.clone(),
            tasks: origin.tasks.clone(),
            key: origin.key,
            request_id: origin.request_id.clone(),
            handler: origin.handler.clone(),
        },
    )?;
    let lookups = lookups(py)?;
    let coroutine = lookups.pump.bind(py).call1((response, sink))?;
    let coroutine = Py::new(py, PluginCoroutine::new(coroutine.unbind(), origin.plugin))?;
    // asyncio.Task directly: the loop's task factory would wrap the coroutine again.
    let task = lookups.task.bind(py).call1((coroutine,))?;
    let idle = match keepalive {
        Some(_) => None,
        None => IDLE_TIMEOUT.get().copied().flatten(),
    };
    let body = ProducerBody {
        rx,
        end,
        key: origin.key,
        request_id: origin.request_id.clone(),
        last: Instant::now(),
        keepalive: keepalive.map(|(every, bytes)| (Silence::new(every), bytes)),
        idle: idle.map(Silence::new),
        done: false,
        yielded_before_abort: false,
    };
    Ok(Started {
        body: Box::pin(body),
        task: Some(task.unbind()),
    })
}

/// The response's `_keepalive`: `(seconds, bytes)` to send whenever it has been silent that
/// long, or None.
fn keepalive_of(response: &Bound<'_, PyAny>) -> PyResult<Option<(Duration, Bytes)>> {
    let value = response.getattr(pyo3::intern!(response.py(), "_keepalive"))?;
    if value.is_none() {
        return Ok(None);
    }
    let (seconds, bytes): (f64, Vec<u8>) = value.extract()?;
    let every = Duration::try_from_secs_f64(seconds).map_err(|err| {
        pyo3::exceptions::PyValueError::new_err(format!("invalid keep-alive interval: {err}"))
    })?;
    if every.is_zero() {
        return Ok(None);
    }
    Ok(Some((every, Bytes::from(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(
        keepalive: Option<(Duration, &'static [u8])>,
        idle: Option<Duration>,
    ) -> (LoopSender<Bytes>, Arc<AtomicU8>, ProducerBody) {
        let (tx, rx) = channel::to_tokio::<Bytes>(CAPACITY);
        let end = Arc::new(AtomicU8::new(OPEN));
        let body = ProducerBody {
            rx,
            end: end.clone(),
            key: 0,
            request_id: Arc::from("test-1"),
            last: Instant::now(),
            keepalive: keepalive.map(|(every, bytes)| (Silence::new(every), Bytes::from(bytes))),
            idle: idle.map(Silence::new),
            done: false,
            yielded_before_abort: false,
        };
        (tx, end, body)
    }

    async fn next(body: &mut ProducerBody) -> Option<Result<Bytes, String>> {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the body neither yielded nor ended within 10 s")?;
        Some(
            frame
                .map(|frame| frame.into_data().unwrap_or_default())
                .map_err(|err| err.to_string()),
        )
    }

    #[tokio::test]
    async fn a_finished_stream_ends_after_its_chunks() {
        let (tx, end, mut body) = body(None, None);
        assert!(tx.try_send(Bytes::from_static(b"a")).is_ok());
        assert!(tx.try_send(Bytes::from_static(b"b")).is_ok());
        end.store(FINISHED, Ordering::Release);
        drop(tx);
        assert_eq!(next(&mut body).await, Some(Ok(Bytes::from_static(b"a"))));
        assert_eq!(next(&mut body).await, Some(Ok(Bytes::from_static(b"b"))));
        assert_eq!(next(&mut body).await, None);
        assert!(http_body::Body::is_end_stream(&body));
    }

    #[tokio::test]
    async fn a_producer_gone_before_its_end_fails_the_body() {
        let (tx, _end, mut body) = body(None, None);
        assert!(tx.try_send(Bytes::from_static(b"partial")).is_ok());
        drop(tx);
        assert_eq!(
            next(&mut body).await,
            Some(Ok(Bytes::from_static(b"partial")))
        );
        let failed = next(&mut body).await;
        assert!(
            matches!(&failed, Some(Err(message)) if message.contains("failed before the end")),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn the_channel_holds_the_producer_back() {
        let (tx, _end, _body) = body(None, None);
        for _ in 0..CAPACITY {
            assert!(tx.try_send(Bytes::from_static(b"x")).is_ok());
        }
        assert!(matches!(
            tx.try_send(Bytes::from_static(b"x")),
            Err(Rejected::Full(_))
        ));
    }

    #[tokio::test]
    async fn keepalive_bytes_fill_the_silence() {
        let (tx, _end, mut body) = body(Some((Duration::from_millis(20), b": ping\n\n")), None);
        assert_eq!(
            next(&mut body).await,
            Some(Ok(Bytes::from_static(b": ping\n\n")))
        );
        assert_eq!(
            next(&mut body).await,
            Some(Ok(Bytes::from_static(b": ping\n\n")))
        );
        assert!(tx.try_send(Bytes::from_static(b"event")).is_ok());
        assert_eq!(
            next(&mut body).await,
            Some(Ok(Bytes::from_static(b"event")))
        );
    }

    #[tokio::test]
    async fn a_silent_producer_times_out() {
        let (tx, _end, mut body) = body(None, Some(Duration::from_millis(20)));
        assert!(tx.try_send(Bytes::from_static(b"first")).is_ok());
        assert_eq!(
            next(&mut body).await,
            Some(Ok(Bytes::from_static(b"first")))
        );
        let failed = next(&mut body).await;
        assert!(
            matches!(&failed, Some(Err(message)) if message.contains("stream_idle_timeout")),
            "{failed:?}"
        );
        // Ended: hyper dropping it now is not a disconnect.
        assert!(body.done);
        drop(tx);
    }
}
