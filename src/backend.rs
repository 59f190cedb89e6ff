//! What each Triton entry point does, in safe Rust. The execution itself
//! (validation, batching, Python) is `rustpy_core`'s; this module adapts
//! Triton's handles to it and reports statistics.

use std::path::Path;
use std::sync::Arc;

use rustpy_core::constants::LogLevel as CoreLogLevel;
use rustpy_core::isolation::{WorkerConfig, WorkerInstance};
use rustpy_core::python::{self, InstanceInfo, LoadedModel};
use rustpy_core::{
    Error, InferRequest, Outcome, OutputSlice, Responder, ResponseParameters, ResponseSink,
    ResponseStream,
};

use crate::ffi::handles::{api_version, OUR_API_VERSION};
use crate::ffi::server::TritonServerApi;
use crate::ffi::sys::{monotonic_ns, own_library_path, promote_libpython_to_global};
use crate::ffi::{log, log_at, Backend, LogLevel, Model, ModelInstance, Request, ResponseFactory};
use crate::readiness::InstanceReadiness;
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
        let level = match level {
            CoreLogLevel::Info => LogLevel::Info,
            CoreLogLevel::Warn => LogLevel::Warn,
            CoreLogLevel::Error => LogLevel::Error,
            CoreLogLevel::Verbose => LogLevel::Verbose,
        };
        log_at(level, file, line, msg);
    }));
    python::initialize().map_err(|e| e.context("rustpy"))?;
    let settings = Settings::from_backend_config(&backend.config_json()?)?;
    // --backend-config=rustpy,site-packages=DIR (what `rustpy env` installs);
    // process-isolated models' workers get it too.
    if let Some(dir) = &settings.site_packages {
        python::add_site_packages(dir).map_err(|e| e.context("rustpy"))?;
        log(
            LogLevel::Info,
            &format!("rustpy: site-packages {} added to sys.path", dir.display()),
        );
    }
    if settings.default_isolation == rustpy_config::model::Isolation::Process {
        log(
            LogLevel::Info,
            &format!("rustpy: backend '{name}': models run process-isolated unless their config says otherwise (default-isolation=process)"),
        );
    }
    let _ = SETTINGS.set(settings);
    log(
        LogLevel::Info,
        &format!("rustpy: backend '{name}' ready (backend API {major}.{minor}, {libpython})"),
    );
    Ok(())
}

pub fn finalize(_backend: Backend) -> Result<()> {
    // The interpreter is deliberately left running: it cannot be finalised and
    // re-initialised in one process, and the library is never unloaded. So
    // nothing else would flush what models printed without a newline.
    python::flush_stdio();
    Ok(())
}

/// The backend's --backend-config settings (read in `initialize`).
static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// Per-model state: the imported Python module, or (process isolation)
/// what each instance's worker needs.
enum ModelState {
    InProcess(Arc<LoadedModel>),
    Process(Box<WorkerConfig>),
}

/// `rustpy-worker`, installed next to libtriton_rustpy.so ($RUSTPY_WORKER
/// overrides; a symlinked library is also followed to its real directory).
fn worker_executable() -> Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("RUSTPY_WORKER") {
        return Ok(p.into());
    }
    let lib = own_library_path()
        .ok_or_else(|| Error::internal("rustpy: cannot locate libtriton_rustpy.so"))?;
    let mut tried = Vec::new();
    for dir in [
        lib.parent().map(Path::to_path_buf),
        lib.canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    ]
    .into_iter()
    .flatten()
    {
        let exe = dir.join("rustpy-worker");
        if exe.is_file() {
            return Ok(exe);
        }
        tried.push(exe.display().to_string());
    }
    Err(Error::unsupported(format!(
        "rustpy: process isolation needs the rustpy-worker executable next to libtriton_rustpy.so; not found at {}",
        tried.join(" or ")
    )))
}

pub fn model_initialize(model: Model) -> Result<()> {
    // BLS, model control and metrics from Python go through the server that
    // loads our models (one per process).
    if rustpy_core::server::server_api().is_err() {
        rustpy_core::server::set_server_api(TritonServerApi::new(model)?);
    }
    let name = model.name()?;
    refuse_invalid_name("model", &name)?;
    let version = model.version()?;
    let dir = model.directory()?;
    let json = model.config_json()?;
    let config = rustpy_config::parse_json(&json).map_err(|e| {
        Error::invalid_arg(format!(
            "model '{name}': cannot read its configuration: {e}"
        ))
    })?;
    let isolation =
        rustpy_config::model::isolation_settings_or(&config, settings().default_isolation)
            .map_err(|e| Error::invalid_arg(format!("model '{name}': {e}")))?;
    if isolation.mode == rustpy_config::model::Isolation::Process {
        // model.py is imported only in the workers, never in the server.
        let executable = worker_executable().map_err(|e| e.context(format!("model '{name}'")))?;
        // Its own Python environment, unpacked (once) and checked here.
        let env = match &isolation.env {
            Some(env) => {
                let prepared = rustpy_core::isolation::env::prepare(&name, Path::new(&dir), env)?;
                log(
                    LogLevel::Info,
                    &format!(
                        "rustpy: model '{name}': {} {}",
                        env.key(),
                        prepared.description
                    ),
                );
                Some(prepared)
            }
            None => None,
        };
        log(
            LogLevel::Info,
            &format!(
                "rustpy: model '{name}' version {version} runs process-isolated ({})",
                executable.display()
            ),
        );
        let mut template = WorkerConfig {
            executable,
            model_name: name.clone(),
            version,
            model_dir: dir,
            config_json: json,
            instance: InstanceInfo {
                name: String::new(),
                kind: String::new(),
                device_id: 0,
            },
            execute_timeout: isolation
                .execute_timeout_ms
                .map(std::time::Duration::from_millis),
            site_packages: settings().site_packages.clone(),
            env_site_packages: env.as_ref().map(|e| e.site_packages.clone()),
            memory_limit_mb: isolation.memory_limit_mb,
            input_shm_limit_mb: isolation.input_shm_limit_mb,
            env_archive_root: env.as_ref().and_then(|e| e.archive_root.clone()),
            env_lease: env.and_then(|e| e.lease),
        };
        // auto_complete_config runs in a short-lived worker.
        if model.auto_complete_enabled()? {
            if let Some(completed) = rustpy_core::isolation::auto_complete(&template)? {
                model.set_config_json(&completed)?;
                template.config_json = model.config_json()?;
                rustpy_config::parse_json(&template.config_json).map_err(|e| {
                    Error::invalid_arg(format!(
                        "model '{name}': cannot read its auto-completed configuration: {e}"
                    ))
                })?;
            }
        }
        return model
            .state_slot()
            .put(ModelState::Process(Box::new(template)));
    }
    let mut loaded = LoadedModel::load(&config, Path::new(&dir), version)?;
    // TritonPythonModel.auto_complete_config, applied through Triton's own
    // auto-complete (skipped when the server runs with it disabled).
    if model.auto_complete_enabled()? {
        if let Some(completed) = loaded.auto_complete(&json)? {
            model.set_config_json(&completed)?;
            let json = model.config_json()?;
            let config = rustpy_config::parse_json(&json).map_err(|e| {
                Error::invalid_arg(format!(
                    "model '{name}': cannot read its auto-completed configuration: {e}"
                ))
            })?;
            loaded.reconfigure(&config)?;
        }
    }
    log(
        LogLevel::Info,
        &format!(
            "rustpy: loaded model '{name}' version {version} from {}",
            loaded.model_file.display()
        ),
    );
    model
        .state_slot()
        .put(ModelState::InProcess(Arc::new(loaded)))
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
    let state = model.state_slot().take::<ModelState>()?;
    // The line upstream's backend logs here (operators grep it).
    log(
        LogLevel::Verbose,
        "TRITONBACKEND_ModelFinalize: delete model state",
    );
    drop(state); // unloads the module once the last instance let go of it
    Ok(())
}

/// Per-instance state: the user's Python object, here or in a worker, and
/// its readiness.
struct InstanceState {
    instance: Executor,
    readiness: Arc<InstanceReadiness>,
}

enum Executor {
    InProcess(python::ModelInstance),
    Process(Box<WorkerInstance>),
}

impl Executor {
    fn model_name(&self) -> &str {
        match self {
            Executor::InProcess(i) => i.model().name(),
            Executor::Process(w) => w.model_name(),
        }
    }

    fn execute(
        &self,
        requests: &[Result<InferRequest<'_>>],
        responders: Vec<TritonResponder>,
    ) -> rustpy_core::ExecReport {
        match self {
            Executor::InProcess(i) => i.execute(requests, responders),
            Executor::Process(w) => w.execute(requests, responders),
        }
    }
}

pub fn instance_initialize(instance: ModelInstance) -> Result<()> {
    let model = instance.model()?;
    // Set in model_initialize, which Triton runs before any instance is created.
    let state = model.state_slot().get::<ModelState>()?;
    let instance_name = instance.name()?;
    refuse_invalid_name("instance", &instance_name)?;
    let info = InstanceInfo {
        name: instance_name,
        kind: instance.kind()?.to_string(),
        device_id: instance.device_id()?,
    };
    let (created, health, ready_call) = match state {
        ModelState::InProcess(model) => {
            let i = python::ModelInstance::new(model.clone(), &info)?;
            let call = i.ready_call();
            (Executor::InProcess(i), None, call)
        }
        ModelState::Process(template) => {
            let w = WorkerInstance::new(WorkerConfig {
                instance: info.clone(),
                ..(**template).clone()
            })?;
            let (health, call) = (w.health(), w.ready_call());
            (Executor::Process(Box::new(w)), Some(health), call)
        }
    };
    let model = instance.model()?;
    let readiness = InstanceReadiness::new(
        &model.name()?,
        model.version()?,
        &info.name,
        health,
        ready_call,
        settings().readiness_timeout,
        settings().readiness_probe_interval,
    );
    instance.state_slot().put(InstanceState {
        instance: created,
        readiness,
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
        match state.instance {
            Executor::InProcess(i) => {
                if let Err(e) = i.finalize() {
                    log(LogLevel::Error, &e.message);
                }
            }
            // Runs finalize in the worker, then reaps it.
            Executor::Process(w) => w.finalize(),
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
        self.factory.send(outputs, &[], is_final)
    }

    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<()> {
        self.factory.send(outputs, parameters, is_final)
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
    let state = instance.state_slot().get::<InstanceState>();
    let model_name = match &state {
        Ok(s) => s.instance.model_name().to_string(),
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
    let report = state.instance.execute(&core_requests, responders);
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
