//! Process isolation (`parameters { key: "rustpy.isolation" value { string_value: "process" } }`):
//! each instance of such a model runs its Python in its own `rustpy-worker`
//! process, with the same interpreter and executors as in-process.
//!
//! Organised by job, each exchange's two ends in one place:
//!
//! - [`wire`]: every message of the control channel, encoded and decoded
//!   side by side (length-prefixed JSON frames over a socketpair).
//! - `transport`: the socket's halves and the memfd regions (inputs,
//!   outputs) on both sides.
//! - `response`: the response path, the worker's encoding and the
//!   backend's delivery.
//! - `rpc`: server calls from user code (BLS, model control, metrics), the
//!   worker's caller and the backend's server.
//! - `bls`: BLS tensors through two more memfd regions (large ones only).
//! - `lifecycle`: spawning, reaping, stopping and restarting a worker.
//! - `guard`: a worker that breaks the protocol is killed (with what it
//!   forked) and its control channel closed.
//! - `reader`: the backend's reader thread, which routes each frame.
//! - `ready`: readiness (worker alive, the model's `is_ready()`), the
//!   backend's end.
//! - `instance`: [`WorkerInstance`], a batch from the backend's side.
//!
//! The worker's main loop (serve, intake, one batch) is the `rustpy-worker`
//! crate's, built from the worker-side pieces exported here.
//! - [`env`]: a model's own Python environment (virtualenv, EXECUTION_ENV_PATH).
//! - [`sys`]: the only unsafe code here: memfd shared memory, parent-death signal.
//!
//! Per instance the backend creates two memfd regions (inputs, outputs),
//! never files under /dev/shm, and grows them as batches need: the backend
//! the input region, the worker the output region. One Execute frame carries
//! a whole batch; the worker answers with one frame per response and a Done.

mod bls;
pub mod env;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod instance;
mod lifecycle;
mod reader;
mod ready;
mod response;
mod rpc;
pub mod sys;
mod transport;
pub mod wire;

// The backend's side.
pub use instance::WorkerInstance;
pub use lifecycle::{auto_complete, WorkerConfig};
// The worker's side (rustpy-worker).
pub use response::{WorkerResponder, WorkerResponses, WorkerSink};
pub use rpc::{RemoteServer, Rpc};
pub use sys::limit_data;
pub use transport::{FrameReader, WorkerLink};
