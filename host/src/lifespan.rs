//! Each plugin's lifespan (`@router.lifespan`, `on_startup`, `on_shutdown`), run on the
//! host's event loop: the start-up half before the server takes its first request, the
//! shutdown half after the last one has drained.
//!
//! Every plugin's hooks run as that plugin (their task is created inside its identity scope,
//! so the task factory steps it as the plugin), one plugin after another in config order, and
//! shut down in the reverse order. A start-up that raises or passes `server.startup_timeout`
//! is a [`StartupError::Lifespan`] naming the plugin and the hook; what shutdown raises is
//! logged and nothing more. What the lifespans yielded becomes each plugin's
//! `request.state`.
//!
//! GIL: held by every function here; they run on the loop thread.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::error::StartupError;
use crate::interpreter::format_exception;
use crate::services::identity::Scope;
use pyhost_core::config::Config;

/// A plugin's lifespan runner (`pyhost.lifespan.Lifespan`), by plugin index.
pub(crate) struct Lifespans(Vec<(usize, Py<PyAny>)>);

/// Every plugin's `request.state`, by plugin index; set once start-up is done.
static STATES: PyOnceLock<Vec<Py<PyAny>>> = PyOnceLock::new();

impl Lifespans {
    /// The runners of the plugins whose routers declared hooks.
    pub(crate) fn new(runners: Vec<(usize, Py<PyAny>)>) -> Self {
        Self(runners)
    }

    /// Runs the start-up half of every plugin's hooks and records their states.
    pub(crate) fn start(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        config: &Config,
    ) -> Result<(), StartupError> {
        let state_type = py
            .import("pyhost.datastructures")
            .and_then(|module| module.getattr("State"))
            .map_err(|err| failure(config, 0, None, format_exception(py, &err)))?;
        let mut states = Vec::with_capacity(config.plugins.len());
        for _ in &config.plugins {
            states.push(
                state_type
                    .call0()
                    .map_err(|err| failure(config, 0, None, format_exception(py, &err)))?
                    .unbind(),
            );
        }
        let timeout = config.server.startup_timeout;
        for (done, (plugin, runner)) in self.0.iter().enumerate() {
            let outcome = run(py, event_loop, *plugin, runner, "startup", timeout);
            match outcome {
                Ok(state) => states[*plugin] = state,
                Err(err) => {
                    let hook = current_hook(py, runner);
                    let message = if err.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) {
                        format!(
                            "did not finish within server.startup_timeout ({:.1}s)",
                            timeout.as_secs_f64()
                        )
                    } else {
                        format_exception(py, &err)
                    };
                    // What had started shuts down before the host gives up.
                    stop_runners(py, event_loop, config, &self.0[..done]);
                    return Err(failure(config, *plugin, hook, message));
                }
            }
        }
        let _ = STATES.set(py, states);
        Ok(())
    }

    /// Runs the shutdown half of every plugin's hooks, the last plugin first; logs what fails.
    pub(crate) fn stop(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, config: &Config) {
        stop_runners(py, event_loop, config, &self.0);
    }
}

fn stop_runners(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    config: &Config,
    runners: &[(usize, Py<PyAny>)],
) {
    let grace = config.server.shutdown_grace.max(Duration::from_secs(1));
    for (plugin, runner) in runners.iter().rev() {
        let name = config.plugins.get(*plugin).map_or("?", |p| p.name.as_str());
        match run(py, event_loop, *plugin, runner, "shutdown", grace) {
            Ok(failures) => {
                let failures: Vec<String> = failures.extract(py).unwrap_or_default();
                for failure in failures {
                    tracing::error!("plugin {name}: shutdown hook {failure}");
                }
            }
            Err(err) => {
                let hook = current_hook(py, runner).unwrap_or_else(|| "?".to_owned());
                tracing::error!(
                    "plugin {name}: shutdown hook {hook} did not finish: {}",
                    format_exception(py, &err)
                );
            }
        }
    }
}

/// Runs `runner.<method>()` to completion on the loop, as `plugin`, within `timeout`.
fn run(
    py: Python<'_>,
    event_loop: &Bound<'_, PyAny>,
    plugin: usize,
    runner: &Py<PyAny>,
    method: &str,
    timeout: Duration,
) -> PyResult<Py<PyAny>> {
    let task = {
        let _caller = Scope::enter(u32::try_from(plugin).ok());
        let coroutine = runner.bind(py).call_method0(method)?;
        event_loop.call_method1("create_task", (coroutine,))?
    };
    let waited = py
        .import("asyncio")?
        .call_method1("wait_for", (task, timeout.as_secs_f64()))?;
    event_loop
        .call_method1("run_until_complete", (waited,))
        .map(Bound::unbind)
}

fn current_hook(py: Python<'_>, runner: &Py<PyAny>) -> Option<String> {
    runner
        .bind(py)
        .getattr("current")
        .and_then(|hook| hook.extract::<Option<String>>())
        .ok()
        .flatten()
}

fn failure(config: &Config, plugin: usize, hook: Option<String>, message: String) -> StartupError {
    StartupError::Lifespan {
        file: config.source.clone(),
        table: config
            .plugins
            .get(plugin)
            .map_or_else(|| "app".to_owned(), |p| p.table.clone()),
        hook: hook.unwrap_or_else(|| "?".to_owned()),
        message,
    }
}

/// The `request.state` of `plugin`: what its lifespans yielded (empty without any).
pub(crate) fn state(py: Python<'_>, plugin: u32) -> PyResult<Py<PyAny>> {
    if let Some(state) = STATES
        .get(py)
        .and_then(|states| states.get(usize::try_from(plugin).ok()?))
    {
        return Ok(state.clone_ref(py));
    }
    Ok(py
        .import("pyhost.datastructures")?
        .getattr("State")?
        .call0()?
        .unbind())
}
