//! The heartbeat: a callback on the worker's event loop that tells the supervisor the loop
//! runs. Its first call says the worker is ready (the package is imported and the loop is
//! running, which is what "up" means); each later one, every [`PERIOD`], is a beat carrying
//! the requests served so far.
//!
//! It runs on the loop thread, not on tokio, on purpose: a handler stuck in a C call that
//! the in-process watchdog cannot interrupt stops the loop, and with it the beats, while the
//! tokio side would go on answering. Cost: one non-blocking `send` a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pyo3::prelude::*;

use super::control::Message;
use super::link::Link;

/// Time between two beats.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// The loop callback. GIL: held while it runs (it is called by the loop).
#[pyclass(module = "pyhost", frozen)]
pub(crate) struct Heartbeat {
    link: &'static Link,
    event_loop: Py<PyAny>,
    announced: AtomicBool,
}

#[pymethods]
impl Heartbeat {
    fn __call__(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let message = if this.announced.swap(true, Ordering::Relaxed) {
            Message::Beat {
                requests: crate::bridge::stats::STATS.gil_hold.count(),
            }
        } else {
            Message::Ready
        };
        this.link.send(&message);
        this.event_loop
            .bind(slf.py())
            .call_method1("call_later", (PERIOD.as_secs_f64(), slf))?;
        Ok(())
    }
}

/// Schedules the first call on `event_loop` (before it runs: the call is made once it does).
pub(crate) fn start(event_loop: &Bound<'_, PyAny>, link: &'static Link) -> PyResult<()> {
    let heartbeat = Py::new(
        event_loop.py(),
        Heartbeat {
            link,
            event_loop: event_loop.clone().unbind(),
            announced: AtomicBool::new(false),
        },
    )?;
    event_loop.call_method1("call_soon", (heartbeat,))?;
    Ok(())
}
