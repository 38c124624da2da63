//! # pyhost
//!
//! An embeddable handler runtime: a Rust host that embeds CPython, loads a Python handler
//! package named in a config file, routes and validates HTTP requests in Rust, and runs the
//! matching handlers as asyncio coroutines on one event loop owned by the host.
//!
//! ```no_run
//! use pyhost::{Config, Host, ShutdownSignals};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = tokio::runtime::Runtime::new()?;
//! // Signals first: the interpreter must not take SIGINT for itself.
//! let signals = runtime.block_on(async { ShutdownSignals::install() })?;
//! let config = Config::load("pyhost.toml".as_ref())?;
//! let host = Host::start(config)?;
//! runtime.block_on(async {
//!     let listener = tokio::net::TcpListener::bind(host.config().server.listen).await?;
//!     host.serve(listener, signals.recv()).await;
//!     Ok::<_, std::io::Error>(())
//! })?;
//! host.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! A request flows through the modules in this order: [`server`] accepts it, `service` routes
//! it with the `routing` table and checks it with `validation`, the `bridge` hands it to the
//! interpreter's loop thread, and the handler's result comes back as a `Reply`, to which
//! `middleware` adds CORS headers and which it compresses, when configured.

mod bridge;
mod bundled_sdk;
pub mod error;
mod intake;
mod interpreter;
mod lifespan;
mod loader;
mod middleware;
mod pyconv;
pub mod sched;
pub mod server;
mod service;
mod services;
mod signals;
mod slots;
mod streaming;
pub mod workers;

pub use pyhost_core::config;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use config::Config;
pub use error::{ConfigError, StartupError};
pub use pyhost_process::logging;
pub use services::HostFunctions;
pub use signals::ShutdownSignals;
pub use streaming::body::{Body, BoxError};

/// A route of the loaded package, as `pyhost routes` lists it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteInfo {
    /// HTTP method (`WS` for a WebSocket route).
    pub method: String,
    /// Path template.
    pub path: String,
    /// `module.qualname` of the handler.
    pub handler: String,
    /// Declared query parameters.
    pub query: Vec<QueryParamInfo>,
    /// Whether a JSON body is declared.
    pub has_body: bool,
    /// Whether the handler is `async def`.
    pub is_async: bool,
    /// Name of the plugin that owns the route.
    pub plugin: String,
}

/// A declared query parameter of a route.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueryParamInfo {
    /// The parameter's name.
    pub name: String,
    /// Its value type: `str`, `int`, `float`, `bool` or `uuid`.
    pub kind: &'static str,
    /// Whether a repeated key collects into a list.
    pub multiple: bool,
    /// Whether a request must carry it.
    pub required: bool,
    /// The value a request without it gets (`None`: none, or `null`).
    pub default: Option<serde_json::Value>,
}

impl std::fmt::Display for QueryParamInfo {
    /// `limit:int=10`, `q:str (required)`, `tag:list[str]?`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.name;
        let kind = self.kind;
        let kind = if self.multiple {
            format!("list[{kind}]")
        } else {
            kind.to_owned()
        };
        match &self.default {
            _ if self.required => write!(f, "{name}:{kind} (required)"),
            Some(default) if !default.is_null() => write!(f, "{name}:{kind}={default}"),
            _ => write!(f, "{name}:{kind}?"),
        }
    }
}

/// What the embedded interpreter runs with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InterpreterReport {
    /// `sys.version`.
    pub version: String,
    /// `sys.executable`.
    pub executable: String,
    /// `sys.prefix`.
    pub prefix: String,
    /// `sys.base_prefix`.
    pub base_prefix: String,
    /// `sys.path`.
    pub path: Vec<String>,
    /// The virtualenv in use and where it was named (`app.venv` or `VIRTUAL_ENV`).
    pub venv: Option<(String, &'static str)>,
    /// The version of the pyhost SDK bundled with the host, which the handlers import.
    pub sdk: &'static str,
}

/// A loaded handler package, inspected without serving (`pyhost check` / `pyhost routes`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Inspection {
    /// The interpreter's state.
    pub interpreter: InterpreterReport,
    /// Every route.
    pub routes: Vec<RouteInfo>,
}

/// Loads the config's handler package on this thread and describes it.
pub fn inspect(config: &Config) -> Result<Inspection, StartupError> {
    services::install(config, HostFunctions::default())?;
    let (table, info) = bridge::inspect(config)?;
    Ok(Inspection {
        interpreter: report(config, info)?,
        routes: route_infos(&table, config),
    })
}

fn report(
    config: &Config,
    info: interpreter::InterpreterInfo,
) -> Result<InterpreterReport, StartupError> {
    let venv = interpreter::venv_for(config)?
        .map(|choice| (choice.path.display().to_string(), choice.origin));
    Ok(InterpreterReport {
        version: info.version,
        executable: info.executable,
        prefix: info.prefix,
        base_prefix: info.base_prefix,
        path: info.path,
        venv,
        sdk: bundled_sdk::VERSION,
    })
}

fn route_infos(table: &pyhost_core::routing::RouteTable, config: &Config) -> Vec<RouteInfo> {
    table
        .routes()
        .map(|route| RouteInfo {
            // A WebSocket route is a GET that upgrades: shown as what it serves.
            method: if route.websocket {
                "WS".to_owned()
            } else {
                route.method.to_string()
            },
            path: route.template.to_string(),
            handler: route.handler_name.to_string(),
            query: route
                .query
                .iter()
                .map(|param| QueryParamInfo {
                    name: param.name.to_string(),
                    kind: param.spec.kind.as_str(),
                    multiple: param.spec.multiple,
                    required: param.spec.required,
                    default: param.spec.default.clone(),
                })
                .collect(),
            has_body: route.body_schema.is_some(),
            is_async: route.is_async,
            plugin: config
                .plugins
                .get(route.plugin)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// A running host: interpreter, loaded handlers and the HTTP service in front of them.
pub struct Host {
    config: Config,
    bridge: Arc<bridge::Bridge>,
    service: Arc<service::HttpService>,
}

impl Host {
    /// Starts the interpreter, imports the handler package and compiles its routes.
    ///
    /// Install [`ShutdownSignals`] (or your own handlers) before calling this.
    pub fn start(config: Config) -> Result<Self, StartupError> {
        Self::start_with(config, HostFunctions::default())
    }

    /// Like [`Host::start`], offering `functions` to plugins (`host.call` / `host.call_async`).
    ///
    /// Call it inside a tokio runtime context: async host functions are spawned on it.
    ///
    /// In a worker ([`workers::Role::Worker`]) it also tells the supervisor that the worker is
    /// ready once the event loop runs, or why it failed to start; and with no `kv.path` in the
    /// config it uses the key-value file the supervisor chose for all workers.
    pub fn start_with(mut config: Config, functions: HostFunctions) -> Result<Self, StartupError> {
        let link = workers::link::current();
        if let Some(link) = link {
            if config.kv_path.is_none() {
                config.kv_path.clone_from(&link.kv_path);
            }
        }
        let started = Self::start_inner(config, functions);
        if let (Err(err), Some(link)) = (&started, link) {
            link.send(&workers::control::Message::Error(err.to_string()));
        }
        started
    }

    fn start_inner(config: Config, functions: HostFunctions) -> Result<Self, StartupError> {
        services::install(&config, functions)?;
        let bridge = Arc::new(bridge::Bridge::start(&config)?);
        let service = Arc::new(service::HttpService::new(bridge.clone(), &config));
        Ok(Self {
            config,
            bridge,
            service,
        })
    }

    /// The config the host runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every route of the loaded package.
    pub fn routes(&self) -> Vec<RouteInfo> {
        route_infos(self.bridge.routes(), &self.config)
    }

    /// Answers one request (for hosts that run their own server).
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        client: Option<SocketAddr>,
    ) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.service.handle(request, client).await
    }

    /// The host as a tower service, to mount inside another server, e.g. an axum router:
    /// `Router::new().route("/health", get(health)).fallback_service(host.service())`.
    ///
    /// The client address reaches handlers (`request.client`) when the request carries a
    /// `std::net::SocketAddr` extension.
    pub fn service(&self) -> HostService {
        HostService {
            service: self.service.clone(),
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then drains within `server.shutdown_grace`.
    /// Returns whether every in-flight request finished in time.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        server::serve(
            listener,
            self.service.clone(),
            shutdown,
            &self.config.server,
        )
        .await
    }

    /// The bridge's figures as one `key=value` line: requests served, GIL hold per request
    /// (p50/p99/max), hand-off latency to the loop thread, GIL waits of the host's own threads,
    /// and GIL acquisitions from tokio threads (zero by design).
    pub fn stats(&self) -> String {
        bridge::stats::STATS.summary()
    }

    /// Stops the event loop. The interpreter itself is never finalised: extension modules and
    /// `Py` handles still alive on other threads make that unsafe, and the process is ending.
    pub fn shutdown(&self) {
        self.bridge.shutdown(Duration::from_secs(2));
        if let Some(link) = workers::link::current() {
            link.send(&workers::control::Message::Stats(self.stats()));
        }
    }
}

/// [`Host`] as a `tower::Service`, cheap to clone.
#[derive(Clone)]
pub struct HostService {
    service: Arc<service::HttpService>,
}

impl<B> tower_service::Service<http::Request<B>> for HostService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        let client = request.extensions().get::<SocketAddr>().copied();
        Box::pin(async move { Ok(service.handle(request, client).await) })
    }
}
