//! Errors the host reports to whoever started it: each names what to fix.

use std::path::PathBuf;

pub use pyhost_core::error::ConfigError;

/// A problem found while starting the host: config, interpreter, handler package or routes.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The embedded interpreter could not be set up.
    #[error("config file {}: Python interpreter: {message}", file.display())]
    Interpreter {
        /// The config file.
        file: PathBuf,
        /// What failed.
        message: String,
    },
    /// Importing the handler package (or the pyhost SDK) failed; carries the Python traceback.
    #[error("config file {}: key `{key}`: {message}", file.display())]
    Import {
        /// The config file.
        file: PathBuf,
        /// The config key naming what was imported.
        key: String,
        /// What failed, with the Python traceback.
        message: String,
    },
    /// The router's routes are inconsistent (declared twice, bad template, bad declaration).
    #[error("config file {}: routes of `{module}.{router}`: {message}", file.display())]
    Routes {
        /// The config file.
        file: PathBuf,
        /// Module holding the router.
        module: String,
        /// Router attribute.
        router: String,
        /// What is wrong, naming the handlers involved.
        message: String,
    },
    /// Routes of different plugins (or one plugin) collide or cannot be compiled together.
    #[error("config file {}: routes: {message}", file.display())]
    RouteTable {
        /// The config file.
        file: PathBuf,
        /// What is wrong, naming the handlers involved.
        message: String,
    },
    /// A start-up hook (`@router.lifespan`, `on_startup`) raised or ran past
    /// `server.startup_timeout`; carries the Python traceback.
    #[error("config file {}: `{table}` start-up hook {hook}: {message}", file.display())]
    Lifespan {
        /// The config file.
        file: PathBuf,
        /// The plugin's table (`app`, `plugins.billing`).
        table: String,
        /// The hook's `module.qualname`.
        hook: String,
        /// What failed, with the Python traceback.
        message: String,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config or the command line.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A second host was started in a process that already has one (or that ran `inspect`):
    /// a process has one interpreter, one set of host services and one watchdog.
    #[error(
        "config file {}: this process already started pyhost (with `Host::start`, \
         `Host::start_with` or `inspect`); a process runs one host: start it once, with every \
         host function registered, and run `inspect` only in a process that does not serve",
        file.display()
    )]
    AlreadyStarted {
        /// The config file of the second start.
        file: PathBuf,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}
