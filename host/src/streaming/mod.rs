//! The byte movers: bodies that cross between tokio and the loop thread a piece at a time.
//!
//! - [`channel`]: the bounded channels both ways, with the loop side's wake-ups;
//! - [`body`]: the response body the service hands to hyper (or to an embedder): whole, or
//!   streamed after the head;
//! - [`request_body`]: request bodies read a frame at a time, and fed to `stream=True`
//!   handlers;
//! - [`form`]: forms parsed on tokio (multipart with `multer`), large files spooled to disk;
//! - [`file`]: one file, read on tokio's blocking pool and sent in chunks, with its validators,
//!   preconditions and ranges (`FileResponse` and the static mounts);
//! - [`static_files`]: the `[static]` mounts, and which file a request path names;
//! - [`producer`]: a handler's `StreamingResponse`, produced by a task on the loop thread;
//! - [`websocket`]: WebSocket routes: the upgrade, the handler's socket, the protocol.

pub(crate) mod body;
pub(crate) mod channel;
pub(crate) mod file;
pub(crate) mod form;
pub(crate) mod producer;
pub(crate) mod request_body;
pub(crate) mod static_files;
pub(crate) mod websocket;
