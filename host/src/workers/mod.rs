//! Worker processes: which part a process plays in a server that uses every core.
//!
//! With `server.workers` above 1 (or `"auto"`), `pyhost serve` becomes a **supervisor** that
//! never starts Python: it binds the listening sockets, keeps them for its whole life, and runs
//! each worker as a fresh process of the same binary (an `exec`, never a fork of a process
//! that has started Python or tokio). A **worker** is today's single process, serving on a
//! socket it inherits and telling the supervisor over a control channel when it is ready, then
//! that its event loop still runs (`heartbeat`). The supervisor replaces workers that die,
//! hang or reach a recycling limit, and rolls every slot on SIGHUP, one at a time, starting the
//! new worker and waiting for it before draining the old one (`pyhost_process::supervisor`).
//!
//! An application embedding pyhost gets the same by calling [`role`] first thing in `main`:
//!
//! ```no_run
//! use pyhost::workers::{self, Role};
//! use pyhost::{Config, Host, ShutdownSignals};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("pyhost.toml".as_ref())?;
//! let listener = match workers::role(&config)? {
//!     // More than one worker: this process supervises, re-executing this binary with the
//!     // same arguments for each worker, and returns when the server has stopped.
//!     Role::Supervisor(supervisor) => return Ok(supervisor.run()?),
//!     // Started by a supervisor: serve on the socket it handed over.
//!     Role::Worker(worker) => worker.listener()?,
//!     Role::Single => std::net::TcpListener::bind(config.server.listen)?,
//! };
//! let runtime = tokio::runtime::Runtime::new()?;
//! let signals = runtime.block_on(async { ShutdownSignals::install() })?;
//! let host = Host::start(config)?;
//! runtime.block_on(async {
//!     let listener = tokio::net::TcpListener::from_std(listener)?;
//!     host.serve(listener, signals.recv()).await;
//!     Ok::<_, std::io::Error>(())
//! })?;
//! host.shutdown();
//! # Ok(())
//! # }
//! ```
//!
//! Everything else a worker needs happens inside [`crate::Host`]: it reports readiness once
//! its loop runs, beats, asks to be recycled after `server.max_requests`, reports a start-up
//! failure, and uses the key-value store the supervisor chose.

pub(crate) mod heartbeat;
pub(crate) mod link;

pub(crate) use pyhost_process::{control, env};

use std::fmt;

pub use link::LinkError;
use pyhost_core::config::{Config, Workers};
pub use pyhost_process::supervisor::{Supervisor, SupervisorError};

/// The part this process plays.
#[derive(Debug)]
pub enum Role {
    /// One process serving alone (`server.workers = 1`): no supervisor, no extra cost.
    Single,
    /// Supervise worker processes; see [`Supervisor::run`].
    Supervisor(Box<Supervisor>),
    /// A worker started by a supervisor.
    Worker(Worker),
}

/// Decides the part this process plays: a worker when a supervisor started it, otherwise a
/// supervisor when `config` asks for more than one worker, otherwise a single process.
///
/// Call it first thing in `main`, before starting any thread: a supervisor re-executes the
/// binary, and its workers must not inherit what a running process has.
pub fn role(config: &Config) -> Result<Role, LinkError> {
    if let Some(worker) = worker()? {
        return Ok(Role::Worker(worker));
    }
    let count = resolve(config.server.workers);
    if count > 1 {
        pyhost_process::logging::set_process_tag("supervisor".to_owned());
        Ok(Role::Supervisor(Box::new(Supervisor::with_workers(
            config.clone(),
            count,
        ))))
    } else {
        Ok(Role::Single)
    }
}

/// This process as a worker, when a supervisor started it as one (whatever the config says):
/// for reporting a failure that comes before [`role`] can be asked, a config that no longer
/// loads for instance.
pub fn worker() -> Result<Option<Worker>, LinkError> {
    Ok(link::get()?.map(|link| {
        pyhost_process::logging::set_process_tag(format!("worker={}", link.worker));
        Worker { link }
    }))
}

/// How many workers `workers` means on this machine (`"auto"`: the CPUs this process may
/// use, see [`Workers::Auto`]).
pub fn resolve(workers: Workers) -> usize {
    match workers {
        Workers::Count(count) => count,
        Workers::Auto => pyhost_process::supervisor::cpus::available(),
    }
}

/// This process as a worker: its number and the socket it serves on.
pub struct Worker {
    link: &'static link::Link,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("number", &self.link.worker)
            .field("slot", &self.link.slot)
            .finish()
    }
}

impl Worker {
    /// The worker's number: 1 for the first the supervisor started, unique for the server's
    /// life (a replacement gets a new one).
    pub fn number(&self) -> u64 {
        self.link.worker
    }

    /// The listening socket of this worker's slot (non-blocking, for
    /// `tokio::net::TcpListener::from_std`). It can be taken once.
    pub fn listener(&self) -> std::io::Result<std::net::TcpListener> {
        self.link.take_listener()
    }

    /// Tells the supervisor why this worker could not start, before exiting non-zero. A
    /// failure of [`crate::Host::start`] is reported without this; call it for failures of
    /// your own (a config that no longer loads, say). The supervisor logs it, and exits with
    /// it when no worker could start at all.
    pub fn report_failure(&self, error: &dyn fmt::Display) {
        self.link.send(&control::Message::Error(error.to_string()));
    }
}
