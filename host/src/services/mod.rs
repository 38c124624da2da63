//! Services the host offers back to plugins: logging, settings, secrets, a key-value store and
//! functions registered by the Rust application. Each call is checked against the capabilities
//! the config grants the calling plugin.
//!
//! Python reaches them through the C table in [`abi`] (bound with cffi by the SDK) and, for
//! async host functions, through the built-in `_pyhost_host` module in [`module`]. Neither path
//! holds the GIL while a service runs.

pub mod abi;
mod kv;
pub mod module;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::config::{Capabilities, Config};
use crate::error::StartupError;
use kv::KvStore;

/// The boxed future an async host function returns.
pub type HostFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
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
pub enum ServiceError {
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
    pub fn status(&self) -> i32 {
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
    settings: Vec<u8>,
    secrets: HashMap<String, String>,
    capabilities: Capabilities,
}

/// Everything the services need, set once when the host starts.
pub struct Services {
    plugins: Vec<PluginServices>,
    kv: KvStore,
    functions: HostFunctions,
    runtime: Option<tokio::runtime::Handle>,
}

static SERVICES: OnceLock<Services> = OnceLock::new();

/// Sets the services up for this process (once: there is one interpreter per process).
pub fn install(config: &Config, functions: HostFunctions) -> Result<(), StartupError> {
    if SERVICES.get().is_some() {
        return Ok(());
    }
    let kv = match &config.kv_path {
        Some(path) => KvStore::open(path).map_err(|err| StartupError::Interpreter {
            file: config.source.clone(),
            message: format!("key `kv.path`: cannot open {}: {err}", path.display()),
        })?,
        None => KvStore::memory(),
    };
    let plugins = config
        .plugins
        .iter()
        .map(|plugin| PluginServices {
            name: plugin.name.clone(),
            table: plugin.table.clone(),
            settings: serde_json::to_vec(&plugin.settings).unwrap_or_else(|_| b"{}".to_vec()),
            secrets: plugin
                .secrets
                .iter()
                .map(|(name, secret)| (name.clone(), secret.0.clone()))
                .collect(),
            capabilities: plugin.capabilities.clone(),
        })
        .collect();
    let _ = SERVICES.set(Services {
        plugins,
        kv,
        functions,
        runtime: tokio::runtime::Handle::try_current().ok(),
    });
    Ok(())
}

/// The installed services.
pub fn services() -> Result<&'static Services, ServiceError> {
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
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name.clone()).collect()
    }

    /// Writes a plugin's log record into the host log.
    pub fn log(
        &self,
        plugin: u32,
        level: i32,
        message: &str,
        request_id: &str,
        fields: &str,
    ) -> Result<(), ServiceError> {
        let name = &self.plugin(plugin)?.name;
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
    pub fn settings(&self, plugin: u32) -> Result<Vec<u8>, ServiceError> {
        Ok(self.plugin(plugin)?.settings.clone())
    }

    /// A secret the config names for the plugin.
    pub fn secret(&self, plugin: u32, name: &str) -> Result<Vec<u8>, ServiceError> {
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
    pub fn kv_get(&self, plugin: u32, key: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let services = self.kv_plugin(plugin)?;
        self.kv
            .get(plugin, &services.name, key)
            .map_err(|err| ServiceError::Failed(err.to_string()))?
            .ok_or(ServiceError::NotFound)
    }

    /// Writes a key.
    pub fn kv_set(&self, plugin: u32, key: &[u8], value: &[u8]) -> Result<(), ServiceError> {
        let services = self.kv_plugin(plugin)?;
        self.kv
            .set(plugin, &services.name, key, value)
            .map_err(|err| ServiceError::Failed(err.to_string()))
    }

    /// Deletes a key.
    pub fn kv_delete(&self, plugin: u32, key: &[u8]) -> Result<(), ServiceError> {
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
    pub fn call(&self, plugin: u32, name: &str, data: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let output = self.call_value(plugin, name, parse_json(data)?)?;
        serde_json::to_vec(&output).map_err(|err| ServiceError::Failed(err.to_string()))
    }

    /// Calls a registered sync function with an already parsed value.
    pub fn call_value(&self, plugin: u32, name: &str, input: Value) -> Result<Value, ServiceError> {
        self.check_call(plugin, name)?;
        let function = self
            .functions
            .sync
            .get(name)
            .ok_or_else(|| ServiceError::NoSuchFunction(name.to_owned()))?;
        function(input).map_err(ServiceError::Failed)
    }

    /// Starts a registered async function with JSON `data`; the future runs on the host's
    /// tokio runtime and is aborted when dropped.
    pub fn call_async(
        &self,
        plugin: u32,
        name: &str,
        data: &[u8],
    ) -> Result<impl Future<Output = Result<Vec<u8>, ServiceError>> + Send + 'static, ServiceError>
    {
        self.check_call(plugin, name)?;
        let function = self
            .functions
            .asynchronous
            .get(name)
            .ok_or_else(|| ServiceError::NoSuchFunction(name.to_owned()))?
            .clone();
        let input = parse_json(data)?;
        let runtime = self.runtime.clone();
        Ok(async move {
            let future = function(input);
            let output = match runtime {
                Some(runtime) => {
                    let task = AbortOnDrop(runtime.spawn(future));
                    task.await
                }
                None => future.await,
            };
            let output = output.map_err(ServiceError::Failed)?;
            serde_json::to_vec(&output).map_err(|err| ServiceError::Failed(err.to_string()))
        })
    }
}

fn parse_json(data: &[u8]) -> Result<Value, ServiceError> {
    if data.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(data)
        .map_err(|err| ServiceError::Invalid(format!("data is not JSON: {err}")))
}

/// A spawned task that is aborted when the awaiting side goes away (Python cancelled it).
struct AbortOnDrop(tokio::task::JoinHandle<Result<Value, String>>);

impl Future for AbortOnDrop {
    type Output = Result<Value, String>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|err| Err(format!("host function failed: {err}"))))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
