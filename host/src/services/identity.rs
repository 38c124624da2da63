//! Who is calling the host: the plugin whose code runs on this thread, as the host decided.
//!
//! No host service takes the caller as an argument. The host knows which plugin's code it is
//! running (it steps every handler task itself, calls every sync handler, imports every
//! package), so it records the plugin in a thread-local for exactly that long, and each
//! service reads it from there. Python cannot write the thread-local: it changes only when the
//! host enters code on a plugin's behalf.
//!
//! Work a plugin starts keeps its identity: a task it creates is stepped through a
//! [`PluginCoroutine`], and a thread it starts or a callable it submits to a thread pool runs
//! through a [`PluginCall`]. Both are made only by the host, capture the identity of whoever
//! creates them, and can run only the code they wrap; `identity.py` installs them (a task
//! factory on the loop, `threading.Thread.start`, `ThreadPoolExecutor.submit`). Work started
//! outside any plugin's code, an event-loop callback for instance, has no identity, and a
//! service that needs one refuses it.

use std::cell::Cell;
use std::ffi::CString;
use std::marker::PhantomData;

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyTuple};

thread_local! {
    static CALLER: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The plugin whose code runs on this thread, if the host is running a plugin's code.
pub(crate) fn current() -> Option<u32> {
    CALLER.with(Cell::get)
}

/// Makes `plugin` this thread's caller until dropped, then restores the one before.
///
/// Not `Send`: a scope belongs to the thread that entered it.
pub(crate) struct Scope {
    previous: Option<u32>,
    _thread_bound: PhantomData<*const ()>,
}

impl Scope {
    /// Enters `plugin` (or no plugin) on this thread.
    pub(crate) fn enter(plugin: Option<u32>) -> Self {
        Self {
            previous: CALLER.with(|caller| caller.replace(plugin)),
            _thread_bound: PhantomData,
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CALLER.with(|caller| caller.set(self.previous));
    }
}

/// A callable that runs as one plugin (or as no plugin): a sync handler, a thread's `run`, a
/// callable submitted to a thread pool. Python cannot construct one, and one only ever runs
/// the callable it was made with.
#[pyclass(module = "pyhost", frozen)]
pub struct PluginCall {
    plugin: Option<u32>,
    callable: Py<PyAny>,
}

impl PluginCall {
    /// Wraps `callable` to run as `plugin`.
    pub fn new(plugin: Option<u32>, callable: Py<PyAny>) -> Self {
        Self { plugin, callable }
    }
}

#[pymethods]
impl PluginCall {
    /// GIL: held; the wrapped callable runs with this thread's caller set to the plugin.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__(
        &self,
        py: Python<'_>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let _scope = Scope::enter(self.plugin);
        self.callable.bind(py).call(args, kwargs).map(Bound::unbind)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<pyhost call of {}>",
            self.callable
                .bind(py)
                .repr()
                .map_or_else(|_| "?".to_owned(), |r| r.to_string())
        )
    }
}

/// A coroutine stepped as one plugin: the tasks a plugin's code creates run through it.
/// Registered as a `collections.abc.Coroutine` so asyncio accepts it as a task's coroutine.
#[pyclass(module = "pyhost")]
pub struct PluginCoroutine {
    coroutine: Py<PyAny>,
    plugin: u32,
}

fn finished(
    py: Python<'_>,
    status: ffi::PySendResult,
    out: *mut ffi::PyObject,
) -> PyResult<Py<PyAny>> {
    match status {
        // SAFETY: PYGEN_NEXT hands back a new, non-NULL reference.
        ffi::PySendResult::PYGEN_NEXT => Ok(unsafe { Bound::from_owned_ptr(py, out) }.unbind()),
        ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: PYGEN_RETURN hands back a new, non-NULL reference (the return value).
            let value = unsafe { Bound::from_owned_ptr(py, out) };
            Err(PyStopIteration::new_err((value.unbind(),)))
        }
        ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

impl PluginCoroutine {
    /// Wraps `coroutine` to be stepped as `plugin`: work the host starts for a plugin (a
    /// streamed response's producer) outside its handler's task.
    pub(crate) fn new(coroutine: Py<PyAny>, plugin: u32) -> Self {
        Self { coroutine, plugin }
    }

    fn step(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        let _scope = Scope::enter(Some(self.plugin));
        // SAFETY: the GIL is held; both pointers are live objects owned by this struct or the
        // caller; PyIter_Send stores a new reference (or NULL with an exception set) in `out`.
        let status = unsafe { ffi::PyIter_Send(self.coroutine.as_ptr(), value.as_ptr(), &mut out) };
        finished(py, status, out)
    }
}

#[pymethods]
impl PluginCoroutine {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.step(py, &py.None().into_bound(py))
    }

    fn send(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.step(py, value)
    }

    #[pyo3(signature = (typ, value=None, traceback=None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _scope = Scope::enter(Some(self.plugin));
        let coroutine = self.coroutine.bind(py);
        match (value, traceback) {
            (None, _) => coroutine.call_method1("throw", (typ,)),
            (Some(value), None) => coroutine.call_method1("throw", (typ, value)),
            (Some(value), Some(tb)) => coroutine.call_method1("throw", (typ, value, tb)),
        }
        .map(Bound::unbind)
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let _scope = Scope::enter(Some(self.plugin));
        self.coroutine.bind(py).call_method0("close").map(|_| ())
    }

    /// The wrapped coroutine's name, which asyncio shows in a task's repr.
    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let coroutine = self.coroutine.bind(py);
        coroutine
            .getattr("__qualname__")
            .or_else(|_| coroutine.get_type().getattr("__qualname__"))
            .map(Bound::unbind)
    }
}

/// `inherit(coroutine)` for the task factory: a coroutine created by a plugin's code is
/// stepped as that plugin; anything created outside plugin code is returned as it is.
#[pyfunction]
fn inherit(py: Python<'_>, coroutine: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; a type check on a live object.
    let native = unsafe { ffi::PyCoro_CheckExact(coroutine.as_ptr()) } != 0;
    // Anything else is left for asyncio.Task to accept or refuse with its own error.
    let steppable = native || coroutine.hasattr("send")?;
    match current() {
        Some(plugin) if steppable => Ok(Py::new(
            py,
            PluginCoroutine {
                coroutine: coroutine.unbind(),
                plugin,
            },
        )?
        .into_any()),
        _ => Ok(coroutine.unbind()),
    }
}

/// `bind(callable)`: the callable, run later on any thread, runs as the plugin (or as no
/// plugin) whose code called `bind`.
#[pyfunction]
fn bind(py: Python<'_>, callable: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, PluginCall::new(current(), callable.unbind()))?.into_any())
}

const INSTALL_SOURCE: &str = include_str!("identity.py");

/// The task factory [`install`] made, for the host's event loop.
static TASK_FACTORY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();

/// Makes the tasks, threads and pool work a plugin starts carry its identity (see the module
/// docs). Call once, before any plugin is imported.
///
/// GIL: held (`py`).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    if TASK_FACTORY.get(py).is_some() {
        return Ok(());
    }
    py.import("collections.abc")?
        .getattr("Coroutine")?
        .call_method1("register", (py.get_type::<PluginCoroutine>(),))?;
    let source = CString::new(INSTALL_SOURCE)
        .map_err(|err| pyo3::exceptions::PyValueError::new_err(err.to_string()))?;
    let module = PyModule::from_code(py, &source, c"pyhost_identity.py", c"pyhost_identity")?;
    let factory = module.call_method1(
        "install",
        (
            pyo3::wrap_pyfunction!(bind, py)?,
            pyo3::wrap_pyfunction!(inherit, py)?,
        ),
    )?;
    let _ = TASK_FACTORY.set(py, factory.unbind());
    Ok(())
}

/// The task factory that makes a plugin's tasks keep its identity, once [`install`] ran.
/// GIL: held (`py`).
pub(crate) fn task_factory(py: Python<'_>) -> Option<&Py<PyAny>> {
    TASK_FACTORY.get(py)
}
