//! The supervisor: runs the workers of a server that uses more than one process, and never
//! starts Python itself.
//!
//! It binds the listening sockets once and keeps them (`sockets`), starts each worker as a
//! fresh process of this binary (`spawn`), and from then on reacts to what happens:
//!
//! - a worker says it is ready: it takes its slot, and the worker it replaces (if any) is
//!   told to drain (SIGTERM), then killed if still there after `server.shutdown_grace`;
//! - a worker dies: a new one starts in its slot at once; a slot whose workers keep dying
//!   young backs off (capped exponential) while the others serve. A worker that fails before
//!   any worker of the server was ever ready ends `serve` with its error;
//! - a worker stops beating for `server.worker_timeout`, passes `server.max_worker_memory` or
//!   `server.worker_lifetime`, or says it has served `server.max_requests`: its slot is rolled;
//! - SIGHUP (and, with `--reload`, a changed source file): the config is re-read and every slot
//!   rolled. A config that does not load, or a new worker that fails to start, leaves the old
//!   workers serving;
//! - SIGTTIN / SIGTTOU: one slot more / less;
//! - SIGTERM / SIGINT: every worker drains, and the supervisor exits once they have.
//!
//! A roll, whatever asked for it, takes one path, one slot at a time: start the new worker,
//! wait until it is ready, then drain the old one. Two slots are never down at once.
//!
//! Time: the loop wakes on events, on the next back-off or kill deadline, and once a second
//! to read the heartbeats and the workers' memory; idle, that is a few system calls a second
//! (measured: 0.017% of a CPU, `docs/workers.md`).

pub mod cpus;
mod fleet;
mod jitter;
mod kv_dir;
mod reload;
mod sockets;
mod spawn;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use fleet::{Fleet, TICK};
use jitter::Rng;
use kv_dir::RuntimeDir;
use pyhost_core::config::Config;

/// A supervisor, ready to run; made by `pyhost::workers::role`.
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    count: usize,
    reload: bool,
    /// The workers' program and arguments; `None`: this program, with its own.
    command: Option<(PathBuf, Vec<OsString>)>,
}

/// Why the server could not be run, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The supervisor's own runtime or signal handlers.
    #[error("cannot start the supervisor: {0}")]
    Runtime(#[source] std::io::Error),
    /// The listening address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `server.listen`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program to run workers from.
    #[error("cannot find this program's executable to start workers: {0}")]
    Program(#[source] std::io::Error),
    /// No worker could start: the first failure, with the worker's own message.
    #[error("no worker could start: worker {worker} {status}{}", error.as_deref().map(|e| format!(":\n{e}")).unwrap_or_default())]
    NoWorker {
        /// The worker's number.
        worker: u64,
        /// How it ended (`exit status 1`, `killed by SIGSEGV (signal 11)`).
        status: String,
        /// What it reported before exiting (its start-up error and traceback).
        error: Option<String>,
    },
    /// `--reload` could not watch the files.
    #[error("cannot watch the handler directories for --reload: {0}")]
    Watch(String),
    /// The directory for the shared key-value store.
    #[error("cannot create {}, the key-value store the workers share (set `kv.path` to choose one): {source}", path.display())]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Supervisor {
    /// A supervisor of `count` workers for `config`: what `pyhost::workers::role` makes,
    /// and what callers that decide themselves use (`serve --reload` with one worker).
    pub fn with_workers(config: Config, count: usize) -> Self {
        Self {
            config,
            count: count.max(1),
            reload: false,
            command: None,
        }
    }

    /// Runs `program` with `args` for each worker, instead of this program with its own
    /// arguments (what the `pyhost-supervisor` binary is given by `pyhost serve`).
    #[must_use]
    pub fn worker_command(mut self, program: PathBuf, args: Vec<OsString>) -> Self {
        self.command = Some((program, args));
        self
    }

    /// Whether to roll the workers when a source file or the config changes (development).
    #[must_use]
    pub fn reload_on_change(mut self, reload: bool) -> Self {
        self.reload = reload;
        self
    }

    /// How many workers it starts.
    pub fn workers(&self) -> usize {
        self.count
    }

    /// Runs the server until SIGTERM or SIGINT, then drains every worker and returns.
    ///
    /// Workers are this program (`/proc/self/exe`) run again with the same arguments; each
    /// sees `pyhost::workers::Role::Worker`. Prints `listening on http://ADDR` on stdout once
    /// every worker is ready.
    pub fn run(self) -> Result<(), SupervisorError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(SupervisorError::Runtime)?;
        runtime.block_on(self.serve())
    }

    async fn serve(self) -> Result<(), SupervisorError> {
        let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Runtime)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Runtime)?;
        let mut hangup = signal(SignalKind::hangup()).map_err(SupervisorError::Runtime)?;
        let mut more =
            signal(SignalKind::from_raw(libc::SIGTTIN)).map_err(SupervisorError::Runtime)?;
        let mut fewer =
            signal(SignalKind::from_raw(libc::SIGTTOU)).map_err(SupervisorError::Runtime)?;

        let (program, args) = match self.command {
            Some(command) => command,
            None => (
                std::env::current_exe().map_err(SupervisorError::Program)?,
                std::env::args_os().skip(1).collect(),
            ),
        };
        let addr = self.config.server.listen;
        let (sockets, first) = sockets::Sockets::bind(addr, self.config.server.balance)
            .map_err(|source| SupervisorError::Bind { addr, source })?;
        let mut rng = Rng::seeded();
        let run_id = format!("{:08x}", rng.next() as u32);
        let kv_dir = match self.config.kv_path {
            Some(_) => None,
            None => Some(RuntimeDir::create(&run_id)?),
        };
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let _watcher = if self.reload {
            Some(
                reload::watch(&self.config, changes_tx)
                    .map_err(|e| SupervisorError::Watch(e.to_string()))?,
            )
        } else {
            drop(changes_tx);
            None
        };
        tracing::info!(
            "supervising {} workers on {} ({})",
            self.count,
            sockets.local,
            match self.config.server.balance {
                pyhost_core::config::Balance::Reuseport => "one SO_REUSEPORT socket per worker",
                pyhost_core::config::Balance::Shared => "one shared socket",
            }
        );
        let kv_path = kv_dir.as_ref().map(RuntimeDir::kv_file);
        let mut fleet = Fleet::new(
            self.config,
            program,
            args,
            sockets,
            run_id,
            kv_path,
            events_tx,
            rng,
        );
        fleet.add_slot(Some(first));
        for _ in 1..self.count {
            fleet.add_slot(None);
        }
        // The tick's time is kept across iterations: events (two heartbeats a second per
        // worker) must not keep pushing it back.
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wake = fleet.next_wake(Instant::now()).min(next_tick);
            tokio::select! {
                Some(event) = events.recv() => fleet.on_event(event),
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= next_tick {
                        next_tick = now + TICK;
                    }
                    fleet.tick(now);
                }
                _ = terminate.recv() => fleet.stop("SIGTERM"),
                _ = interrupt.recv() => fleet.stop("SIGINT"),
                _ = hangup.recv() => fleet.reload("SIGHUP"),
                Some(path) = changes.recv() => fleet.reload(&format!("a change to {path}")),
                _ = more.recv() => fleet.add_slot(None),
                _ = fewer.recv() => fleet.remove_slot(),
            }
            if fleet.finished() {
                break;
            }
        }
        let (figures, fatal) = fleet.outcome();
        eprintln!("pyhost supervisor stats: {figures}");
        drop(kv_dir);
        match fatal {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
