//! The socket a WebSocket handler holds: the loop side of the connection's two channels and
//! of its accept decision, as a Python class (`pyhost.WebSocket` in the SDK wraps it with the
//! typed API and the waiting).
//!
//! Nothing here blocks or waits: each call tries, and when it cannot go on the SDK awaits the
//! channel's `ready` future and tries again. GIL: held by every method (loop thread).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyString};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Accepted, CloseStatus, Incoming, LoopEnds, Outgoing};
use crate::streaming::channel::{Empty, LoopReceiver, LoopSender, Rejected};

/// `pyhost.websocket.WebSocketDisconnect`, imported on first use.
static DISCONNECT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The longest close reason: a control frame's payload is at most 125 bytes, two of which
/// carry the code (RFC 6455 section 5.5).
const MAX_REASON: usize = 123;

/// One connection's loop side, as the SDK's `WebSocket` sees it.
#[pyclass(module = "pyhost", name = "NativeWebSocket")]
pub(crate) struct NativeSocket {
    request: Py<PyAny>,
    incoming: LoopReceiver<Incoming>,
    outgoing: LoopSender<Outgoing>,
    accept: Option<oneshot::Sender<Accepted>>,
    offered: Vec<String>,
    status: Arc<CloseStatus>,
}

impl NativeSocket {
    /// The socket for `ends`, reading its request attributes from `request`.
    pub(crate) fn new(ends: LoopEnds, request: Py<PyAny>) -> Self {
        let LoopEnds {
            incoming,
            outgoing,
            accept,
            offered,
            status,
        } = ends;
        Self {
            request,
            incoming,
            outgoing,
            accept: Some(accept),
            offered,
            status,
        }
    }

    /// `WebSocketDisconnect(code, reason)` for a closed connection.
    fn disconnect(&self, py: Python<'_>) -> PyErr {
        // The tokio side records the status before it drops its channel ends.
        let (code, reason) = self.status.get().unwrap_or((1006, String::new()));
        let class = DISCONNECT.get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("pyhost.websocket")?
                    .getattr("WebSocketDisconnect")?
                    .unbind(),
            )
        });
        match class.and_then(|class| class.bind(py).call1((code, reason))) {
            Ok(exception) => PyErr::from_value(exception),
            Err(err) => err,
        }
    }

    /// Queues `item`: `true` when queued, `false` when the queue is full.
    fn offer(&self, py: Python<'_>, item: Outgoing) -> PyResult<bool> {
        match self.outgoing.try_send(item) {
            Ok(()) => Ok(true),
            Err(Rejected::Full(_)) => Ok(false),
            Err(Rejected::Closed(_)) => Err(self.disconnect(py)),
        }
    }
}

#[pymethods]
impl NativeSocket {
    /// The upgrade request (path and query parameters, headers, cookies, client).
    #[getter]
    fn request(&self, py: Python<'_>) -> Py<PyAny> {
        self.request.clone_ref(py)
    }

    /// The subprotocols the client offered, in its order of preference.
    #[getter]
    fn subprotocols(&self) -> Vec<String> {
        self.offered.clone()
    }

    /// `(code, reason)` once the connection is closed, else `None`.
    #[getter]
    fn close_status(&self) -> Option<(u16, String)> {
        self.status.get()
    }

    /// Accepts the connection: the server answers 101 with `subprotocol` (one the client
    /// offered) and `headers`. `False` when the client is already gone.
    #[pyo3(signature = (subprotocol=None, headers=Vec::new()))]
    fn accept(
        &mut self,
        subprotocol: Option<String>,
        headers: Vec<(String, String)>,
    ) -> PyResult<bool> {
        let protocol = match subprotocol {
            None => None,
            Some(chosen) => {
                if !self.offered.contains(&chosen) {
                    return Err(PyValueError::new_err(format!(
                        "subprotocol {chosen:?} was not offered by the client (offered: {:?})",
                        self.offered
                    )));
                }
                Some(HeaderValue::from_str(&chosen).map_err(|_| {
                    PyValueError::new_err(format!("subprotocol {chosen:?} is not a header value"))
                })?)
            }
        };
        let mut checked = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| PyValueError::new_err(format!("invalid value for header {name:?}")))?;
            checked.push((header, value));
        }
        let Some(accept) = self.accept.take() else {
            return Err(PyRuntimeError::new_err(
                "this WebSocket was accepted already",
            ));
        };
        Ok(accept
            .send(Accepted {
                protocol,
                headers: checked,
            })
            .is_ok())
    }

    /// The next message (`str` or `bytes`), or `None` when none has come yet. Raises
    /// `WebSocketDisconnect` once the connection is closed and every message it brought
    /// has been taken.
    fn try_receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.incoming.try_recv() {
            Ok(Incoming::Text(text)) => Ok(Some(PyString::new(py, text.as_str()).into_any())),
            Ok(Incoming::Binary(bytes)) => Ok(Some(PyBytes::new(py, &bytes).into_any())),
            Err(Empty::Waiting) => Ok(None),
            Err(Empty::Closed) => Err(self.disconnect(py)),
        }
    }

    /// A future done once `try_receive` may give something.
    fn receive_ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.incoming.ready(py)
    }

    /// Queues a text (`str`) or binary (`bytes`) message: `True` when queued, `False`
    /// when the queue is full. Raises `WebSocketDisconnect` once the connection is closed.
    fn try_send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<bool> {
        let item = if let Ok(text) = message.cast::<PyString>() {
            Outgoing::Text(Utf8Bytes::from(text.to_str()?.to_owned()))
        } else if let Ok(bytes) = message.cast::<PyBytes>() {
            Outgoing::Binary(Bytes::copy_from_slice(bytes.as_bytes()))
        } else {
            return Err(PyTypeError::new_err(format!(
                "a WebSocket message is str or bytes, got {}",
                message.get_type().name()?
            )));
        };
        self.offer(py, item)
    }

    /// Queues a close frame: `True` when queued, `False` when the queue is full.
    #[pyo3(signature = (code=1000, reason=String::new()))]
    fn try_close(&self, py: Python<'_>, code: u16, reason: String) -> PyResult<bool> {
        let allowed = (1000..=4999).contains(&code) && CloseCode::from(code).is_allowed();
        if !allowed {
            return Err(PyValueError::new_err(format!(
                "{code} is not a close code an endpoint may send (1000-1003, 1007-1014, 3000-4999)"
            )));
        }
        if reason.len() > MAX_REASON {
            return Err(PyValueError::new_err(format!(
                "a close reason is at most {MAX_REASON} bytes in UTF-8, got {}",
                reason.len()
            )));
        }
        self.offer(py, Outgoing::Close(code, reason))
    }

    /// A future done once `try_send` or `try_close` may queue.
    fn send_ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.outgoing.ready(py)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let path = self
            .request
            .bind(py)
            .getattr("path")
            .and_then(|path| path.extract::<String>())
            .unwrap_or_default();
        format!("<NativeWebSocket {path}>")
    }
}
