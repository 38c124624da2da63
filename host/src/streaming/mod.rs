//! The byte movers: response and request bodies that are not one buffer, and their
//! backpressure.
//!
//! - [`file`]: one file, read on tokio's blocking pool and sent in chunks, with its validators,
//!   preconditions and ranges (`FileResponse` and the static mounts).
//! - [`static_files`]: the `[static]` mounts, and which file a request path names.

pub(crate) mod file;
pub(crate) mod static_files;
