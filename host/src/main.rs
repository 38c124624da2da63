//! The `pyhost` command: a thin CLI over the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pyhost::workers::{Role, Supervisor, Worker};
use pyhost::{Config, Host, ShutdownSignals, StartupError};

// Request data is allocated on a tokio worker and freed on the loop thread, and replies the
// other way round; glibc's malloc pays for that cross-thread traffic in arena locking and
// consolidation (about 8% of the CPU of a request), mimalloc's per-thread free lists do not.
// Without transparent huge pages its peak RSS stays within about 1 MiB of glibc's. The
// allocator is the binary's choice: the library leaves it to the application embedding it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (the sys crate names no constant for it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Returns freed memory to the OS 10 ms after it falls free, as mimalloc 2 did, instead of
/// mimalloc 3's 1 s. When a load generator replaced its 1,000 connections at once, the old
/// connections' memory was still held while the new ones were allocated: peak RSS rose from
/// 51 to 58-65 MiB for about half a second (`bench/`, sleep50). At 10 ms the peak is gone and
/// CPU per request is unchanged. `MIMALLOC_PURGE_DELAY` in the environment still wins.
///
/// Python's own large objects (a response body a handler builds, say) come from glibc's
/// malloc, whose mmap threshold grows to the largest block freed so far: after the first 5 MiB
/// body, every later one came from the heap and stayed resident after it was freed. With 200
/// clients not reading a 5 MiB body made per request, that held 93-98 MiB at the peak (the
/// responses themselves: 60 MiB). Fixed at 1 MiB, blocks that large are mapped and unmapped
/// one by one, and the peak is what the responses hold.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: stores one value in mimalloc's option table, first thing in `main`, before
        // any other thread exists to read it; the index is checked by the test below.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: sets one glibc malloc parameter, first thing in `main`, before any other
        // thread exists; it takes no pointers.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    }
}

/// Hands back to the OS the pages glibc's malloc still holds for what start-up freed: the
/// interpreter's imports and the app's loading allocate through it (Rust's allocations go to
/// mimalloc), and glibc only gives back memory at the top of a heap on its own. Measured on the
/// benchmark app: 0.1-0.2 MiB less anonymous memory, at idle and at 64 connections.
fn release_startup_garbage() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only walks glibc's arenas under their locks; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[derive(Parser)]
#[command(
    name = "pyhost",
    version,
    about = "Serve a Python handler package from an embedded interpreter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the handler package over HTTP.
    Serve {
        /// The config file.
        #[arg(long, short, default_value = "pyhost.toml")]
        config: PathBuf,
        /// Listen address HOST:PORT, overriding `server.listen` (port 0 picks a free port).
        #[arg(long, value_parser = parse_listen)]
        listen: Option<std::net::SocketAddr>,
        /// Worker processes, N or `auto` (one per usable CPU), overriding `server.workers`.
        #[arg(long, value_parser = pyhost::config::Workers::parse)]
        workers: Option<pyhost::config::Workers>,
        /// Restart the workers when the config or a handler source file changes (development).
        #[arg(long)]
        reload: bool,
    },
    /// Print the route table: method, path, handler and declared parameters.
    Routes {
        /// The config file.
        #[arg(long, short, default_value = "pyhost.toml")]
        config: PathBuf,
    },
    /// Load the config and the handler package, report problems, exit non-zero on any.
    Check {
        /// The config file.
        #[arg(long, short, default_value = "pyhost.toml")]
        config: PathBuf,
    },
}

fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    pyhost::config::parse_listen(text)
}

fn main() -> ExitCode {
    tune_allocator();
    // Every connection is a descriptor: take what the hard limit allows before anything
    // opens one. `check` reports the outcome; `serve` logs the connection limit it gives.
    let fd_limit = pyhost::server::fd_limit::raise();
    let cli = Cli::parse();
    pyhost::logging::init();
    if let Err(err) = &fd_limit {
        tracing::warn!("could not raise the open-files limit: {err}");
    }
    let outcome = match cli.command {
        Command::Serve {
            config,
            listen,
            workers,
            reload,
        } => serve(&config, listen, workers, reload),
        Command::Routes { config } => routes(&config).map_err(CliError::from),
        Command::Check { config } => check(&config, &fd_limit).map_err(CliError::from),
    };
    match outcome {
        Ok(code) => code,
        // A worker's supervisor prints its error, with the worker's number.
        Err(CliError::Reported) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pyhost: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Supervisor(#[from] pyhost::workers::SupervisorError),
    #[error(transparent)]
    Worker(#[from] pyhost::workers::LinkError),
    /// Already told to the supervisor, which reports it.
    #[error("reported to the supervisor")]
    Reported,
}

fn serve(
    path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    workers: Option<pyhost::config::Workers>,
    reload: bool,
) -> Result<ExitCode, CliError> {
    let worker = pyhost::workers::worker()?;
    let mut config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            return Err(match &worker {
                Some(worker) => {
                    worker.report_failure(&err);
                    CliError::Reported
                }
                None => StartupError::from(err).into(),
            });
        }
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let Some(workers) = workers {
        config.server.workers = workers;
    }
    match pyhost::workers::role(&config)? {
        Role::Worker(worker) => serve_worker(config, &worker),
        Role::Supervisor(supervisor) => {
            become_supervisor(path, listen, supervisor.workers(), reload);
            supervisor.reload_on_change(reload).run()?;
            Ok(ExitCode::SUCCESS)
        }
        Role::Single if reload => {
            Supervisor::with_workers(config, 1)
                .reload_on_change(true)
                .run()?;
            Ok(ExitCode::SUCCESS)
        }
        Role::Single => serve_single(config).map_err(CliError::from),
    }
}

/// Replaces this process with the `pyhost-supervisor` binary beside it, which runs this one
/// for each worker with the same arguments. It links no interpreter, so the supervisor that
/// lives as long as the server is a few MiB instead of this binary's share of libpython and
/// its own code (`docs/workers.md`). Returns only when it cannot: then this process
/// supervises, as an embedding application's does.
fn become_supervisor(
    config: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
    workers: usize,
    reload: bool,
) {
    use std::os::unix::process::CommandExt;
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let supervisor = program.with_file_name("pyhost-supervisor");
    if !supervisor.is_file() {
        tracing::debug!(
            "no {} beside this binary: supervising in this process",
            supervisor.display()
        );
        return;
    }
    let mut command = std::process::Command::new(&supervisor);
    command
        .arg("--program")
        .arg(&program)
        .arg("--config")
        .arg(config)
        .arg("--workers")
        .arg(workers.to_string());
    if let Some(listen) = listen {
        command.arg("--listen").arg(listen.to_string());
    }
    if reload {
        command.arg("--reload");
    }
    command.arg("--").args(std::env::args_os().skip(1));
    let err = command.exec();
    tracing::warn!(
        "cannot run {}: {err}; supervising in this process",
        supervisor.display()
    );
}

/// A worker of a supervised server: serves on the socket it inherited. Its start-up error
/// goes to the supervisor (`Host::start` sends it), which prints it.
fn serve_worker(config: Config, worker: &Worker) -> Result<ExitCode, CliError> {
    let reported = |err: std::io::Error| {
        worker.report_failure(&format!("cannot take the listening socket: {err}"));
        CliError::Reported
    };
    let listener = worker.listener().map_err(reported)?;
    let (runtime, signals) = runtime_with_signals(&config)?;
    let host = Host::start(config).map_err(|_| CliError::Reported)?;
    release_startup_garbage();
    let drained = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(reported)?;
        tracing::info!("serving {} routes", host.routes().len());
        Ok::<_, CliError>(host.serve(listener, signals.recv()).await)
    })?;
    finish(
        &host,
        runtime,
        drained,
        &format!("worker={} ", worker.number()),
    );
    Ok(ExitCode::SUCCESS)
}

/// One process serving alone, as it always has.
fn serve_single(config: Config) -> Result<ExitCode, StartupError> {
    let (runtime, signals) = runtime_with_signals(&config)?;
    let host = Host::start(config)?;
    release_startup_garbage();
    let addr = host.config().server.listen;
    let drained = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        tracing::info!("serving {} routes", host.routes().len());
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{local}");
        let _ = stdout.flush();
        drop(stdout);
        Ok::<_, StartupError>(host.serve(listener, signals.recv()).await)
    })?;
    finish(&host, runtime, drained, "");
    Ok(ExitCode::SUCCESS)
}

/// The I/O runtime, with the shutdown signals installed before the interpreter starts, and
/// the scheduling policy applied before any thread starts, so that all of them inherit it.
fn runtime_with_signals(
    config: &Config,
) -> Result<(tokio::runtime::Runtime, ShutdownSignals), StartupError> {
    pyhost::sched::apply(&config.server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pyhost-io")
        .build()
        .map_err(StartupError::Runtime)?;
    let signals = runtime
        .block_on(async { ShutdownSignals::install() })
        .map_err(StartupError::Runtime)?;
    Ok((runtime, signals))
}

/// After the drain: stops the host and prints its figures (`pyhost stats: {tag}key=value ...`).
fn finish(host: &Host, runtime: tokio::runtime::Runtime, drained: bool, tag: &str) {
    host.shutdown();
    eprintln!("pyhost stats: {tag}{}", host.stats());
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if !drained {
        tracing::warn!("exiting with requests still in flight");
    }
}

fn routes(path: &std::path::Path) -> Result<ExitCode, StartupError> {
    let config = Config::load(path)?;
    let inspection = pyhost::inspect(&config)?;
    let rows: Vec<[String; 6]> = inspection
        .routes
        .iter()
        .map(|route| {
            [
                route.method.clone(),
                route.path.clone(),
                route.plugin.clone(),
                route.handler.clone(),
                if route.query.is_empty() {
                    "-".to_owned()
                } else {
                    let params: Vec<String> = route.query.iter().map(ToString::to_string).collect();
                    format!("query: {}", params.join(", "))
                },
                if route.has_body {
                    "body: json-schema"
                } else {
                    "body: -"
                }
                .to_owned(),
            ]
        })
        .collect();
    let headers = ["METHOD", "PATH", "PLUGIN", "HANDLER", "QUERY", "BODY"].map(str::to_owned);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&headers).chain(rows.iter()) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(&headers).chain(rows.iter()) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    path: &std::path::Path,
    fd_limit: &std::io::Result<pyhost::server::fd_limit::FdLimit>,
) -> Result<ExitCode, StartupError> {
    let config = Config::load(path)?;
    let inspection = pyhost::inspect(&config)?;
    let interp = &inspection.interpreter;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "config:      {}", config.source.display());
    let _ = writeln!(out, "python:      {}", interp.version.replace('\n', " "));
    let _ = writeln!(out, "executable:  {}", interp.executable);
    let _ = writeln!(
        out,
        "prefix:      {} (base {})",
        interp.prefix, interp.base_prefix
    );
    match &interp.venv {
        Some((venv, origin)) => {
            let _ = writeln!(out, "venv:        {venv} (from {origin})");
        }
        None => {
            let _ = writeln!(out, "venv:        none");
        }
    }
    let _ = writeln!(
        out,
        "sdk:         pyhost {} (bundled with the host)",
        interp.sdk
    );
    let _ = writeln!(out, "sys.path:");
    for entry in &interp.path {
        let _ = writeln!(out, "  {entry}");
    }
    for plugin in &config.plugins {
        let prefix = if plugin.prefix.is_empty() {
            "/"
        } else {
            &plugin.prefix
        };
        let _ = writeln!(
            out,
            "plugin:      {} at {prefix}: module {} (router `{}`)",
            plugin.name, plugin.module, plugin.router
        );
    }
    let _ = writeln!(out, "routes:      {}", inspection.routes.len());
    let workers = pyhost::workers::resolve(config.server.workers);
    let _ = match config.server.workers {
        pyhost::config::Workers::Auto => writeln!(
            out,
            "workers:     {workers} (auto: the CPUs this process may use, by affinity and cgroup quota)"
        ),
        pyhost::config::Workers::Count(_) => writeln!(out, "workers:     {workers}"),
    };
    match fd_limit {
        Ok(limit) => {
            let _ = writeln!(out, "open files:  {limit}");
        }
        Err(err) => {
            let _ = writeln!(out, "open files:  could not raise the limit: {err}");
        }
    }
    let _ = writeln!(out, "ok");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_is_mimallocs_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one value from mimalloc's option table; nothing writes it in tests.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3's default purge delay: another option, or another version's table,
        // reads differently.
        assert_eq!(delay, 1000);
    }
}
