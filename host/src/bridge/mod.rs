//! The bridge between tokio and the interpreter: one Python thread owns the asyncio loop and
//! runs every handler; tokio workers hand it requests through a [`WakeQueue`] and await the
//! reply on a oneshot channel. No tokio worker ever takes the GIL.
//!
//! Per request: a worker pushes a [`Job`] (plain Rust data); the loop thread, woken once per
//! batch, wraps it in a [`PyRequest`](pyrequest::PyRequest), starts the handler as an asyncio
//! task, and the task's completer converts the outcome into a [`Reply`] and sends it back.

mod completer;
mod event_loop;
pub(crate) mod pyrequest;
mod queue;
pub(crate) mod response;
mod sdk;
pub(crate) mod stats;
mod stepper;
mod watchdog;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::StartupError;
use crate::interpreter::InterpreterInfo;
use crate::streaming::body::HandlerReply;
use pyhost_core::config::Config;
use pyhost_core::request::RequestData;
use pyhost_core::routing::RouteTable;

pub(crate) use completer::TaskMap;
pub(crate) use event_loop::inspect;
pub(crate) use queue::WakeQueue;

/// What the loop thread is asked to do.
pub(crate) enum Message {
    /// Run a handler for a request.
    Run(Box<Job>),
    /// Cancel the handler task of request `key` (its client left or its time ran out).
    Cancel(u64),
    /// Complete the future the loop side of stream channel `key` awaits
    /// ([`streaming::channel`](crate::streaming::channel)).
    Wake(u64),
}

/// One request on its way to a handler.
pub(crate) struct Job {
    /// Identifies the request's task for cancellation.
    pub key: u64,
    /// When the handler must have answered, if the route has a timeout.
    pub deadline: Option<Instant>,
    /// When the job was handed over, for the hand-off figures.
    pub queued_at: Instant,
    /// Route id: index of the handler.
    pub route: usize,
    /// `module.qualname` of the handler, for logs.
    pub handler: Arc<str>,
    /// The request.
    pub data: RequestData,
    /// Where the rest of its body comes from (a stream, a parsed form).
    pub source: crate::streaming::request_body::BodySource,
    /// Where the reply goes.
    pub reply: oneshot::Sender<HandlerReply>,
    /// For a WebSocket route: the socket's loop side, which the handler gets instead of the
    /// request.
    pub websocket: Option<Box<crate::streaming::websocket::LoopEnds>>,
}

/// A running interpreter with its loaded routes, ready to take requests.
pub struct Bridge {
    queue: Arc<WakeQueue<Message>>,
    next_key: AtomicU64,
    table: Arc<RouteTable>,
    info: InterpreterInfo,
    stopped: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Bridge {
    /// Starts the loop thread: it imports the handler package, compiles the routes and then
    /// runs the event loop until [`Bridge::shutdown`].
    pub fn start(config: &Config) -> Result<Self, StartupError> {
        let queue = Arc::new(WakeQueue::new().map_err(|err| StartupError::Interpreter {
            file: config.source.clone(),
            message: format!("cannot create the wake-up eventfd: {err}"),
        })?);
        crate::streaming::channel::attach(queue.clone());
        crate::streaming::producer::configure(config.server.stream_idle_timeout);
        let (ready, stopped) = event_loop::spawn(config, queue.clone())?;
        let (table, info) = ready;
        Ok(Self {
            queue,
            next_key: AtomicU64::new(1),
            table: Arc::new(table),
            info,
            stopped: std::sync::Mutex::new(Some(stopped)),
        })
    }

    /// The compiled route table.
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.table
    }

    /// What the interpreter is running with.
    pub fn interpreter(&self) -> &InterpreterInfo {
        &self.info
    }

    /// Hands a request to the loop thread; the reply arrives on the returned channel, and the
    /// key identifies the request for [`Bridge::cancel`].
    pub(crate) fn submit(
        &self,
        route: usize,
        handler: Arc<str>,
        data: RequestData,
        source: crate::streaming::request_body::BodySource,
        deadline: Option<Instant>,
    ) -> (u64, oneshot::Receiver<HandlerReply>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        self.queue.push(Message::Run(Box::new(Job {
            key,
            deadline,
            queued_at: Instant::now(),
            route,
            handler,
            data,
            source,
            reply,
            websocket: None,
        })));
        (key, receiver)
    }

    /// Hands an upgrade request to its WebSocket handler, with the socket's loop side; the
    /// handler's outcome arrives on the returned channel once it has returned. No deadline:
    /// the connection lasts as long as the handler wants.
    pub(crate) fn submit_websocket(
        &self,
        route: usize,
        handler: Arc<str>,
        data: RequestData,
        ends: crate::streaming::websocket::LoopEnds,
    ) -> (u64, oneshot::Receiver<HandlerReply>) {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        self.queue.push(Message::Run(Box::new(Job {
            key,
            deadline: None,
            queued_at: Instant::now(),
            route,
            handler,
            data,
            reply,
            source: crate::streaming::request_body::BodySource::Whole,
            websocket: Some(Box::new(ends)),
        })));
        (key, receiver)
    }

    /// Cancels the handler task of a submitted request, if it is still running.
    pub fn cancel(&self, key: u64) {
        self.queue.push(Message::Cancel(key));
    }

    /// Stops the event loop and waits up to `wait` for the loop thread to finish.
    pub fn shutdown(&self, wait: Duration) {
        self.queue.stop();
        let receiver = self
            .stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(receiver) = receiver {
            // A handler stuck in a long C call can keep the loop from stopping; the process
            // exits anyway once the wait is over.
            let _ = receiver.recv_timeout(wait);
        }
    }
}
