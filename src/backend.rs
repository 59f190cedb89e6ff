//! What each Triton entry point does, in safe Rust. The execution itself
//! (validation, batching, Python) is `rustpy_core`'s; this module adapts
//! Triton's handles to it and reports statistics.

use std::path::PathBuf;
use std::sync::Arc;

use rustpy_core::constants::LogLevel as CoreLogLevel;
use rustpy_core::host::{ConfigOwner, HostSettings, InstanceHost, ModelHost, ModelSource};
use rustpy_core::python::{self, InstanceInfo};
use rustpy_core::{
    Error, InferRequest, Outcome, OutputSlice, Responder, ResponseSink, ResponseStream,
};

use crate::ffi::handles::{api_version, OUR_API_VERSION};
use crate::ffi::server::TritonServerApi;
use crate::ffi::sys::{monotonic_ns, own_library_path, promote_libpython_to_global};
use crate::ffi::{log, log_at, Backend, LogLevel, Model, ModelInstance, Request, ResponseFactory};

type Result<T> = std::result::Result<T, Error>;

pub fn initialize(backend: Backend) -> Result<()> {
    let name = backend.name()?;
    let (major, minor) = api_version()?;
    let (our_major, our_minor) = OUR_API_VERSION;
    if major != our_major || minor < our_minor {
        return Err(Error::unsupported(format!(
            "rustpy: the server's backend API is {major}.{minor}, but rustpy needs {our_major}.x with x >= {our_minor}"
        )));
    }
    let libpython =
        promote_libpython_to_global().map_err(|e| Error::internal(format!("rustpy: {e}")))?;
    python::set_log_hook(Box::new(|level, file, line, msg| {
        log_at(triton_level(level), file, line, msg)
    }));
    python::initialize().map_err(|e| e.context("rustpy"))?;
    // --backend-config=rustpy,site-packages=DIR (what `rustpy env` installs).
    let config = backend.config_json()?;
    let site = serde_json::from_str::<serde_json::Value>(&config)
        .ok()
        .and_then(|v| v["cmdline"]["site-packages"].as_str().map(PathBuf::from));
    if let Some(dir) = &site {
        python::add_site_packages(dir).map_err(|e| e.context("rustpy"))?;
        log(
            LogLevel::Info,
            &format!("rustpy: site-packages {} added to sys.path", dir.display()),
        );
    }
    backend.state_slot().put(BackendState {
        host: HostSettings {
            // Process-isolated models' workers get it too.
            site_packages: site.into_iter().collect(),
            worker_anchor: own_library_path(),
            log: Arc::new(|level, msg| log(triton_level(level), msg)),
        },
    })?;
    log(
        LogLevel::Info,
        &format!("rustpy: backend '{name}' ready (backend API {major}.{minor}, {libpython})"),
    );
    Ok(())
}

pub fn finalize(backend: Backend) -> Result<()> {
    drop(backend.state_slot().take::<BackendState>()?);
    // The interpreter is deliberately left running: it cannot be finalised and
    // re-initialised in one process, and the library is never unloaded. So
    // nothing else would flush what models printed without a newline.
    python::flush_stdio();
    Ok(())
}

/// The backend's state: what every model load needs from it.
struct BackendState {
    host: HostSettings,
}

fn triton_level(level: CoreLogLevel) -> LogLevel {
    match level {
        CoreLogLevel::Info => LogLevel::Info,
        CoreLogLevel::Warn => LogLevel::Warn,
        CoreLogLevel::Error => LogLevel::Error,
        CoreLogLevel::Verbose => LogLevel::Verbose,
    }
}

/// Triton owns the model's configuration: it says whether the model may
/// complete it, stores the completed one and hands it back normalised.
struct TritonConfig(Model);

impl ConfigOwner for TritonConfig {
    fn auto_complete_enabled(&self) -> Result<bool> {
        self.0.auto_complete_enabled()
    }

    fn replace_config(&self, completed: &str) -> Result<String> {
        self.0.set_config_json(completed)?;
        self.0.config_json()
    }
}

/// Loads the model where it runs (crate::host decides: in-process, or in
/// worker processes) and keeps it as the model's state.
pub fn model_initialize(model: Model) -> Result<()> {
    // BLS, model control and metrics from Python go through the server that
    // loads our models (one per process).
    if rustpy_core::server::server_api().is_err() {
        rustpy_core::server::set_server_api(TritonServerApi::new(model)?);
    }
    // Set in initialize, which Triton runs before any model loads.
    let settings = &model.backend()?.state_slot().get::<BackendState>()?.host;
    let source = ModelSource {
        name: model.name()?,
        version: model.version()?,
        dir: model.directory()?.into(),
        config_json: model.config_json()?,
    };
    let host = ModelHost::load(source, settings, &TritonConfig(model))?;
    model.state_slot().put(host)
}

pub fn model_finalize(model: Model) -> Result<()> {
    let state = model.state_slot().take::<ModelHost>()?;
    // The line upstream's backend logs here (operators grep it).
    log(
        LogLevel::Verbose,
        "TRITONBACKEND_ModelFinalize: delete model state",
    );
    drop(state); // unloads the module once the last instance let go of it
    Ok(())
}

pub fn instance_initialize(instance: ModelInstance) -> Result<()> {
    let model = instance.model()?;
    // Set in model_initialize, which Triton runs before any instance is created.
    let host = model.state_slot().get::<ModelHost>()?;
    let info = InstanceInfo {
        name: instance.name()?,
        kind: instance.kind()?.to_string(),
        device_id: instance.device_id()?,
    };
    instance.state_slot().put(host.instance(&info)?)
}

pub fn instance_finalize(instance: ModelInstance) -> Result<()> {
    // The line upstream's backend logs here (operators grep it).
    log(
        LogLevel::Verbose,
        "TRITONBACKEND_ModelInstanceFinalize: delete instance state",
    );
    if let Some(host) = instance.state_slot().take::<InstanceHost>()? {
        // Runs finalize here, or in the worker (which is then reaped).
        if let Err(e) = host.finalize() {
            log(LogLevel::Error, &e.message);
        }
    }
    Ok(())
}

/// Delivers one request's responses through Triton's response factory.
/// Whether the final one went out is tracked by the [`ResponseStream`]
/// around it, which also answers with an error if it is dropped before (a
/// bug or a panic). A request without a factory never gets a responder (see
/// [`responder_for`]), so no send can silently go nowhere.
struct TritonSink {
    factory: ResponseFactory,
}

type TritonResponder = ResponseStream<TritonSink>;

/// The responder of `request`, or None when the server cannot create its
/// response factory; that request is then answered with an error through a
/// response made from the request itself.
fn responder_for(request: &Request, model_name: &str) -> Option<TritonResponder> {
    match ResponseFactory::new(request) {
        Ok(factory) => Some(ResponseStream::new(TritonSink { factory })),
        Err(e) => {
            let e = e.context(format!(
                "model '{model_name}': cannot create a response factory"
            ));
            log(LogLevel::Error, &e.message);
            if let Err(send) = request.send_error(&e) {
                log(
                    LogLevel::Error,
                    &format!("rustpy: cannot send an error response: {send}"),
                );
            }
            None
        }
    }
}

impl ResponseSink for TritonSink {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        self.factory.send(outputs, is_final)
    }

    fn send_error(&mut self, error: &Error, is_final: bool) {
        let sent = if is_final {
            self.factory.send_error(error)
        } else {
            self.factory.send_error_flags(error, false)
        };
        if let Err(e) = sent {
            log(
                LogLevel::Error,
                &format!("rustpy: cannot send an error response: {e}"),
            );
        }
    }

    fn send_final(&mut self) {
        if let Err(e) = self.factory.send_final_flag() {
            log(
                LogLevel::Error,
                &format!("rustpy: cannot complete a response: {e}"),
            );
        }
    }

    fn is_cancelled(&self) -> bool {
        self.factory.is_cancelled()
    }
}

/// Runs one batch of requests. Every request is answered and released here,
/// whatever happens: inputs reach Python as copies, so nothing outlives this
/// call but the response factories (a decoupled model may keep answering).
pub fn execute(instance: ModelInstance, requests: Vec<Request>) {
    let exec_start = monotonic_ns();
    // Set in instance_initialize (Triton never executes an instance whose
    // initialisation failed).
    let state = instance.state_slot().get::<InstanceHost>();
    let model_name = match &state {
        Ok(host) => host.model_name().to_string(),
        Err(_) => String::from("?"),
    };
    // Every request gets a responder first; one that is dropped unanswered
    // answers with an error, so no request can end without a response. A
    // request whose response factory cannot be created is answered at once
    // and goes no further.
    let mut responders: Vec<TritonResponder> = Vec::with_capacity(requests.len());
    let mut reached: Vec<usize> = Vec::with_capacity(requests.len());
    for (i, req) in requests.iter().enumerate() {
        if let Some(r) = responder_for(req, &model_name) {
            responders.push(r);
            reached.push(i);
        }
    }
    let state = match state {
        Ok(s) => s,
        Err(e) => {
            for mut r in responders {
                r.send_error(&e);
            }
            return;
        }
    };

    // Read each request; one that cannot be read reaches the core as its
    // error (the core answers it, and the report's indices line up).
    let core_requests: Vec<Result<InferRequest<'_>>> = reached
        .iter()
        .map(|&i| {
            read_request(&requests[i]).map_err(|e| e.context(format!("model '{model_name}'")))
        })
        .collect();
    let report = state.execute(&core_requests, responders);
    drop(core_requests);

    let exec_end = monotonic_ns();
    let to_ns = |t: Option<std::time::Instant>, fallback: u64| {
        t.map(|t| exec_end.saturating_sub(t.elapsed().as_nanos() as u64))
            .unwrap_or(fallback)
    };
    let compute_start = to_ns(report.compute_start, exec_start);
    let compute_end = to_ns(report.compute_end, exec_end);
    let times = [exec_start, compute_start, compute_end, exec_end];
    let mut outcomes = vec![Outcome::Failed; requests.len()];
    for (&i, &outcome) in reached.iter().zip(&report.outcomes) {
        outcomes[i] = outcome;
    }
    for (req, outcome) in requests.iter().zip(&outcomes) {
        instance.report_statistics(req, outcome.succeeded(), times);
    }
    if report.calls > 0 {
        instance.report_batch_statistics(report.total_rows() as u64, times);
    }
    // Rescheduled requests go back to Triton's sequence batcher; the others
    // are released here (exactly once either way).
    for (req, outcome) in requests.into_iter().zip(outcomes) {
        if outcome == Outcome::Rescheduled {
            req.reschedule();
        }
    }
}

fn read_request(req: &Request) -> Result<InferRequest<'_>> {
    Ok(InferRequest {
        id: req.id(),
        correlation_id: req.correlation_id(),
        flags: req.flags(),
        timeout_us: req.timeout_us(),
        inputs: req.inputs()?,
        requested_outputs: req.requested_outputs()?,
        parameters: req.parameters()?,
    })
}
