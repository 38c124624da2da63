//! Handler deadlines that hold even when a handler never yields.
//!
//! An `async def` handler with a deadline is awaited through [`Watched`], which steps the
//! handler's coroutine itself and records, for the duration of each step, which request is
//! running and until when. A watchdog thread (never a tokio worker) polls that record; when a
//! step outlives its deadline (a CPU loop that never returns to the event loop) it takes the
//! GIL, checks the same step is still running, and raises `HandlerTimeout` in the loop thread
//! with `PyThreadState_SetAsyncExc`. Because the check and the raise happen under the GIL, the
//! exception can only land inside that handler's code, never in the event loop itself.
//!
//! Limits: an exception is only delivered between bytecodes, so a handler blocked inside a
//! long C call is interrupted when that call returns.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::bridge::completer::Completer;
use crate::services::identity::Scope;

/// How often the watchdog looks at the running step.
const POLL: Duration = Duration::from_millis(5);

/// The step currently running on the loop thread (key 0: none).
struct StepRecord {
    key: AtomicU64,
    deadline: AtomicU64,
    loop_thread: AtomicU64,
    exception: OnceLock<Py<PyAny>>,
    started: AtomicBool,
}

static STEP: StepRecord = StepRecord {
    key: AtomicU64::new(0),
    deadline: AtomicU64::new(0),
    loop_thread: AtomicU64::new(0),
    exception: OnceLock::new(),
    started: AtomicBool::new(false),
};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// A monotonic time as nanoseconds since the first call, for storing in atomics.
pub fn monotonic_nanos(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Registers the loop thread and the exception to raise, and starts the watchdog thread once.
///
/// GIL: held (`py`); must be called on the loop thread.
pub fn start(py: Python<'_>, exception: Py<PyAny>) -> PyResult<()> {
    let ident: u64 = py
        .import("threading")?
        .call_method0("get_ident")?
        .extract()?;
    STEP.loop_thread.store(ident, Ordering::Release);
    let _ = STEP.exception.set(exception);
    if STEP.started.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("pyhost-watchdog".to_owned())
        .spawn(watch)
        .map(|_| ())
        .map_err(|err| pyo3::exceptions::PyRuntimeError::new_err(err.to_string()))
}

fn watch() {
    let mut last_fired = 0u64;
    loop {
        std::thread::sleep(POLL);
        let key = STEP.key.load(Ordering::Acquire);
        if key == 0 || key == last_fired {
            continue;
        }
        let deadline = STEP.deadline.load(Ordering::Acquire);
        if monotonic_nanos(Instant::now()) < deadline {
            continue;
        }
        // The loop thread is busy inside a handler past its deadline; the GIL is taken here,
        // on the watchdog's own thread, and only in this case.
        crate::bridge::stats::attach(|_py| {
            if STEP.key.load(Ordering::Acquire) != key {
                return;
            }
            let Some(exception) = STEP.exception.get() else {
                return;
            };
            let thread = STEP.loop_thread.load(Ordering::Acquire);
            // SAFETY: the GIL is held; the thread id was read from threading.get_ident() on the
            // loop thread and the exception type is a live class kept in a static.
            unsafe {
                ffi::PyThreadState_SetAsyncExc(thread as std::os::raw::c_long, exception.as_ptr());
            }
            last_fired = key;
        });
    }
}

/// `pyhost._context.current`, set to the request at a handler task's first step.
pub static CURRENT: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

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
            deadline: deadline.map(monotonic_nanos),
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
            STEP.deadline.store(deadline, Ordering::Release);
            STEP.key.store(self.key, Ordering::Release);
        }
        Instant::now()
    }

    fn leave(&self, started: Instant) {
        if self.deadline.is_some() {
            STEP.key.store(0, Ordering::Release);
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
            // SAFETY: PYGEN_NEXT hands back a new, non-NULL reference.
            ffi::PySendResult::PYGEN_NEXT => {
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
