//! The supervisor's state and decisions: the slots, the workers in them, and what to do when a
//! worker reports, dies, goes quiet or reaches a limit, or a signal comes. Everything here runs
//! on the supervisor's one thread; `super` feeds it events and the clock.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::jitter::Rng;
use super::spawn::{self, Event, EventKind};
use super::{SupervisorError, sockets};
use crate::control::Message;
use crate::env;
use pyhost_core::config::Config;

/// How often the supervisor looks at the conditions it cannot be woken for (heartbeats,
/// memory, lifetimes); back-off and kill deadlines wake it when they are due.
pub(super) const TICK: Duration = Duration::from_secs(1);
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

pub(super) struct Fleet {
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
    /// A fleet with no slot yet; [`Fleet::add_slot`] starts each one's worker.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: Config,
        program: PathBuf,
        args: Vec<OsString>,
        sockets: sockets::Sockets,
        run_id: String,
        kv_path: Option<PathBuf>,
        events: mpsc::UnboundedSender<Event>,
        rng: Rng,
    ) -> Self {
        Self {
            config,
            program,
            args,
            sockets,
            slots: Vec::new(),
            workers: BTreeMap::new(),
            next_worker: 1,
            run_id,
            kv_path,
            events,
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
        }
    }

    /// Whether the server has stopped: asked to, and every worker gone.
    pub(super) fn finished(&self) -> bool {
        self.stopping && self.workers.is_empty()
    }

    /// The supervisor's figures, and why it stopped if it failed.
    pub(super) fn outcome(self) -> (String, Option<SupervisorError>) {
        (
            format!(
                "workers_started={} worker_deaths={} requests={}",
                self.started, self.crashes, self.requests
            ),
            self.fatal,
        )
    }

    pub(super) fn add_slot(&mut self, socket: Option<Arc<TcpListener>>) {
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

    pub(super) fn remove_slot(&mut self) {
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

    pub(super) fn on_event(&mut self, event: Event) {
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
    pub(super) fn next_wake(&self, now: Instant) -> Instant {
        let deadlines = self.slots.iter().filter_map(|slot| slot.retry_at);
        let kills = self.workers.values().filter_map(|worker| worker.kill_at);
        // A deadline already past has been acted on (or waits for its slot to need a worker).
        deadlines
            .chain(kills)
            .filter(|&at| at > now)
            .fold(now + TICK, Instant::min)
    }

    pub(super) fn tick(&mut self, now: Instant) {
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

    pub(super) fn stop(&mut self, why: &str) {
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

    pub(super) fn reload(&mut self, why: &str) {
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
    fn this_process_has_a_resident_size() {
        assert!(resident_bytes(std::process::id()).is_some_and(|rss| rss > 0));
    }
}
