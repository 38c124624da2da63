//! The per-request completer: receives the handler's outcome on the loop thread and sends the
//! finished [`Reply`] to the waiting tokio task.
//!
//! GIL: its methods are called from Python (the invoke wrapper), so it is held throughout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use pyo3::prelude::*;
use tokio::sync::oneshot;

use crate::bridge::response::{self, ConvertError};
use crate::bridge::sdk::sdk;
use crate::bridge::stats::STATS;
use crate::interpreter::format_exception;
use crate::logging::{LogBudget, suppressed_note};
use crate::streaming::body::{Deferred, HandlerReply};
use crate::streaming::producer;
use pyhost_core::reply::Reply;

/// Running handler tasks by request key, so a request can be cancelled. Only the loop thread
/// touches it (the mutex is never contended).
#[derive(Clone, Default)]
pub(crate) struct TaskMap(Arc<Mutex<HashMap<u64, Py<PyAny>>>>);

impl TaskMap {
    /// Records the task of request `key`.
    pub(crate) fn insert(&self, key: u64, task: Py<PyAny>) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key, task);
    }

    /// Forgets (and returns) the task of request `key`.
    pub(crate) fn remove(&self, key: u64) -> Option<Py<PyAny>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&key)
    }
}

/// Cancelled handlers logged per second.
static CANCELLED_LOGS: LogBudget = LogBudget::new(20);

/// Where one request's reply goes, and what to say in the log about it.
#[pyclass(module = "pyhost")]
pub struct Completer {
    reply: Option<oneshot::Sender<HandlerReply>>,
    request_id: Arc<str>,
    route: Arc<str>,
    method: http::Method,
    handler: Arc<str>,
    debug: bool,
    key: u64,
    /// The plugin whose route this is: a streamed response's producer runs as it.
    plugin: u32,
    tasks: TaskMap,
    held: Arc<AtomicU64>,
}

impl Completer {
    /// A completer for one request.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        reply: oneshot::Sender<HandlerReply>,
        request_id: Arc<str>,
        route: Arc<str>,
        method: http::Method,
        handler: Arc<str>,
        debug: bool,
        key: u64,
        plugin: u32,
        tasks: TaskMap,
    ) -> Self {
        Self {
            reply: Some(reply),
            request_id,
            route,
            method,
            handler,
            debug,
            key,
            plugin,
            tasks,
            held: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The request's GIL-hold accumulator (nanoseconds), shared with its stepper.
    pub fn held(&self) -> Arc<AtomicU64> {
        self.held.clone()
    }

    /// Sends the reply, once; later calls do nothing. The request's task is finished with.
    pub fn send_reply(&mut self, reply: Reply) {
        self.send(HandlerReply::from(reply));
    }

    /// Sends the head of a reply whose body follows (see [`Deferred`]), once.
    pub(crate) fn send_deferred(&mut self, reply: Reply, body: Deferred) {
        self.send(HandlerReply {
            reply,
            body: Some(body),
        });
    }

    fn send(&mut self, reply: HandlerReply) {
        self.tasks.remove(self.key);
        if self.reply.is_some() {
            STATS
                .gil_hold
                .record(Duration::from_nanos(self.held.load(Ordering::Relaxed)));
        }
        if let Some(sender) = self.reply.take() {
            // The client may have gone away; its reply has nowhere to go, which is fine.
            let _ = sender.send(reply);
        }
    }

    /// The generic 500 (with details only in debug mode).
    pub fn internal_error(&self, error: Option<String>, traceback: Option<String>) -> Reply {
        let mut body = serde_json::json!({
            "detail": "Internal Server Error",
            "request_id": &*self.request_id,
        });
        if self.debug {
            body["error"] = error.into();
            body["traceback"] = traceback.into();
        }
        Reply::json(StatusCode::INTERNAL_SERVER_ERROR, &body)
    }

    /// A `Response` with a `background` callable: start it now that the reply is on its way.
    /// Only `Response` objects are looked at, so other results pay one subtype test.
    fn start_background(&self, result: &Bound<'_, PyAny>) {
        let py = result.py();
        let Ok(sdk) = sdk(py) else { return };
        let response_type = sdk.response.bind(py);
        let Ok(response_type) = response_type.cast::<pyo3::types::PyType>() else {
            return;
        };
        // A subtype test on the MRO: `isinstance` would first look up `__instancecheck__`
        // and call it, which cost about 250 instructions on every dict a handler returns.
        // SAFETY: the GIL is held; both pointers are live type objects.
        let is_response = unsafe {
            pyo3::ffi::PyType_IsSubtype(
                pyo3::ffi::Py_TYPE(result.as_ptr()),
                response_type.as_type_ptr(),
            )
        } != 0;
        if !is_response {
            return;
        }
        let Ok(background) = result.getattr(pyo3::intern!(py, "background")) else {
            return;
        };
        if background.is_none() {
            return;
        }
        let started = py
            .import("pyhost.responses")
            .and_then(|module| module.getattr("_start_background"))
            .and_then(|start| start.call1((background, &*self.request_id)));
        if let Err(err) = started {
            tracing::error!(
                "request {}: cannot start the response's background task\n{}",
                self.request_id,
                crate::interpreter::format_exception(py, &err)
            );
        }
    }

    /// A `StreamingResponse`: the head goes now, the body follows from its producer's task,
    /// which the request's key names from now on (so a client that leaves cancels it). The
    /// response's background task is the pump's to start, after the last chunk.
    fn start_stream(&mut self, response: &Bound<'_, PyAny>, reply: Reply) {
        let origin = producer::Origin {
            key: self.key,
            plugin: self.plugin,
            request_id: &self.request_id,
            handler: &self.handler,
            tasks: &self.tasks,
            head: self.method == http::Method::HEAD,
        };
        match producer::start(response, origin) {
            Ok(started) => {
                self.send_deferred(reply, Deferred::Stream(started.body));
                if let Some(task) = started.task {
                    self.tasks.insert(self.key, task);
                }
            }
            Err(err) => {
                let py = response.py();
                let traceback = format_exception(py, &err);
                tracing::error!(
                    "request {} ({} {}): cannot start the stream handler {} returned\n{traceback}",
                    self.request_id,
                    self.method,
                    self.route,
                    self.handler,
                );
                let reply = self.internal_error(Some(err.to_string()), Some(traceback));
                self.send_reply(reply);
            }
        }
    }

    fn conversion_failed(&mut self, err: ConvertError) {
        tracing::error!(
            "request {} ({} {}): handler {} returned a value that is not a response: {err}",
            self.request_id,
            self.method,
            self.route,
            self.handler,
        );
        let reply = self.internal_error(Some(err.to_string()), None);
        self.send_reply(reply);
    }
}

#[pymethods]
impl Completer {
    /// The handler returned `result`.
    pub fn done(&mut self, result: &Bound<'_, PyAny>) {
        let began = Instant::now();
        let converted = response::from_result(result);
        self.held.fetch_add(
            u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        match converted {
            Ok(reply) if producer::is_streaming(result) => self.start_stream(result, reply),
            Ok(reply) => {
                self.send_reply(reply);
                self.start_background(result);
            }
            Err(err) => self.conversion_failed(err),
        }
    }

    /// The handler raised `exc`.
    pub fn fail(&mut self, exc: &Bound<'_, PyAny>) {
        let py = exc.py();
        let is_http_error = sdk(py)
            .map(|sdk| exc.is_instance(sdk.http_error.bind(py)).unwrap_or(false))
            .unwrap_or(false);
        if is_http_error {
            match response::from_http_error(exc) {
                Ok(reply) => return self.send_reply(reply),
                Err(err) => return self.conversion_failed(err),
            }
        }
        let err = PyErr::from_value(exc.clone());
        if crate::bridge::watchdog::is_interruption(py, exc) {
            tracing::warn!(
                "request {} ({} {}): handler {} kept the event loop busy past its deadline and was interrupted",
                self.request_id,
                self.method,
                self.route,
                self.handler,
            );
            let reply = Reply::detail(StatusCode::GATEWAY_TIMEOUT, "Handler timed out");
            return self.send_reply(reply);
        }
        if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) {
            // Mostly clients that left: a reset stream is cheap to send, so a bounded rate.
            if let Some(held_back) = CANCELLED_LOGS.admit() {
                tracing::warn!(
                    "request {} ({} {}): handler {} was cancelled{}",
                    self.request_id,
                    self.method,
                    self.route,
                    self.handler,
                    suppressed_note(held_back),
                );
            }
            let reply = Reply::detail(StatusCode::SERVICE_UNAVAILABLE, "Request cancelled");
            return self.send_reply(reply);
        }
        let traceback = format_exception(py, &err);
        tracing::error!(
            "request {} ({} {}): handler {} raised an exception\n{traceback}",
            self.request_id,
            self.method,
            self.route,
            self.handler,
        );
        let summary = exc.str().map(|s| s.to_string()).unwrap_or_default();
        let type_name = exc
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let error = if summary.is_empty() {
            type_name
        } else {
            format!("{type_name}: {summary}")
        };
        let reply = self.internal_error(Some(error), Some(traceback));
        self.send_reply(reply);
    }
}
