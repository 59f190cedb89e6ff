//! Model repository validation as a library (what `rustpy check` reports).
//!
//! [`check_path`] collects every problem it can find rather than stopping at
//! the first, each located (file, and line/column when the problem is in a
//! `config.pbtxt`) and with a hint on how to fix it. Python source checks are
//! the CLI's job; [`model_files`] tells it which files to look at.

use std::{
    collections::HashSet,
    fmt, fs, io,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    descriptor_pool,
    model::{
        element_count, isolation_settings, model_filename, DEFAULT_MODEL_FILENAME,
        EXECUTE_TIMEOUT_KEY, ISOLATION_KEY,
    },
    parse_pbtxt,
    proto::{
        model_config::SchedulingChoice, model_instance_group::Kind,
        model_sequence_batching::StrategyChoice, model_version_policy::PolicyChoice, DataType,
        ModelConfig, ModelTensorReshape,
    },
    scan::{Block, Locator},
    PbtxtError,
};

/// The model configuration file Triton reads in each model directory.
pub const CONFIG_FILE: &str = "config.pbtxt";
/// The official Python backend's per-model environment archive parameter.
pub const EXECUTION_ENV_PARAMETER: &str = "EXECUTION_ENV_PATH";

/// The directory of a model's golden cases (`rustpy test`); not a version.
pub const TESTS_DIR: &str = "tests";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem found in a model repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file or directory the problem is in.
    pub file: PathBuf,
    /// 1-based line in `file`, when the problem is at a known place in it.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// Stable identifier of the rule, e.g. `config.syntax`.
    pub code: &'static str,
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: severity[code]: message` (position parts only when known).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}[{}]: {}", self.severity, self.code, self.message)
    }
}

/// Everything [`check_path`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Checks a model repository (a directory of model directories), a single
/// model directory (see [`is_model_dir`]) or a model's `config.pbtxt`.
pub fn check_path(path: &Path) -> Report {
    let mut out = Vec::new();
    let path = model_path_of_config(path).unwrap_or(path);
    if !path.is_dir() {
        out.push(Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: None,
            column: None,
            code: "path.not-found",
            message: "not a directory".into(),
            hint: "pass a model repository, a model directory or a config.pbtxt".into(),
        });
    } else if is_model_dir(path) {
        check_model(path, &mut out);
    } else {
        check_repository(path, &mut out);
    }
    Report { diagnostics: out }
}

/// The model directories [`check_path`] checks for `path`, sorted: the model
/// itself for a model directory or its `config.pbtxt`, else the repository's
/// non-hidden subdirectories.
pub fn model_dirs(path: &Path) -> Vec<PathBuf> {
    let path = model_path_of_config(path).unwrap_or(path);
    if !path.is_dir() {
        Vec::new()
    } else if is_model_dir(path) {
        vec![path.to_path_buf()]
    } else {
        subdirs(path)
            .into_iter()
            .filter(|d| !file_name(d).starts_with('.'))
            .collect()
    }
}

/// The model directory of a path naming a `config.pbtxt` file.
fn model_path_of_config(path: &Path) -> Option<&Path> {
    (path.is_file() && path.file_name()? == CONFIG_FILE)
        .then(|| path.parent())
        .flatten()
}

/// A directory is a model directory if it holds a `config.pbtxt` or a
/// version directory (a positive integer name); anything else is taken as a
/// repository of models.
pub fn is_model_dir(path: &Path) -> bool {
    path.join(CONFIG_FILE).is_file()
        || subdirs(path).iter().any(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| version_number(n).is_some())
        })
}

/// The model file of each version of a model, in version order, for the
/// backends that run Python files (`python`, `rustpy`, or none set): the
/// version's `default_model_filename` (or `model.py`) where it exists. Empty
/// for other backends.
pub fn model_files(model_dir: &Path) -> Vec<PathBuf> {
    let cfg = fs::read_to_string(model_dir.join(CONFIG_FILE))
        .ok()
        .and_then(|text| parse_pbtxt(&text).ok());
    let filename = match &cfg {
        Some(cfg) if !runs_python_files(cfg) => return Vec::new(),
        Some(cfg) => model_filename(cfg).to_owned(),
        None => DEFAULT_MODEL_FILENAME.to_owned(),
    };
    version_dirs(model_dir)
        .0
        .into_iter()
        .map(|(_, dir)| dir.join(&filename))
        .filter(|file| file.is_file())
        .collect()
}

fn runs_python_files(cfg: &ModelConfig) -> bool {
    matches!(cfg.backend.as_str(), "python" | "rustpy")
        || (cfg.backend.is_empty() && cfg.platform.is_empty())
}

/// Triton loads only version directories named by a positive integer without
/// leading zeros; it silently skips the rest.
fn version_number(name: &str) -> Option<u64> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&v| v > 0)
}

/// Subdirectories, sorted by name (unreadable directories have none).
fn subdirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// (version dirs sorted by version, other subdirectories), by Triton's rule
/// for which directories are versions.
pub fn version_dirs(model_dir: &Path) -> (Vec<(u64, PathBuf)>, Vec<PathBuf>) {
    let mut versions = Vec::new();
    let mut ignored = Vec::new();
    for dir in subdirs(model_dir) {
        match dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(version_number)
        {
            Some(v) => versions.push((v, dir)),
            None => ignored.push(dir),
        }
    }
    versions.sort();
    (versions, ignored)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn check_repository(repo: &Path, out: &mut Vec<Diagnostic>) {
    let models = subdirs(repo);
    if models.is_empty() {
        out.push(Diagnostic {
            severity: Severity::Warning,
            file: repo.to_path_buf(),
            line: None,
            column: None,
            code: "repo.empty",
            message: "no model directories found".into(),
            hint: "a model repository holds one directory per model, each with a config.pbtxt and a version directory such as 1/".into(),
        });
    }
    for model in models {
        if file_name(&model).starts_with('.') {
            // Triton treats every subdirectory as a model, hidden ones included.
            out.push(Diagnostic {
                severity: Severity::Warning,
                file: model,
                line: None,
                column: None,
                code: "repo.hidden-dir",
                message: "hidden directory in the model repository".into(),
                hint: "Triton will try to load it as a model; move it out of the repository".into(),
            });
            continue;
        }
        check_model(&model, out);
    }
}

/// Checks one model directory, appending to `out`.
fn check_model(dir: &Path, out: &mut Vec<Diagnostic>) {
    let (versions, ignored) = version_dirs(dir);
    let diag = |severity, file: PathBuf, code, message: String, hint: String| Diagnostic {
        severity,
        file,
        line: None,
        column: None,
        code,
        message,
        hint,
    };

    for other in ignored {
        let name = file_name(&other);
        if name == "__pycache__" || name == TESTS_DIR || name.starts_with('.') {
            continue;
        }
        out.push(diag(
            Severity::Warning,
            other,
            "version.ignored-dir",
            format!("'{name}' is not a version number, so Triton ignores this directory"),
            "version directories are named 1, 2, ... (no leading zeros); rename it or move it elsewhere".into(),
        ));
    }
    if versions.is_empty() {
        out.push(diag(
            Severity::Error,
            dir.to_path_buf(),
            "version.none",
            "model has no version directory".into(),
            format!("create {}/1/ holding the model file", dir.display()),
        ));
    }

    let config_path = dir.join(CONFIG_FILE);
    let text = match fs::read_to_string(&config_path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            out.push(diag(
                Severity::Warning,
                config_path,
                "config.missing",
                "model has no config.pbtxt".into(),
                "Triton can only auto-complete a missing config for some backends; write one (`rustpy init`) with backend: \"rustpy\", inputs and outputs".into(),
            ));
            return;
        }
        Err(err) => {
            out.push(diag(
                Severity::Error,
                config_path,
                "config.unreadable",
                format!("cannot read config.pbtxt: {err}"),
                "make the file readable UTF-8 text".into(),
            ));
            return;
        }
    };
    let cfg = match parse_pbtxt(&text) {
        Ok(cfg) => cfg,
        Err(err) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: config_path,
                line: Some(err.line),
                column: Some(err.column),
                code: "config.syntax",
                hint: syntax_hint(&err),
                message: err.message,
            });
            return;
        }
    };

    let loc = Locator::new(&text);
    let mut rules = Rules {
        dir,
        cfg: &cfg,
        loc: &loc,
        file: &config_path,
        out,
    };
    rules.model(&versions);
    rules.io();
    rules.ragged();
    rules.scheduling();
    rules.instance_groups();
    rules.isolation();
    rules.version_policy(&versions);
    rules.checkpoint();
    rules.execution_env();
    check_request_parameters(dir, out);
}

/// Checks `request_parameters.json`, when the model has one.
fn check_request_parameters(dir: &Path, out: &mut Vec<Diagnostic>) {
    let file = dir.join(crate::params::REQUEST_PARAMETERS_FILE);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return,
        Err(err) => {
            out.push(Diagnostic {
                severity: Severity::Error,
                file,
                line: None,
                column: None,
                code: "params.unreadable",
                message: format!("cannot read the request parameter declaration: {err}"),
                hint: "make the file readable UTF-8 JSON".into(),
            });
            return;
        }
    };
    if let Err(errors) = crate::params::parse_declaration(&text) {
        for e in errors {
            out.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                line: e.line,
                column: e.column,
                code: "params.declaration",
                message: e.message,
                hint: e.hint,
            });
        }
    }
}

/// The parts of a `ModelInput` / `ModelOutput` that share rules.
struct Tensor<'c> {
    name: &'c str,
    data_type: i32,
    dims: &'c [i64],
    reshape: Option<&'c ModelTensorReshape>,
}

/// Rules over a parsed config, locating findings in its text.
struct Rules<'a, 't> {
    dir: &'a Path,
    cfg: &'a ModelConfig,
    loc: &'a Locator<'t>,
    file: &'a Path,
    out: &'a mut Vec<Diagnostic>,
}

impl Rules<'_, '_> {
    fn push(
        &mut self,
        severity: Severity,
        at: Option<usize>,
        code: &'static str,
        message: String,
        hint: String,
    ) {
        let (line, column) = at.map(|tok| self.loc.position(tok)).unzip();
        self.out.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line,
            column,
            code,
            message,
            hint,
        });
    }

    fn root(&self) -> Block {
        self.loc.root()
    }

    fn model(&mut self, versions: &[(u64, PathBuf)]) {
        let cfg = self.cfg;
        let dir_name = file_name(self.dir);
        if !cfg.name.is_empty() && cfg.name != dir_name {
            let at = self.loc.field(&self.root(), "name");
            self.push(
                Severity::Error,
                at,
                "config.name-mismatch",
                format!(
                    "name \"{}\" does not match the model directory '{dir_name}'",
                    cfg.name
                ),
                format!("set name: \"{dir_name}\" (or remove it), or rename the directory"),
            );
        }

        if cfg.backend.is_empty() && cfg.platform.is_empty() {
            let has_model_py = versions
                .iter()
                .any(|(_, v)| v.join(DEFAULT_MODEL_FILENAME).is_file());
            let (severity, message) = if has_model_py {
                (
                    Severity::Warning,
                    "no backend set; Triton will pick the python backend because of model.py",
                )
            } else {
                (Severity::Error, "neither backend nor platform is set")
            };
            self.push(
                severity,
                None,
                "config.no-backend",
                message.into(),
                "add backend: \"rustpy\" to run the model with rustpy".into(),
            );
        }

        if cfg.max_batch_size < 0 {
            let at = self.loc.field(&self.root(), "max_batch_size");
            self.push(
                Severity::Error,
                at,
                "config.max-batch-size",
                format!("max_batch_size is {}, it must be >= 0", cfg.max_batch_size),
                "use 0 for a model without a batch dimension, or the largest batch it accepts"
                    .into(),
            );
        }

        if runs_python_files(cfg) {
            let filename = model_filename(cfg);
            for (_, version) in versions {
                let file = version.join(filename);
                if !file.is_file() {
                    self.out.push(Diagnostic {
                        severity: Severity::Error,
                        file,
                        line: None,
                        column: None,
                        code: "model.file-missing",
                        message: format!("version {} has no {filename}", file_name(version)),
                        hint: format!(
                            "create {filename} defining `class Model` (or `class TritonPythonModel`), or set default_model_filename"
                        ),
                    });
                }
            }
        }
    }

    fn io(&mut self) {
        let cfg = self.cfg;
        let inputs = cfg.input.iter().map(|i| Tensor {
            name: &i.name,
            data_type: i.data_type,
            dims: &i.dims,
            reshape: i.reshape.as_ref(),
        });
        self.tensors("input", inputs);
        let outputs = cfg.output.iter().map(|o| Tensor {
            name: &o.name,
            data_type: o.data_type,
            dims: &o.dims,
            reshape: o.reshape.as_ref(),
        });
        self.tensors("output", outputs);

        for (i, output) in cfg.output.iter().enumerate() {
            if output.label_filename.is_empty() {
                continue;
            }
            let block = self.loc.element(&self.root(), "output", i);
            let at = block.and_then(|b| self.loc.field(&b, "label_filename"));
            let path = self.dir.join(&output.label_filename);
            match fs::read_to_string(&path) {
                Err(err) => self.push(
                    Severity::Error,
                    at,
                    "output.label-file",
                    format!(
                        "label file '{}' of output '{}' cannot be read: {err}",
                        output.label_filename, output.name
                    ),
                    format!(
                        "create {} (one label per line) or remove label_filename",
                        path.display()
                    ),
                ),
                Ok(labels) => {
                    let count = labels.lines().count();
                    if let Some(expected) =
                        element_count(&output.dims).filter(|_| !output.dims.is_empty())
                    {
                        if usize::try_from(expected).ok() != Some(count) {
                            self.push(
                                Severity::Error,
                                at,
                                "output.label-count",
                                format!(
                                    "label file '{}' has {count} lines but output '{}' has {expected} elements",
                                    output.label_filename, output.name
                                ),
                                "write exactly one label per output element".into(),
                            );
                        }
                    }
                }
            }
        }

        // A clear sign that the batch dimension was written into dims: with
        // batching on, every tensor starts with exactly max_batch_size.
        let mbs = i64::from(cfg.max_batch_size);
        let all_dims: Vec<&Vec<i64>> = cfg
            .input
            .iter()
            .map(|i| &i.dims)
            .chain(cfg.output.iter().map(|o| &o.dims))
            .collect();
        if mbs > 1 && !all_dims.is_empty() && all_dims.iter().all(|d| d.len() >= 2 && d[0] == mbs) {
            let at = self
                .loc
                .element(&self.root(), "input", 0)
                .or_else(|| self.loc.element(&self.root(), "output", 0))
                .and_then(|b| self.loc.field(&b, "dims"));
            self.push(
                Severity::Warning,
                at,
                "io.batch-dim",
                format!("every tensor's dims start with {mbs} = max_batch_size; dims should not include the batch dimension"),
                "with max_batch_size > 0, Triton adds the batch dimension itself: drop the leading dimension from dims".into(),
            );
        }
    }

    /// Rules shared by inputs and outputs (`what` is the config field name).
    fn tensors<'c>(&mut self, what: &str, tensors: impl Iterator<Item = Tensor<'c>>) {
        let blocks = self.loc.elements(&self.root(), what);
        let mut seen = HashSet::new();
        for (i, tensor) in tensors.enumerate() {
            let Tensor {
                name,
                data_type: dtype,
                dims,
                reshape,
            } = tensor;
            let block = blocks.get(i);
            let field = |f: &str| block.and_then(|b| self.loc.field(b, f));
            let name_at = field("name").or_else(|| block.and_then(|b| b.first_token()));
            let label = if name.is_empty() {
                format!("{what} #{}", i + 1)
            } else {
                format!("{what} '{name}'")
            };

            if name.is_empty() {
                self.push(
                    Severity::Error,
                    name_at,
                    "io.name-missing",
                    format!("{label} has no name"),
                    format!("add name: \"...\" to the {what}"),
                );
            } else if !seen.insert(name) {
                self.push(
                    Severity::Error,
                    name_at,
                    "io.duplicate-name",
                    format!("{label} is declared more than once"),
                    format!("give each {what} a unique name"),
                );
            }

            if DataType::try_from(dtype).map_or(true, |d| d == DataType::TypeInvalid) {
                let at = field("data_type").or(name_at);
                self.push(
                    Severity::Error,
                    at,
                    "io.data-type",
                    format!("{label} has no valid data_type"),
                    "set data_type, e.g. TYPE_FP32, TYPE_INT64 or TYPE_STRING".into(),
                );
            }

            if dims.is_empty() {
                self.push(
                    Severity::Error,
                    field("dims").or(name_at),
                    "io.dims-missing",
                    format!("{label} has no dims"),
                    "Triton requires dims; use dims: [ 1 ] for a single value per batch item"
                        .into(),
                );
            }
            for &d in dims.iter().filter(|&&d| d == 0 || d < -1) {
                let at = block.and_then(|b| self.loc.value_of(b, "dims", &d.to_string()));
                self.push(
                    Severity::Error,
                    at,
                    "io.dims-invalid",
                    format!("{label} has dimension {d}"),
                    "each dimension must be >= 1, or -1 for a variable size".into(),
                );
            }

            if let Some(reshape) = reshape {
                let from = element_count(dims);
                let to = element_count(&reshape.shape);
                // An empty reshape of a one-element tensor is allowed (scalar view).
                let scalar_view = reshape.shape.is_empty() && from == Some(1);
                if let (Some(from), Some(to), false) = (from, to, scalar_view) {
                    if from != to && !dims.is_empty() {
                        let at = block.and_then(|b| self.loc.field(b, "reshape"));
                        self.push(
                            Severity::Error,
                            at,
                            "io.reshape-mismatch",
                            format!("{label} has {from} elements but its reshape has {to}"),
                            "reshape must keep the element count of dims".into(),
                        );
                    }
                }
            }
        }
    }

    /// Ragged inputs, batch_input / batch_output, and rustpy's `rustpy.ragged`
    /// and `rustpy.default.<INPUT>` parameters (issue 12).
    fn ragged(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        let input_blocks = self.loc.elements(&root, "input");
        let ragged = |name: &str| {
            cfg.input
                .iter()
                .any(|i| i.name == name && i.allow_ragged_batch)
        };
        for (i, input) in cfg.input.iter().enumerate() {
            if input.allow_ragged_batch && cfg.max_batch_size == 0 {
                let at = input_blocks
                    .get(i)
                    .and_then(|b| self.loc.field(b, "allow_ragged_batch"));
                self.push(
                    Severity::Error,
                    at,
                    "ragged.unbatched-model",
                    format!("input '{}' sets allow_ragged_batch but max_batch_size is 0", input.name),
                    "ragged batching needs batching: set max_batch_size > 0 (and dynamic_batching), or remove allow_ragged_batch".into(),
                );
            }
        }
        let blocks = self.loc.elements(&root, "batch_input");
        for (i, bi) in cfg.batch_input.iter().enumerate() {
            let block = blocks.get(i);
            let field = |f: &str| {
                block
                    .and_then(|b| self.loc.field(b, f))
                    .or_else(|| block.and_then(|b| b.first_token()))
            };
            let target = bi.target_name.first().map(String::as_str).unwrap_or("");
            if bi.target_name.len() != 1 {
                self.push(
                    Severity::Error,
                    field("target_name"),
                    "batch-input.target",
                    format!(
                        "batch_input #{} has {} target_name values",
                        i + 1,
                        bi.target_name.len()
                    ),
                    "give each batch_input exactly one target_name: the name predict sees it under"
                        .into(),
                );
            } else if cfg.input.iter().any(|inp| inp.name == target) {
                self.push(Severity::Error, field("target_name"), "batch-input.target",
                    format!("batch_input target '{target}' has the name of an input"),
                    "a batch_input is computed by the backend, not sent by clients: give it a name of its own".into());
            }
            match bi.source_input.as_slice() {
                [source] if cfg.input.iter().any(|inp| &inp.name == source) => {}
                [source] => self.push(Severity::Error, field("source_input"), "batch-input.source",
                    format!("batch_input '{target}' names source_input '{source}', which is not an input"),
                    "source_input must name one of the model's inputs (usually the ragged one)".into()),
                other => self.push(Severity::Error, field("source_input"), "batch-input.source",
                    format!("batch_input '{target}' has {} source_input values", other.len()),
                    "give exactly one source_input".into()),
            }
            if !matches!(
                DataType::try_from(bi.data_type),
                Ok(DataType::TypeInt32 | DataType::TypeFp32)
            ) {
                self.push(
                    Severity::Error,
                    field("data_type"),
                    "batch-input.data-type",
                    format!(
                        "batch_input '{target}' has data_type {}",
                        DataType::try_from(bi.data_type)
                            .map_or("?".into(), |d| d.as_str_name().to_string())
                    ),
                    "Triton defines batch inputs as TYPE_INT32 or TYPE_FP32".into(),
                );
            }
        }
        let blocks = self.loc.elements(&root, "batch_output");
        for (i, bo) in cfg.batch_output.iter().enumerate() {
            let block = blocks.get(i);
            let field = |f: &str| {
                block
                    .and_then(|b| self.loc.field(b, f))
                    .or_else(|| block.and_then(|b| b.first_token()))
            };
            for target in &bo.target_name {
                if !cfg.output.iter().any(|o| &o.name == target) {
                    self.push(
                        Severity::Error,
                        field("target_name"),
                        "batch-output.target",
                        format!("batch_output target '{target}' is not an output"),
                        "target_name must name one of the model's outputs".into(),
                    );
                }
            }
            match bo.source_input.as_slice() {
                [source] if ragged(source) => {}
                [source] => self.push(Severity::Error, field("source_input"), "batch-output.source",
                    format!("batch_output source_input '{source}' is not an input with allow_ragged_batch: true"),
                    "BATCH_SCATTER_WITH_INPUT_SHAPE scatters by the shape of a ragged input: set allow_ragged_batch: true on it".into()),
                other => self.push(Severity::Error, field("source_input"), "batch-output.source",
                    format!("batch_output has {} source_input values", other.len()),
                    "give exactly one source_input".into()),
            }
        }
        let param_blocks = self.loc.elements(&root, "parameters");
        let param_at = |key: &str| {
            param_blocks.iter().find_map(|b| {
                let f = self.loc.field(b, "key")?;
                let v = self.loc.value_of(b, "key", &format!("\"{key}\""))?;
                (v != f).then_some(v)
            })
        };
        let mut keys: Vec<&String> = cfg.parameters.keys().collect();
        keys.sort();
        for key in keys {
            let value = cfg.parameters[key].string_value.as_str();
            if key == "rustpy.ragged" {
                if !matches!(value, "concat" | "pad") {
                    self.push(Severity::Error, param_at(key), "ragged.layout",
                        format!("parameter rustpy.ragged is {value:?}"),
                        "use \"concat\" (Triton's flat concatenation, the default) or \"pad\" (dense [rows, longest], zero-padded)".into());
                } else if !cfg.input.iter().any(|i| i.allow_ragged_batch) {
                    self.push(
                        Severity::Warning,
                        param_at(key),
                        "ragged.layout",
                        "parameter rustpy.ragged is set but no input has allow_ragged_batch: true"
                            .into(),
                        "set allow_ragged_batch: true on the variable-length input(s)".into(),
                    );
                }
                continue;
            }
            let Some(name) = key.strip_prefix("rustpy.default.") else {
                continue;
            };
            let at = param_at(key);
            let Some(input) = cfg.input.iter().find(|i| i.name == name) else {
                self.push(
                    Severity::Error,
                    at,
                    "input.default",
                    format!("parameter {key}: there is no input '{name}'"),
                    "rustpy.default.<INPUT> gives the fill value of an optional input".into(),
                );
                continue;
            };
            let problem = if !input.optional {
                Some(format!("input '{name}' is not optional"))
            } else if input.allow_ragged_batch || input.dims.iter().any(|&d| d < 0) {
                Some(format!(
                    "input '{name}' has variable dims, so its missing rows cannot be filled"
                ))
            } else {
                let dtype = DataType::try_from(input.data_type).unwrap_or(DataType::TypeInvalid);
                (!default_parses(dtype, value))
                    .then(|| format!("{value:?} is not a value of {}", dtype.as_str_name()))
            };
            if let Some(problem) = problem {
                self.push(Severity::Error, at, "input.default",
                    format!("parameter {key}: {problem}"),
                    "defaults are for optional inputs with fixed dims; the value is one element (a number, true/false, or the bytes of a TYPE_STRING)".into());
            }
        }
    }

    fn scheduling(&mut self) {
        let cfg = self.cfg;
        let root = self.root();
        match &cfg.scheduling_choice {
            Some(SchedulingChoice::DynamicBatching(db)) => {
                let block = self.loc.element(&root, "dynamic_batching", 0);
                if cfg.max_batch_size == 0 {
                    let at = self.loc.field(&root, "dynamic_batching");
                    self.push(
                        Severity::Error,
                        at,
                        "batching.unbatched-model",
                        "dynamic_batching is set but max_batch_size is 0".into(),
                        "set max_batch_size to the largest batch the model accepts, or remove dynamic_batching".into(),
                    );
                } else {
                    self.preferred_sizes(&db.preferred_batch_size, block.as_ref());
                }
                if db.priority_levels != 0
                    && !(1..=db.priority_levels).contains(&db.default_priority_level)
                {
                    let at = block.as_ref().and_then(|b| {
                        self.loc
                            .field(b, "default_priority_level")
                            .or_else(|| self.loc.field(b, "priority_levels"))
                    });
                    self.push(
                        Severity::Error,
                        at,
                        "batching.priority-level",
                        format!(
                            "default_priority_level {} is outside 1..={}",
                            db.default_priority_level, db.priority_levels
                        ),
                        "set default_priority_level between 1 and priority_levels".into(),
                    );
                }
            }
            Some(SchedulingChoice::SequenceBatching(sb)) => {
                if let Some(StrategyChoice::Oldest(oldest)) = &sb.strategy_choice {
                    let block = self
                        .loc
                        .element(&root, "sequence_batching", 0)
                        .and_then(|b| self.loc.element(&b, "oldest", 0));
                    self.preferred_sizes(&oldest.preferred_batch_size, block.as_ref());
                }
            }
            _ => {}
        }
    }

    fn preferred_sizes(&mut self, sizes: &[i32], block: Option<&Block>) {
        let mbs = self.cfg.max_batch_size;
        for &size in sizes.iter().filter(|&&s| s <= 0 || s > mbs) {
            let at = block.and_then(|b| {
                self.loc
                    .value_of(b, "preferred_batch_size", &size.to_string())
            });
            self.push(
                Severity::Error,
                at,
                "batching.preferred-size",
                format!("preferred batch size {size} is not in 1..={mbs} (max_batch_size)"),
                "each preferred_batch_size must be > 0 and <= max_batch_size".into(),
            );
        }
    }

    /// `rustpy.isolation` / `rustpy.execute_timeout_ms` (docs/isolation.md).
    fn isolation(&mut self) {
        let Err(message) = isolation_settings(self.cfg) else {
            return;
        };
        let root = self.root();
        let key = if message.starts_with(&format!("parameter '{ISOLATION_KEY}' is")) {
            ISOLATION_KEY
        } else {
            EXECUTE_TIMEOUT_KEY
        };
        let quoted = format!("\"{key}\"");
        let at = self
            .loc
            .elements(&root, "parameters")
            .iter()
            .find_map(|b| {
                self.loc
                    .value_of(b, "key", &quoted)
                    .filter(|&tok| self.loc.field(b, "key") != Some(tok))
            })
            .or_else(|| self.loc.field(&root, "parameters"));
        self.push(
            Severity::Error,
            at,
            "parameters.isolation",
            message,
            format!(
                "set {ISOLATION_KEY} to \"process\" (a worker process per instance) or \"in_process\" (the default); {EXECUTE_TIMEOUT_KEY} is a positive integer and needs process isolation"
            ),
        );
    }

    fn instance_groups(&mut self) {
        let root = self.root();
        for (i, group) in self.cfg.instance_group.iter().enumerate() {
            let block = self.loc.element(&root, "instance_group", i);
            let label = if group.name.is_empty() {
                format!("instance_group #{}", i + 1)
            } else {
                format!("instance_group '{}'", group.name)
            };
            let count_at = block.as_ref().and_then(|b| self.loc.field(b, "count"));
            // proto3 cannot tell `count: 0` from no count (Triton then uses its
            // default), so only an explicitly written 0 is reported.
            if group.count < 0 || (group.count == 0 && count_at.is_some()) {
                let severity = if group.count < 0 {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                self.push(
                    severity,
                    count_at,
                    "instance-group.count",
                    format!("{label} has count {}", group.count),
                    "count is the number of instances and must be >= 1 (0 means Triton's default)"
                        .into(),
                );
            }
            let kind = Kind::try_from(group.kind);
            if kind.is_err() {
                self.push(
                    Severity::Error,
                    block.as_ref().and_then(|b| self.loc.field(b, "kind")),
                    "instance-group.kind",
                    format!("{label} has unknown kind {}", group.kind),
                    "use KIND_CPU, KIND_GPU, KIND_MODEL or KIND_AUTO".into(),
                );
            } else if matches!(kind, Ok(Kind::Cpu | Kind::Model)) && !group.gpus.is_empty() {
                self.push(
                    Severity::Error,
                    block.as_ref().and_then(|b| self.loc.field(b, "gpus")),
                    "instance-group.gpus",
                    format!(
                        "{label} lists gpus but its kind is {}",
                        group.kind().as_str_name()
                    ),
                    "remove gpus, or use kind: KIND_GPU".into(),
                );
            }
        }
    }

    /// The official backend unpacks EXECUTION_ENV_PATH into a per-model
    /// environment for its stub process; in-process models share one
    /// interpreter, so the parameter cannot be honoured.
    fn execution_env(&mut self) {
        if self.cfg.backend != "rustpy" {
            return;
        }
        if let Some(env) = crate::model::parameter(self.cfg, EXECUTION_ENV_PARAMETER) {
            let at = self.loc.field(&self.root(), "parameters");
            self.push(
                Severity::Error,
                at,
                "config.execution-env",
                format!("{EXECUTION_ENV_PARAMETER} (\"{env}\") is not supported: rustpy models share the server's one Python interpreter"),
                "per-model environments need process isolation: serve this model with backend: \"python\" (the official backend's stub process), or drop the parameter and install its requirements for every model with `rustpy env REPO --target DIR` + --backend-config=rustpy,site-packages=DIR".into(),
            );
        }
    }

    fn checkpoint(&mut self) {
        use crate::checkpoint::{Checkpoint, Source, SOURCE_PARAMETER};
        let at = self.loc.field(&self.root(), "parameters");
        match Checkpoint::from_config(self.cfg) {
            None => {}
            Some(Err(message)) => self.push(
                Severity::Error,
                at,
                "checkpoint.invalid",
                message,
                format!(
                    "see \"Checkpoints\" in the README for the {SOURCE_PARAMETER} forms (hf://, git+https://, git+file://, s3://, https:// with a sha256, a path)"
                ),
            ),
            Some(Ok(ck)) => {
                let raw = crate::parameter(self.cfg, SOURCE_PARAMETER).unwrap_or_default();
                if crate::checkpoint::redact_url(raw.trim_start_matches("git+")) != raw.trim_start_matches("git+") {
                    self.push(
                        Severity::Warning,
                        at,
                        "checkpoint.credentials-in-source",
                        format!(
                            "{SOURCE_PARAMETER} carries credentials in its URL ({}): they end up in every copy and archive of this config",
                            ck.source.redacted()
                        ),
                        "remove them from the URL and give them through the environment (HF_TOKEN, AWS_*, git's credential helper)".into(),
                    );
                }
                if let Source::Local { path } = &ck.source {
                    if !self.dir.join(path).exists() {
                        self.push(
                            Severity::Error,
                            at,
                            "checkpoint.local-missing",
                            format!("{SOURCE_PARAMETER}: local path '{path}' does not exist"),
                            "paths are relative to the model directory; use an absolute path or file:///".into(),
                        );
                    }
                }
            }
        }
    }

    fn version_policy(&mut self, versions: &[(u64, PathBuf)]) {
        let Some(PolicyChoice::Specific(specific)) = self
            .cfg
            .version_policy
            .as_ref()
            .and_then(|p| p.policy_choice.as_ref())
        else {
            return;
        };
        let block = self
            .loc
            .element(&self.root(), "version_policy", 0)
            .and_then(|b| self.loc.element(&b, "specific", 0));
        for &v in &specific.versions {
            if !versions
                .iter()
                .any(|(have, _)| i64::try_from(*have) == Ok(v))
            {
                let at = block
                    .as_ref()
                    .and_then(|b| self.loc.value_of(b, "versions", &v.to_string()));
                self.push(
                    Severity::Error,
                    at,
                    "version.policy-missing",
                    format!("version_policy asks for version {v}, which has no directory"),
                    format!(
                        "create {}/{v}/ or remove {v} from versions",
                        self.dir.display()
                    ),
                );
            }
        }
    }
}

/// A fix hint for a config.pbtxt parse error, suggesting the nearest field or
/// enum value name for misspellings.
/// Whether `value` is one element of `dtype` (for `rustpy.default.<INPUT>`).
fn default_parses(dtype: DataType, value: &str) -> bool {
    let v = value.trim();
    match dtype {
        DataType::TypeBool => matches!(v, "true" | "false" | "0" | "1"),
        DataType::TypeUint8 => v.parse::<u8>().is_ok(),
        DataType::TypeUint16 => v.parse::<u16>().is_ok(),
        DataType::TypeUint32 => v.parse::<u32>().is_ok(),
        DataType::TypeUint64 => v.parse::<u64>().is_ok(),
        DataType::TypeInt8 => v.parse::<i8>().is_ok(),
        DataType::TypeInt16 => v.parse::<i16>().is_ok(),
        DataType::TypeInt32 => v.parse::<i32>().is_ok(),
        DataType::TypeInt64 => v.parse::<i64>().is_ok(),
        DataType::TypeFp16 | DataType::TypeFp32 | DataType::TypeFp64 => v.parse::<f64>().is_ok(),
        DataType::TypeString => true,
        _ => false,
    }
}

fn syntax_hint(err: &PbtxtError) -> String {
    let quoted: Vec<&str> = err.message.split('\'').skip(1).step_by(2).collect();
    let pool = descriptor_pool();
    let suggestion = match quoted.as_slice() {
        [field, message] if err.message.starts_with("field ") => pool
            .get_message_by_name(message)
            .and_then(|m| closest(field, m.fields().map(|f| f.name().to_owned()))),
        [value, enum_name] if err.message.starts_with("value ") => {
            dtype_alias(value).map(str::to_owned).or_else(|| {
                pool.get_enum_by_name(enum_name)
                    .and_then(|e| closest(value, e.values().map(|v| v.name().to_owned())))
            })
        }
        _ => None,
    };
    match suggestion {
        Some(name) => format!("did you mean `{name}`?"),
        None if err.message.contains("':' or a message value") => {
            "scalar fields need a colon, e.g. dims: [ 4 ]".into()
        }
        None => "fix the protobuf text format at this position".into(),
    }
}

/// Data type spellings from other frameworks (numpy, torch) that edit
/// distance would map to the wrong Triton type (`FLOAT32` is closer to `UINT32`).
fn dtype_alias(value: &str) -> Option<&'static str> {
    let bare = value
        .strip_prefix("TYPE_")
        .unwrap_or(value)
        .to_ascii_uppercase();
    Some(match bare.as_str() {
        "FLOAT" | "FLOAT32" | "F32" | "SINGLE" => "TYPE_FP32",
        "DOUBLE" | "FLOAT64" | "F64" => "TYPE_FP64",
        "HALF" | "FLOAT16" | "F16" => "TYPE_FP16",
        "BFLOAT16" => "TYPE_BF16",
        "BYTES" | "STR" | "TEXT" | "OBJECT" => "TYPE_STRING",
        "INT" | "LONG" => "TYPE_INT64",
        "BOOLEAN" => "TYPE_BOOL",
        _ => return None,
    })
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
fn closest(word: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (edit_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_follow_triton() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        assert_eq!(version_number("0"), None);
        assert_eq!(version_number("01"), None);
        assert_eq!(version_number("v1"), None);
        assert_eq!(version_number(""), None);
    }

    #[test]
    fn suggests_triton_dtype_for_other_spellings() {
        let err = |value: &str| PbtxtError {
            line: 1,
            column: 1,
            message: format!("value '{value}' was not found for enum 'inference.DataType'"),
        };
        assert_eq!(
            syntax_hint(&err("TYPE_FLOAT32")),
            "did you mean `TYPE_FP32`?"
        );
        assert_eq!(
            syntax_hint(&err("TYPE_BYTES")),
            "did you mean `TYPE_STRING`?"
        );
        assert_eq!(
            syntax_hint(&err("TYPE_INT33")),
            "did you mean `TYPE_INT32`?"
        );
    }

    #[test]
    fn suggests_near_names() {
        let names = || ["data_type", "dims", "name"].map(String::from).into_iter();
        assert_eq!(closest("dtype", names()).as_deref(), Some("data_type"));
        assert_eq!(closest("dim", names()).as_deref(), Some("dims"));
        assert_eq!(closest("completely_else", names()), None);
    }
}
