//! Handler deadlines that hold even when a handler never yields.
//!
//! The stepper ([`super::stepper`]) records, for the duration of each step of a handler with a
//! deadline, which request is running and until when ([`begin`], [`end`]). A watchdog thread
//! (never a tokio worker) sleeps until the running step's deadline; when a step outlives it (a
//! CPU loop that never returns to the event loop) it takes the GIL, checks the same step is
//! still running, and raises `HandlerTimeout` in the loop thread with
//! `PyThreadState_SetAsyncExc`. Because the check and the raise happen under the GIL, the
//! exception can only land inside that handler's code, never in the event loop itself.
//!
//! The thread never polls: with no step running it is parked until one begins, and otherwise
//! until that step's deadline. A step costs two atomic stores and a load; only a step whose
//! deadline comes before the one the watchdog sleeps toward (the first after an idle spell,
//! or one of a route with a shorter timeout) wakes it, with one unpark.
//!
//! Limits: an exception is only delivered between bytecodes, so a handler blocked inside a
//! long C call is interrupted when that call returns.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pyo3::ffi;
use pyo3::prelude::*;

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

/// The deadline the watchdog sleeps toward: `u64::MAX` while parked with no step to watch, 0
/// while it is awake.
static SLEEPING_UNTIL: AtomicU64 = AtomicU64::new(0);

/// The watchdog thread, to wake.
static WATCHDOG: OnceLock<std::thread::Thread> = OnceLock::new();

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// A monotonic time as nanoseconds since the first call, for storing in atomics.
pub(super) fn monotonic_nanos(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// Registers the loop thread and the exception to raise, and starts the watchdog thread once.
///
/// GIL: held (`py`); must be called on the loop thread.
pub(super) fn start(py: Python<'_>, exception: Py<PyAny>) -> PyResult<()> {
    let ident: u64 = py
        .import("threading")?
        .call_method0("get_ident")?
        .extract()?;
    STEP.loop_thread.store(ident, Ordering::Release);
    let _ = STEP.exception.set(exception);
    if STEP.started.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    let handle = std::thread::Builder::new()
        .name("pyhost-watchdog".to_owned())
        .spawn(watch)
        .map_err(|err| pyo3::exceptions::PyRuntimeError::new_err(err.to_string()))?;
    let _ = WATCHDOG.set(handle.thread().clone());
    Ok(())
}

/// A step of request `key` begins on the loop thread; it must end by `deadline`
/// ([`monotonic_nanos`]).
pub(crate) fn begin(key: u64, deadline: u64) {
    STEP.deadline.store(deadline, Ordering::Relaxed);
    // SeqCst with the watchdog's store of SLEEPING_UNTIL and load of the key: either it sees
    // this step before it parks, or this load sees what it sleeps toward.
    STEP.key.store(key, Ordering::SeqCst);
    if deadline < SLEEPING_UNTIL.load(Ordering::SeqCst)
        && let Some(watchdog) = WATCHDOG.get()
    {
        watchdog.unpark();
    }
}

/// The step that [`begin`] announced has returned to the event loop.
pub(crate) fn end() {
    STEP.key.store(0, Ordering::Release);
}

/// Whether `exception` is the host's own interruption of a runaway handler (its class, not a
/// handler's class of the same name).
pub(crate) fn is_interruption(py: Python<'_>, exception: &Bound<'_, PyAny>) -> bool {
    STEP.exception
        .get()
        .is_some_and(|class| exception.get_type().is(class.bind(py)))
}

fn watch() {
    let mut last_fired = 0u64;
    loop {
        let key = STEP.key.load(Ordering::SeqCst);
        let now = monotonic_nanos(Instant::now());
        let target = if key != 0 && key != last_fired {
            let deadline = STEP.deadline.load(Ordering::Relaxed);
            if now >= deadline {
                interrupt(key, &mut last_fired);
                continue;
            }
            deadline
        } else {
            u64::MAX
        };
        SLEEPING_UNTIL.store(target, Ordering::SeqCst);
        // A step that began since the load above may have an earlier deadline.
        if STEP.key.load(Ordering::SeqCst) == key {
            if target == u64::MAX {
                std::thread::park();
            } else {
                std::thread::park_timeout(Duration::from_nanos(target - now));
            }
        }
        SLEEPING_UNTIL.store(0, Ordering::SeqCst);
    }
}

/// Raises `HandlerTimeout` in the loop thread if step `key` is still running.
fn interrupt(key: u64, last_fired: &mut u64) {
    // The loop thread is busy inside a handler past its deadline; the GIL is taken here, on
    // the watchdog's own thread, and only in this case.
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
        *last_fired = key;
    });
}
