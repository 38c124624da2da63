//! Request bodies a piece at a time: the reader the service pulls a body's frames through
//! (its limit, and its timeout between frames), the feed that moves them to a `stream=True`
//! route's handler, and the Python object that handler iterates.
//!
//! A `stream=True` request is dispatched as soon as its head is admitted. While its handler
//! runs, the service's request future also drives [`feed`]: each frame [`Frames`] reads is
//! sent into a [`to_loop`](crate::streaming::channel::to_loop) channel of [`STREAM_CAPACITY`] chunks, and the send waits
//! while the channel is full, so the connection is read no faster than the handler iterates
//! [`RequestBody`]. Memory per request is bounded by that capacity times the frame size
//! (hyper reads at most its buffer, about 400 KiB, per frame). A body over its limit, a
//! client too slow between two frames or a broken connection arrive as a last item the
//! handler's `request.stream()` raises as an `HTTPError` (413, 408, 400); the service stops
//! feeding once the reply is in, and closes a connection whose body was not read to its end.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

use crate::streaming::channel::{Empty, LoopReceiver, TokioSender};
use pyhost_core::form::ParsedForm;

/// Chunks that may wait between the connection and a handler that streams its body.
pub(crate) const STREAM_CAPACITY: usize = 4;

/// Why a body stopped before its end.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body crossed the route's limit.
    #[error("Request body too large: the limit is {0} bytes")]
    TooLarge(u64),
    /// The client paused longer than `server.body_timeout` between two frames.
    #[error("Request body not received within {:.1}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The connection failed (the client left, or sent a broken body).
    #[error("Could not read the request body: {0}")]
    Read(String),
}

impl BodyError {
    /// The HTTP status that answers it.
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            BodyError::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => http::StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// A request body read frame by frame, under a size limit and a timeout between frames.
pub(crate) struct Frames<B> {
    body: std::pin::Pin<Box<B>>,
    limit: u64,
    timeout: Duration,
    seen: u64,
    /// The body was read to its end.
    finished: bool,
    /// Nothing more comes: the end, or an error.
    over: bool,
}

impl<B> Frames<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Reads `body`, at most `limit` bytes, waiting at most `timeout` for each frame.
    pub(crate) fn new(body: B, limit: u64, timeout: Duration) -> Self {
        Self {
            body: Box::pin(body),
            limit,
            timeout,
            seen: 0,
            finished: false,
            over: false,
        }
    }

    /// The next chunk of data; `None` at the end of the body and after an error.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, BodyError>> {
        while !self.over {
            let frame = match tokio::time::timeout(self.timeout, self.body.frame()).await {
                Err(_) => return self.fail(BodyError::Timeout(self.timeout)),
                Ok(None) => {
                    self.over = true;
                    self.finished = true;
                    return None;
                }
                Ok(Some(Err(err))) => return self.fail(BodyError::Read(err.into().to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry no data.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            self.seen += data.len() as u64;
            if self.seen > self.limit {
                return self.fail(BodyError::TooLarge(self.limit));
            }
            return Some(Ok(data));
        }
        None
    }

    fn fail(&mut self, err: BodyError) -> Option<Result<Bytes, BodyError>> {
        self.over = true;
        Some(Err(err))
    }

    /// Whether the body was read to its end (else the connection cannot carry another
    /// request).
    pub(crate) fn finished(&self) -> bool {
        self.finished
    }
}

/// Moves the body's chunks to the handler until the body ends (then an empty chunk says so),
/// fails (the error is sent as the last item) or the handler's side of the channel is gone.
/// A channel that closes without either (the request was dropped: its client left) is an
/// incomplete body to the handler, never a finished one.
pub(crate) async fn feed<B>(frames: &mut Frames<B>, tx: TokioSender<Result<Bytes, BodyError>>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    while let Some(item) = frames.next().await {
        if tx.send(item).await.is_err() {
            return;
        }
    }
    if frames.finished() {
        // `Frames` never yields an empty chunk: this one is the end.
        let _ = tx.send(Ok(Bytes::new())).await;
    }
}

/// Where a handler's request reads its body from, beyond the bytes in its `RequestData`.
#[derive(Default)]
pub(crate) enum BodySource {
    /// The whole body was read before dispatch: `RequestData::body`.
    #[default]
    Whole,
    /// A `stream=True` route: the chunks still to come.
    Stream(LoopReceiver<Result<Bytes, BodyError>>),
    /// A route with a declared form: the form, parsed before dispatch.
    Form(Box<ParsedForm>),
}

/// The chunks of a streamed body as the handler's `request.stream()` reads them
/// (`pyhost.requests` wraps it in an async iterator). GIL: held by every method, on the loop
/// thread.
#[pyclass(module = "pyhost", name = "_RequestBody")]
pub(crate) struct RequestBody {
    /// The channel, and whether its end was seen.
    rx: Mutex<(LoopReceiver<Result<Bytes, BodyError>>, bool)>,
}

impl RequestBody {
    /// Wraps the loop side of a body's channel.
    pub(crate) fn new(rx: LoopReceiver<Result<Bytes, BodyError>>) -> Self {
        Self {
            rx: Mutex::new((rx, false)),
        }
    }
}

#[pymethods]
impl RequestBody {
    /// The next chunk as `bytes`, `None` when none has arrived yet (await `ready()` and try
    /// again); raises `StopAsyncIteration` at the end and `HTTPError` when the body failed.
    fn try_next<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut guard = self
            .rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (rx, ended) = &mut *guard;
        if *ended {
            return Err(PyStopAsyncIteration::new_err(()));
        }
        match rx.try_recv() {
            Ok(Ok(chunk)) if chunk.is_empty() => {
                *ended = true;
                Err(PyStopAsyncIteration::new_err(()))
            }
            Ok(Ok(chunk)) => Ok(Some(PyBytes::new(py, &chunk))),
            Ok(Err(err)) => {
                *ended = true;
                Err(http_error(py, err.status().as_u16(), err.to_string())?)
            }
            Err(Empty::Waiting) => Ok(None),
            Err(Empty::Closed) => Err(http_error(
                py,
                400,
                "Request body incomplete: the connection closed before its end".to_owned(),
            )?),
        }
    }

    /// A future done once `try_next` has something to say.
    fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.rx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0
            .ready(py)
    }
}

/// `pyhost.HTTPError(status, detail)`, to raise. GIL: held (`py`).
pub(crate) fn http_error(py: Python<'_>, status: u16, detail: String) -> PyResult<PyErr> {
    static HTTP_ERROR: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let class = HTTP_ERROR.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("pyhost")?.getattr("HTTPError")?.unbind())
    })?;
    Ok(PyErr::from_value(class.bind(py).call1((status, detail))?))
}

/// The SDK's helpers for streams and forms (`pyhost.forms`), looked up once.
pub(crate) struct Helpers {
    /// `_iterate(chunks)`: a streamed body as an async iterator.
    pub(crate) iterate: Py<PyAny>,
    /// `_one_chunk(body)`: a whole body as a stream.
    pub(crate) one_chunk: Py<PyAny>,
    /// `_StreamedBody(stream)`: `request.body` of a streamed route.
    pub(crate) streamed_body: Py<PyAny>,
    /// `_Once(make)`: what `request.form()` awaits.
    pub(crate) once: Py<PyAny>,
    /// `_ready(value)`: an awaitable of a value at hand.
    pub(crate) ready: Py<PyAny>,
    /// `_wait_form(pending)`: a form parsed on tokio.
    pub(crate) wait_form: Py<PyAny>,
    /// `_form_of_stream(body, parse)`: a streamed body read whole, then parsed on tokio.
    pub(crate) form_of_stream: Py<PyAny>,
}

/// The helpers, imported on first use. GIL: held (`py`).
pub(crate) fn helpers(py: Python<'_>) -> PyResult<&Helpers> {
    static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();
    HELPERS.get_or_try_init(py, || {
        let forms = py.import("pyhost.forms")?;
        let get = |name: &str| forms.getattr(name).map(Bound::unbind);
        Ok(Helpers {
            iterate: get("_iterate")?,
            one_chunk: get("_one_chunk")?,
            streamed_body: get("_StreamedBody")?,
            once: get("_Once")?,
            ready: get("_ready")?,
            wait_form: get("_wait_form")?,
            form_of_stream: get("_form_of_stream")?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn chunks(
        pieces: &'static [&'static [u8]],
    ) -> StreamBody<impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::io::Error>>>
    {
        StreamBody::new(futures_util::stream::iter(
            pieces
                .iter()
                .map(|piece| Ok(http_body::Frame::data(Bytes::from_static(piece)))),
        ))
    }

    #[tokio::test]
    async fn frames_come_in_order_and_the_end_is_noted() {
        let mut frames = Frames::new(chunks(&[b"ab", b"", b"cd"]), 10, Duration::from_secs(5));
        assert_eq!(frames.next().await.unwrap().unwrap(), "ab");
        assert_eq!(frames.next().await.unwrap().unwrap(), "cd");
        assert!(!frames.finished());
        assert!(frames.next().await.is_none());
        assert!(frames.finished());
    }

    #[tokio::test]
    async fn a_body_over_its_limit_fails_once() {
        let mut frames = Frames::new(chunks(&[b"abc", b"def"]), 5, Duration::from_secs(5));
        assert_eq!(frames.next().await.unwrap().unwrap(), "abc");
        assert!(matches!(
            frames.next().await,
            Some(Err(BodyError::TooLarge(5)))
        ));
        assert!(frames.next().await.is_none());
        assert!(!frames.finished());
    }

    #[tokio::test]
    async fn a_pause_between_frames_times_out() {
        let stalled = StreamBody::new(futures_util::stream::pending::<
            Result<http_body::Frame<Bytes>, std::io::Error>,
        >());
        let mut frames = Frames::new(stalled, 5, Duration::from_millis(20));
        assert!(matches!(
            frames.next().await,
            Some(Err(BodyError::Timeout(_)))
        ));
        let mut whole = Frames::new(Full::new(Bytes::from_static(b"x")), 5, Duration::ZERO);
        assert!(whole.next().await.is_some());
    }
}
