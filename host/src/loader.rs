//! Importing the plugins' handler packages and reading their routers into plain route specs.
//!
//! Runs once at start-up, with the GIL held by the caller. What leaves this module is Rust data
//! (the specs, with each plugin's prefix applied) plus the handler objects, which stay with the
//! interpreter's loop thread.

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::error::StartupError;
use crate::interpreter::format_exception;
use crate::services::identity::Scope;
use pyhost_core::config::{Config, PluginConfig};
use pyhost_core::spec::RouteSpec;

/// The loaded plugins: route specs and, at the same positions, their handlers.
pub(crate) struct LoadedApp {
    /// Route declarations, plugin by plugin, in each router's order.
    pub specs: Vec<RouteSpec>,
    /// Handler callables; `handlers[i]` serves `specs[i]`.
    pub handlers: Vec<Py<PyAny>>,
    /// The lifespan runner of each plugin whose router declared hooks.
    pub lifespans: Vec<(usize, Py<PyAny>)>,
}

/// Imports every plugin's module, takes its router and reads every route.
///
/// GIL: held by the caller (`py`).
pub(crate) fn load(py: Python<'_>, config: &Config) -> Result<LoadedApp, StartupError> {
    let sdk_error = |detail: String| StartupError::Import {
        file: config.source.clone(),
        key: "app.venv".to_owned(),
        message: format!(
            "the pyhost SDK bundled with the host needs cffi (with pycparser): install cffi into the interpreter or the virtualenv named by `app.venv` or VIRTUAL_ENV\n{detail}"
        ),
    };
    py.import("pyhost")
        .map_err(|err| sdk_error(format_exception(py, &err)))?;
    // Only looked for, not imported: cffi and the binding of the host's table load on a
    // plugin's first host call, and an app that makes none never pays for them (binding at
    // start-up took the bench app's idle RSS from 32.1 to 33.6 MiB).
    let find_spec = py
        .import("importlib.util")
        .and_then(|util| util.getattr("find_spec"))
        .map_err(|err| sdk_error(format_exception(py, &err)))?;
    for module in ["cffi", "pycparser"] {
        let found = find_spec
            .call1((module,))
            .map(|spec| !spec.is_none())
            .map_err(|err| sdk_error(format_exception(py, &err)))?;
        if !found {
            return Err(sdk_error(format!(
                "ModuleNotFoundError: No module named '{module}'"
            )));
        }
    }
    crate::services::identity::install(py).map_err(|err| StartupError::Import {
        file: config.source.clone(),
        key: "app.module".to_owned(),
        message: format!(
            "cannot set up plugin identities\n{}",
            format_exception(py, &err)
        ),
    })?;
    let mut loaded = LoadedApp {
        specs: Vec::new(),
        handlers: Vec::new(),
        lifespans: Vec::new(),
    };
    for (index, plugin) in config.plugins.iter().enumerate() {
        load_plugin(py, config, index, plugin, &mut loaded)?;
    }
    Ok(loaded)
}

fn load_plugin(
    py: Python<'_>,
    config: &Config,
    index: usize,
    plugin: &PluginConfig,
    loaded: &mut LoadedApp,
) -> Result<(), StartupError> {
    let import_error = |key: &str, message: String| StartupError::Import {
        file: config.source.clone(),
        key: format!("{}.{key}", plugin.table),
        message,
    };
    let routes_error = |message: String| StartupError::Routes {
        file: config.source.clone(),
        module: plugin.module.clone(),
        router: plugin.router.clone(),
        message,
    };
    // Module-level code that calls host services (settings, logging) runs as this plugin.
    let imported = {
        let _caller = Scope::enter(u32::try_from(index).ok());
        py.import(plugin.module.as_str())
    };
    let module = imported.map_err(|err| {
        import_error(
            "module",
            format!(
                "importing {:?} failed\n{}",
                plugin.module,
                format_exception(py, &err)
            ),
        )
    })?;
    let router = module.getattr(plugin.router.as_str()).map_err(|_| {
        import_error(
            "router",
            format!(
                "module {:?} has no attribute {:?}",
                plugin.module, plugin.router
            ),
        )
    })?;
    let routes = router
        .getattr("routes")
        .and_then(|routes| routes.call_method0("__iter__").map(|_| routes))
        .map_err(|_| {
            import_error(
                "router",
                format!(
                    "{}.{} is a {}, not a pyhost.Router",
                    plugin.module,
                    plugin.router,
                    router
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ),
            )
        })?;
    let routes = py
        .get_type::<PyList>()
        .call1((routes,))
        .map_err(|err| routes_error(format_exception(py, &err)))?;
    let dumps = py
        .import("json")
        .and_then(|json| json.getattr("dumps"))
        .map_err(|err| routes_error(format_exception(py, &err)))?;
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
        let mut spec: RouteSpec = serde_json::from_str(&text)
            .map_err(|err| routes_error(format!("unreadable route spec {text}: {err}")))?;
        spec.path = format!("{}{}", plugin.prefix, spec.path);
        spec.plugin = index;
        // The handler itself, or the middleware chain around it when the router has one.
        let handler = route
            .call_method0("endpoint")
            .map_err(|err| routes_error(format_exception(py, &err)))?;
        loaded.specs.push(spec);
        loaded.handlers.push(handler.unbind());
    }
    let hooks = router
        .getattr("hooks")
        .map_err(|err| routes_error(format_exception(py, &err)))?;
    if hooks.len().unwrap_or(0) > 0 {
        let runner = py
            .import("pyhost.lifespan")
            .and_then(|module| module.getattr("Lifespan"))
            .and_then(|lifespan| lifespan.call1((hooks,)))
            .map_err(|err| routes_error(format_exception(py, &err)))?;
        loaded.lifespans.push((index, runner.unbind()));
    }
    Ok(())
}
