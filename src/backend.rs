//! What each Triton entry point does, in safe Rust. The execution itself
//! (validation, batching, Python) is `rustpy_core`'s; this module adapts
//! Triton's handles to it and reports statistics.

use std::sync::Arc;

use rustpy_config::model::Isolation;
use rustpy_core::constants::LogLevel as CoreLogLevel;
use rustpy_core::host::{ConfigOwner, HostSettings, InstanceHost, ModelHost, ModelSource};
use rustpy_core::metrics::Metrics;
use rustpy_core::python::{self, InstanceInfo};
use rustpy_core::{
    Error, InferRequest, Outcome, OutputSlice, Responder, ResponseParameters, ResponseSink,
    ResponseStream,
};

use crate::ffi::handles::{api_version, OUR_API_VERSION};
use crate::ffi::server::{TritonRecorder, TritonServerApi};
use crate::ffi::sys::{monotonic_ns, own_library_path, promote_libpython_to_global};
use crate::ffi::{log, log_at, Backend, LogLevel, Model, ModelInstance, Request, ResponseFactory};
use crate::readiness::InstanceReadiness;
use crate::send_thread::{Job, ResponseThread, Task};
use crate::settings::Settings;

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
    let settings = Settings::from_backend_config(&backend.config_json()?)?;
    // --backend-config=rustpy,metrics=false turns rustpy's own metrics off.
    let metrics = match settings.metrics {
        true => Metrics::new(Arc::new(TritonRecorder::default())),
        false => Metrics::off(),
    };
    // --backend-config=rustpy,site-packages=DIR (what `rustpy env` installs).
    if let Some(dir) = &settings.site_packages {
        python::add_site_packages(dir).map_err(|e| e.context("rustpy"))?;
        log(
            LogLevel::Info,
            &format!("rustpy: site-packages {} added to sys.path", dir.display()),
        );
    }
    if settings.default_isolation == Isolation::Process {
        log(
            LogLevel::Info,
            &format!("rustpy: backend '{name}': models run process-isolated unless their config says otherwise (default-isolation=process)"),
        );
    }
    backend.state_slot().put(BackendState {
        host: HostSettings {
            // Process-isolated models' workers get it too.
            site_packages: settings.site_packages.iter().cloned().collect(),
            default_isolation: settings.default_isolation,
            worker_anchor: own_library_path(),
            log: Arc::new(|level, msg| log(triton_level(level), msg)),
            metrics: metrics.clone(),
        },
        settings,
    })?;
    log(
        LogLevel::Info,
        &format!(
            "rustpy: backend '{name}' ready (backend API {major}.{minor}, {libpython}, metrics {})",
            if metrics.is_on() { "on" } else { "off" }
        ),
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
    /// The --backend-config settings (readiness checks read theirs).
    settings: Settings,
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
    refuse_invalid_name("model", &source.name)?;
    let host = ModelHost::load(source, settings, &TritonConfig(model))?;
    model.state_slot().put(host)
}

/// Model and instance names the official backend refuses (r25.08), with
/// its message, so a repository loads on both or on neither.
fn refuse_invalid_name(what: &str, name: &str) -> Result<()> {
    match rustpy_config::model::invalid_name_char(name) {
        None => Ok(()),
        Some(c) => Err(Error::invalid_arg(format!(
            "Invalid stub name: contains invalid characters: {what} name '{name}' has {c:?}; \
             names may not contain any of {}",
            rustpy_config::model::INVALID_NAME_CHARS
        ))),
    }
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

/// Per-instance state: where the user's object runs, and its readiness.
struct InstanceState {
    host: InstanceHost,
    readiness: Arc<InstanceReadiness>,
    /// None: `--backend-config=rustpy,response-thread=false`, sent inline.
    responses: Option<Arc<ResponseThread>>,
}

pub fn instance_initialize(instance: ModelInstance) -> Result<()> {
    let model = instance.model()?;
    // Set in model_initialize, which Triton runs before any instance is created.
    let host = model.state_slot().get::<ModelHost>()?;
    let instance_name = instance.name()?;
    refuse_invalid_name("instance", &instance_name)?;
    let info = InstanceInfo {
        name: instance_name,
        kind: instance.kind()?.to_string(),
        device_id: instance.device_id()?,
    };
    let created = host.instance(&info)?;
    let backend = model.backend()?;
    let state = backend.state_slot().get::<BackendState>()?;
    let settings = &state.settings;
    let readiness = InstanceReadiness::new(
        &model.name()?,
        model.version()?,
        &info.name,
        created.health(),
        created.ready_call(),
        settings.readiness_timeout,
        settings.readiness_probe_interval,
        settings.metrics,
    );
    let responses = if settings.response_thread {
        Some(ResponseThread::start(&info.name).map_err(|e| {
            Error::internal(format!(
                "instance '{}': cannot start its response thread: {e}",
                info.name
            ))
        })?)
    } else {
        None
    };
    instance.state_slot().put(InstanceState {
        host: created,
        readiness,
        responses,
    })
}

pub fn instance_finalize(instance: ModelInstance) -> Result<()> {
    // The line upstream's backend logs here (operators grep it).
    log(
        LogLevel::Verbose,
        "TRITONBACKEND_ModelInstanceFinalize: delete instance state",
    );
    if let Some(state) = instance.state_slot().take::<InstanceState>()? {
        state.readiness.close();
        // Runs finalize here, or in the worker (which is then reaped).
        if let Err(e) = state.host.finalize() {
            log(LogLevel::Error, &e.message);
        }
        // Sends what the instance queued before Triton deletes the model.
        if let Some(responses) = &state.responses {
            responses.close();
        }
    }
    Ok(())
}

/// TRITONBACKEND_ModelInstanceReady: Ok when the instance is ready.
pub fn instance_ready(instance: ModelInstance) -> Result<()> {
    instance
        .state_slot()
        .get::<InstanceState>()?
        .readiness
        .ready()
}

/// Delivers one request's responses through Triton's response factory.
/// Responses are built (buffers filled) on the calling thread and sent by the
/// instance's [`ResponseThread`] (inline when there is none). Whether the
/// final one went out is tracked by the [`ResponseStream`] around it, which
/// also answers with an error if it is dropped before (a bug or a panic). A
/// request without a factory never gets a responder (see [`responder_for`]),
/// so no send can silently go nowhere.
struct TritonSink {
    /// None after the FINAL flag went to the queue with it.
    factory: Option<ResponseFactory>,
    responses: Option<Arc<ResponseThread>>,
}

type TritonResponder = ResponseStream<TritonSink>;

/// The responder of `request`, or None when the server cannot create its
/// response factory; that request is then answered with an error through a
/// response made from the request itself.
fn responder_for(
    request: &Request,
    model_name: &str,
    responses: Option<&Arc<ResponseThread>>,
) -> Option<TritonResponder> {
    match ResponseFactory::new(request) {
        Ok(factory) => Some(ResponseStream::new(TritonSink {
            factory: Some(factory),
            responses: responses.cloned(),
        })),
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

impl TritonSink {
    fn dispatch(&self, job: Job) {
        match &self.responses {
            Some(thread) => thread.submit(job),
            None => job.run(),
        }
    }

    fn factory(&mut self) -> Result<&mut ResponseFactory> {
        self.factory
            .as_mut()
            .ok_or_else(|| Error::internal("rustpy: a response after the final flag"))
    }
}

impl ResponseSink for TritonSink {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<()> {
        self.send_with_parameters(outputs, &[], is_final)
    }

    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<()> {
        let response = self.factory()?.build(outputs, parameters, is_final)?;
        self.dispatch(Job::Send(response));
        Ok(())
    }

    fn send_error(&mut self, error: &Error, is_final: bool) {
        match self.factory().and_then(|f| f.build_error(error, is_final)) {
            Ok(response) => self.dispatch(Job::Send(response)),
            Err(e) => log(
                LogLevel::Error,
                &format!("rustpy: cannot send an error response: {e}"),
            ),
        }
    }

    fn send_final(&mut self) {
        if let Some(factory) = self.factory.take() {
            self.dispatch(Job::Finish(factory));
        }
    }

    fn is_cancelled(&self) -> bool {
        self.factory.as_ref().is_some_and(|f| f.is_cancelled())
    }
}

impl Drop for TritonSink {
    fn drop(&mut self) {
        // Released after the responses it made, which are still queued.
        if let Some(factory) = self.factory.take() {
            self.dispatch(Job::Release(factory));
        }
    }
}

/// Runs one batch of requests. Every request is answered and released here,
/// whatever happens: inputs reach Python as copies, so nothing outlives this
/// call but the response factories (a decoupled model may keep answering).
pub fn execute(instance: ModelInstance, requests: Vec<Request>) {
    let exec_start = monotonic_ns();
    // Set in instance_initialize (Triton never executes an instance whose
    // initialisation failed).
    let state = instance.state_slot().get::<InstanceState>();
    let responses = state.as_ref().ok().and_then(|s| s.responses.as_ref());
    let state = state.map(|s| &s.host);
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
        if let Some(r) = responder_for(req, &model_name, responses) {
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
