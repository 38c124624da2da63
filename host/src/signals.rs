//! SIGINT and SIGTERM, owned by the host.
//!
//! They must be installed before the interpreter starts: the first `import signal` (asyncio
//! does it) installs CPython's SIGINT handler if the disposition is still the default, and the
//! host would then never see Ctrl-C.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The shutdown signals, installed and waiting.
pub struct ShutdownSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Must be called inside a tokio runtime, before the interpreter
    /// starts.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(mut self) {
        let name = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        tracing::info!("{name} received");
    }
}
