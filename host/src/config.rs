//! The TOML config file: what to serve, where to listen, and the limits to enforce.
//!
//! Loading is strict: an unknown key, a wrong type or a missing directory is an error that names
//! the file, the key and what was expected. Relative paths are resolved against the directory
//! holding the config file, so a config works from whatever directory the host is started in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::error::ConfigError;

/// Everything the host needs to know to load and serve one handler package.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from (absolute), for error messages.
    pub source: PathBuf,
    /// Listener, limits and behaviour of the HTTP server.
    pub server: ServerConfig,
    /// The handler package and the Python environment it runs in.
    pub app: AppConfig,
}

/// The `[server]` table.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub body_limit: u64,
    /// Put exception text and tracebacks into 500 responses.
    pub debug: bool,
    /// How long in-flight requests may run after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Threads that run plain `def` handlers off the event loop.
    pub sync_threads: usize,
    /// Which asyncio event loop implementation to run.
    pub event_loop: EventLoopKind,
}

/// The `[app]` table.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Module (or package) that defines the router.
    pub module: String,
    /// Attribute of `module` holding the `pyhost.Router`.
    pub router: String,
    /// Directories put at the front of `sys.path`, absolute.
    pub paths: Vec<PathBuf>,
    /// Virtualenv whose site-packages become importable, absolute.
    pub venv: Option<PathBuf>,
}

/// Event loop implementation for the interpreter's loop thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLoopKind {
    /// uvloop when it is importable, asyncio's default loop otherwise.
    Auto,
    /// The standard library's loop.
    Asyncio,
    /// uvloop; failing to import it is a start-up error.
    Uvloop,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    app: RawApp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_body_limit")]
    body_limit: ByteSize,
    #[serde(default)]
    debug: bool,
    #[serde(default = "default_grace")]
    shutdown_grace: f64,
    #[serde(default = "default_sync_threads")]
    sync_threads: usize,
    #[serde(default = "default_event_loop")]
    event_loop: EventLoopKind,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            body_limit: default_body_limit(),
            debug: false,
            shutdown_grace: default_grace(),
            sync_threads: default_sync_threads(),
            event_loop: default_event_loop(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    module: String,
    #[serde(default = "default_router")]
    router: String,
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    venv: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8000".to_owned()
}
fn default_body_limit() -> ByteSize {
    ByteSize::mib(1)
}
fn default_grace() -> f64 {
    10.0
}
fn default_sync_threads() -> usize {
    16
}
fn default_event_loop() -> EventLoopKind {
    EventLoopKind::Auto
}
fn default_router() -> String {
    "router".to_owned()
}
fn default_paths() -> Vec<String> {
    vec![".".to_owned()]
}

impl Config {
    /// Reads and checks the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let text = std::fs::read_to_string(&source).map_err(|err| ConfigError::Read {
            file: source.clone(),
            source: err,
        })?;
        Self::parse(&text, &source)
    }

    /// Parses config text as if it had been read from `source` (used for relative paths and
    /// error messages).
    pub fn parse(text: &str, source: &Path) -> Result<Self, ConfigError> {
        let file = source.to_path_buf();
        let deserializer = toml::Deserializer::parse(text).map_err(|err| ConfigError::Syntax {
            file: file.clone(),
            message: err.to_string(),
        })?;
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let message = err.into_inner().message().trim().to_owned();
            ConfigError::Invalid {
                file: file.clone(),
                key: if key == "." { "(top level)".to_owned() } else { key },
                message,
            }
        })?;
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.clone(),
            key: key.to_owned(),
            message,
        };

        let listen = parse_listen(&raw.server.listen)
            .map_err(|message| invalid("server.listen", message))?;
        if !(raw.server.shutdown_grace.is_finite() && raw.server.shutdown_grace >= 0.0) {
            return Err(invalid(
                "server.shutdown_grace",
                "expected a number of seconds, zero or more".to_owned(),
            ));
        }
        if raw.server.sync_threads == 0 {
            return Err(invalid(
                "server.sync_threads",
                "expected at least 1 thread".to_owned(),
            ));
        }
        if raw.server.body_limit.as_u64() == 0 {
            return Err(invalid(
                "server.body_limit",
                "expected a size above zero, such as \"1 MiB\" or 1048576".to_owned(),
            ));
        }

        if !is_dotted_identifier(&raw.app.module) {
            return Err(invalid(
                "app.module",
                format!(
                    "expected a dotted Python module name such as \"hello\" or \"pkg.handlers\", got {:?}",
                    raw.app.module
                ),
            ));
        }
        if !is_identifier(&raw.app.router) {
            return Err(invalid(
                "app.router",
                format!(
                    "expected the name of a module attribute, got {:?}",
                    raw.app.router
                ),
            ));
        }
        let mut paths = Vec::with_capacity(raw.app.paths.len());
        for (index, entry) in raw.app.paths.iter().enumerate() {
            let dir = resolve(&base, entry);
            if !dir.is_dir() {
                return Err(invalid(
                    &format!("app.paths[{index}]"),
                    format!("expected an existing directory, {} does not exist", dir.display()),
                ));
            }
            paths.push(dir);
        }
        let venv = raw.app.venv.as_deref().map(|v| resolve(&base, v));
        if let Some(venv) = &venv {
            check_venv(venv).map_err(|message| invalid("app.venv", message))?;
        }

        Ok(Config {
            source: file.clone(),
            server: ServerConfig {
                listen,
                body_limit: raw.server.body_limit.as_u64(),
                debug: raw.server.debug,
                shutdown_grace: Duration::from_secs_f64(raw.server.shutdown_grace),
                sync_threads: raw.server.sync_threads,
                event_loop: raw.server.event_loop,
            },
            app: AppConfig {
                module: raw.app.module,
                router: raw.app.router,
                paths,
                venv,
            },
        })
    }
}

/// Parses `HOST:PORT` (`localhost` is accepted as a host name for the loopback address).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let expected = || format!("expected HOST:PORT such as \"127.0.0.1:8000\", got {text:?}");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text.rsplit_once(':') {
        Some(("localhost", port)) => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| expected()),
        _ => Err(expected()),
    }
}

/// Checks that `venv` looks like a virtualenv.
pub fn check_venv(venv: &Path) -> Result<(), String> {
    if !venv.is_dir() {
        return Err(format!(
            "expected a virtualenv directory, {} does not exist",
            venv.display()
        ));
    }
    if !venv.join("pyvenv.cfg").is_file() {
        return Err(format!(
            "expected a virtualenv, {} has no pyvenv.cfg",
            venv.display()
        ));
    }
    Ok(())
}

fn resolve(base: &Path, entry: &str) -> PathBuf {
    let path = Path::new(entry);
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    // Canonical paths make `sys.path` and error messages readable; fall back to the joined
    // path when it does not exist so the caller can report it.
    joined.canonicalize().unwrap_or(joined)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn is_dotted_identifier(name: &str) -> bool {
    name.split('.').all(is_identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::parse(text, &dir.join("pyhost-test.toml"))
    }

    #[test]
    fn defaults_fill_the_server_table() {
        let config = parse("[app]\nmodule = \"hello\"\npaths = [\".\"]\n").expect("valid config");
        assert_eq!(config.server.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(config.server.body_limit, 1024 * 1024);
        assert_eq!(config.app.router, "router");
        assert!(!config.server.debug);
    }

    #[test]
    fn sizes_accept_strings_and_integers() {
        let config = parse("[server]\nbody_limit = \"2 KiB\"\n[app]\nmodule = \"m\"\n").unwrap();
        assert_eq!(config.server.body_limit, 2048);
        let config = parse("[server]\nbody_limit = 100\n[app]\nmodule = \"m\"\n").unwrap();
        assert_eq!(config.server.body_limit, 100);
    }

    #[test]
    fn unknown_key_names_the_key() {
        let err = parse("[server]\nlisten_on = \"x\"\n[app]\nmodule = \"m\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("listen_on"), "{text}");
        assert!(text.contains("pyhost-test.toml"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let err = parse("[server]\ndebug = \"yes\"\n[app]\nmodule = \"m\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server.debug"), "{text}");
        assert!(text.contains("bool"), "{text}");
    }

    #[test]
    fn bad_listen_address_is_rejected() {
        let err = parse("[server]\nlisten = \"nowhere\"\n[app]\nmodule = \"m\"\n").unwrap_err();
        assert!(err.to_string().contains("server.listen"));
    }

    #[test]
    fn missing_directory_is_rejected() {
        let err = parse("[app]\nmodule = \"m\"\npaths = [\"no-such-dir-xyz\"]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("app.paths[0]"), "{text}");
        assert!(text.contains("no-such-dir-xyz"), "{text}");
    }

    #[test]
    fn module_name_must_be_dotted_identifier() {
        assert!(parse("[app]\nmodule = \"a-b\"\n").is_err());
        assert!(parse("[app]\nmodule = \"a.b_c\"\n").is_ok());
    }

    #[test]
    fn missing_app_table_is_reported() {
        let err = parse("[server]\n").unwrap_err();
        assert!(err.to_string().contains("app"), "{err}");
    }
}
