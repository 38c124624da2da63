//! Starting one worker: a fresh process of this binary (`fork` + `exec`, nothing of the
//! supervisor's state carried over but two descriptors), and the task that watches it.
//!
//! The worker gets its slot's listening socket as descriptor 3 and its end of the control
//! channel as descriptor 4, named in its environment (`workers::env`). It runs in a process
//! group of its own, so a Ctrl-C at the terminal reaches only the supervisor, which drains the
//! workers in order; and it gets SIGTERM if the supervisor dies, so no worker outlives it.
//!
//! Its exit is awaited through a pidfd (readable once the process has exited), not tokio's
//! `process` module: that module's driver looks for exited children each time a runtime
//! thread parks, in every process that links it, workers included (about 140 instructions of
//! each `/hello` request, by callgrind).

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use crate::control::{MAX_LINE, Message};
use crate::env;

/// Descriptor numbers in the worker.
const LISTEN_FD: RawFd = 3;
const CONTROL_FD: RawFd = 4;

/// What the watch task of worker `worker` reports.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) worker: u64,
    pub(crate) kind: EventKind,
}

#[derive(Debug)]
pub(crate) enum EventKind {
    Message(Message),
    Exited(ExitStatus),
}

/// What a worker is started with.
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [OsString],
    pub(crate) worker: u64,
    pub(crate) slot: usize,
    pub(crate) listener: &'a TcpListener,
    pub(crate) env: Vec<(&'static str, String)>,
}

/// Starts a worker; returns its pid. Its messages and its exit arrive on `events`.
pub(crate) fn spawn(launch: Launch<'_>, events: UnboundedSender<Event>) -> std::io::Result<u32> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut command = std::process::Command::new(launch.program);
    command
        .args(launch.args)
        .envs(launch.env)
        .env(env::WORKER, launch.worker.to_string())
        .env(env::SLOT, launch.slot.to_string())
        .env(env::LISTEN_FD, LISTEN_FD.to_string())
        .env(env::CONTROL_FD, CONTROL_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let listen = launch.listener.as_raw_fd();
    let control = theirs.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec, and calls only
    // async-signal-safe functions (fcntl, dup2, close, prctl, getppid, setpgid) on
    // descriptors that are open in the child, allocating nothing.
    unsafe {
        command.pre_exec(move || place_descriptors(listen, control, parent));
    }
    let mut child = command.spawn()?;
    drop(theirs);
    let pid = child.id();
    let exit = match Exit::watch(pid) {
        Ok(exit) => exit,
        Err(err) => {
            // Unwatched, it would serve on unsupervised: stop it.
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
    };
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    let worker = launch.worker;
    tokio::spawn(async move {
        let status = watch(worker, &mut child, &exit, stream, &events).await;
        let _ = events.send(Event {
            worker,
            kind: EventKind::Exited(status),
        });
    });
    Ok(pid)
}

/// A child's exit, as a descriptor the runtime can wait on.
struct Exit(AsyncFd<OwnedFd>);

impl Exit {
    fn watch(pid: u32) -> std::io::Result<Self> {
        let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
        // SAFETY: pidfd_open takes a pid and flags, no pointers; a non-negative result is a
        // new descriptor owned by nobody else.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = RawFd::try_from(fd).map_err(std::io::Error::other)?;
        // SAFETY: `fd` was just opened and is owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which closes it only when dropped;
        // its `as_raw_fd` is the same descriptor throughout.
        let registered =
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        registered.map(Self).map_err(|err| err.into())
    }

    /// Waits until `child` has exited and reaps it.
    async fn wait(&self, child: &mut std::process::Child) -> std::io::Result<ExitStatus> {
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            self.0.readable().await?.clear_ready();
        }
    }
}

/// In the child: the two descriptors at their numbers (without close-on-exec), the death
/// signal, the process group.
fn place_descriptors(listen: RawFd, control: RawFd, parent: libc::pid_t) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    };
    // SAFETY: async-signal-safe calls on descriptors open in this (forked) process; the
    // copies above 10 keep placing one from overwriting the other.
    unsafe {
        let listen_copy = check(libc::fcntl(listen, libc::F_DUPFD, 10))?;
        let control_copy = check(libc::fcntl(control, libc::F_DUPFD, 10))?;
        check(libc::dup2(listen_copy, LISTEN_FD))?;
        check(libc::dup2(control_copy, CONTROL_FD))?;
        libc::close(listen_copy);
        libc::close(control_copy);
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM))?;
        // The supervisor may have died before the death signal was armed.
        if libc::getppid() != parent {
            return Err(std::io::Error::other("the supervisor exited"));
        }
        check(libc::setpgid(0, 0))?;
    }
    Ok(())
}

/// Forwards the worker's messages until it exits; returns how it exited.
async fn watch(
    worker: u64,
    child: &mut std::process::Child,
    exit: &Exit,
    mut stream: tokio::net::UnixStream,
    events: &UnboundedSender<Event>,
) -> ExitStatus {
    let mut pending = Vec::with_capacity(256);
    let mut buffer = [0u8; 4096];
    let mut open = true;
    let forward = |pending: &mut Vec<u8>, events: &UnboundedSender<Event>| {
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(message) = std::str::from_utf8(&line[..end])
                .ok()
                .and_then(Message::parse)
            {
                let _ = events.send(Event {
                    worker,
                    kind: EventKind::Message(message),
                });
            }
        }
        // Whatever writes to the channel without newlines is dropped, not kept.
        if pending.len() > MAX_LINE {
            pending.clear();
        }
    };
    let status = loop {
        tokio::select! {
            read = stream.read(&mut buffer), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => {
                    pending.extend_from_slice(&buffer[..n]);
                    forward(&mut pending, events);
                }
            },
            status = exit.wait(child) => break status,
        }
    };
    // What the worker sent just before exiting (its error, its figures) may still be unread.
    let rest = async {
        while open {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => open = false,
                Ok(n) => {
                    pending.extend_from_slice(&buffer[..n]);
                    forward(&mut pending, events);
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), rest).await;
    status.unwrap_or_else(|err| {
        tracing::warn!("cannot wait for worker {worker}: {err}");
        std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
    })
}

/// `exit status 1`, `killed by SIGSEGV (signal 11)`.
pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let name = match signal {
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGKILL => "SIGKILL",
                libc::SIGTERM => "SIGTERM",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                libc::SIGINT => "SIGINT",
                libc::SIGFPE => "SIGFPE",
                libc::SIGILL => "SIGILL",
                _ => "signal",
            };
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by {name} (signal {signal}{core})")
        }
        None => "ended".to_owned(),
    }
}
