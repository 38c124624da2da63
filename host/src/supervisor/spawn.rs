//! Starting one worker: a fresh process of this binary (`fork` + `exec`, nothing of the
//! supervisor's state carried over but two descriptors), and the task that watches it.
//!
//! The worker gets its slot's listening socket as descriptor 3 and its end of the control
//! channel as descriptor 4, named in its environment (`workers::env`). It runs in a process
//! group of its own, so a Ctrl-C at the terminal reaches only the supervisor, which drains the
//! workers in order; and it gets SIGTERM if the supervisor dies, so no worker outlives it.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use crate::workers::control::{MAX_LINE, Message};
use crate::workers::env;

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
    let mut command = tokio::process::Command::new(launch.program);
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
    let pid = child.id().unwrap_or_default();
    ours.set_nonblocking(true)?;
    let stream = tokio::net::UnixStream::from_std(ours)?;
    let worker = launch.worker;
    tokio::spawn(async move {
        let status = watch(worker, &mut child, stream, &events).await;
        let _ = events.send(Event {
            worker,
            kind: EventKind::Exited(status),
        });
    });
    Ok(pid)
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
    child: &mut tokio::process::Child,
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
            status = child.wait() => break status,
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
