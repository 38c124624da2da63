//! The environment a supervisor gives a worker: the variables a worker reads to find its
//! number, its slot, its descriptors and its limits.

/// The worker's number, unique for the server's life; its presence makes a worker.
pub const WORKER: &str = "PYHOST_WORKER";
/// The slot it serves.
pub const SLOT: &str = "PYHOST_WORKER_SLOT";
/// The descriptor of its listening socket.
pub const LISTEN_FD: &str = "PYHOST_LISTEN_FD";
/// The descriptor of its end of the control channel.
pub const CONTROL_FD: &str = "PYHOST_CONTROL_FD";
/// The server run's id, the first part of every request id.
pub const RUN_ID: &str = "PYHOST_RUN_ID";
/// Requests after which it asks to be replaced.
pub const MAX_REQUESTS: &str = "PYHOST_MAX_REQUESTS";
/// The shared key-value file when the config names none.
pub const KV_PATH: &str = "PYHOST_KV_PATH";
