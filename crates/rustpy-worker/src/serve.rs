//! The worker's main loop. It embeds the same interpreter and the same
//! executors as the in-process backend ([`LoadedModel`], [`ModelInstance`]);
//! only the requests come from shared memory and the responses go back over
//! the control channel (rustpy_core::isolation).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Weak};

use crate::batch::{run_batch, BatchContext, InputViews};
use crate::intake::Intake;
use rustpy_core::error::{Error, Result};
use rustpy_core::isolation::sys::{
    defer_termination_to_parent, inherited_fd, inherited_stream, Shm,
};
use rustpy_core::isolation::wire::{error_to_wire, AutoComplete, FromWorker, Init, ToWorker};
use rustpy_core::isolation::{RemoteServer, Rpc, WorkerLink, WorkerResponses};
// The backend counts checkpoint fetches (checkpoint::prefetch, before any
// worker starts); here the checkpoint is a cache hit, not counted again.
use rustpy_core::metrics::Metrics;
use rustpy_core::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use rustpy_core::server::set_server_api;

/// The fds the backend passes (rustpy_core's isolation/lifecycle.rs).
pub struct WorkerFds {
    pub socket: i32,
    pub input: i32,
    pub output: i32,
    /// The BLS input and output regions (isolation/bls.rs); without them
    /// BLS tensors travel inline.
    pub bls: Option<(i32, i32)>,
}

/// Runs the worker until the backend says Shutdown or goes away. Returns the
/// process exit code.
pub fn run(fds: WorkerFds) -> i32 {
    match serve(fds) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rustpy-worker: {}", e.message);
            3
        }
    }
}

pub(crate) fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("rustpy-worker: {what}: {e}"))
}

/// The worker's end of the channel to the backend.
struct Connection {
    link: Arc<WorkerLink>,
    responses: Arc<WorkerResponses>,
    /// Between batches this thread reads the control socket itself, so an
    /// Execute frame wakes the thread that runs it; while `initialize` or a
    /// batch runs, the intake thread reads (replies to server calls, BLS
    /// responses and cancellations arrive then, and user code waits for
    /// them).
    intake: Arc<Intake>,
    input: OwnedFd,
}

impl Connection {
    fn open(fds: WorkerFds) -> Result<Connection> {
        let socket = inherited_stream(fds.socket).map_err(io_err("control socket"))?;
        let input = inherited_fd(fds.input).map_err(io_err("input memory"))?;
        let output = Shm::map(inherited_fd(fds.output).map_err(io_err("output memory"))?)
            .map_err(io_err("map"))?;
        let bls = match fds.bls {
            Some((i, o)) => Some((
                inherited_fd(i).map_err(io_err("BLS memory"))?,
                inherited_fd(o).map_err(io_err("BLS memory"))?,
            )),
            None => None,
        };
        let read_half = socket.try_clone().map_err(io_err("control socket"))?;
        // The backend is gone: nobody is left to answer, whatever user
        // threads still run.
        let link = WorkerLink::new(socket, || std::process::exit(0));
        let responses =
            WorkerResponses::new(link.clone(), output).map_err(io_err("output memory"))?;
        // ctx.empty hands out arrays in the output region.
        python::set_output_arena(responses.clone());
        let rpc = Rpc::new(link.clone(), bls)?;
        set_server_api(Arc::new(RemoteServer::new(rpc.clone())));
        let intake = Intake::start(read_half, rpc, responses.clone(), link.clone())?;
        let reader: Weak<Intake> = Arc::downgrade(&intake);
        link.set_reader(reader);
        Ok(Connection {
            link,
            responses,
            intake,
            input,
        })
    }

    /// pb_utils.Logger and rustpy's own messages go to the server's log.
    fn forward_logs(&self) {
        let link = self.link.clone();
        python::set_log_hook(Box::new(move |level, file, line, message| {
            let _ = link.send(&FromWorker::Log {
                level: level as u32,
                file: file.to_string(),
                line,
                message: message.to_string(),
            });
        }));
    }
}

fn serve(fds: WorkerFds) -> Result<()> {
    defer_termination_to_parent();
    let conn = Connection::open(fds)?;
    conn.forward_logs();
    let first = conn.intake.next();
    // Server calls from the model's import and `initialize` get their replies.
    conn.intake.begin(true);
    let (instance, decoupled) = match first {
        Some(ToWorker::Init(init)) => match create_instance(&conn, init) {
            Some(created) => created,
            None => return Ok(()),
        },
        Some(ToWorker::AutoComplete(request)) => {
            auto_complete(&conn, request);
            return Ok(());
        }
        _ => return Err(Error::internal("rustpy-worker: expected Init first")),
    };
    // A model with is_ready() keeps its socket read while a batch runs, so
    // a readiness check is answered during long batches.
    let has_is_ready = instance.ready_call().is_some();
    let cx = BatchContext {
        instance: &instance,
        responses: &conn.responses,
        intake: &conn.intake,
        decoupled,
        read_during_batches: has_is_ready,
    };
    let mut views = InputViews::new(conn.input);
    // Until the backend says Shutdown or closes the channel (unload, or it died).
    while let Some(msg) = conn.intake.next() {
        match msg {
            ToWorker::Execute(exec) => run_batch(exec, &cx, &mut views),
            ToWorker::Shutdown => break,
            ToWorker::Init(_) | ToWorker::AutoComplete(_) => {
                return Err(Error::internal("rustpy-worker: Init received twice"));
            }
            // The intake handles these.
            ToWorker::Reply { .. }
            | ToWorker::BlsResponse { .. }
            | ToWorker::BlsInputsRead { .. }
            | ToWorker::Cancel { .. }
            | ToWorker::IsReady { .. }
            | ToWorker::Taken { .. } => {}
        }
    }
    views.close();
    // `finalize` may make server calls too.
    conn.intake.begin(true);
    if let Err(e) = instance.finalize() {
        python::emit_log(
            rustpy_core::constants::LogLevel::Error,
            "rustpy-worker",
            0,
            &e.message,
        );
    }
    Ok(())
}

/// Runs the model's `auto_complete_config` and answers.
fn auto_complete(conn: &Connection, request: AutoComplete) {
    let AutoComplete {
        config_json,
        model_dir,
        version,
    } = request;
    let result = python::initialize().and_then(|()| {
        let config = rustpy_config::parse_json(&config_json)
            .map_err(|e| Error::invalid_arg(format!("cannot read the model configuration: {e}")))?;
        LoadedModel::load(&config, Path::new(&model_dir), version, &Metrics::off())?
            .auto_complete(&config_json)
    });
    let result = result.map_err(|e| error_to_wire(&e));
    let _ = conn.link.send(&FromWorker::AutoCompleted { result });
}

/// Loads the model and creates the instance (the user's `initialize` runs),
/// then answers Ready or InitFailed. `None`: it failed, nothing to serve.
/// The instance comes with whether the model is decoupled.
fn create_instance(conn: &Connection, init: Init) -> Option<(ModelInstance, bool)> {
    let mut decoupled = true;
    let created = python::initialize().and_then(|()| {
        let config = rustpy_config::parse_json(&init.config_json)
            .map_err(|e| Error::invalid_arg(format!("cannot read the model configuration: {e}")))?;
        decoupled = config
            .model_transaction_policy
            .as_ref()
            .is_some_and(|p| p.decoupled);
        let model = LoadedModel::load(
            &config,
            Path::new(&init.model_dir),
            init.version,
            &Metrics::off(),
        )?;
        ModelInstance::new(Arc::new(model), &InstanceInfo::from(init.instance))
    });
    conn.intake.end();
    match created {
        Ok(instance) => {
            if instance.model().api == python::Api::PbUtils {
                conn.responses.inputs_are_writable();
            }
            let ready_call = instance.ready_call();
            let is_ready = ready_call.is_some();
            conn.intake.set_ready_call(ready_call);
            let _ = conn.link.send(&FromWorker::Ready { is_ready });
            Some((instance, decoupled))
        }
        Err(e) => {
            let (code, message) = error_to_wire(&e);
            let _ = conn.link.send(&FromWorker::InitFailed { code, message });
            None
        }
    }
}
