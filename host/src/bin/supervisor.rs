//! `pyhost-supervisor`: the supervisor of a server with more than one worker, as its own
//! small program. `pyhost serve` becomes it (`exec`) when the config or `--workers` asks for
//! more than one worker and this binary sits beside it; it runs `pyhost` itself for each
//! worker, with the arguments `serve` was given. It links no interpreter: idle, it is a few
//! MiB resident instead of the interpreter's share of the `pyhost` binary
//! (`docs/workers.md`).
//!
//! ```text
//! pyhost-supervisor --program PATH --config FILE [--listen ADDR] --workers N [--reload] -- ARGS...
//! ```

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pyhost_core::config::{Config, parse_listen};
use pyhost_process::supervisor::Supervisor;

#[derive(Parser)]
#[command(
    name = "pyhost-supervisor",
    version,
    about = "Supervise the worker processes of a pyhost server (started by `pyhost serve`)"
)]
struct Cli {
    /// The worker program (the `pyhost` binary).
    #[arg(long)]
    program: PathBuf,
    /// The config file.
    #[arg(long)]
    config: PathBuf,
    /// Listen address, overriding `server.listen`.
    #[arg(long, value_parser = parse_listen)]
    listen: Option<std::net::SocketAddr>,
    /// How many workers.
    #[arg(long)]
    workers: usize,
    /// Roll the workers when the config or a handler source file changes.
    #[arg(long)]
    reload: bool,
    /// The arguments each worker is run with.
    #[arg(last = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pyhost_process::logging::init();
    pyhost_process::logging::set_process_tag("supervisor".to_owned());
    let mut config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("pyhost: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    let outcome = Supervisor::with_workers(config, cli.workers)
        .reload_on_change(cli.reload)
        .worker_command(cli.program, cli.args)
        .run();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pyhost: error: {err}");
            ExitCode::FAILURE
        }
    }
}
