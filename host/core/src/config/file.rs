//! The config file's shape, as serde reads it, with every default in one place.
//!
//! Nothing here looks at values beyond their types: [`super::check`] turns a [`RawConfig`]
//! into a [`super::Config`], checking ranges and reading the filesystem and the environment.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{Balance, EventLoopKind, Workers};
use crate::middleware::encoding::Coding;

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    pub(super) app: RawApp,
    #[serde(default)]
    pub(super) plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    pub(super) kv: RawKv,
    pub(super) cors: Option<RawCors>,
    pub(super) compression: Option<RawCompression>,
    /// `[static]`: URL prefix → directory.
    #[serde(default, rename = "static")]
    pub(super) statics: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) websocket: RawWebSocket,
}

/// `[websocket]`; a missing key takes its value from [`RawWebSocket::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebSocket {
    pub(super) max_message: ByteSize,
    pub(super) max_connections: usize,
    pub(super) max_connections_per_client: usize,
    /// Seconds; 0 turns pings off.
    pub(super) ping_interval: f64,
    /// `None`: any origin.
    pub(super) allowed_origins: Option<Vec<String>>,
}

impl Default for RawWebSocket {
    fn default() -> Self {
        let defaults = crate::websocket::WebSocketConfig::default();
        Self {
            max_message: ByteSize::b(defaults.max_message as u64),
            max_connections: defaults.max_connections,
            max_connections_per_client: defaults.max_connections_per_client,
            ping_interval: defaults.ping_interval.map_or(0.0, |d| d.as_secs_f64()),
            allowed_origins: None,
        }
    }
}

/// `[cors]`; only `allow_origins` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allow_origins: Vec<String>,
    /// `None`: the CORS-safelisted methods (`middleware::cors`).
    pub(super) allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_headers: Vec<String>,
    #[serde(default)]
    pub(super) expose_headers: Vec<String>,
    #[serde(default)]
    pub(super) allow_credentials: bool,
    pub(super) max_age: Option<u64>,
}

/// `[compression]`; an empty table turns compression on with the defaults of
/// `middleware::encoding::defaults`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompression {
    pub(super) min_size: Option<ByteSize>,
    pub(super) encodings: Option<Vec<Coding>>,
    pub(super) media_types: Option<Vec<String>>,
}

/// `[kv]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKv {
    pub(super) path: Option<String>,
}

/// `[plugins.NAME]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    pub(super) module: String,
    pub(super) prefix: String,
    #[serde(default = "default_router")]
    pub(super) router: String,
    #[serde(default = "default_paths")]
    pub(super) paths: Vec<String>,
    #[serde(default)]
    pub(super) settings: toml::Table,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    #[serde(default)]
    pub(super) capabilities: Vec<String>,
}

/// `[app]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub(super) module: String,
    #[serde(default = "default_router")]
    pub(super) router: String,
    #[serde(default = "default_paths")]
    pub(super) paths: Vec<String>,
    pub(super) venv: Option<String>,
    #[serde(default)]
    pub(super) settings: toml::Table,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    #[serde(default)]
    pub(super) capabilities: Vec<String>,
}

/// `[server]`; a missing key takes its value from [`RawServer::default`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) body_limit: ByteSize,
    pub(super) debug: bool,
    pub(super) shutdown_grace: f64,
    pub(super) sync_threads: usize,
    pub(super) event_loop: EventLoopKind,
    pub(super) request_timeout: f64,
    pub(super) stream_idle_timeout: f64,
    pub(super) header_timeout: f64,
    pub(super) body_timeout: f64,
    pub(super) max_in_flight: usize,
    pub(super) max_in_flight_per_client: usize,
    pub(super) max_headers: usize,
    pub(super) max_head_size: ByteSize,
    pub(super) max_url_length: usize,
    pub(super) cancel_on_disconnect: bool,
    pub(super) sched_batch: bool,
    pub(super) max_connections: usize,
    /// Seconds; `None`: `body_timeout`'s value.
    pub(super) send_timeout: Option<f64>,
    pub(super) response_buffer: ByteSize,
    pub(super) connection_response_buffer: ByteSize,
    pub(super) request_buffer: ByteSize,
    pub(super) h2_max_concurrent_streams: u32,
    pub(super) workers: Workers,
    pub(super) balance: Balance,
    pub(super) startup_timeout: f64,
    pub(super) worker_timeout: f64,
    pub(super) max_requests: u64,
    pub(super) max_requests_jitter: u64,
    pub(super) max_worker_memory: Option<ByteSize>,
    pub(super) worker_lifetime: f64,
    pub(super) worker_lifetime_jitter: f64,
    /// `None`: any host.
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) form_max_parts: usize,
    pub(super) form_max_field_size: ByteSize,
    /// `None`: the body limit bounds files.
    pub(super) form_max_file_size: Option<ByteSize>,
    pub(super) form_spool_threshold: ByteSize,
}

// --- the defaults --------------------------------------------------------------------------

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".to_owned(),
            body_limit: ByteSize::mib(1),
            debug: false,
            shutdown_grace: 10.0,
            sync_threads: 16,
            // Measured with bench/run.py: with the threads under SCHED_BATCH, uvloop serves
            // about 8% more requests per second than the stdlib loop on the same core.
            event_loop: EventLoopKind::Auto,
            request_timeout: 30.0,
            // Long enough for a slow producer (a model generating tokens), short enough that a
            // stuck one does not hold its connection for good.
            stream_idle_timeout: 60.0,
            header_timeout: 10.0,
            body_timeout: 30.0,
            max_in_flight: 1024,
            // A quarter: one address (a client, or a proxy: raise it or set 0 behind one)
            // cannot take every slot.
            max_in_flight_per_client: 256,
            // Below hyper's 100, which it parses on the stack (`server/protocols.rs`), so that
            // a head over the limit still gets the host's JSON 431.
            max_headers: 64,
            max_head_size: ByteSize::kib(64),
            max_url_length: 8192,
            cancel_on_disconnect: true,
            sched_batch: true,
            // An idle HTTP/1 connection costs about 15 KiB, an idle HTTP/2 one a little more:
            // 4,096 idle ones stay under about 80 MiB. Lowered to fit the open-files limit.
            max_connections: 4096,
            send_timeout: None,
            response_buffer: ByteSize::mib(64),
            connection_response_buffer: ByteSize::mib(8),
            // 64 bodies at the default body_limit; far above what honest uploads hold at once
            // (an upload that must be large is a `stream=True` route, which holds a few chunks).
            request_buffer: ByteSize::mib(64),
            // RFC 9113 §6.5.2 recommends no fewer than 100; hyper's default is 200.
            h2_max_concurrent_streams: 100,
            workers: Workers::Count(1),
            // Measured with scripts/balance.py: per-slot sockets spread connections evenly
            // across workers, one shared socket lets one worker take most of them.
            balance: Balance::Reuseport,
            startup_timeout: 60.0,
            worker_timeout: 30.0,
            max_requests: 0,
            max_requests_jitter: 0,
            max_worker_memory: None,
            worker_lifetime: 0.0,
            worker_lifetime_jitter: 0.0,
            allowed_hosts: None,
            form_max_parts: 1000,
            form_max_field_size: ByteSize::mib(1),
            form_max_file_size: None,
            // A file this large costs less on disk than in memory, and one this small is
            // cheaper kept in memory than written and read back.
            form_spool_threshold: ByteSize::mib(1),
        }
    }
}

fn default_router() -> String {
    "router".to_owned()
}

fn default_paths() -> Vec<String> {
    vec![".".to_owned()]
}
