//! Bounded channels between tokio and the loop thread, with backpressure both ways.
//!
//! Everything that streams (a response body a handler produces, a request body it consumes,
//! websocket messages either way) crosses threads here. Each channel is a tokio `mpsc` channel
//! of a small capacity; what differs between the two sides is how they wait:
//! - the tokio side awaits as usual (tokio's own wakers; no GIL anywhere);
//! - the loop side never blocks: it tries (`try_send` / `try_recv`) and, when it cannot go on,
//!   awaits [`ready`](LoopSender::ready), an asyncio future that the other side completes by
//!   pushing a [`Message::Wake`] through the bridge's queue, the same eventfd hand-off that
//!   brings requests. A wake-up is pushed only while the loop side is waiting (one atomic swap
//!   otherwise), so a stream that flows costs no extra wake-ups.
//!
//! Items are plain Rust data (`T: Send`): Python objects never leave the loop thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use pyo3::prelude::*;
use tokio::sync::mpsc;

use crate::bridge::{Message, WakeQueue};

/// The bridge's queue, where wake-ups for the loop side go (set when the bridge starts).
static QUEUE: OnceLock<Arc<WakeQueue<Message>>> = OnceLock::new();

/// Keys naming each channel's waiting loop side.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The futures the loop side awaits, by channel key. Only the loop thread touches it.
    static WAITERS: RefCell<HashMap<u64, Py<PyAny>>> = RefCell::new(HashMap::new());
    /// The running loop's `create_future`.
    static CREATE_FUTURE: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
}

/// Connects the channels to the bridge's queue; called once, when the bridge starts.
pub(crate) fn attach(queue: Arc<WakeQueue<Message>>) {
    let _ = QUEUE.set(queue);
}

/// Makes `event_loop` the one loop-side futures belong to. Called on the loop thread before
/// it runs. GIL: held (`event_loop`).
pub(crate) fn bind_loop(event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
    let create_future = event_loop.getattr("create_future")?.unbind();
    CREATE_FUTURE.with(|slot| *slot.borrow_mut() = Some(create_future));
    Ok(())
}

/// Asks the loop thread to cancel the task of request `key`, if it still runs: a stream whose
/// client went away stops its producer this way. Any thread; no GIL.
pub(crate) fn cancel_task(key: u64) {
    if let Some(queue) = QUEUE.get() {
        queue.push(Message::Cancel(key));
    }
}

/// Completes the future the loop side of channel `key` awaits, if any. Called by the
/// dispatcher for a [`Message::Wake`]. GIL: held (`py`).
pub(crate) fn wake(py: Python<'_>, key: u64) -> PyResult<()> {
    let Some(future) = WAITERS.with(|waiters| waiters.borrow_mut().remove(&key)) else {
        return Ok(());
    };
    complete(future.bind(py))
}

fn complete(future: &Bound<'_, PyAny>) -> PyResult<()> {
    // A waiter whose task was cancelled has a cancelled future: nothing to set.
    if !future.call_method0("done")?.is_truthy()? {
        future.call_method1("set_result", (future.py().None(),))?;
    }
    Ok(())
}

/// Wakes one channel's loop side.
struct Signal {
    key: u64,
    waiting: AtomicBool,
}

impl Signal {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            waiting: AtomicBool::new(false),
        })
    }

    /// The other side moved (an item, free capacity, or its end): wakes the loop side if it
    /// waits. Any thread; no GIL.
    fn notify(&self) {
        if self.waiting.swap(false, Ordering::SeqCst)
            && let Some(queue) = QUEUE.get()
        {
            queue.push(Message::Wake(self.key));
        }
    }

    /// An asyncio future for the loop side to await: done at once when `can_go` says so,
    /// else when [`notify`](Self::notify) is next called. GIL: held (`py`), loop thread.
    fn ready<'py>(
        &self,
        py: Python<'py>,
        can_go: impl Fn() -> bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let future = CREATE_FUTURE.with(|slot| {
            slot.borrow()
                .as_ref()
                .map(|create| create.bind(py).call0())
                .ok_or_else(|| {
                    pyo3::exceptions::PyRuntimeError::new_err(
                        "pyhost streams can only be awaited on the host's event loop",
                    )
                })
        })??;
        // Announce the wait before looking: a move that lands after the look sees the flag.
        self.waiting.store(true, Ordering::SeqCst);
        if can_go() {
            self.waiting.store(false, Ordering::SeqCst);
            complete(&future)?;
        } else {
            // A wake-up pushed meanwhile is handled by this same thread, after this insert.
            WAITERS.with(|waiters| {
                waiters
                    .borrow_mut()
                    .insert(self.key, future.clone().unbind())
            });
        }
        Ok(future)
    }
}

/// Why the loop side could not send.
#[derive(Debug)]
pub(crate) enum Rejected<T> {
    /// The channel is full: await [`LoopSender::ready`] and try again.
    Full(T),
    /// The tokio side is gone (the client left): stop producing.
    Closed(T),
}

/// Why the loop side received nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing yet: await [`LoopReceiver::ready`] and try again.
    Waiting,
    /// The tokio side is gone and everything it sent has been taken.
    Closed,
}

/// A channel from the loop thread to tokio of `capacity` items (at least one).
pub(crate) fn to_tokio<T: Send + 'static>(capacity: usize) -> (LoopSender<T>, TokioReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let signal = Signal::new();
    (
        LoopSender {
            tx,
            signal: signal.clone(),
        },
        TokioReceiver { rx, signal },
    )
}

/// A channel from tokio to the loop thread of `capacity` items (at least one).
pub(crate) fn to_loop<T: Send + 'static>(capacity: usize) -> (TokioSender<T>, LoopReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let signal = Signal::new();
    (
        TokioSender {
            tx: Some(tx),
            signal: signal.clone(),
        },
        LoopReceiver { rx, signal },
    )
}

/// The loop thread's sending end. GIL: its methods run on the loop thread with it held.
pub(crate) struct LoopSender<T> {
    tx: mpsc::Sender<T>,
    signal: Arc<Signal>,
}

impl<T> LoopSender<T> {
    /// Sends without waiting.
    pub(crate) fn try_send(&self, item: T) -> Result<(), Rejected<T>> {
        self.tx.try_send(item).map_err(|err| match err {
            mpsc::error::TrySendError::Full(item) => Rejected::Full(item),
            mpsc::error::TrySendError::Closed(item) => Rejected::Closed(item),
        })
    }

    /// Whether the tokio side is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// A future done once [`try_send`](Self::try_send) may succeed or the tokio side is gone.
    pub(crate) fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.signal
            .ready(py, || self.tx.capacity() > 0 || self.tx.is_closed())
    }
}

/// Tokio's receiving end. Dropping it closes the channel and wakes a waiting loop side.
pub(crate) struct TokioReceiver<T> {
    rx: mpsc::Receiver<T>,
    signal: Arc<Signal>,
}

impl<T> TokioReceiver<T> {
    /// The next item, or `None` once the loop side is gone and everything it sent is taken.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item; taking one frees room, which wakes a waiting loop side.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let polled = self.rx.poll_recv(cx);
        if matches!(polled, Poll::Ready(Some(_))) {
            self.signal.notify();
        }
        polled
    }
}

impl<T> Drop for TokioReceiver<T> {
    fn drop(&mut self) {
        // Closed before the wake-up, so the woken loop side sees it.
        self.rx.close();
        self.signal.notify();
    }
}

/// Tokio's sending end. Dropping it ends the stream and wakes a waiting loop side.
pub(crate) struct TokioSender<T> {
    /// Always `Some` until dropped: taken in `drop` so the channel closes before the wake-up.
    tx: Option<mpsc::Sender<T>>,
    signal: Arc<Signal>,
}

impl<T> TokioSender<T> {
    /// Sends, waiting while the channel is full; `Err` gives the item back when the loop
    /// side is gone.
    pub(crate) async fn send(&self, item: T) -> Result<(), T> {
        let Some(tx) = &self.tx else {
            return Err(item);
        };
        let sent = tx.send(item).await.map_err(|err| err.0);
        if sent.is_ok() {
            self.signal.notify();
        }
        sent
    }
}

impl<T> Drop for TokioSender<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.signal.notify();
    }
}

/// The loop thread's receiving end. GIL: its methods run on the loop thread with it held.
pub(crate) struct LoopReceiver<T> {
    rx: mpsc::Receiver<T>,
    signal: Arc<Signal>,
}

impl<T> LoopReceiver<T> {
    /// Takes the next item without waiting.
    pub(crate) fn try_recv(&mut self) -> Result<T, Empty> {
        self.rx.try_recv().map_err(|err| match err {
            mpsc::error::TryRecvError::Empty => Empty::Waiting,
            mpsc::error::TryRecvError::Disconnected => Empty::Closed,
        })
    }

    /// A future done once [`try_recv`](Self::try_recv) may succeed or the tokio side is gone.
    pub(crate) fn ready<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.signal
            .ready(py, || !self.rx.is_empty() || self.rx.is_closed())
    }
}

impl<T> Drop for LoopReceiver<T> {
    fn drop(&mut self) {
        // A tokio side waiting for room learns at once that nobody will read.
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_flow_to_tokio_and_room_is_signalled() {
        let (tx, mut rx) = to_tokio::<u32>(1);
        assert!(tx.try_send(1).is_ok());
        assert!(matches!(tx.try_send(2), Err(Rejected::Full(2))));
        tx.signal.waiting.store(true, Ordering::SeqCst);
        assert_eq!(rx.recv().await, Some(1));
        assert!(
            !tx.signal.waiting.load(Ordering::SeqCst),
            "taking an item wakes the waiting sender"
        );
        assert!(tx.try_send(2).is_ok());
        drop(tx);
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_dropped_tokio_end_closes_both_ways() {
        let (tx, rx) = to_tokio::<u32>(4);
        tx.signal.waiting.store(true, Ordering::SeqCst);
        drop(rx);
        assert!(tx.is_closed());
        assert!(!tx.signal.waiting.load(Ordering::SeqCst));
        assert!(matches!(tx.try_send(1), Err(Rejected::Closed(1))));

        let (tx, mut rx) = to_loop::<u32>(4);
        tx.send(7).await.ok();
        drop(tx);
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(rx.try_recv(), Err(Empty::Closed));
    }

    #[tokio::test]
    async fn a_dropped_loop_end_fails_the_tokio_sender() {
        let (tx, rx) = to_loop::<u32>(1);
        tx.send(1).await.ok();
        drop(rx);
        assert_eq!(tx.send(2).await, Err(2));
    }
}
