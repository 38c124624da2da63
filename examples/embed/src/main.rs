//! A Rust service that embeds pyhost.
//!
//! It has Rust routes of its own (`/rust/...`), mounts a Python plugin's routes beside them
//! through [`pyhost::Host::service`], and offers the plugin host functions: `greet` (sync),
//! `slow_double` (async, runs on tokio; cancelled when the plugin's handler is cancelled) and
//! `slow_lookup` (sync and slow: a blocking call a plugin awaits with `host.call_async`, which
//! runs it on a blocking thread instead of the event loop).
//!
//! With `--workers N` (or `server.workers` in the config) it runs as a supervisor that starts
//! N copies of itself, each a worker embedding its own interpreter, the way `pyhost serve`
//! does: [`pyhost::workers::role`] is asked first thing, and says which part this process
//! plays.
//!
//! ```text
//! embed-example [serve] [--config FILE] [--listen HOST:PORT] [--workers N|auto]
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use pyhost::workers::{self, Role};
use pyhost::{Config, Host, HostFunctions, ShutdownSignals};
use serde_json::{Value, json};

/// How many `slow_double` calls were dropped before finishing (their handler was cancelled).
#[derive(Default)]
struct Counters {
    /// `slow_lookup` calls begun, and finished.
    lookups: AtomicU64,
    lookups_done: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
}

/// Counts a `slow_double` call as cancelled if dropped before it finishes.
struct CancelProbe {
    counters: Arc<Counters>,
    done: bool,
}

impl Drop for CancelProbe {
    fn drop(&mut self) {
        if !self.done {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn host_functions(counters: Arc<Counters>) -> HostFunctions {
    let mut functions = HostFunctions::default();
    // The cheapest possible round trip, for the host-call micro-benchmark.
    functions.register("noop", |_data: Value| Ok(Value::Null));
    functions.register("greet", |data: Value| {
        let name = data
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| "greet expects {\"name\": <string>}".to_owned())?;
        Ok(json!({ "greeting": format!("Hello, {name}!"), "from": "rust" }))
    });
    // A blocking function of the kind a service has (a synchronous client, a slow disk).
    let lookups = counters.clone();
    functions.register("slow_lookup", move |data: Value| {
        lookups.lookups.fetch_add(1, Ordering::Relaxed);
        let ms = data.get("ms").and_then(Value::as_u64).unwrap_or(50);
        std::thread::sleep(Duration::from_millis(ms));
        lookups.lookups_done.fetch_add(1, Ordering::Relaxed);
        Ok(json!({ "looked_up": data.get("key").cloned().unwrap_or(Value::Null) }))
    });
    functions.register_async("slow_double", move |data: Value| {
        let counters = counters.clone();
        async move {
            let n = data
                .get("n")
                .and_then(Value::as_i64)
                .ok_or_else(|| "slow_double expects {\"n\": <int>, \"ms\": <int>}".to_owned())?;
            let ms = data.get("ms").and_then(Value::as_u64).unwrap_or(10);
            counters.started.fetch_add(1, Ordering::Relaxed);
            let mut probe = CancelProbe {
                counters: counters.clone(),
                done: false,
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            probe.done = true;
            counters.finished.fetch_add(1, Ordering::Relaxed);
            Ok(json!({ "result": n * 2 }))
        }
    });
    functions
}

fn main() -> ExitCode {
    let mut config_path = "pyhost.toml".to_owned();
    let mut listen: Option<String> = None;
    let mut worker_count: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config_path = args.next().unwrap_or_default(),
            "--listen" => listen = args.next(),
            "--workers" => worker_count = args.next(),
            // Accepted for symmetry with `pyhost serve`; serving is all this binary does.
            "serve" => {}
            "--help" | "-h" => {
                println!("embed-example [--config FILE] [--listen HOST:PORT] [--workers N|auto]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("embed-example: unknown argument {other:?} (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    match run(&config_path, listen.as_deref(), worker_count.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("embed-example: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    config_path: &str,
    listen: Option<&str>,
    worker_count: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    // pyhost logs through `tracing`, and so do the plugins' `host.log` and `logging` records;
    // its timer names the worker that wrote each record.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_timer(pyhost::logging::Timer)
        .with_ansi(false)
        .init();
    let mut config = Config::load(config_path.as_ref())?;
    if let Some(listen) = listen {
        config.server.listen = pyhost::config::parse_listen(listen)?;
    }
    if let Some(count) = worker_count {
        config.server.workers = pyhost::config::Workers::parse(count)?;
    }
    // Before any thread starts: a supervisor re-executes this binary for each worker.
    let listener = match workers::role(&config)? {
        Role::Supervisor(supervisor) => return Ok(supervisor.run()?),
        Role::Worker(worker) => Some(worker.listener()?),
        Role::Single => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    // Signals before the interpreter starts, so Python never takes SIGINT for itself.
    let signals = runtime.block_on(async { ShutdownSignals::install() })?;
    let counters = Arc::new(Counters::default());
    // Inside the runtime context: async host functions are spawned on this runtime.
    let host = {
        let _context = runtime.enter();
        Host::start_with(config, host_functions(counters.clone()))?
    };

    let stats = counters.clone();
    let app = Router::new()
        .route("/rust/health", get(|| async { "ok" }))
        .route(
            "/rust/slow-double-stats",
            get(move || {
                let stats = stats.clone();
                async move {
                    axum::Json(json!({
                        "started": stats.started.load(Ordering::Relaxed),
                        "finished": stats.finished.load(Ordering::Relaxed),
                        "cancelled": stats.cancelled.load(Ordering::Relaxed),
                        "lookups": stats.lookups.load(Ordering::Relaxed),
                        "lookups_done": stats.lookups_done.load(Ordering::Relaxed),
                    }))
                }
            }),
        )
        .fallback_service(host.service());

    runtime.block_on(async {
        let listener = match listener {
            Some(inherited) => tokio::net::TcpListener::from_std(inherited)?,
            None => {
                let listener = tokio::net::TcpListener::bind(host.config().server.listen).await?;
                // A supervisor prints this line itself once every worker is ready.
                println!("listening on http://{}", listener.local_addr()?);
                listener
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(signals.recv())
            .await
    })?;
    host.shutdown();
    Ok(())
}
