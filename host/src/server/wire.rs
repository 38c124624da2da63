//! The socket as hyper sees it: every write is counted, and a write the kernel refused (its
//! send buffer is full: the client is not reading) is noted, so the connection's watch can
//! close a connection whose writes have been blocked for `send_timeout`, whatever is being
//! written. Response bodies are watched through the outbox already; this covers what holds no
//! body bytes there: the heads of HEAD and 204 answers and of responses whose bodies hyper
//! has taken, pipelined behind a client that never reads.
//!
//! Cost per write system call: one relaxed atomic addition and one relaxed store.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::outbox::Outbox;

/// A connection's socket, reporting its writes to the connection's [`Outbox`].
pub(super) struct Wire {
    stream: TcpStream,
    outbox: Arc<Outbox>,
}

impl Wire {
    pub(super) fn new(stream: TcpStream, outbox: Arc<Outbox>) -> Self {
        Self { stream, outbox }
    }

    fn wrote(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &polled {
            Poll::Ready(Ok(written)) => self.outbox.wrote(*written),
            Poll::Pending => self.outbox.write_blocked(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
