//! The hand-off from tokio to the interpreter's loop thread: a batch queue plus a wake-up
//! socket the event loop watches with `add_reader`.
//!
//! Producers (tokio workers) never take the GIL: they push under a short mutex and write one
//! byte only when the queue goes from idle to armed, so a burst of requests costs the loop one
//! wake-up, not one per request.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A multi-producer, single-consumer batch queue with an fd-based wake-up.
pub struct WakeQueue<T> {
    items: Mutex<Vec<T>>,
    armed: AtomicBool,
    stopping: AtomicBool,
    writer: UnixStream,
    reader: UnixStream,
}

impl<T> WakeQueue<T> {
    /// Creates the queue and its socket pair.
    pub fn new() -> std::io::Result<Self> {
        let (writer, reader) = UnixStream::pair()?;
        writer.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        Ok(Self {
            items: Mutex::new(Vec::with_capacity(256)),
            armed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            writer,
            reader,
        })
    }

    /// The descriptor the event loop watches for readability.
    pub fn fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Queues an item and wakes the consumer if it is not already due to wake.
    pub fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(item);
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.wake();
        }
    }

    /// Asks the consumer to stop; it sees this on its next wake-up.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Takes everything queued. Called by the consumer when the fd is readable.
    pub fn drain(&self) -> Vec<T> {
        let mut sink = [0u8; 64];
        while matches!((&self.reader).read(&mut sink), Ok(n) if n > 0) {}
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
        // A full socket buffer means a wake-up is already pending; nothing is lost.
        let _ = (&self.writer).write(&[1]);
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
        let mut buf = [0u8; 8];
        let n = (&queue.reader).read(&mut buf).unwrap();
        assert_eq!(n, 1, "one wake-up byte for a burst");
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
