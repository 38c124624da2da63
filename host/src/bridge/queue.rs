//! The hand-off from tokio to the interpreter's loop thread: a batch queue plus a wake-up
//! eventfd the event loop watches with `add_reader`.
//!
//! Producers (tokio workers) never take the GIL: they push under a short mutex and write one
//! byte only when the queue goes from idle to armed, so a burst of requests costs the loop one
//! wake-up, not one per request.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A multi-producer, single-consumer batch queue with an fd-based wake-up.
pub(crate) struct WakeQueue<T> {
    items: Mutex<Vec<T>>,
    armed: AtomicBool,
    stopping: AtomicBool,
    /// An eventfd: cheaper to signal than a socket pair (one counter, no buffers).
    wake_fd: OwnedFd,
}

impl<T> WakeQueue<T> {
    /// Creates the queue and its eventfd.
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd has no pointer arguments; a non-negative result is a new descriptor
        // we own from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor owned by nobody else.
        let wake_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            items: Mutex::new(Vec::with_capacity(256)),
            armed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake_fd,
        })
    }

    /// The descriptor the event loop watches for readability.
    pub(crate) fn fd(&self) -> RawFd {
        self.wake_fd.as_raw_fd()
    }

    /// Queues an item and wakes the consumer if it is not already due to wake.
    pub(crate) fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(item);
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Asks the consumer to stop; it sees this on its next wake-up.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Takes everything queued. Called by the consumer when the fd is readable.
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our own eventfd; a failed read (EAGAIN:
        // nothing pending) leaves it untouched, which is fine.
        unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
        // Disarm before taking: a push that lands after this point writes a fresh byte, so no
        // item can be left behind without a wake-up.
        self.armed.store(false, Ordering::Release);
        std::mem::take(
            &mut *self
                .items
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. It can only fail when
        // the counter would overflow, and then a wake-up is pending anyway.
        unsafe {
            libc::write(
                self.wake_fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// The pending wake-up count, consumed (for tests).
    #[cfg(test)]
    fn take_wakeups(&self) -> u64 {
        let mut counter = 0u64;
        // SAFETY: as in `drain`.
        let read = unsafe {
            libc::read(
                self.wake_fd.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if read == 8 { counter } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pushes_arrive_in_batches_with_one_wakeup() {
        let queue = WakeQueue::new().unwrap();
        queue.push(1);
        queue.push(2);
        assert_eq!(queue.take_wakeups(), 1, "one wake-up for a burst");
        assert_eq!(queue.drain(), vec![1, 2]);
        queue.push(3);
        assert_eq!(queue.drain(), vec![3]);
    }

    #[test]
    fn concurrent_producers_lose_nothing() {
        let queue = Arc::new(WakeQueue::new().unwrap());
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        queue.push(p * 1000 + i);
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        while seen.len() < 4000 {
            seen.extend(queue.drain());
        }
        for producer in producers {
            producer.join().unwrap();
        }
        seen.extend(queue.drain());
        seen.sort_unstable();
        assert_eq!(seen, (0..4000).collect::<Vec<_>>());
    }
}
