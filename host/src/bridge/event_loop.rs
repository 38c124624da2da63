//! The interpreter's loop thread: imports the handler package, then runs the asyncio loop
//! (uvloop when configured or available) and dispatches queued requests as tasks.
//!
//! GIL: this thread holds it whenever it runs Python; the loop releases it while it waits in
//! epoll. It is the only thread that runs handlers besides the sync-handler pool.

use std::ffi::CString;
use std::sync::Arc;
use std::sync::mpsc;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::bridge::completer::Completer;
use crate::bridge::completer::TaskMap;
use crate::bridge::pyrequest::PyRequest;
use crate::bridge::stats::{self, STATS};
use crate::bridge::stepper::{self, Watched};
use crate::bridge::watchdog;
use crate::bridge::{Job, Message, WakeQueue};
use crate::error::StartupError;
use crate::interpreter::{self, InterpreterInfo, format_exception};
use crate::loader::{self, LoadedApp};
use crate::services::identity::{self, PluginCall};
use crate::streaming::websocket::socket::NativeSocket;
use pyhost_core::config::{Config, EventLoopKind};
use pyhost_core::routing::RouteTable;

const INVOKE_SOURCE: &str = include_str!("invoke.py");

type Ready = (RouteTable, InterpreterInfo);

/// The host's built-in modules: `_pyhost_host` (the services) and `_pyhost_json` (the encoder).
fn register_modules() {
    crate::services::module::register();
    crate::pyconv::json::register();
}

/// Loads the handler package on the current thread without serving (for `check`/`routes`).
pub(crate) fn inspect(config: &Config) -> Result<Ready, StartupError> {
    interpreter::initialize(config, register_modules)?;
    stats::attach(|py| load_and_compile(py, config).map(|(ready, _)| ready))
}

fn load_and_compile(py: Python<'_>, config: &Config) -> Result<(Ready, LoadedApp), StartupError> {
    let info = interpreter::prepare_paths(py, config).map_err(|err| StartupError::Interpreter {
        file: config.source.clone(),
        message: format_exception(py, &err),
    })?;
    let loaded = loader::load(py, config)?;
    let table = RouteTable::build(&loaded.specs).map_err(|err| StartupError::RouteTable {
        file: config.source.clone(),
        message: err.to_string(),
    })?;
    Ok(((table, info), loaded))
}

/// Starts the loop thread and waits until the package is loaded (or failed to load).
///
/// Returns the route table and a receiver that yields once the loop thread has finished.
pub(super) fn spawn(
    config: &Config,
    queue: Arc<WakeQueue<Message>>,
) -> Result<(Ready, mpsc::Receiver<()>), StartupError> {
    interpreter::initialize(config, register_modules)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, StartupError>>();
    let (stopped_tx, stopped_rx) = mpsc::channel::<()>();
    let thread_config = config.clone();
    std::thread::Builder::new()
        .name("pyhost-loop".to_owned())
        .spawn(move || {
            // An application embedding the library may not have set the policy for its
            // process; the loop thread and the threads it starts get it here.
            crate::sched::apply(&thread_config.server);
            stats::attach(|py| {
                let (ready, loaded) = match load_and_compile(py, &thread_config) {
                    Ok(both) => both,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                // The host is ready once the start-up hooks have run, on this loop.
                let started = Started {
                    ready: Some(ready),
                    tx: ready_tx,
                };
                if let Err(err) = run_loop(py, &thread_config, queue, loaded, started) {
                    tracing::error!(
                        "the event loop stopped with an error\n{}",
                        format_exception(py, &err)
                    );
                }
            });
            let _ = stopped_tx.send(());
        })
        .map_err(|err| StartupError::Interpreter {
            file: config.source.clone(),
            message: format!("cannot start the interpreter thread: {err}"),
        })?;
    let ready = ready_rx.recv().map_err(|_| StartupError::Interpreter {
        file: config.source.clone(),
        message: "the interpreter thread ended while loading the handler package".to_owned(),
    })??;
    Ok((ready, stopped_rx))
}

fn new_event_loop<'py>(py: Python<'py>, kind: EventLoopKind) -> PyResult<Bound<'py, PyAny>> {
    let asyncio = py.import("asyncio")?;
    let uvloop = match kind {
        EventLoopKind::Asyncio => None,
        EventLoopKind::Uvloop => Some(py.import("uvloop")?),
        EventLoopKind::Auto => py.import("uvloop").ok(),
    };
    let event_loop = match uvloop {
        Some(uvloop) => uvloop.call_method0("new_event_loop")?,
        None => asyncio.call_method0("new_event_loop")?,
    };
    asyncio.call_method1("set_event_loop", (&event_loop,))?;
    Ok(event_loop)
}

/// Tells [`spawn`] the outcome of start-up, once: ready, or why not. Dropped without either
/// (the loop failed to set up), its channel closes, which `spawn` reports too.
struct Started {
    ready: Option<Ready>,
    tx: mpsc::Sender<Result<Ready, StartupError>>,
}

impl Started {
    fn ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = self.tx.send(Ok(ready));
        }
    }

    fn failed(&mut self, err: StartupError) {
        self.ready = None;
        let _ = self.tx.send(Err(err));
    }
}

/// Runs the event loop until the queue is told to stop. GIL: held (`py`), released by the
/// loop while it waits.
fn run_loop(
    py: Python<'_>,
    config: &Config,
    queue: Arc<WakeQueue<Message>>,
    loaded: LoadedApp,
    mut started: Started,
) -> PyResult<()> {
    let event_loop = new_event_loop(py, config.server.event_loop)?;
    let executor = py
        .import("concurrent.futures")?
        .getattr("ThreadPoolExecutor")?
        .call(
            (),
            Some(&pyo3::types::PyDict::from_sequence(
                &pyo3::types::PyList::new(
                    py,
                    [
                        (
                            "max_workers",
                            config.server.sync_threads.into_pyobject(py)?.into_any(),
                        ),
                        (
                            "thread_name_prefix",
                            "pyhost-sync".into_pyobject(py)?.into_any(),
                        ),
                    ],
                )?
                .into_any(),
            )?),
        )?;
    let source = CString::new(INVOKE_SOURCE)
        .map_err(|err| pyo3::exceptions::PyValueError::new_err(err.to_string()))?;
    let invoke = PyModule::from_code(py, &source, c"pyhost_invoke.py", c"pyhost_invoke")?;
    let current = py.import("pyhost._context")?.getattr("current")?;
    let invoke_sync = invoke
        .getattr("make_sync_invoker")?
        .call1((&event_loop, &executor, &current))?
        .unbind();
    let _ = stepper::CURRENT.set(py, current.unbind());
    // create_task accepts only coroutines; the stepper is one in all but type.
    py.import("collections.abc")?
        .getattr("Coroutine")?
        .call_method1("register", (py.get_type::<Watched>(),))?;
    install_logging(py)?;
    crate::streaming::channel::bind_loop(&event_loop)?;
    watchdog::start(py, invoke.getattr("HandlerTimeout")?.unbind())?;

    let is_async: Vec<bool> = loaded.specs.iter().map(|spec| spec.is_async).collect();
    let plugins: Vec<u32> = loaded
        .specs
        .iter()
        .map(|spec| u32::try_from(spec.plugin).unwrap_or(u32::MAX))
        .collect();
    // A sync handler runs on a pool thread, as its route's plugin.
    let handlers = loaded
        .handlers
        .into_iter()
        .zip(is_async.iter().zip(&plugins))
        .map(|(handler, (&is_async, &plugin))| {
            if is_async {
                Ok(handler)
            } else {
                Py::new(py, PluginCall::new(Some(plugin), handler)).map(Py::into_any)
            }
        })
        .collect::<PyResult<Vec<_>>>()?;
    // Tasks a handler creates are stepped as its plugin.
    let own_factory = identity::task_factory(py).map(|factory| factory.clone_ref(py));
    if let Some(factory) = &own_factory {
        event_loop.call_method1("set_task_factory", (factory,))?;
    }
    let dispatcher = Dispatcher {
        queue: queue.clone(),
        handlers,
        is_async,
        plugins,
        own_factory,
        invoke_sync,
        create_task: event_loop.getattr("create_task")?.unbind(),
        task_type: py.import("asyncio")?.getattr("Task")?.unbind(),
        task_kwnames: pyo3::types::PyTuple::new(py, ["loop", "name"])?.unbind(),
        task_names: loaded
            .specs
            .iter()
            .map(|spec| pyo3::types::PyString::intern(py, &spec.name).unbind())
            .collect(),
        event_loop: event_loop.clone().unbind(),
        debug: config.server.debug,
        tasks: TaskMap::default(),
    };
    let lifespans = crate::lifespan::Lifespans::new(loaded.lifespans);
    if let Err(err) = lifespans.start(py, &event_loop, config) {
        started.failed(err);
        executor.call_method1("shutdown", (false,))?;
        return Ok(());
    }
    event_loop.call_method1("add_reader", (queue.fd(), Py::new(py, dispatcher)?))?;
    if let Some(link) = crate::workers::link::current() {
        crate::workers::heartbeat::start(&event_loop, link)?;
    }
    started.ready();
    event_loop.call_method0("run_forever")?;
    // The server has drained (the queue stops only after it has).
    lifespans.stop(py, &event_loop, config);
    executor.call_method1("shutdown", (false,))?;
    Ok(())
}

/// Routes Python's `logging` (root logger) into the host log through the SDK's handler.
fn install_logging(py: Python<'_>) -> PyResult<()> {
    let handler = py.import("pyhost")?.call_method0("host_logging_handler")?;
    let root = py.import("logging")?.call_method0("getLogger")?;
    root.call_method1("addHandler", (handler,))?;
    // The root logger's default (WARNING) would hide handlers' info records, and a fixed INFO
    // their debug ones under `PYHOST_LOG=debug`: it follows the host's filter for plugin
    // records instead, so a record the host would drop is dropped by `logging` itself, before
    // it is formatted or crosses into Rust. A level the package set itself is kept.
    if root.getattr("level")?.extract::<i32>()? == 30 {
        root.call_method1("setLevel", (plugin_log_level(),))?;
    }
    Ok(())
}

/// The most verbose Python logging level the host's tracing filter lets through for plugin
/// records (target `pyhost::plugin`).
fn plugin_log_level() -> i32 {
    use tracing::Level;
    const TARGET: &str = "pyhost::plugin";
    if tracing::enabled!(target: TARGET, Level::DEBUG) {
        10
    } else if tracing::enabled!(target: TARGET, Level::INFO) {
        20
    } else if tracing::enabled!(target: TARGET, Level::WARN) {
        30
    } else if tracing::enabled!(target: TARGET, Level::ERROR) {
        40
    } else {
        // Nothing passes: CRITICAL would still be forwarded, past what the filter drops.
        50
    }
}

/// Called by the event loop whenever the wake-up eventfd is readable.
#[pyclass(module = "pyhost")]
struct Dispatcher {
    queue: Arc<WakeQueue<Message>>,
    handlers: Vec<Py<PyAny>>,
    is_async: Vec<bool>,
    /// Each route's plugin.
    plugins: Vec<u32>,
    /// The host's task factory: handler tasks, which run as their plugin already, bypass it.
    own_factory: Option<Py<PyAny>>,
    invoke_sync: Py<PyAny>,
    create_task: Py<PyAny>,
    /// `asyncio.Task`, called directly unless the loop has a task factory: `create_task` is a
    /// Python function, and a task without a name formats `Task-N` on Python 3.11.
    task_type: Py<PyAny>,
    task_kwnames: Py<pyo3::types::PyTuple>,
    /// Each route's task name: its handler's name.
    task_names: Vec<Py<pyo3::types::PyString>>,
    event_loop: Py<PyAny>,
    debug: bool,
    tasks: TaskMap,
}

impl Dispatcher {
    /// Wraps `coroutine` in an asyncio task named after the route's handler, through the
    /// loop's `create_task` when a task factory is set. GIL: held.
    fn start_task<'py>(
        &self,
        py: Python<'py>,
        coroutine: &Bound<'py, PyAny>,
        route: usize,
        use_factory: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let name = self.task_names[route].bind(py);
        if use_factory {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("name", name)?;
            return self.create_task.bind(py).call((coroutine,), Some(&kwargs));
        }
        let args = [coroutine.as_ptr(), self.event_loop.as_ptr(), name.as_ptr()];
        // SAFETY: GIL held; `args` holds three borrowed, live references for the duration of
        // the call: one positional argument followed by the values of the two keyword names
        // in `task_kwnames`, as the vectorcall protocol expects. The result is a new
        // reference or NULL with an exception set, which `from_owned_ptr_or_err` takes over.
        unsafe {
            let result = pyo3::ffi::PyObject_Vectorcall(
                self.task_type.as_ptr(),
                args.as_ptr(),
                1,
                self.task_kwnames.as_ptr(),
            );
            Bound::from_owned_ptr_or_err(py, result)
        }
    }

    /// Starts one handler call as a task. GIL: held (`py`).
    fn dispatch(&self, py: Python<'_>, mut job: Job, use_factory: bool) {
        let began = std::time::Instant::now();
        STATS
            .handoff
            .record(began.saturating_duration_since(job.queued_at));
        let job_key = job.key;
        let completer = Completer::new(
            job.reply,
            job.data.request_id.clone(),
            job.data.route.clone(),
            job.data.method.clone(),
            job.handler,
            self.debug,
            job.key,
            self.plugins[job.route],
            self.tasks.clone(),
        );
        let held = completer.held();
        // If even the completer cannot be allocated, dropping it drops the reply sender and
        // the waiting tokio task answers 500 on its own.
        let Ok(completer) = Py::new(py, completer) else {
            return;
        };
        let handler = self.handlers[job.route].bind(py);
        let deadline = job.deadline;
        let socket = job.websocket.take();
        let started = Py::new(py, PyRequest::new(job.data, job.source)).and_then(|request| {
            // A WebSocket handler gets the socket, which carries the request.
            let argument = match socket {
                Some(ends) => Py::new(
                    py,
                    NativeSocket::new(*ends, request.clone_ref(py).into_any()),
                )?
                .into_any(),
                None => request.clone_ref(py).into_any(),
            };
            if self.is_async[job.route] {
                // Calling an async handler only creates its coroutine; an exception here
                // (a wrong signature, say) is the handler's failure, answered at once.
                let coroutine = match handler.call1((argument,)) {
                    Ok(coroutine) => coroutine,
                    Err(err) => {
                        let exception = err.into_value(py);
                        completer.borrow_mut(py).fail(exception.bind(py).as_any());
                        return Ok(None);
                    }
                };
                // SAFETY: GIL held; a type check on a live object.
                let native = unsafe { pyo3::ffi::PyCoro_CheckExact(coroutine.as_ptr()) } != 0;
                // Other awaitables (an object with an async __call__ may return one) are
                // stepped through their __await__ iterator.
                let coroutine = if !native && coroutine.hasattr("__await__")? {
                    coroutine.call_method0("__await__")?
                } else {
                    coroutine
                };
                let watched = Watched::new(
                    coroutine.unbind(),
                    completer.clone_ref(py),
                    request.into_any(),
                    job_key,
                    self.plugins[job.route],
                    deadline,
                    held.clone(),
                );
                self.start_task(
                    py,
                    Py::new(py, watched)?.bind(py).as_any(),
                    job.route,
                    use_factory,
                )
                .map(Some)
            } else {
                self.invoke_sync
                    .bind(py)
                    .call1((handler, request, completer.clone_ref(py)))
                    .and_then(|coroutine| self.start_task(py, &coroutine, job.route, use_factory))
                    .map(Some)
            }
        });
        if let Ok(Some(task)) = &started {
            // A task built directly first runs on the next loop iteration, so it cannot have
            // finished (and its completer removed the entry) before this insert; one from a
            // task factory may have run eagerly to its end already.
            let finished = use_factory
                && task
                    .call_method0("done")
                    .and_then(|done| done.is_truthy())
                    .unwrap_or(false);
            if !finished {
                self.tasks.insert(job_key, task.clone().unbind());
            }
        }
        if let Err(err) = started {
            tracing::error!(
                "could not start a handler task\n{}",
                format_exception(py, &err)
            );
            let mut completer = completer.borrow_mut(py);
            let reply = completer.internal_error(Some(err.to_string()), None);
            completer.send_reply(reply);
        }
        held.fetch_add(
            u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

#[pymethods]
impl Dispatcher {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        if self.queue.is_stopping() {
            let event_loop = self.event_loop.bind(py);
            // Once: the stopped queue stays readable, and every later wake-up would stop the
            // loop again (uvloop queues each stop) while the shutdown hooks run on it.
            event_loop.call_method1("remove_reader", (self.queue.fd(),))?;
            event_loop.call_method0("stop")?;
            return Ok(());
        }
        // Checked once per batch: a factory a handler sets applies from the next batch on.
        let factory = self.event_loop.bind(py).call_method0("get_task_factory")?;
        let use_factory = !factory.is_none()
            && self
                .own_factory
                .as_ref()
                .is_none_or(|own| !own.bind(py).is(&factory));
        for message in self.queue.drain() {
            match message {
                Message::Run(job) => self.dispatch(py, *job, use_factory),
                Message::Cancel(key) => {
                    if let Some(task) = self.tasks.remove(key) {
                        task.bind(py).call_method0("cancel")?;
                    }
                }
                Message::Wake(key) => crate::streaming::channel::wake(py, key)?,
            }
        }
        Ok(())
    }
}
