//! Where a model's Python runs: in this process (one interpreter for every
//! model), or in one `rustpy-worker` process per instance (`rustpy.isolation:
//! "process"`, implied by a per-model environment). Decided here, once, for
//! the backend and for `rustpy run` / `rustpy test` alike, so the CLI runs a
//! process-isolated model (and its own environment) exactly as the server
//! does.
//!
//! - [`ModelHost::load`]: reads the configuration, chooses the host, prepares
//!   it (imports model.py here, or prepares the environment and what each
//!   worker needs), runs the model's `auto_complete_config` once and adopts
//!   the result.
//! - [`ModelHost::instance`]: one [`InstanceHost`] per model instance: a
//!   `python::ModelInstance`, or an `isolation::WorkerInstance`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustpy_config::failures::isolate_failures_setting;
use rustpy_config::model::{isolation_settings_or, Isolation, IsolationSettings};
use rustpy_config::proto::ModelConfig;

use crate::admission;
use crate::checkpoint;
use crate::constants::LogLevel;
use crate::engine::{ExecReport, Responder};
use crate::error::{Error, Result};
use crate::failure_split;
use crate::isolation::{self, WorkerConfig, WorkerInstance};
use crate::metrics::{InstanceLabels, InstanceMetrics, Metrics, WorkerMetrics};
use crate::python::{self, InstanceInfo, LoadedModel, ModelInstance};
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

/// Where host-level messages go (Triton's log in the backend).
pub type HostLog = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// What the process hosting rustpy tells every model load.
#[derive(Clone)]
pub struct HostSettings {
    /// Extra site-packages directories the process put on `sys.path`
    /// (`--backend-config=rustpy,site-packages=DIR`, `rustpy run
    /// --site-packages`): a process-isolated model's workers get them too.
    pub site_packages: Vec<PathBuf>,
    /// Where a model that chooses neither `rustpy.isolation` nor an
    /// environment runs (`--backend-config=rustpy,default-isolation=process`).
    pub default_isolation: Isolation,
    /// The library or executable `rustpy-worker` is installed next to
    /// (libtriton_rustpy.so in the backend, `rustpy` in the CLI).
    pub worker_anchor: Option<PathBuf>,
    pub log: HostLog,
    /// Where the models' metrics go (Triton's registry in the backend;
    /// off in the CLI).
    pub metrics: Metrics,
}

impl HostSettings {
    /// Settings for a program that has `rustpy-worker` next to its own
    /// executable (the CLI), logging warnings and errors to stderr.
    pub fn for_executable(site_packages: Vec<PathBuf>) -> Self {
        HostSettings {
            site_packages,
            default_isolation: Isolation::InProcess,
            worker_anchor: std::env::current_exe().ok(),
            log: Arc::new(|level, msg| {
                if matches!(level, LogLevel::Warn | LogLevel::Error) {
                    eprintln!("{msg}");
                }
            }),
            metrics: Metrics::off(),
        }
    }
}

/// Whoever owns a model's configuration: Triton (which decides whether a
/// model may complete it), or a `config.pbtxt` read by the CLI.
pub trait ConfigOwner {
    /// Whether the model's `auto_complete_config` may change the configuration.
    fn auto_complete_enabled(&self) -> Result<bool>;
    /// Adopts a completed configuration (JSON); returns the configuration
    /// as the owner now holds it (Triton normalises it).
    fn replace_config(&self, completed: &str) -> Result<String>;
}

/// A configuration nobody may complete (the CLI reads config.pbtxt as it is).
pub struct FixedConfig;

impl ConfigOwner for FixedConfig {
    fn auto_complete_enabled(&self) -> Result<bool> {
        Ok(false)
    }
    fn replace_config(&self, _completed: &str) -> Result<String> {
        Err(Error::internal("this configuration cannot be replaced"))
    }
}

/// A model to load: its name, version, directory and configuration (JSON).
pub struct ModelSource {
    pub name: String,
    pub version: u64,
    pub dir: PathBuf,
    pub config_json: String,
}

/// A loaded model and where it runs.
pub struct ModelHost {
    spec: ModelSpec,
    place: Place,
    metrics: Metrics,
    /// `rustpy.isolate_failures` (crate::failure_split).
    isolate_failures: bool,
}

enum Place {
    /// The imported module, once per model version.
    InProcess(Arc<LoadedModel>),
    /// What each instance's worker needs (model.py is imported only there).
    Worker(Box<WorkerConfig>),
}

impl ModelHost {
    /// Loads the model where its configuration says it runs.
    pub fn load(
        source: ModelSource,
        settings: &HostSettings,
        owner: &dyn ConfigOwner,
    ) -> Result<ModelHost> {
        let name = source.name.clone();
        let config = parse_config(&name, &source.config_json, "configuration")?;
        let isolation = isolation_settings_or(&config, settings.default_isolation)
            .map_err(|e| Error::invalid_arg(format!("model '{name}': {e}")))?;
        let mut place = match isolation.mode {
            Isolation::Process => {
                let cfg = worker_config(&source, &isolation, settings)?;
                // Fetched (and counted) once here; each worker finds it in the cache.
                let (dir, metrics) = (&source.dir, &settings.metrics);
                checkpoint::prefetch(&config, &name, source.version, dir, metrics)?;
                Loading::Worker(Box::new(cfg))
            }
            Isolation::InProcess => {
                python::initialize()?;
                Loading::InProcess(Box::new(LoadedModel::load(
                    &config,
                    &source.dir,
                    source.version,
                    &settings.metrics,
                )?))
            }
        };
        let config = place
            .auto_complete(&name, &source.config_json, owner)?
            .unwrap_or(config);
        let spec = ModelSpec::from_config(&config, source.version)?;
        let isolate_failures = isolate_failures_setting(&config)
            .map_err(|e| Error::invalid_arg(format!("model '{name}': {e}")))?;
        let place = match place {
            Loading::InProcess(model) => {
                (settings.log)(
                    LogLevel::Info,
                    &format!(
                        "rustpy: loaded model '{name}' version {} from {}",
                        source.version,
                        model.model_file.display()
                    ),
                );
                Place::InProcess(Arc::new(*model))
            }
            Loading::Worker(cfg) => Place::Worker(cfg),
        };
        Ok(ModelHost {
            spec,
            place,
            metrics: settings.metrics.clone(),
            isolate_failures,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Whether instances run in worker processes.
    pub fn is_process_isolated(&self) -> bool {
        matches!(self.place, Place::Worker(_))
    }

    /// Creates one instance (runs the user's `initialize`, here or in its
    /// worker); an error fails the instance's load with that cause. Its
    /// executions (and its worker's life) are counted in the host's metrics,
    /// labelled with the model, version and instance name.
    pub fn instance(&self, info: &InstanceInfo) -> Result<InstanceHost> {
        let labels = InstanceLabels::new(&self.spec.name, self.spec.version, &info.name);
        let runs = match &self.place {
            Place::InProcess(model) => Runs::InProcess(ModelInstance::new(model.clone(), info)?),
            Place::Worker(template) => Runs::Worker(Box::new(WorkerInstance::new(
                WorkerConfig {
                    instance: info.clone(),
                    ..(**template).clone()
                },
                WorkerMetrics::new(&self.metrics, &labels),
            )?)),
        };
        Ok(InstanceHost {
            spec: self.spec.clone(),
            runs,
            metrics: InstanceMetrics::new(&self.metrics, &labels),
            isolate_failures: self.isolate_failures,
        })
    }
}

/// A model being loaded, before its configuration is final.
enum Loading {
    InProcess(Box<LoadedModel>),
    Worker(Box<WorkerConfig>),
}

impl Loading {
    /// Runs the model's `auto_complete_config` where the model runs (a
    /// short-lived worker for a process-isolated one) if the owner allows
    /// it, and adopts the completed configuration as the owner holds it.
    /// Returns that configuration when it changed.
    fn auto_complete(
        &mut self,
        name: &str,
        config_json: &str,
        owner: &dyn ConfigOwner,
    ) -> Result<Option<ModelConfig>> {
        if !owner.auto_complete_enabled()? {
            return Ok(None);
        }
        let completed = match self {
            Loading::InProcess(model) => model.auto_complete(config_json)?,
            Loading::Worker(cfg) => isolation::auto_complete(cfg)?,
        };
        let Some(completed) = completed else {
            return Ok(None);
        };
        let json = owner.replace_config(&completed)?;
        let config = parse_config(name, &json, "auto-completed configuration")?;
        match self {
            Loading::InProcess(model) => model.reconfigure(&config)?,
            Loading::Worker(cfg) => cfg.config_json = json,
        }
        Ok(Some(config))
    }
}

fn parse_config(name: &str, json: &str, what: &str) -> Result<ModelConfig> {
    rustpy_config::parse_json(json)
        .map_err(|e| Error::invalid_arg(format!("model '{name}': cannot read its {what}: {e}")))
}

/// What every worker of a process-isolated model needs: the executable,
/// the model's own environment (prepared once here) and its limits.
fn worker_config(
    source: &ModelSource,
    isolation: &IsolationSettings,
    settings: &HostSettings,
) -> Result<WorkerConfig> {
    let name = &source.name;
    let executable = find_worker(settings.worker_anchor.as_deref())
        .map_err(|e| e.context(format!("model '{name}'")))?;
    let site_packages = match settings.site_packages.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        _ => {
            return Err(Error::invalid_arg(format!(
                "model '{name}': a process-isolated model's workers take one site-packages directory, not {}",
                settings.site_packages.len()
            )))
        }
    };
    let env = match &isolation.env {
        Some(env) => {
            let prepared = isolation::env::prepare(name, &source.dir, env)?;
            (settings.log)(
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
    (settings.log)(
        LogLevel::Info,
        &format!(
            "rustpy: model '{name}' version {} runs process-isolated ({})",
            source.version,
            executable.display()
        ),
    );
    Ok(WorkerConfig {
        executable,
        model_name: name.clone(),
        version: source.version,
        model_dir: source.dir.to_string_lossy().into_owned(),
        config_json: source.config_json.clone(),
        instance: InstanceInfo {
            name: String::new(),
            kind: String::new(),
            device_id: 0,
        },
        execute_timeout: isolation.execute_timeout_ms.map(Duration::from_millis),
        site_packages,
        env_site_packages: env.as_ref().map(|e| e.site_packages.clone()),
        memory_limit_mb: isolation.memory_limit_mb,
        input_shm_limit_mb: isolation.input_shm_limit_mb,
        shm_limit_mb: isolation.shm_limit_mb,
        pending_calls_limit: isolation.pending_calls_limit,
        env_archive_root: env.as_ref().and_then(|e| e.archive_root.clone()),
        env_lease: env.and_then(|e| e.lease),
    })
}

/// `rustpy-worker`: `$RUSTPY_WORKER`, else installed next to `anchor` (the
/// library or executable hosting rustpy; a symlinked one is also followed to
/// its real directory), else in `$CARGO_TARGET_DIR/{release,debug}` (a
/// development tree).
pub fn find_worker(anchor: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RUSTPY_WORKER") {
        return Ok(p.into());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(anchor) = anchor {
        dirs.extend(anchor.parent().map(Path::to_path_buf));
        dirs.extend(
            anchor
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
        );
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        dirs.extend([target.join("release"), target.join("debug")]);
    }
    let mut tried = Vec::new();
    for dir in dirs {
        let exe = dir.join("rustpy-worker");
        if exe.is_file() {
            return Ok(exe);
        }
        let shown = exe.display().to_string();
        if !tried.contains(&shown) {
            tried.push(shown);
        }
    }
    let next_to = anchor
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rustpy".into());
    Err(Error::unsupported(format!(
        "rustpy: process isolation needs the rustpy-worker executable next to {next_to}; not found at {}",
        if tried.is_empty() {
            "any known place".to_string()
        } else {
            tried.join(" or ")
        }
    )))
}

/// One model instance, where it runs.
pub struct InstanceHost {
    spec: ModelSpec,
    runs: Runs,
    metrics: InstanceMetrics,
    isolate_failures: bool,
}

enum Runs {
    InProcess(ModelInstance),
    Worker(Box<WorkerInstance>),
}

impl InstanceHost {
    pub fn model_name(&self) -> &str {
        &self.spec.name
    }

    /// Executes `requests`, answering each through its responder (same
    /// index). Admission comes first, once, here (crate::admission: an
    /// unreadable request, `Err`, a cancelled one, one that does not fit
    /// the configuration are answered with why); the instance (or its
    /// worker) runs the others; with `rustpy.isolate_failures`, failed
    /// requests of a shared call are run again in halves until the cause
    /// is found (crate::failure_split). What the strategy counted (calls,
    /// rows, splits, phases, GIL wait, refused parameters) goes to the
    /// instance's metrics once the responses are out.
    pub fn execute<R: Responder + 'static>(
        &self,
        requests: &[Result<InferRequest<'_>>],
        responders: Vec<R>,
    ) -> ExecReport {
        let (admitted, responders) = admission::admit(&self.spec, requests, responders);
        let report = admitted.report(match admitted.requests.len() {
            0 => ExecReport::new(0),
            n if n > 1 && self.isolate_failures => failure_split::run_isolating_failures(
                &admitted.requests,
                responders,
                |requests, held| self.run(requests, held),
            ),
            _ => self.run(&admitted.requests, responders),
        });
        self.metrics.record(&report.stats);
        report
    }

    /// One call of the instance, here or in its worker.
    fn run<R: Responder + 'static>(
        &self,
        requests: &[&InferRequest<'_>],
        responders: Vec<R>,
    ) -> ExecReport {
        match &self.runs {
            Runs::InProcess(i) => i.run(requests, responders),
            Runs::Worker(w) => w.execute(requests, responders),
        }
    }

    /// Whether the instance's process is alive (a worker's; None in-process,
    /// where the server's own liveness says it).
    pub fn health(&self) -> Option<Box<dyn Fn() -> bool + Send + Sync>> {
        match &self.runs {
            Runs::InProcess(_) => None,
            Runs::Worker(w) => Some(w.health()),
        }
    }

    /// The user's `is_ready()`, if the model has one (called where the
    /// model runs).
    pub fn ready_call(&self) -> Option<crate::readiness::ReadyCall> {
        match &self.runs {
            Runs::InProcess(i) => i.ready_call(),
            Runs::Worker(w) => w.ready_call(),
        }
    }

    /// Runs the user's `finalize` (here, or in the worker, which is then
    /// stopped and reaped).
    pub fn finalize(self) -> Result<()> {
        match self.runs {
            Runs::InProcess(i) => i.finalize(),
            Runs::Worker(w) => {
                w.finalize();
                Ok(())
            }
        }
    }
}
