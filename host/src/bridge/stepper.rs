//! The stepper: a handler's coroutine as the coroutine its asyncio task runs.
//!
//! [`Watched`] steps the handler's coroutine itself (`PyIter_Send`), which is what lets the host
//! time each step (the GIL-hold figures), announce each step with its deadline to the
//! [`watchdog`](super::watchdog), run the step as the route's plugin
//! ([`identity`](crate::services::identity)), and hand the outcome straight to the completer.
//!
//! GIL: held by every method (they run on the loop thread, called by asyncio).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::bridge::completer::Completer;
use crate::bridge::watchdog;
use crate::services::identity::Scope;

/// `pyhost._context.current`, set to the request at a handler task's first step.
pub(super) static CURRENT: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// A handler call as the coroutine its asyncio task runs.
///
/// It steps the handler's coroutine itself (`PyIter_Send`), so it can time every step (the
/// GIL-hold figures), expose the request's deadline to the watchdog while a step runs, and
/// hand the outcome straight to the completer: a handler's return value or exception never
/// travels through another Python frame, and nothing it raises (not even `SystemExit`)
/// reaches the event loop. Registered as a `collections.abc.Coroutine` so `create_task`
/// accepts it; the task is real, so `current_task()`, `asyncio.timeout`, cancellation and
/// per-request contextvars behave as usual.
#[pyclass(module = "pyhost")]
pub struct Watched {
    coroutine: Py<PyAny>,
    completer: Py<Completer>,
    request: Option<Py<PyAny>>,
    key: u64,
    /// The plugin that owns the route: host services called during a step act for it.
    plugin: u32,
    deadline: Option<u64>,
    held: Arc<AtomicU64>,
}

impl Watched {
    /// Wraps the coroutine of request `key`, a route of `plugin`; step time is added to `held`
    /// (nanoseconds).
    pub fn new(
        coroutine: Py<PyAny>,
        completer: Py<Completer>,
        request: Py<PyAny>,
        key: u64,
        plugin: u32,
        deadline: Option<Instant>,
        held: Arc<AtomicU64>,
    ) -> Self {
        Self {
            coroutine,
            completer,
            request: Some(request),
            key,
            plugin,
            deadline: deadline.map(watchdog::monotonic_nanos),
            held,
        }
    }

    fn enter(&mut self, py: Python<'_>) -> Instant {
        if let Some(request) = self.request.take()
            && let Some(current) = CURRENT.get(py)
        {
            // SAFETY: GIL held; both are live objects; the returned token is a new reference
            // (or NULL with an exception, cleared: the handler then sees the previous value).
            unsafe {
                let token = ffi::PyContextVar_Set(current.as_ptr(), request.as_ptr());
                if token.is_null() {
                    ffi::PyErr_Clear();
                } else {
                    ffi::Py_DecRef(token);
                }
            }
        }
        if let Some(deadline) = self.deadline {
            watchdog::begin(self.key, deadline);
        }
        Instant::now()
    }

    fn leave(&self, started: Instant) {
        if self.deadline.is_some() {
            watchdog::end();
        }
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.held.fetch_add(nanos, Ordering::Relaxed);
    }

    /// One step: `Some(yielded)` to keep going, `None` once the handler has finished (its
    /// outcome already given to the completer). A cancellation is handed on as an error so
    /// the task ends cancelled. GIL: held (`py`).
    fn step(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        let _caller = Scope::enter(Some(self.plugin));
        let started = self.enter(py);
        // SAFETY: the GIL is held; both pointers are live objects owned by this struct or the
        // caller; PyIter_Send stores a new reference (or NULL with an exception set) in `out`.
        let status = unsafe { ffi::PyIter_Send(self.coroutine.as_ptr(), value.as_ptr(), &mut out) };
        self.leave(started);
        match status {
            ffi::PySendResult::PYGEN_NEXT => {
                // SAFETY: PYGEN_NEXT hands back a new, non-NULL reference.
                Ok(Some(unsafe { Bound::from_owned_ptr(py, out) }.unbind()))
            }
            ffi::PySendResult::PYGEN_RETURN => {
                // SAFETY: PYGEN_RETURN hands back a new, non-NULL reference (the return value).
                let result = unsafe { Bound::from_owned_ptr(py, out) };
                self.completer.borrow_mut(py).done(&result);
                Ok(None)
            }
            ffi::PySendResult::PYGEN_ERROR => self.failed(py, PyErr::fetch(py)),
        }
    }

    fn failed(&self, py: Python<'_>, err: PyErr) -> PyResult<Option<Py<PyAny>>> {
        if err.is_instance_of::<PyStopIteration>(py) {
            // A coroutine that returned while an exception was thrown into it.
            let value = err.value(py).getattr("value")?;
            self.completer.borrow_mut(py).done(&value);
            return Ok(None);
        }
        let cancelled = err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py);
        // into_value attaches the traceback, which the completer logs.
        let exception = err.into_value(py);
        self.completer
            .borrow_mut(py)
            .fail(exception.bind(py).as_any());
        if cancelled {
            Err(PyErr::from_value(exception.into_bound(py).into_any()))
        } else {
            Ok(None)
        }
    }
}

fn finished<T>(outcome: PyResult<Option<T>>) -> PyResult<T> {
    match outcome {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(PyStopIteration::new_err(())),
        Err(err) => Err(err),
    }
}

#[pymethods]
impl Watched {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.step(py, &py.None().into_bound(py))
    }

    fn send(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        finished(self.step(py, value))
    }

    #[pyo3(signature = (typ, value=None, traceback=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let coroutine = self.coroutine.clone_ref(py);
        let coroutine = coroutine.bind(py);
        let _caller = Scope::enter(Some(self.plugin));
        let started = self.enter(py);
        let outcome = match (value, traceback) {
            (None, _) => coroutine.call_method1("throw", (typ,)),
            (Some(value), None) => coroutine.call_method1("throw", (typ, value)),
            (Some(value), Some(tb)) => coroutine.call_method1("throw", (typ, value, tb)),
        };
        self.leave(started);
        finished(match outcome {
            Ok(yielded) => Ok(Some(yielded.unbind())),
            Err(err) => self.failed(py, err),
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        // Closing runs the handler's `finally` blocks: still its plugin's code.
        let _caller = Scope::enter(Some(self.plugin));
        self.coroutine.bind(py).call_method0("close").map(|_| ())
    }
}
