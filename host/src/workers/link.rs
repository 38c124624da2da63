//! The worker's end: what the supervisor handed this process when it started it (the
//! listening socket, the control socket, the worker's number) and the one way to write to
//! the control channel.
//!
//! The supervisor passes descriptors at fixed numbers and names them in the environment
//! (`LISTEN_FDS`-style): [`env::LISTEN_FD`] and [`env::CONTROL_FD`]. Both are marked
//! close-on-exec as soon as they are taken, so a handler's child processes inherit neither.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::control::Message;
use super::env;

/// This process's place in a supervised server.
#[derive(Debug)]
pub(crate) struct Link {
    /// The worker's number, unique for the life of the server (1, 2, ...).
    pub(crate) worker: u64,
    /// The slot it serves (0-based); its replacement takes the same one.
    pub(crate) slot: usize,
    /// The server run's id, shared by every worker of it.
    run_id: String,
    control: OwnedFd,
    listener: Mutex<Option<OwnedFd>>,
    /// Requests after which this worker asks to be replaced (jitter already applied).
    pub(crate) max_requests: Option<u64>,
    /// The key-value store the supervisor chose when the config names none: one file that
    /// every worker shares.
    pub(crate) kv_path: Option<PathBuf>,
}

/// Why the environment does not describe a usable worker.
#[derive(Debug, thiserror::Error)]
#[error(
    "started as a pyhost worker, but {0} (a worker is started by `pyhost serve` with `server.workers` above 1)"
)]
pub struct LinkError(String);

static LINK: OnceLock<Result<Option<Link>, String>> = OnceLock::new();

/// The link, if this process was started as a worker (read from the environment once).
pub(crate) fn get() -> Result<Option<&'static Link>, LinkError> {
    match LINK.get_or_init(Link::from_env) {
        Ok(link) => Ok(link.as_ref()),
        Err(message) => Err(LinkError(message.clone())),
    }
}

/// The link, or `None` outside a worker (and when the environment is unusable, which
/// [`get`] reports to whoever starts the worker).
pub(crate) fn current() -> Option<&'static Link> {
    get().ok().flatten()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn number<T: std::str::FromStr>(name: &str) -> Result<Option<T>, String> {
    var(name)
        .map(|text| {
            text.parse()
                .map_err(|_| format!("{name}={text:?} is not a number"))
        })
        .transpose()
}

/// Takes descriptor `fd`, which the supervisor left open across `exec`.
fn take_fd(name: &str, fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails on a closed descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(format!("{name}={fd} is not an open descriptor"));
    }
    // SAFETY: sets close-on-exec on a descriptor this process owns from here on.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (checked above) and nothing else in the process owns
    // it: the supervisor put it at this number for the worker alone, and this runs once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Link {
    fn from_env() -> Result<Option<Self>, String> {
        let Some(worker) = number::<u64>(env::WORKER)? else {
            return Ok(None);
        };
        let slot = number::<usize>(env::SLOT)?.unwrap_or(0);
        let listen_fd = number::<RawFd>(env::LISTEN_FD)?
            .ok_or_else(|| format!("{} is not set", env::LISTEN_FD))?;
        let control_fd = number::<RawFd>(env::CONTROL_FD)?
            .ok_or_else(|| format!("{} is not set", env::CONTROL_FD))?;
        let listener = take_fd(env::LISTEN_FD, listen_fd)?;
        let control = take_fd(env::CONTROL_FD, control_fd)?;
        Ok(Some(Self {
            worker,
            slot,
            run_id: var(env::RUN_ID).unwrap_or_else(|| "0".to_owned()),
            control,
            listener: Mutex::new(Some(listener)),
            max_requests: number(env::MAX_REQUESTS)?,
            kv_path: var(env::KV_PATH).map(PathBuf::from),
        }))
    }

    /// Writes `message` without blocking. A full channel (a supervisor that stopped reading)
    /// loses the message rather than stall the thread that sends it: the loop thread's
    /// heartbeat must never wait.
    pub(crate) fn send(&self, message: &Message) {
        let line = message.encode();
        // SAFETY: sends from a live buffer of `line.len()` bytes on a descriptor this process
        // owns; MSG_NOSIGNAL turns a closed peer into EPIPE instead of SIGPIPE.
        unsafe {
            libc::send(
                self.control.as_raw_fd(),
                line.as_ptr().cast(),
                line.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }

    /// The listening socket the supervisor bound for this worker's slot; once.
    pub(crate) fn take_listener(&self) -> std::io::Result<std::net::TcpListener> {
        let fd = self
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| std::io::Error::other("the worker's listener was already taken"))?;
        let listener = std::net::TcpListener::from(fd);
        // The type check a descriptor number alone cannot give: it must be a bound TCP socket.
        listener.local_addr()?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    }

    /// The prefix of this worker's request ids: the run's id and the worker's number, so ids
    /// stay unique across every worker the server ever ran.
    pub(crate) fn request_id_prefix(&self) -> String {
        format!("{}.{}", self.run_id, self.worker)
    }
}
