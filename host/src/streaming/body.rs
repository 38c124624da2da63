//! The response body: the whole body in one buffer (most responses), or a stream of chunks
//! that follows the head (streamed responses, files).
//!
//! [`Body`] is what [`Host::handle`](crate::Host::handle) and [`HostService`](crate::HostService)
//! return, so an embedder's own server sends streams as they come too.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// The error a streamed body ends with when its producer failed or stalled: the response is
/// cut short (no final chunk on HTTP/1.1, a reset stream on HTTP/2), so the client can tell.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body produced after the head, chunk by chunk.
pub(crate) type Streamed = Pin<Box<dyn http_body::Body<Data = Bytes, Error = BoxError> + Send>>;

/// What a handler's answer carries besides its head, when the body is not in the [`Reply`]
/// itself.
///
/// [`Reply`]: pyhost_core::reply::Reply
pub(crate) enum Deferred {
    /// Chunks a producer sends as it makes them.
    Stream(Streamed),
}

/// A handler's answer as it comes back from the loop thread.
pub(crate) struct HandlerReply {
    /// Status, headers and (unless `body` is set) the whole body.
    pub reply: pyhost_core::reply::Reply,
    /// The body, when it follows the head.
    pub body: Option<Deferred>,
}

impl From<pyhost_core::reply::Reply> for HandlerReply {
    fn from(reply: pyhost_core::reply::Reply) -> Self {
        Self { reply, body: None }
    }
}

/// A response body: one buffer, or a stream.
pub struct Body(Kind);

pub(crate) enum Kind {
    Full(Bytes),
    Stream(Streamed),
}

impl Body {
    /// A body of `bytes`, sent whole.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self(Kind::Full(bytes))
    }

    /// A body that follows the head.
    pub(crate) fn streamed(stream: Streamed) -> Self {
        Self(Kind::Stream(stream))
    }

    pub(crate) fn into_kind(self) -> Kind {
        self.0
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Full(bytes) => f.debug_tuple("Body::Full").field(&bytes.len()).finish(),
            Kind::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Full(bytes) if bytes.is_empty() => Poll::Ready(None),
            Kind::Full(bytes) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(bytes))))),
            Kind::Stream(stream) => stream.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(bytes) => bytes.is_empty(),
            Kind::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Stream(stream) => stream.size_hint(),
        }
    }
}
