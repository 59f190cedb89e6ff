//! Process isolation (`parameters { key: "rustpy.isolation" value { string_value: "process" } }`):
//! each instance of such a model runs its Python in its own `rustpy-worker`
//! process, with the same interpreter and executors as in-process.
//!
//! - [`client`]: the backend side (start, execute, restart, stop a worker).
//! - [`worker`]: the worker side (what `rustpy-worker` runs).
//! - [`env`]: a model's own Python environment (virtualenv, EXECUTION_ENV_PATH).
//! - [`wire`]: the control channel (length-prefixed JSON over a socketpair).
//! - [`bls`]: BLS tensors through two more memfd regions (large ones only).
//! - [`sys`]: the only unsafe code here: memfd shared memory, parent-death signal.
//!
//! Per instance the backend creates two memfd regions (inputs, outputs),
//! never files under /dev/shm, and grows them as batches need: the backend
//! the input region, the worker the output region. One Execute frame carries
//! a whole batch; the worker answers with one frame per response and a Done.

mod bls;
pub mod env;
mod instance;
mod lifecycle;
mod response;
mod rpc;
mod sys;
mod transport;
pub mod wire;
mod worker;

pub use instance::WorkerInstance;
pub use lifecycle::{auto_complete, WorkerConfig};
pub use sys::limit_data;
pub use worker::{run as run_worker, WorkerFds};
