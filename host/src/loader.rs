//! Importing the handler package and reading its router into plain route specs.
//!
//! Runs once at start-up, with the GIL held by the caller. What leaves this module is Rust data
//! (the specs) plus the handler objects, which stay with the interpreter's loop thread.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::config::Config;
use crate::error::StartupError;
use crate::interpreter::format_exception;
use crate::spec::RouteSpec;

/// A loaded handler package: route specs and, at the same positions, their handlers.
pub struct LoadedApp {
    /// Route declarations, in the router's order.
    pub specs: Vec<RouteSpec>,
    /// Handler callables; `handlers[i]` serves `specs[i]`.
    pub handlers: Vec<Py<PyAny>>,
}

/// Imports `app.module`, takes `app.router` from it and reads every route.
///
/// GIL: held by the caller (`py`).
pub fn load(py: Python<'_>, config: &Config) -> Result<LoadedApp, StartupError> {
    let import_error = |key: &str, message: String| StartupError::Import {
        file: config.source.clone(),
        key: key.to_owned(),
        message,
    };
    py.import("pyhost").map_err(|err| {
        import_error(
            "app.venv",
            format!(
                "the pyhost SDK is not importable; install pyruntime into the virtualenv named by `app.venv` or VIRTUAL_ENV\n{}",
                format_exception(py, &err)
            ),
        )
    })?;
    let module = py.import(config.app.module.as_str()).map_err(|err| {
        import_error(
            "app.module",
            format!(
                "importing {:?} failed\n{}",
                config.app.module,
                format_exception(py, &err)
            ),
        )
    })?;
    let router = module.getattr(config.app.router.as_str()).map_err(|_| {
        import_error(
            "app.router",
            format!(
                "module {:?} has no attribute {:?}",
                config.app.module, config.app.router
            ),
        )
    })?;
    let routes_error = |message: String| StartupError::Routes {
        file: config.source.clone(),
        module: config.app.module.clone(),
        router: config.app.router.clone(),
        message,
    };
    let routes = router
        .getattr("routes")
        .and_then(|routes| routes.call_method0("__iter__").map(|_| routes))
        .map_err(|_| {
            routes_error(format!(
                "{}.{} is a {}, not a pyhost.Router",
                config.app.module,
                config.app.router,
                router
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
    let routes = py
        .get_type::<PyList>()
        .call1((routes,))
        .map_err(|err| routes_error(format_exception(py, &err)))?;
    let dumps = py
        .import("json")
        .and_then(|json| json.getattr("dumps"))
        .map_err(|err| routes_error(format_exception(py, &err)))?;

    let mut specs = Vec::new();
    let mut handlers = Vec::new();
    for route in routes
        .try_iter()
        .map_err(|err| routes_error(err.to_string()))?
    {
        let route = route.map_err(|err| routes_error(format_exception(py, &err)))?;
        let text: String = route
            .call_method0("spec")
            .and_then(|spec| dumps.call1((spec,)))
            .and_then(|json| json.extract())
            .map_err(|err| routes_error(format_exception(py, &err)))?;
        let spec: RouteSpec = serde_json::from_str(&text)
            .map_err(|err| routes_error(format!("unreadable route spec {text}: {err}")))?;
        let handler = route
            .getattr("handler")
            .map_err(|err| routes_error(format_exception(py, &err)))?;
        specs.push(spec);
        handlers.push(handler.unbind());
    }
    Ok(LoadedApp { specs, handlers })
}
