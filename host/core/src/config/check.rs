//! From the file's shape to a checked [`Config`]: ranges, names, paths, the virtualenv and the
//! secrets (read from the environment here, once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{RawConfig, RawServer, RawWebSocket};
use super::{Capabilities, Config, PluginConfig, Secret, ServerConfig, check_venv, parse_listen};
use crate::error::ConfigError;
use crate::middleware::cors::{CorsOptions, CorsPolicy, OriginList};
use crate::middleware::encoding::CompressionPolicy;
use crate::middleware::hosts::AllowedHosts;
use crate::websocket::WebSocketConfig;

/// Checks `raw`, read from `file`, and resolves what it names.
pub(super) fn config(raw: RawConfig, file: PathBuf) -> Result<Config, ConfigError> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.clone(),
        key: key.to_owned(),
        message,
    };

    let server = server(&raw.server, &invalid)?;
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

    let cors = raw
        .cors
        .as_ref()
        .map(|cors| {
            CorsPolicy::new(CorsOptions {
                allow_origins: &cors.allow_origins,
                allow_methods: cors.allow_methods.as_deref(),
                allow_headers: &cors.allow_headers,
                expose_headers: &cors.expose_headers,
                allow_credentials: cors.allow_credentials,
                max_age: cors.max_age,
            })
            .map_err(|err| invalid(&err.key(), err.to_string()))
        })
        .transpose()?;
    let compression = raw
        .compression
        .as_ref()
        .map(|table| {
            CompressionPolicy::new(
                table.min_size,
                table.encodings.as_deref(),
                table.media_types.as_deref(),
            )
            .map_err(|err| {
                let key = err.key(table.media_types.as_deref().unwrap_or_default());
                invalid(&key, err.to_string())
            })
        })
        .transpose()?;

    let statics = super::static_dirs::mounts(&raw.statics, &base, &invalid)?;
    let websocket = websocket(&raw.websocket, &invalid)?;

    Ok(Config {
        source: file.clone(),
        server,
        venv,
        plugins,
        kv_path,
        cors,
        compression,
        statics,
        websocket,
    })
}

/// The `[websocket]` table.
fn websocket(
    raw: &RawWebSocket,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<WebSocketConfig, ConfigError> {
    let max_message = usize::try_from(raw.max_message.as_u64()).unwrap_or(usize::MAX);
    if max_message == 0 {
        return Err(invalid(
            "websocket.max_message",
            "expected a size above zero, such as \"1 MiB\"".to_owned(),
        ));
    }
    if raw.max_connections == 0 {
        return Err(invalid(
            "websocket.max_connections",
            "expected a number above zero".to_owned(),
        ));
    }
    if !(raw.ping_interval.is_finite() && raw.ping_interval >= 0.0) {
        return Err(invalid(
            "websocket.ping_interval",
            format!(
                "expected a positive number of seconds (0 disables it), got {}",
                raw.ping_interval
            ),
        ));
    }
    let allowed_origins = raw
        .allowed_origins
        .as_deref()
        .map(|entries| {
            if entries.is_empty() {
                return Err(invalid(
                    "websocket.allowed_origins",
                    "expected at least one origin such as \"https://app.example.com\", or \"*\" (leave the key out for any origin)".to_owned(),
                ));
            }
            OriginList::new(entries).map_err(|index| {
                invalid(
                    &format!("websocket.allowed_origins[{index}]"),
                    format!(
                        "expected an origin such as \"https://app.example.com\", \"https://*.example.com\" or \"*\" (scheme, host and optional port; no path), got {:?}",
                        entries[index]
                    ),
                )
            })
        })
        .transpose()?;
    Ok(WebSocketConfig {
        max_message,
        max_connections: raw.max_connections,
        max_connections_per_client: raw.max_connections_per_client,
        ping_interval: (raw.ping_interval > 0.0)
            .then(|| Duration::from_secs_f64(raw.ping_interval)),
        allowed_origins,
    })
}

/// `[server]` with every key at its default.
pub(super) fn server_defaults() -> ServerConfig {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: PathBuf::from("(defaults)"),
        key: key.to_owned(),
        message,
    };
    match server(&RawServer::default(), &invalid) {
        Ok(server) => server,
        // `config::tests::the_defaults_are_a_valid_server_table` holds this.
        Err(err) => unreachable!("the [server] defaults are invalid: {err}"),
    }
}

/// The `[server]` table.
fn server(
    server: &RawServer,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let listen =
        parse_listen(&server.listen).map_err(|message| invalid("server.listen", message))?;
    if !(server.shutdown_grace.is_finite() && server.shutdown_grace >= 0.0) {
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
    let request_timeout = seconds("server.request_timeout", server.request_timeout, true)?;
    let stream_idle_timeout = seconds(
        "server.stream_idle_timeout",
        server.stream_idle_timeout,
        true,
    )?;
    let header_timeout = seconds("server.header_timeout", server.header_timeout, false)?;
    let body_timeout = seconds("server.body_timeout", server.body_timeout, false)?;
    let send_timeout = match server.send_timeout {
        Some(value) => seconds("server.send_timeout", value, false)?,
        None => body_timeout,
    };
    for (key, value) in [
        ("server.max_in_flight", server.max_in_flight),
        ("server.max_headers", server.max_headers),
        ("server.max_url_length", server.max_url_length),
        ("server.max_connections", server.max_connections),
        (
            "server.h2_max_concurrent_streams",
            usize::try_from(server.h2_max_concurrent_streams).unwrap_or(usize::MAX),
        ),
    ] {
        if value == 0 {
            return Err(invalid(key, "expected a number above zero".to_owned()));
        }
    }
    let startup_timeout = seconds("server.startup_timeout", server.startup_timeout, false)?;
    let worker_timeout = seconds("server.worker_timeout", server.worker_timeout, false)?;
    let worker_lifetime = seconds("server.worker_lifetime", server.worker_lifetime, true)?;
    let worker_lifetime_jitter = if server.worker_lifetime_jitter == 0.0 {
        Duration::ZERO
    } else {
        seconds(
            "server.worker_lifetime_jitter",
            server.worker_lifetime_jitter,
            true,
        )?
    };
    if server
        .max_worker_memory
        .is_some_and(|size| size.as_u64() == 0)
    {
        return Err(invalid(
            "server.max_worker_memory",
            "expected a size above zero, such as \"512 MiB\" (leave it out for no limit)"
                .to_owned(),
        ));
    }
    let max_head_size = usize::try_from(server.max_head_size.as_u64()).unwrap_or(usize::MAX);
    if max_head_size < 8192 {
        return Err(invalid(
            "server.max_head_size",
            "expected at least 8 KiB (8192 bytes)".to_owned(),
        ));
    }
    if server.sync_threads == 0 {
        return Err(invalid(
            "server.sync_threads",
            "expected at least 1 thread".to_owned(),
        ));
    }
    let allowed_hosts = server
        .allowed_hosts
        .as_deref()
        .map(|entries| {
            AllowedHosts::new(entries).map_err(|err| {
                let key = match err.index(entries) {
                    Some(index) => format!("server.allowed_hosts[{index}]"),
                    None => "server.allowed_hosts".to_owned(),
                };
                invalid(&key, err.to_string())
            })
        })
        .transpose()?;
    if server.body_limit.as_u64() == 0 {
        return Err(invalid(
            "server.body_limit",
            "expected a size above zero, such as \"1 MiB\" or 1048576".to_owned(),
        ));
    }

    for (key, size) in [
        (
            "server.form_max_field_size",
            Some(server.form_max_field_size),
        ),
        ("server.form_max_file_size", server.form_max_file_size),
    ] {
        if size.is_some_and(|size| size.as_u64() == 0) {
            return Err(invalid(
                key,
                "expected a size above zero, such as \"64 KiB\" or 65536".to_owned(),
            ));
        }
    }
    if server.form_max_parts == 0 {
        return Err(invalid(
            "server.form_max_parts",
            "expected a number above zero".to_owned(),
        ));
    }

    Ok(ServerConfig {
        listen,
        body_limit: server.body_limit.as_u64(),
        forms: crate::form::FormLimits {
            max_parts: server.form_max_parts,
            max_field_size: server.form_max_field_size.as_u64(),
            max_file_size: server.form_max_file_size.map(|size| size.as_u64()),
            spool_threshold: server.form_spool_threshold.as_u64(),
        },
        debug: server.debug,
        shutdown_grace: Duration::from_secs_f64(server.shutdown_grace),
        sync_threads: server.sync_threads,
        event_loop: server.event_loop,
        request_timeout: (!request_timeout.is_zero()).then_some(request_timeout),
        stream_idle_timeout: (!stream_idle_timeout.is_zero()).then_some(stream_idle_timeout),
        header_timeout,
        body_timeout,
        max_in_flight: server.max_in_flight,
        max_in_flight_per_client: server.max_in_flight_per_client,
        max_headers: server.max_headers,
        max_head_size,
        max_url_length: server.max_url_length,
        cancel_on_disconnect: server.cancel_on_disconnect,
        sched_batch: server.sched_batch,
        max_connections: server.max_connections,
        send_timeout,
        response_buffer: usize::try_from(server.response_buffer.as_u64()).unwrap_or(usize::MAX),
        connection_response_buffer: usize::try_from(server.connection_response_buffer.as_u64())
            .unwrap_or(usize::MAX),
        request_buffer: usize::try_from(server.request_buffer.as_u64()).unwrap_or(usize::MAX),
        h2_max_concurrent_streams: server.h2_max_concurrent_streams,
        workers: server.workers,
        balance: server.balance,
        startup_timeout,
        worker_timeout,
        max_requests: (server.max_requests > 0).then_some(server.max_requests),
        max_requests_jitter: server.max_requests_jitter,
        max_worker_memory: server.max_worker_memory.map(|size| size.as_u64()),
        worker_lifetime: (!worker_lifetime.is_zero()).then_some(worker_lifetime),
        worker_lifetime_jitter,
        allowed_hosts,
    })
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
