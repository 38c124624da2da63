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

pub(crate) mod cpus;
mod reload;
mod sockets;
mod spawn;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::workers::control::Message;
use crate::workers::env;
use pyhost_core::config::Config;
use spawn::{Event, EventKind};

/// How often the supervisor looks at the conditions it cannot be woken for (heartbeats,
/// memory, lifetimes); back-off and kill deadlines wake it when they are due.
const TICK: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after becoming ready counts as failing to start (its
/// slot backs off); one that lived longer is replaced at once.
const YOUNG: Duration = Duration::from_secs(1);
/// Back-off after the first failed start of a slot, doubling with each further one.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Time a draining worker gets beyond `server.shutdown_grace` to exit before it is killed
/// (its own drain ends at the grace; this covers stopping its loop and printing figures).
const EXIT_MARGIN: Duration = Duration::from_secs(3);

/// A supervisor, ready to run; made by [`crate::workers::role`].
#[derive(Debug)]
pub struct Supervisor {
    config: Config,
    count: usize,
    reload: bool,
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
    pub(crate) fn new(config: Config, count: usize) -> Self {
        Self {
            config,
            count: count.max(1),
            reload: false,
        }
    }

    /// A supervisor of `count` workers for `config`, for callers that decide themselves
    /// (`serve --reload` with one worker).
    pub fn with_workers(config: Config, count: usize) -> Self {
        Self::new(config, count)
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
    /// sees [`crate::workers::Role::Worker`]. Prints `listening on http://ADDR` on stdout once
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

        let program = std::env::current_exe().map_err(SupervisorError::Program)?;
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
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
        let mut fleet = Fleet {
            config: self.config,
            program,
            args,
            sockets,
            slots: Vec::new(),
            workers: BTreeMap::new(),
            next_worker: 1,
            run_id,
            kv_path: kv_dir.as_ref().map(RuntimeDir::kv_file),
            events: events_tx,
            rolls: VecDeque::new(),
            rolling: None,
            ever_ready: false,
            announced: false,
            stopping: false,
            fatal: None,
            rng,
            started: 0,
            crashes: 0,
            requests: 0,
        };
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
            if fleet.stopping && fleet.workers.is_empty() {
                break;
            }
        }
        eprintln!(
            "pyhost supervisor stats: workers_started={} worker_deaths={} requests={}",
            fleet.started, fleet.crashes, fleet.requests
        );
        drop(kv_dir);
        match fleet.fatal {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Why a slot is rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Reload,
    MaxRequests,
    Memory,
    Lifetime,
    Unresponsive,
}

impl Reason {
    fn describe(self) -> &'static str {
        match self {
            Reason::Reload => "reload",
            Reason::MaxRequests => "server.max_requests reached",
            Reason::Memory => "server.max_worker_memory passed",
            Reason::Lifetime => "server.worker_lifetime reached",
            Reason::Unresponsive => "no heartbeat within server.worker_timeout",
        }
    }
}

struct Slot {
    socket: Arc<TcpListener>,
    /// The ready worker taking this slot's connections.
    serving: Option<u64>,
    /// A worker started for this slot and not yet ready.
    starting: Option<u64>,
    /// Failed starts in a row.
    failures: u32,
    /// When the next start may be tried (back-off).
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Serving,
    Draining,
}

struct WorkerProc {
    slot: usize,
    pid: u32,
    state: State,
    spawned: Instant,
    ready_at: Option<Instant>,
    last_beat: Instant,
    requests: u64,
    last_error: Option<String>,
    /// When `server.worker_lifetime` (with its jitter) is up.
    retire_at: Option<Instant>,
    /// A roll of its slot has been asked for; not asked again.
    flagged: bool,
    /// When it is killed if it has not exited (draining, or not ready in time).
    kill_at: Option<Instant>,
    /// Its exit was asked for (counted as a death otherwise).
    expected_exit: bool,
}

struct Fleet {
    config: Config,
    program: PathBuf,
    args: Vec<OsString>,
    sockets: sockets::Sockets,
    slots: Vec<Slot>,
    workers: BTreeMap<u64, WorkerProc>,
    next_worker: u64,
    run_id: String,
    kv_path: Option<PathBuf>,
    events: mpsc::UnboundedSender<Event>,
    rolls: VecDeque<(usize, Reason)>,
    rolling: Option<usize>,
    ever_ready: bool,
    announced: bool,
    stopping: bool,
    fatal: Option<SupervisorError>,
    rng: Rng,
    started: u64,
    crashes: u64,
    requests: u64,
}

impl Fleet {
    fn add_slot(&mut self, socket: Option<Arc<TcpListener>>) {
        if self.stopping {
            return;
        }
        let socket = match socket.map_or_else(|| self.sockets.next(), Ok) {
            Ok(socket) => socket,
            Err(err) => {
                tracing::error!("cannot open a socket for one more worker: {err}");
                return;
            }
        };
        self.slots.push(Slot {
            socket,
            serving: None,
            starting: None,
            failures: 0,
            retry_at: None,
        });
        let slot = self.slots.len() - 1;
        if self.announced {
            tracing::info!("adding a worker: {} slots", self.slots.len());
        }
        self.steer();
        self.start(slot);
    }

    fn remove_slot(&mut self) {
        if self.stopping || self.slots.len() <= 1 {
            tracing::info!("SIGTTOU: keeping the last worker");
            return;
        }
        let index = self.slots.len() - 1;
        let slot = self.slots.remove(index);
        self.rolls.retain(|&(s, _)| s != index);
        if self.rolling == Some(index) {
            self.rolling = None;
        }
        tracing::info!("removing a worker: {} slots", self.slots.len());
        self.steer();
        let now = Instant::now();
        for worker in [slot.serving, slot.starting].into_iter().flatten() {
            self.retire(worker, now);
        }
        // The slot's socket closes with the draining worker's copy: with per-slot sockets,
        // a connection queued on it in that instant is reset (as with nginx's reuseport).
    }

    /// New connections go to the slots that have a ready worker (`sockets`).
    fn steer(&self) {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&slot| self.slots[slot].serving.is_some())
            .collect();
        if let Some(first) = self.slots.first() {
            self.sockets.steer(&first.socket, &live, self.slots.len());
        }
    }

    /// Starts a worker in `slot` (as its replacement when one serves it).
    fn start(&mut self, slot: usize) {
        let worker = self.next_worker;
        self.next_worker += 1;
        let mut env = vec![(env::RUN_ID, self.run_id.clone())];
        if let Some(max) = self.config.server.max_requests {
            let jitter = self.rng.below(self.config.server.max_requests_jitter + 1);
            env.push((env::MAX_REQUESTS, (max + jitter).to_string()));
        }
        if let Some(path) = &self.kv_path {
            env.push((env::KV_PATH, path.display().to_string()));
        }
        let launched = spawn::spawn(
            spawn::Launch {
                program: &self.program,
                args: &self.args,
                worker,
                slot,
                listener: &self.slots[slot].socket,
                env,
            },
            self.events.clone(),
        );
        let now = Instant::now();
        match launched {
            Ok(pid) => {
                self.started += 1;
                tracing::info!("worker {worker} (pid {pid}) starting in slot {slot}");
                let retire_at = self.config.server.worker_lifetime.map(|lifetime| {
                    let jitter = self.config.server.worker_lifetime_jitter;
                    let extra = jitter.mul_f64(self.rng.fraction());
                    now + lifetime + extra
                });
                self.workers.insert(
                    worker,
                    WorkerProc {
                        slot,
                        pid,
                        state: State::Starting,
                        spawned: now,
                        ready_at: None,
                        last_beat: now,
                        requests: 0,
                        last_error: None,
                        retire_at,
                        flagged: false,
                        kill_at: Some(now + self.config.server.startup_timeout),
                        expected_exit: false,
                    },
                );
                self.slots[slot].starting = Some(worker);
            }
            Err(err) => {
                tracing::error!("cannot start a worker for slot {slot}: {err}");
                self.back_off(slot, now);
            }
        }
    }

    fn back_off(&mut self, slot: usize, now: Instant) {
        let state = &mut self.slots[slot];
        state.failures += 1;
        let delay = backoff(state.failures);
        state.retry_at = Some(now + delay);
        if state.failures > 1 {
            tracing::warn!(
                "slot {slot}: {} failed starts in a row; next try in {:.1}s",
                state.failures,
                delay.as_secs_f64()
            );
        }
    }

    fn on_event(&mut self, event: Event) {
        match event.kind {
            EventKind::Message(message) => self.on_message(event.worker, message),
            EventKind::Exited(status) => self.on_exit(event.worker, status),
        }
    }

    fn on_message(&mut self, worker: u64, message: Message) {
        let Some(proc_) = self.workers.get_mut(&worker) else {
            return;
        };
        let now = Instant::now();
        match message {
            Message::Ready => {
                if proc_.state != State::Starting {
                    return;
                }
                proc_.state = State::Serving;
                proc_.ready_at = Some(now);
                proc_.last_beat = now;
                proc_.kill_at = None;
                let slot = proc_.slot;
                tracing::info!(
                    "worker {worker} ready in {:.2}s",
                    now.duration_since(proc_.spawned).as_secs_f64()
                );
                self.ever_ready = true;
                let Some(state) = self
                    .slots
                    .get_mut(slot)
                    .filter(|s| s.starting == Some(worker))
                else {
                    return;
                };
                state.starting = None;
                state.retry_at = None;
                let old = state.serving.replace(worker);
                if let Some(old) = old {
                    self.retire(old, now);
                } else {
                    self.steer();
                }
                if self.rolling == Some(slot) {
                    self.rolling = None;
                    self.next_roll();
                }
                if !self.announced && self.slots.iter().all(|s| s.serving.is_some()) {
                    self.announced = true;
                    tracing::info!("{} workers serving", self.slots.len());
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "listening on http://{}", self.sockets.local);
                    let _ = stdout.flush();
                }
            }
            Message::Beat { requests } => {
                proc_.last_beat = now;
                proc_.requests = requests;
            }
            Message::Recycle => {
                if proc_.state == State::Serving && !proc_.flagged {
                    proc_.flagged = true;
                    let slot = proc_.slot;
                    self.queue_roll(slot, Reason::MaxRequests);
                }
            }
            Message::Error(text) => proc_.last_error = Some(text),
            Message::Stats(text) => {
                if let Some(requests) = text
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("requests="))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    proc_.requests = requests;
                }
            }
        }
    }

    fn on_exit(&mut self, worker: u64, status: ExitStatus) {
        let Some(proc_) = self.workers.remove(&worker) else {
            return;
        };
        self.requests += proc_.requests;
        let how = spawn::describe(status);
        let now = Instant::now();
        let slot = proc_.slot;
        let in_slot = self
            .slots
            .get(slot)
            .is_some_and(|s| s.serving == Some(worker) || s.starting == Some(worker));
        if proc_.state == State::Draining || self.stopping || !in_slot {
            tracing::info!("worker {worker} (pid {}) exited: {how}", proc_.pid);
            return;
        }
        let error = proc_
            .last_error
            .as_deref()
            .map(|e| format!(":\n{e}"))
            .unwrap_or_default();
        if proc_.state == State::Starting {
            self.slots[slot].starting = None;
            if !self.ever_ready {
                // The error is what `serve` exits with; it is printed once, then.
                self.fatal = Some(SupervisorError::NoWorker {
                    worker,
                    status: how,
                    error: proc_.last_error,
                });
                self.stop(&format!("worker {worker} failed to start"));
                return;
            }
            tracing::error!(
                "worker {worker} (pid {}) failed to start: {how}{error}",
                proc_.pid
            );
            if self.slots[slot].serving.is_some() {
                // A roll whose new worker cannot start: the old one goes on serving.
                if self.rolling == Some(slot) {
                    self.rolling = None;
                }
                let aborted = self.rolls.len();
                self.rolls.clear();
                tracing::error!(
                    "the new worker for slot {slot} could not start: the old workers keep serving{}",
                    if aborted > 0 {
                        format!(" ({aborted} more slots not rolled)")
                    } else {
                        String::new()
                    }
                );
                if let Some(old) = self.slots[slot]
                    .serving
                    .and_then(|w| self.workers.get_mut(&w))
                {
                    old.flagged = false;
                }
            }
            self.back_off(slot, now);
        } else {
            self.crashes += 1;
            let young = proc_.ready_at.is_none_or(|t| now.duration_since(t) < YOUNG);
            tracing::error!(
                "worker {worker} (pid {}) died: {how}{error}; replacing it",
                proc_.pid
            );
            self.slots[slot].serving = None;
            self.steer();
            if self.rolling == Some(slot) {
                // Its replacement is already starting; it takes the slot when ready.
                return;
            }
            if young {
                self.back_off(slot, now);
            } else {
                self.slots[slot].failures = 0;
                self.slots[slot].retry_at = None;
            }
        }
        self.respawn_due(now);
    }

    /// Starts a worker in every slot that has none and whose back-off is over.
    fn respawn_due(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        for slot in 0..self.slots.len() {
            let state = &self.slots[slot];
            if state.serving.is_none()
                && state.starting.is_none()
                && state.retry_at.is_none_or(|at| at <= now)
            {
                self.start(slot);
            }
        }
    }

    /// When the loop must look at the clock next: a second from now, or an earlier back-off
    /// or kill deadline.
    fn next_wake(&self, now: Instant) -> Instant {
        let deadlines = self.slots.iter().filter_map(|slot| slot.retry_at);
        let kills = self.workers.values().filter_map(|worker| worker.kill_at);
        // A deadline already past has been acted on (or waits for its slot to need a worker).
        deadlines
            .chain(kills)
            .filter(|&at| at > now)
            .fold(now + TICK, Instant::min)
    }

    fn tick(&mut self, now: Instant) {
        let server = &self.config.server;
        let mut rolls = Vec::new();
        let mut kills = Vec::new();
        for (&worker, proc_) in &mut self.workers {
            if proc_.kill_at.is_some_and(|at| at <= now) {
                proc_.kill_at = None;
                kills.push(worker);
                if proc_.state == State::Starting {
                    proc_.last_error = Some(format!(
                        "not ready within server.startup_timeout ({:.0}s)",
                        server.startup_timeout.as_secs_f64()
                    ));
                }
                continue;
            }
            if proc_.state != State::Serving || proc_.flagged {
                continue;
            }
            let reason = if now.duration_since(proc_.last_beat) > server.worker_timeout {
                tracing::error!(
                    "worker {worker} (pid {}): its event loop sent no heartbeat for {:.1}s",
                    proc_.pid,
                    now.duration_since(proc_.last_beat).as_secs_f64()
                );
                Some(Reason::Unresponsive)
            } else if server
                .max_worker_memory
                .is_some_and(|max| resident_bytes(proc_.pid).is_some_and(|rss| rss > max))
            {
                Some(Reason::Memory)
            } else if proc_.retire_at.is_some_and(|at| at <= now) {
                Some(Reason::Lifetime)
            } else {
                None
            };
            if let Some(reason) = reason {
                proc_.flagged = true;
                rolls.push((proc_.slot, reason));
            }
        }
        for worker in kills {
            if let Some(proc_) = self.workers.get(&worker) {
                tracing::warn!("worker {worker} (pid {}): killing it", proc_.pid);
                send_signal(proc_.pid, libc::SIGKILL);
            }
        }
        for (slot, reason) in rolls {
            self.queue_roll(slot, reason);
        }
        self.respawn_due(now);
        if self.rolling.is_none() {
            self.next_roll();
        }
    }

    fn queue_roll(&mut self, slot: usize, reason: Reason) {
        if self.stopping || self.rolling == Some(slot) || self.rolls.iter().any(|&(s, _)| s == slot)
        {
            return;
        }
        self.rolls.push_back((slot, reason));
        if self.rolling.is_none() {
            self.next_roll();
        }
    }

    fn next_roll(&mut self) {
        while let Some((slot, reason)) = self.rolls.pop_front() {
            let Some(state) = self.slots.get(slot) else {
                continue;
            };
            if state.starting.is_some() {
                continue;
            }
            if state.retry_at.is_some_and(|at| at > Instant::now()) {
                self.rolls.push_front((slot, reason));
                return;
            }
            let current = state.serving;
            tracing::info!(
                "rolling slot {slot} ({}){}",
                reason.describe(),
                current
                    .map(|w| format!(": replacing worker {w}"))
                    .unwrap_or_default()
            );
            self.rolling = Some(slot);
            self.start(slot);
            if self.slots[slot].starting.is_none() {
                self.rolling = None;
                continue;
            }
            return;
        }
    }

    /// Tells `worker` to drain; it is killed if still there after the grace.
    fn retire(&mut self, worker: u64, now: Instant) {
        let grace = self.config.server.shutdown_grace;
        if let Some(proc_) = self.workers.get_mut(&worker) {
            if proc_.state == State::Draining {
                return;
            }
            proc_.state = State::Draining;
            proc_.expected_exit = true;
            proc_.kill_at = Some(now + grace + EXIT_MARGIN);
            send_signal(proc_.pid, libc::SIGTERM);
        }
    }

    fn stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.rolls.clear();
        self.rolling = None;
        tracing::info!(
            "{why}: draining {} workers (up to {:.1}s)",
            self.workers.len(),
            self.config.server.shutdown_grace.as_secs_f64()
        );
        let now = Instant::now();
        let workers: Vec<u64> = self.workers.keys().copied().collect();
        for worker in workers {
            self.retire(worker, now);
        }
    }

    fn reload(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        match Config::load(&self.config.source) {
            Ok(mut config) => {
                // Where and how many it serves stay as started; the rest applies now.
                config.server.listen = self.config.server.listen;
                config.server.workers = self.config.server.workers;
                config.server.balance = self.config.server.balance;
                config.kv_path = self.config.kv_path.clone();
                self.config = config;
            }
            Err(err) => {
                tracing::error!("{why}: not reloading, the workers keep serving: {err}");
                return;
            }
        }
        tracing::info!("{why}: rolling {} workers", self.slots.len());
        for slot in 0..self.slots.len() {
            self.queue_roll(slot, Reason::Reload);
        }
    }
}

/// The wait before the next start of a slot with `failures` failed starts in a row.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (BACKOFF_FIRST * factor).min(BACKOFF_MAX)
}

fn send_signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory preconditions; `pid` is a child this process started
        // and has not yet reaped (its exit event would have removed it).
        unsafe { libc::kill(pid, signal) };
    }
}

/// A process's resident memory, from `/proc/PID/statm`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// The directory holding the workers' shared key-value file when the config names none;
/// removed when the supervisor ends, so the store lives as long as the server, as the
/// in-memory store of a single process does.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create(run_id: &str) -> Result<Self, SupervisorError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!("pyhost-{}-{run_id}", std::process::id()));
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .map_err(|source| SupervisorError::RuntimeDir {
                path: path.clone(),
                source,
            })?;
        Ok(Self(path))
    }

    fn kv_file(&self) -> PathBuf {
        self.0.join("kv.sqlite3")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: jitter and run ids, nothing that needs to be unpredictable.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Self((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A number in `0.0..1.0`.
    fn fraction(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut rng = Rng::seeded();
        for _ in 0..1000 {
            assert!(rng.below(101) <= 100);
            let f = rng.fraction();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn this_process_has_a_resident_size() {
        assert!(resident_bytes(std::process::id()).is_some_and(|rss| rss > 0));
    }
}
