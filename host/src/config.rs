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
    /// Virtualenv whose site-packages become importable (`app.venv`), absolute.
    pub venv: Option<PathBuf>,
    /// Every plugin, the `[app]` package first (index 0, mounted at `/`), then the
    /// `[plugins.NAME]` tables in name order. The index is the plugin's id in the host ABI.
    pub plugins: Vec<PluginConfig>,
    /// Where the key-value store lives; `None` keeps it in memory.
    pub kv_path: Option<PathBuf>,
}

/// One handler package mounted at a path prefix, with what it is allowed to use.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// `app` for the `[app]` table, else the `NAME` of `[plugins.NAME]`.
    pub name: String,
    /// The config table it came from (`app`, `plugins.billing`), for messages.
    pub table: String,
    /// Module (or package) that defines the router.
    pub module: String,
    /// Attribute of `module` holding the `pyhost.Router`.
    pub router: String,
    /// Directories put at the front of `sys.path`, absolute.
    pub paths: Vec<PathBuf>,
    /// Path prefix of every route (`""` for the app).
    pub prefix: String,
    /// The `settings` table, as JSON.
    pub settings: serde_json::Value,
    /// Secrets by name, read from the environment at start-up.
    pub secrets: Vec<(String, Secret)>,
    /// What the plugin may use besides logging and its own settings.
    pub capabilities: Capabilities,
}

/// A secret value; its `Debug` form never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Capabilities granted in a plugin's `capabilities` list.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// `"kv"`: the key-value store.
    pub kv: bool,
    /// `"call:*"`: every host function.
    pub all_calls: bool,
    /// `"call:NAME"`: these host functions.
    pub calls: Vec<String>,
}

impl Capabilities {
    /// Whether host function `name` may be called.
    pub fn may_call(&self, name: &str) -> bool {
        self.all_calls || self.calls.iter().any(|granted| granted == name)
    }
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
    /// Default time a handler may run before the client gets 504 (None: no limit).
    pub request_timeout: Option<Duration>,
    /// Time to receive a request head; also how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Time to receive a request body once its head has arrived.
    pub body_timeout: Duration,
    /// Requests being handled at once before new ones get 503.
    pub max_in_flight: usize,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head (request line and headers) in bytes (larger: 431).
    pub max_head_size: usize,
    /// Longest request target (path and query) in bytes (longer: 414).
    pub max_url_length: usize,
    /// Cancel a handler whose client disconnected before the response.
    pub cancel_on_disconnect: bool,
    /// Run the server's threads under Linux's `SCHED_BATCH` policy (see [`crate::sched`]).
    pub sched_batch: bool,
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
    #[serde(default)]
    plugins: std::collections::BTreeMap<String, RawPlugin>,
    #[serde(default)]
    kv: RawKv,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKv {
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    module: String,
    prefix: String,
    #[serde(default = "default_router")]
    router: String,
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
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
    #[serde(default = "default_request_timeout")]
    request_timeout: f64,
    #[serde(default = "default_header_timeout")]
    header_timeout: f64,
    #[serde(default = "default_body_timeout")]
    body_timeout: f64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_max_headers")]
    max_headers: usize,
    #[serde(default = "default_max_head_size")]
    max_head_size: ByteSize,
    #[serde(default = "default_max_url_length")]
    max_url_length: usize,
    #[serde(default = "default_true")]
    cancel_on_disconnect: bool,
    #[serde(default = "default_true")]
    sched_batch: bool,
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
            request_timeout: default_request_timeout(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_in_flight: default_max_in_flight(),
            max_headers: default_max_headers(),
            max_head_size: default_max_head_size(),
            max_url_length: default_max_url_length(),
            cancel_on_disconnect: true,
            sched_batch: true,
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
    #[serde(default)]
    settings: toml::Table,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
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
    // Measured with bench/run.py: with the threads under SCHED_BATCH, uvloop serves about 8%
    // more requests per second than the stdlib loop on the same core.
    EventLoopKind::Auto
}
fn default_request_timeout() -> f64 {
    30.0
}
fn default_header_timeout() -> f64 {
    10.0
}
fn default_body_timeout() -> f64 {
    30.0
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_max_headers() -> usize {
    100
}
fn default_max_head_size() -> ByteSize {
    ByteSize::kib(64)
}
fn default_max_url_length() -> usize {
    8192
}
fn default_true() -> bool {
    true
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
            let mut key = err.path().to_string();
            let message = err.into_inner().message().trim().to_owned();
            // serde reports a missing key at its parent table; name the key itself.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                key = if key == "." {
                    field.to_owned()
                } else {
                    format!("{key}.{field}")
                };
            }
            ConfigError::Invalid {
                file: file.clone(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
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
        let seconds = |key: &str, value: f64, zero_disables: bool| {
            if value.is_finite() && (value > 0.0 || (zero_disables && value == 0.0)) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(invalid(
                    key,
                    format!(
                        "expected a positive number of seconds{}, got {value}",
                        if zero_disables {
                            " (0 disables it)"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        };
        let request_timeout = seconds("server.request_timeout", raw.server.request_timeout, true)?;
        let header_timeout = seconds("server.header_timeout", raw.server.header_timeout, false)?;
        let body_timeout = seconds("server.body_timeout", raw.server.body_timeout, false)?;
        for (key, value) in [
            ("server.max_in_flight", raw.server.max_in_flight),
            ("server.max_headers", raw.server.max_headers),
            ("server.max_url_length", raw.server.max_url_length),
        ] {
            if value == 0 {
                return Err(invalid(key, "expected a number above zero".to_owned()));
            }
        }
        let max_head_size =
            usize::try_from(raw.server.max_head_size.as_u64()).unwrap_or(usize::MAX);
        if max_head_size < 8192 {
            return Err(invalid(
                "server.max_head_size",
                "expected at least 8 KiB (8192 bytes)".to_owned(),
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

        let mut plugins = vec![plugin_config(
            &base,
            &invalid,
            "app",
            "app".to_owned(),
            PluginParts {
                module: &raw.app.module,
                router: &raw.app.router,
                paths: &raw.app.paths,
                prefix: "",
                settings: &raw.app.settings,
                secrets: &raw.app.secrets,
                capabilities: &raw.app.capabilities,
            },
        )?];
        for (name, plugin) in &raw.plugins {
            let table = format!("plugins.{name}");
            if !is_identifier(name) {
                return Err(invalid(
                    &table,
                    "expected a plugin name made of letters, digits and _".to_owned(),
                ));
            }
            let prefix = plugin.prefix.as_str();
            if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains(['{', '}']) {
                return Err(invalid(
                    &format!("{table}.prefix"),
                    format!(
                        "expected a path prefix such as \"/billing\" (starting with '/', not ending with '/'), got {prefix:?}"
                    ),
                ));
            }
            plugins.push(plugin_config(
                &base,
                &invalid,
                &table,
                name.clone(),
                PluginParts {
                    module: &plugin.module,
                    router: &plugin.router,
                    paths: &plugin.paths,
                    prefix,
                    settings: &plugin.settings,
                    secrets: &plugin.secrets,
                    capabilities: &plugin.capabilities,
                },
            )?);
        }
        let kv_path = raw.kv.path.as_deref().map(|p| resolve(&base, p));
        if let Some(kv) = &kv_path
            && let Some(parent) = kv.parent()
            && !parent.is_dir()
        {
            return Err(invalid(
                "kv.path",
                format!(
                    "expected a file in an existing directory, {} does not exist",
                    parent.display()
                ),
            ));
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
                request_timeout: (!request_timeout.is_zero()).then_some(request_timeout),
                header_timeout,
                body_timeout,
                max_in_flight: raw.server.max_in_flight,
                max_headers: raw.server.max_headers,
                max_head_size,
                max_url_length: raw.server.max_url_length,
                cancel_on_disconnect: raw.server.cancel_on_disconnect,
                sched_batch: raw.server.sched_batch,
            },
            venv,
            plugins,
            kv_path,
        })
    }
}

struct PluginParts<'a> {
    module: &'a str,
    router: &'a str,
    paths: &'a [String],
    prefix: &'a str,
    settings: &'a toml::Table,
    secrets: &'a [String],
    capabilities: &'a [String],
}

fn plugin_config(
    base: &Path,
    invalid: &dyn Fn(&str, String) -> ConfigError,
    table: &str,
    name: String,
    parts: PluginParts<'_>,
) -> Result<PluginConfig, ConfigError> {
    if !is_dotted_identifier(parts.module) {
        return Err(invalid(
            &format!("{table}.module"),
            format!(
                "expected a dotted Python module name such as \"hello\" or \"pkg.handlers\", got {:?}",
                parts.module
            ),
        ));
    }
    if !is_identifier(parts.router) {
        return Err(invalid(
            &format!("{table}.router"),
            format!(
                "expected the name of a module attribute, got {:?}",
                parts.router
            ),
        ));
    }
    let mut paths = Vec::with_capacity(parts.paths.len());
    for (index, entry) in parts.paths.iter().enumerate() {
        let dir = resolve(base, entry);
        if !dir.is_dir() {
            return Err(invalid(
                &format!("{table}.paths[{index}]"),
                format!(
                    "expected an existing directory, {} does not exist",
                    dir.display()
                ),
            ));
        }
        paths.push(dir);
    }
    let settings = serde_json::to_value(parts.settings).map_err(|err| {
        invalid(
            &format!("{table}.settings"),
            format!("expected plain values: {err}"),
        )
    })?;
    let mut secrets = Vec::with_capacity(parts.secrets.len());
    for (index, variable) in parts.secrets.iter().enumerate() {
        match std::env::var(variable) {
            Ok(value) => secrets.push((variable.clone(), Secret(value))),
            Err(_) => {
                return Err(invalid(
                    &format!("{table}.secrets[{index}]"),
                    format!("the environment variable {variable} is not set (or not UTF-8)"),
                ));
            }
        }
    }
    let mut capabilities = Capabilities::default();
    for (index, capability) in parts.capabilities.iter().enumerate() {
        match capability.as_str() {
            "kv" => capabilities.kv = true,
            "call:*" => capabilities.all_calls = true,
            other => match other.strip_prefix("call:") {
                Some(function) if !function.is_empty() => {
                    capabilities.calls.push(function.to_owned())
                }
                _ => {
                    return Err(invalid(
                        &format!("{table}.capabilities[{index}]"),
                        format!(
                            "unknown capability {other:?}; expected \"kv\", \"call:NAME\" or \"call:*\""
                        ),
                    ));
                }
            },
        }
    }
    Ok(PluginConfig {
        name,
        table: table.to_owned(),
        module: parts.module.to_owned(),
        router: parts.router.to_owned(),
        paths,
        prefix: parts.prefix.to_owned(),
        settings,
        secrets,
        capabilities,
    })
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
        assert_eq!(config.plugins[0].router, "router");
        assert_eq!(config.plugins[0].prefix, "");
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
        assert!(err.to_string().contains("key `app`"), "{err}");
        let err = parse("[app]\nrouter = \"r\"\n").unwrap_err();
        assert!(err.to_string().contains("key `app.module`"), "{err}");
    }
}
