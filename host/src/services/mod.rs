//! Services the host offers back to plugins: logging, settings, secrets, a key-value store and
//! functions registered by the Rust application. Each call is checked against the capabilities
//! the config grants the calling plugin.
//!
//! Python reaches them through the C table in [`abi`] (bound with cffi by the SDK) and through
//! the built-in `_pyhost_host` module in [`module`] (the hot calls, and the awaitable forms that
//! run off the event loop). Neither path holds the GIL while a service runs, and neither takes
//! the caller from Python: [`identity`] says which plugin's code is running.

pub(crate) mod abi;
mod environment;
pub(crate) mod identity;
mod kv;
pub(crate) mod module;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio_util::task::AbortOnDropHandle;

use crate::error::StartupError;
use kv::KvStore;
use pyhost_core::config::{Capabilities, Config};

/// The boxed future an async host function returns.
pub(crate) type HostFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
type SyncFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;
type AsyncFn = Arc<dyn Fn(Value) -> HostFuture + Send + Sync>;

/// Functions a Rust application offers to plugins (`host.call` / `host.call_async`).
#[derive(Clone, Default)]
pub struct HostFunctions {
    sync: HashMap<String, SyncFn>,
    asynchronous: HashMap<String, AsyncFn>,
}

impl HostFunctions {
    /// Registers a function plugins call with `host.call(name, data)`; JSON in and out, an
    /// `Err` message becomes a `HostError` in Python.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        function: impl Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    ) {
        self.sync.insert(name.into(), Arc::new(function));
    }

    /// Registers an async function plugins await with `host.call_async(name, data)`. It runs
    /// on tokio; if the awaiting Python task is cancelled, the future is dropped.
    pub fn register_async<F, Fut>(&mut self, name: impl Into<String>, function: F)
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, String>> + Send + 'static,
    {
        self.asynchronous.insert(
            name.into(),
            Arc::new(move |value| Box::pin(function(value)) as HostFuture),
        );
    }
}

/// Why a service call failed; maps onto the ABI's status codes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// The capability is not granted (PYHOST_DENIED).
    #[error("{0}")]
    Denied(String),
    /// The key is absent (PYHOST_NOT_FOUND).
    #[error("not found")]
    NotFound,
    /// The host or a host function failed (PYHOST_ERROR).
    #[error("{0}")]
    Failed(String),
    /// Bad arguments (PYHOST_INVALID).
    #[error("{0}")]
    Invalid(String),
    /// No host function of that name (PYHOST_NO_SUCH_FUNCTION).
    #[error("no host function named {0:?} is registered")]
    NoSuchFunction(String),
}

impl ServiceError {
    /// The ABI status code.
    pub(crate) fn status(&self) -> i32 {
        match self {
            ServiceError::NotFound => 1,
            ServiceError::Denied(_) => 2,
            ServiceError::Failed(_) => 3,
            ServiceError::Invalid(_) => 4,
            ServiceError::NoSuchFunction(_) => 5,
        }
    }
}

struct PluginServices {
    name: String,
    table: String,
    settings: Value,
    secrets: HashMap<String, String>,
    capabilities: Capabilities,
}

/// Everything the services need, set once when the host starts.
pub(crate) struct Services {
    plugins: Vec<PluginServices>,
    kv: KvStore,
    functions: HostFunctions,
    runtime: Option<tokio::runtime::Handle>,
}

static SERVICES: OnceLock<Services> = OnceLock::new();

/// Sets the services up for this process (once: there is one interpreter per process).
pub(crate) fn install(config: &Config, functions: HostFunctions) -> Result<(), StartupError> {
    if SERVICES.get().is_some() {
        return Err(StartupError::AlreadyStarted {
            file: config.source.clone(),
        });
    }
    let kv = match &config.kv_path {
        Some(path) => KvStore::open(path).map_err(|err| StartupError::Interpreter {
            file: config.source.clone(),
            message: format!("key `kv.path`: cannot open {}: {err}", path.display()),
        })?,
        None => KvStore::memory(),
    };
    for plugin in &config.plugins {
        for (name, _) in &plugin.secrets {
            environment::remove(name);
        }
    }
    let plugins = config
        .plugins
        .iter()
        .map(|plugin| PluginServices {
            name: plugin.name.clone(),
            table: plugin.table.clone(),
            settings: plugin.settings.clone(),
            secrets: plugin
                .secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.0.clone()))
                .collect(),
            capabilities: plugin.capabilities.clone(),
        })
        .collect();
    SERVICES
        .set(Services {
            plugins,
            kv,
            functions,
            runtime: tokio::runtime::Handle::try_current().ok(),
        })
        .map_err(|_| StartupError::AlreadyStarted {
            file: config.source.clone(),
        })
}

/// The plugin whose code is calling, as the host recorded it; a call from code the host is
/// not running for a plugin is refused.
pub(crate) fn caller() -> Result<u32, ServiceError> {
    identity::current().ok_or_else(|| {
        ServiceError::Denied(
            "host services answer only the code the host runs for a plugin (its handlers, the \
             tasks and threads they start, and its package's import); this call came from \
             outside them, e.g. from an event-loop callback or a task factory of its own"
                .to_owned(),
        )
    })
}

/// The installed services.
pub(crate) fn services() -> Result<&'static Services, ServiceError> {
    SERVICES
        .get()
        .ok_or_else(|| ServiceError::Failed("host services are not set up".to_owned()))
}

impl Services {
    fn plugin(&self, plugin: u32) -> Result<&PluginServices, ServiceError> {
        self.plugins
            .get(plugin as usize)
            .ok_or_else(|| ServiceError::Invalid(format!("unknown plugin index {plugin}")))
    }

    /// Plugin names by index.
    pub(crate) fn plugin_names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.clone()).collect()
    }

    /// Writes a plugin's log record into the host log; a record from outside any plugin's
    /// code (an event-loop callback) is logged with the plugin `-`.
    pub(crate) fn log(
        &self,
        plugin: Option<u32>,
        level: i32,
        message: &str,
        request_id: &str,
        fields: &str,
    ) -> Result<(), ServiceError> {
        let name = match plugin {
            Some(plugin) => self.plugin(plugin)?.name.as_str(),
            None => "-",
        };
        let fields = if fields.is_empty() || fields == "{}" {
            ""
        } else {
            fields
        };
        macro_rules! emit {
            ($level:ident) => {
                tracing::$level!(target: "pyhost::plugin", plugin = %name, request_id = %request_id, fields = %fields, "{message}")
            };
        }
        match level {
            ..=10 => emit!(debug),
            11..=20 => emit!(info),
            21..=30 => emit!(warn),
            _ => emit!(error),
        }
        Ok(())
    }

    /// The plugin's settings as JSON.
    pub(crate) fn settings(&self, plugin: u32) -> Result<Vec<u8>, ServiceError> {
        Ok(serde_json::to_vec(&self.plugin(plugin)?.settings).unwrap_or_else(|_| b"{}".to_vec()))
    }

    /// The plugin's settings.
    pub(crate) fn settings_value(&self, plugin: u32) -> Result<&Value, ServiceError> {
        Ok(&self.plugin(plugin)?.settings)
    }

    /// A secret the config names for the plugin.
    pub(crate) fn secret(&self, plugin: u32, name: &str) -> Result<Vec<u8>, ServiceError> {
        let plugin = self.plugin(plugin)?;
        plugin
            .secrets
            .get(name)
            .map(|value| value.clone().into_bytes())
            .ok_or_else(|| {
                ServiceError::Denied(format!(
                    "secret {name:?} is not granted to plugin {:?}; add \"{name}\" to {}.secrets in the config file",
                    plugin.name, plugin.table
                ))
            })
    }

    fn kv_plugin(&self, plugin: u32) -> Result<&PluginServices, ServiceError> {
        let services = self.plugin(plugin)?;
        if services.capabilities.kv {
            Ok(services)
        } else {
            Err(ServiceError::Denied(format!(
                "capability \"kv\" is not granted to plugin {:?}; add \"kv\" to {}.capabilities in the config file",
                services.name, services.table
            )))
        }
    }

    /// Reads a key.
    pub(crate) fn kv_get(&self, plugin: u32, key: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let services = self.kv_plugin(plugin)?;
        self.kv
            .get(plugin, &services.name, key)
            .map_err(|err| ServiceError::Failed(err.to_string()))?
            .ok_or(ServiceError::NotFound)
    }

    /// Writes a key.
    pub(crate) fn kv_set(&self, plugin: u32, key: &[u8], value: &[u8]) -> Result<(), ServiceError> {
        let services = self.kv_plugin(plugin)?;
        self.kv
            .set(plugin, &services.name, key, value)
            .map_err(|err| ServiceError::Failed(err.to_string()))
    }

    /// Deletes a key.
    pub(crate) fn kv_delete(&self, plugin: u32, key: &[u8]) -> Result<(), ServiceError> {
        let services = self.kv_plugin(plugin)?;
        self.kv
            .delete(plugin, &services.name, key)
            .map_err(|err| ServiceError::Failed(err.to_string()))
    }

    fn check_call(&self, plugin: u32, name: &str) -> Result<(), ServiceError> {
        let services = self.plugin(plugin)?;
        if services.capabilities.may_call(name) {
            Ok(())
        } else {
            Err(ServiceError::Denied(format!(
                "capability \"call:{name}\" is not granted to plugin {:?}; add \"call:{name}\" to {}.capabilities in the config file",
                services.name, services.table
            )))
        }
    }

    /// Calls a registered sync function with JSON `data`.
    pub(crate) fn call(
        &self,
        plugin: u32,
        name: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, ServiceError> {
        let output = self.call_value(plugin, name, parse_json(data)?)?;
        serde_json::to_vec(&output).map_err(|err| ServiceError::Failed(err.to_string()))
    }

    /// Calls a registered sync function with an already parsed value.
    pub(crate) fn call_value(
        &self,
        plugin: u32,
        name: &str,
        input: Value,
    ) -> Result<Value, ServiceError> {
        self.check_call(plugin, name)?;
        let function = self
            .functions
            .sync
            .get(name)
            .ok_or_else(|| ServiceError::NoSuchFunction(name.to_owned()))?;
        function(input).map_err(ServiceError::Failed)
    }

    /// Starts the function `name` with JSON `data`, for an awaiting Python task: an async
    /// function runs on the host's tokio runtime and is aborted when the future is dropped; a
    /// sync one runs on a blocking thread, so a slow one never stalls the event loop.
    pub(crate) fn call_async(
        &self,
        plugin: u32,
        name: &str,
        data: &[u8],
    ) -> Result<impl Future<Output = Result<Vec<u8>, ServiceError>> + Send + 'static, ServiceError>
    {
        self.check_call(plugin, name)?;
        let input = parse_json(data)?;
        let runtime = self.runtime.clone();
        let function: HostFuture = if let Some(function) = self.functions.asynchronous.get(name) {
            let function = function.clone();
            Box::pin(async move {
                let future = function(input);
                match runtime {
                    Some(runtime) => AbortOnDropHandle::new(runtime.spawn(future))
                        .await
                        .unwrap_or_else(|err| Err(format!("host function failed: {err}"))),
                    None => future.await,
                }
            })
        } else if let Some(function) = self.functions.sync.get(name) {
            let function = function.clone();
            let job = blocking(runtime, move || function(input));
            Box::pin(async move { job.await.unwrap_or_else(|err| Err(err.to_string())) })
        } else {
            return Err(ServiceError::NoSuchFunction(name.to_owned()));
        };
        Ok(async move {
            let output = function.await.map_err(ServiceError::Failed)?;
            serde_json::to_vec(&output).map_err(|err| ServiceError::Failed(err.to_string()))
        })
    }

    /// The runtime host calls run on, when the host was started inside one.
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.clone()
    }

    /// Checks that `plugin` may use the key-value store, for the awaitable forms, which then
    /// run the store's call on a blocking thread.
    pub(crate) fn kv_allowed(&self, plugin: u32) -> Result<(), ServiceError> {
        self.kv_plugin(plugin).map(|_| ())
    }
}

/// Runs `work` on a blocking thread of the host's runtime (or of the runtime polling the
/// future), off the event loop.
pub(crate) async fn blocking<T: Send + 'static>(
    runtime: Option<tokio::runtime::Handle>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    let handle = match runtime {
        Some(runtime) => runtime.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    };
    handle
        .await
        .map_err(|err| ServiceError::Failed(format!("the host's worker failed: {err}")))
}

fn parse_json(data: &[u8]) -> Result<Value, ServiceError> {
    if data.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(data)
        .map_err(|err| ServiceError::Invalid(format!("data is not JSON: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_start_in_one_process_is_refused() {
        let source = std::env::temp_dir().join("pyhost-services-test.toml");
        let config = Config::parse("[app]\nmodule = \"m\"\n", &source).expect("valid config");
        install(&config, HostFunctions::default()).expect("first start");
        let mut functions = HostFunctions::default();
        functions.register("late", |_| Ok(Value::Null));
        let err = install(&config, functions).expect_err("second start");
        assert!(matches!(err, StartupError::AlreadyStarted { .. }), "{err}");
        assert!(err.to_string().contains("runs one host"), "{err}");
        // The first start's services stay: the late function was not silently dropped in
        // their place, it was refused.
        assert!(services().expect("installed").functions.sync.is_empty());
    }
}
