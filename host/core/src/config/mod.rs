//! The TOML config file: what to serve, where to listen, and the limits to enforce.
//!
//! Loading is strict: an unknown key, a wrong type or a missing directory is an error that names
//! the file, the key and what was expected. Relative paths are resolved against the directory
//! holding the config file, so a config works from whatever directory the host is started in.
//!
//! Two steps: [`file`] reads the text into the file's shape (types and defaults only), and
//! [`check`] turns that into a [`Config`], checking every value and reading what the file
//! names (directories, the virtualenv, secrets from the environment).

mod check;
mod file;
mod static_dirs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::middleware::cors::CorsPolicy;
use crate::middleware::encoding::CompressionPolicy;
use crate::middleware::hosts::AllowedHosts;
use crate::websocket::WebSocketConfig;
pub use static_dirs::StaticMount;

/// Everything the host needs to know to load and serve one handler package.
#[non_exhaustive]
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
    /// `[cors]`; `None`: the host adds no CORS header and answers no preflight itself.
    pub cors: Option<CorsPolicy>,
    /// `[compression]`; `None`: responses go out as the handler made them.
    pub compression: Option<CompressionPolicy>,
    /// `[static]`: directories served under URL prefixes, longest prefix first.
    pub statics: Vec<StaticMount>,
    /// `[websocket]`: the limits of WebSocket routes.
    pub websocket: WebSocketConfig,
}

/// One handler package mounted at a path prefix, with what it is allowed to use.
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub body_limit: u64,
    /// The limits forms are parsed under (`form_*`).
    pub forms: crate::form::FormLimits,
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
    /// Longest wait for a streamed response's next chunk before the response is cut short
    /// and its producer cancelled (None: no limit).
    pub stream_idle_timeout: Option<Duration>,
    /// Time to receive a request head; also how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Time to receive a request body once its head has arrived.
    pub body_timeout: Duration,
    /// Requests being handled at once before new ones get 503.
    pub max_in_flight: usize,
    /// Requests from one IP address being handled at once before its new ones get 503
    /// (0: no per-address limit).
    pub max_in_flight_per_client: usize,
    /// Most request headers accepted (more: 431).
    pub max_headers: usize,
    /// Largest request head (request line and headers) in bytes (larger: 431).
    pub max_head_size: usize,
    /// Longest request target (path and query) in bytes (longer: 414).
    pub max_url_length: usize,
    /// Cancel a handler whose client disconnected before the response.
    pub cancel_on_disconnect: bool,
    /// Run the server's threads under Linux's `SCHED_BATCH` policy (`pyhost::sched`).
    pub sched_batch: bool,
    /// Connections open at once; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a response may wait on its client without any of it being taken before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Response bytes held at once, across all connections, for clients that have not taken
    /// them yet (a response that would pass it gets 503).
    pub response_buffer: usize,
    /// The same for one connection (its HTTP/2 streams together).
    pub connection_response_buffer: usize,
    /// Request body bytes held at once by the bodies being read, across all connections (a
    /// quarter of it from one address); a body that would pass it gets 503.
    pub request_buffer: usize,
    /// Streams a client may have open on one HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// Worker processes serving the listener (`pyhost::workers`).
    pub workers: Workers,
    /// How the workers share the listening address.
    pub balance: Balance,
    /// How long a worker (and, in it, the handler package's import) may take to be ready.
    pub startup_timeout: Duration,
    /// How long a worker's event loop may go without a heartbeat before it is replaced.
    pub worker_timeout: Duration,
    /// Requests after which a worker is replaced (`None`: never), plus up to
    /// `max_requests_jitter` more, picked per worker so that they do not all restart at once.
    pub max_requests: Option<u64>,
    /// See `max_requests`.
    pub max_requests_jitter: u64,
    /// Resident memory above which a worker is replaced, in bytes (`None`: no limit).
    pub max_worker_memory: Option<u64>,
    /// Age after which a worker is replaced (`None`: never), plus up to
    /// `worker_lifetime_jitter` more, picked per worker.
    pub worker_lifetime: Option<Duration>,
    /// See `worker_lifetime`.
    pub worker_lifetime_jitter: Duration,
    /// The host names requests may name (`None`: any); others get 400.
    pub allowed_hosts: Option<AllowedHosts>,
}

impl Default for ServerConfig {
    /// Every `[server]` key at its default, as a file without a `[server]` table gets it.
    fn default() -> Self {
        check::server_defaults()
    }
}

/// `server.workers`: how many worker processes serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// This many (at least 1); 1 is a single process with no supervisor.
    Count(usize),
    /// One per CPU the process may use: the smaller of its CPU affinity and its cgroup's CPU
    /// quota.
    Auto,
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of workers (1 or more) or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Workers, E> {
                Workers::count(value).ok_or_else(|| E::custom(WORKERS_EXPECTED))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Workers, E> {
                Workers::count(i64::try_from(value).unwrap_or(i64::MAX))
                    .ok_or_else(|| E::custom(WORKERS_EXPECTED))
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Workers, E> {
                Workers::parse(value).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

const WORKERS_EXPECTED: &str = "expected a number of workers from 1 to 1024, or \"auto\"";

impl Workers {
    /// The most workers one server runs.
    pub const MAX: usize = 1024;

    fn count(value: i64) -> Option<Self> {
        usize::try_from(value)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Workers::Count)
    }

    /// `"auto"` or a number, as `--workers` takes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Workers::Auto);
        }
        text.parse::<i64>()
            .ok()
            .and_then(Self::count)
            .ok_or_else(|| format!("{WORKERS_EXPECTED}, got {text:?}"))
    }
}

/// `server.balance`: how worker processes share the listening address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    /// One `SO_REUSEPORT` socket per worker slot, all owned by the supervisor: the kernel
    /// spreads new connections evenly across slots.
    Reuseport,
    /// One socket every worker accepts from: whichever worker is free takes the next
    /// connection (uneven when the workers are idle, even under saturation).
    Shared,
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
        let raw: file::RawConfig =
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
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
        check::config(raw, file)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::parse(text, &dir.join("pyhost-test.toml"))
    }

    #[test]
    fn the_defaults_are_a_valid_server_table() {
        let server = ServerConfig::default();
        let parsed = parse("[app]\nmodule = \"hello\"\n")
            .expect("valid config")
            .server;
        assert_eq!(format!("{server:?}"), format!("{parsed:?}"));
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
        assert_eq!(config.server.forms, crate::form::FormLimits::default());
        let config = parse(
            "[server]\nform_max_parts = 5\nform_max_field_size = \"2 KiB\"\n\
             form_max_file_size = \"1 MiB\"\nform_spool_threshold = 10\n[app]\nmodule = \"m\"\n",
        )
        .unwrap();
        assert_eq!(
            config.server.forms,
            crate::form::FormLimits {
                max_parts: 5,
                max_field_size: 2048,
                max_file_size: Some(1024 * 1024),
                spool_threshold: 10,
            }
        );
        assert!(parse("[server]\nform_max_parts = 0\n[app]\nmodule = \"m\"\n").is_err());
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

    fn app(table: &str) -> String {
        format!("{table}\n[app]\nmodule = \"m\"\n")
    }

    #[test]
    fn middleware_is_off_unless_configured() {
        let config = parse(&app("")).unwrap();
        assert!(config.cors.is_none());
        assert!(config.compression.is_none());
        assert!(config.server.allowed_hosts.is_none());
    }

    #[test]
    fn an_empty_compression_table_turns_it_on() {
        let config = parse(&app("[compression]")).unwrap();
        assert!(config.compression.is_some());
        let config = parse(&app(
            "[compression]\nmin_size = \"2 KiB\"\nencodings = [\"gzip\", \"br\"]\nmedia_types = [\"text/\"]",
        ))
        .unwrap();
        assert!(config.compression.is_some());
    }

    #[test]
    fn compression_keys_are_checked() {
        for (table, key) in [
            ("[compression]\nlevel = 3", "compression.level"),
            (
                "[compression]\nencodings = [\"deflate\"]",
                "compression.encodings[0]",
            ),
            ("[compression]\nencodings = []", "compression.encodings"),
            ("[compression]\nmin_size = true", "compression.min_size"),
            (
                "[compression]\nmedia_types = [\"text\"]",
                "compression.media_types[0]",
            ),
        ] {
            let err = parse(&app(table)).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}`")), "{table}: {err}");
            assert!(err.contains("pyhost-test.toml"), "{err}");
        }
    }

    #[test]
    fn cors_keys_are_checked() {
        for (table, key) in [
            ("[cors]", "cors.allow_origins"),
            (
                "[cors]\nallow_origins = [\"*\"]\norigins = []",
                "cors.origins",
            ),
            ("[cors]\nallow_origins = \"*\"", "cors.allow_origins"),
            (
                "[cors]\nallow_origins = [\"https://a.test/\"]",
                "cors.allow_origins[0]",
            ),
            (
                "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true",
                "cors.allow_credentials",
            ),
            (
                "[cors]\nallow_origins = [\"*\"]\nmax_age = -1",
                "cors.max_age",
            ),
        ] {
            let err = parse(&app(table)).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}`")), "{table}: {err}");
        }
        let err = parse(&app(
            "[cors]\nallow_origins = [\"*\"]\nallow_credentials = true",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("wildcard origin"), "{err}");
        let config = parse(&app(
            "[cors]\nallow_origins = [\"https://*.a.test\"]\nallow_credentials = true",
        ))
        .unwrap();
        assert!(config.cors.is_some());
    }

    #[test]
    fn websocket_keys_are_checked() {
        let config = parse(&app("")).unwrap();
        assert_eq!(config.websocket.max_message, 1024 * 1024);
        assert!(config.websocket.allowed_origins.is_none());
        let config = parse(&app(
            "[websocket]\nmax_message = \"64 KiB\"\nping_interval = 0\nallowed_origins = [\"https://a.test\"]",
        ))
        .unwrap();
        assert_eq!(config.websocket.max_message, 64 * 1024);
        assert!(config.websocket.ping_interval.is_none());
        assert!(config.websocket.allowed_origins.is_some());
        for (table, key) in [
            ("[websocket]\nmax_message = 0", "websocket.max_message"),
            (
                "[websocket]\nmax_connections = 0",
                "websocket.max_connections",
            ),
            ("[websocket]\nping_interval = -1", "websocket.ping_interval"),
            (
                "[websocket]\nallowed_origins = []",
                "websocket.allowed_origins",
            ),
            (
                "[websocket]\nallowed_origins = [\"https://a.test/x\"]",
                "websocket.allowed_origins[0]",
            ),
            ("[websocket]\nmax_frames = 1", "websocket.max_frames"),
        ] {
            let err = parse(&app(table)).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}`")), "{table}: {err}");
        }
    }

    #[test]
    fn allowed_hosts_are_checked() {
        let config = parse(&app("[server]\nallowed_hosts = [\"a.test\", \"*.b.test\"]")).unwrap();
        let hosts = config.server.allowed_hosts.expect("a list");
        assert!(hosts.allows("x.b.test:8000"));
        for (table, key) in [
            ("[server]\nallowed_hosts = []", "server.allowed_hosts"),
            (
                "[server]\nallowed_hosts = [\"a.test\", \"a.test:80\"]",
                "server.allowed_hosts[1]",
            ),
            (
                "[server]\nallowed_hosts = \"a.test\"",
                "server.allowed_hosts",
            ),
        ] {
            let err = parse(&app(table)).unwrap_err().to_string();
            assert!(err.contains(&format!("key `{key}`")), "{table}: {err}");
        }
    }
}
