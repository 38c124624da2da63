//! A pyhost server's processes, without Python: the supervisor that runs worker processes,
//! the protocol a worker speaks to it, and the log format every process writes.
//!
//! The `pyhost` crate re-exports what applications use (`pyhost::workers`,
//! `pyhost::logging`). This crate links no interpreter, so the `pyhost-supervisor` binary
//! built from it stays small: `pyhost serve` with more than one worker becomes that binary
//! (`exec`), which runs `pyhost` itself for each worker.
//!
//! - [`supervisor`]: sockets owned, workers spawned, watched, recycled and rolled;
//! - [`control`] and [`env`]: what a worker is told at start and what it says back;
//! - [`logging`]: records stamped with their process, rate-limited, escaped.

pub mod control;
pub mod env;
pub mod logging;
pub mod supervisor;
