//! Conversions between Python objects and the host's plain data, used by the bridge (request
//! bodies in, handler results out) and the host services (host-function data) alike.
//!
//! GIL: every function takes `Python` or a bound object; they run on the loop thread or a
//! thread running a plugin's code, never on a tokio worker.

pub(crate) mod json;
