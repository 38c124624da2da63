//! CPU scheduling policy for the server's threads.
//!
//! A request crosses two threads: a tokio worker parses it and hands it to the loop thread,
//! which runs the handler and hands the reply back. Under Linux's default policy a thread
//! woken by the other usually preempts it at once, so when the two share a core each request
//! costs a pair of context switches and the loop wakes for one or two requests at a time.
//! Under `SCHED_BATCH` a woken thread waits until the running one blocks or uses up its slice:
//! the worker reads every ready request before the loop runs, and the loop finishes its whole
//! batch before the worker writes the replies. On one core that cut the CPU cost of a
//! `GET /hello` from about 16 to 12.5 microseconds (see the README's Performance section).
//!
//! The policy only changes how runnable threads of equal priority take turns; it needs no
//! privileges and leaves the nice value alone.

use pyhost_core::config::ServerConfig;

/// Applies `server.sched_batch` to the calling thread (and the threads it starts later). A
/// failure is logged, not fatal: the server works under any policy, only slower.
pub fn apply(server: &ServerConfig) {
    if !server.sched_batch {
        return;
    }
    if let Err(err) = use_batch_policy() {
        tracing::warn!("could not switch to the SCHED_BATCH scheduling policy: {err}");
    }
}

/// Switches the calling thread to `SCHED_BATCH`. Threads it starts afterwards inherit the
/// policy, so calling this first thing in `main` covers the whole process.
///
/// On systems other than Linux this does nothing.
pub fn use_batch_policy() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 names the calling thread; `param` is a live, initialised struct the
        // call only reads.
        let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
