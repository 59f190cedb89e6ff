//! `rustpy test PATH`: runs the golden cases kept with each model
//! (`<model>/tests/*.json`) through the backend's own core (no Triton), or
//! with `--server URL` against a live tritonserver over HTTP, and reports
//! what differed.
//!
//! A case file:
//!
//! ```json
//! {
//!   "description": "two requests in one batch",
//!   "atol": 1e-5, "rtol": 1e-5,
//!   "requests": [
//!     {"inputs": {"INPUT0": [[1, 2, 3]]}, "parameters": {"scale": 2.0},
//!      "outputs": {"OUTPUT0": [[2, 4, 6]]}},
//!     {"inputs": {"INPUT0": {"shape": [1, 3], "fill": 0}},
//!      "parameters": {"scale": -1}, "error": "below the minimum"}
//!   ]
//! }
//! ```
//!
//! A case without `requests` is one request (its `inputs`, `parameters`,
//! `outputs`/`responses`/`error` at the top level). An input is a nested
//! list (its dtype from the config; the batch dimension is added when it is
//! left out) or `{"data" | "fill", "shape", "datatype"}` (`fill`: a value
//! repeated, or `"ramp"` for 0, 1, ..., 255, 0, ...). An expected output
//! is a nested list (its shape is checked) or `{"data", "shape", "datatype"}`;
//! numbers match within `atol + rtol * |expected|`, strings and bools
//! exactly. `responses` lists the expected responses of a decoupled model.
//! All requests of a case go to the model as one batch (locally), or
//! concurrently (against a server, whose batcher may combine them): KServe v2
//! JSON `infer`, or `generate_stream` for decoupled models.

mod case;
mod judge;
mod junit;
mod remote;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rustpy_core::local::{self, LocalModel, LocalResponse};
use serde_json::{json, Value};

use crate::{cli::TestArgs, Error, Global, Result, Status};
use case::{load_case, parse_case};
use judge::Actual;
use junit::junit_xml;
use remote::{generate_bodies, infer_generate_stream, infer_http};

/// Where a model's golden cases live.
pub use rustpy_config::repo::TESTS_DIR;

pub fn run(global: &Global, args: TestArgs) -> Result {
    let models = if rustpy_config::repo::is_model_dir(&args.path) {
        vec![args.path.clone()]
    } else if args.path.is_dir() {
        rustpy_config::repo::model_dirs(&args.path)
    } else {
        return Err(Error::Usage(format!(
            "{} is not a model directory or repository",
            args.path.display()
        )));
    };
    let server = match &args.server {
        Some(url) => Some(server_addr(url)?),
        None => None,
    };
    let timeout = Duration::from_secs(args.timeout);

    let mut results: Vec<CaseResult> = Vec::new();
    for model_dir in &models {
        let files = case_files(model_dir)?;
        if files.is_empty() {
            global.status(format!(
                "{}: no test cases ({}/*.json)",
                model_dir.display(),
                TESTS_DIR
            ));
            continue;
        }
        results.extend(run_model(model_dir, &files, server, timeout));
    }
    if results.is_empty() {
        return Err(Error::Usage(format!(
            "no test cases found under {} (write <model>/{TESTS_DIR}/*.json)",
            args.path.display()
        )));
    }

    if let Some(path) = &args.junit {
        std::fs::write(path, junit_xml(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = results.iter().filter(|r| r.outcome.is_failure()).count();
    let skipped = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
        .count();
    let passed = results.len() - failed - skipped;
    if args.json {
        let doc = json!({
            "passed": passed,
            "failed": failed,
            "skipped": skipped,
            "target": args.server.as_deref().unwrap_or("local"),
            "cases": results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Runtime(e.into()))?
        );
    } else {
        for r in &results {
            let (tag, lines): (&str, &[String]) = match &r.outcome {
                Outcome::Passed => ("PASS", &[]),
                Outcome::Failed(lines) => ("FAIL", lines),
                Outcome::Skipped(why) => ("SKIP", std::slice::from_ref(why)),
            };
            println!(
                "{tag}  {}/{} ({} request(s), {:.1} ms)",
                r.model,
                r.case,
                r.requests,
                r.elapsed.as_secs_f64() * 1e3
            );
            for line in lines {
                println!("      {}", line.replace('\n', "\n        "));
            }
        }
        println!(
            "{} case(s): {passed} passed, {failed} failed, {skipped} skipped",
            results.len()
        );
    }
    Ok(if failed > 0 {
        Status::Failed
    } else {
        Status::Success
    })
}

/// `<model>/tests/*.json`, sorted.
pub(super) fn case_files(model_dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = model_dir.join(TESTS_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

pub(super) fn server_addr(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return Err(Error::Usage(format!(
            "--server takes http://HOST:PORT (Triton's HTTP endpoint), got `{url}`"
        )));
    }
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--server: cannot resolve `{hostport}`")))
}

#[derive(Debug)]
pub(super) enum Outcome {
    Passed,
    Failed(Vec<String>),
    Skipped(String),
}

impl Outcome {
    pub(super) fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

#[derive(Debug)]
pub(super) struct CaseResult {
    pub(super) model: String,
    pub(super) case: String,
    pub(super) file: PathBuf,
    pub(super) requests: usize,
    pub(super) elapsed: Duration,
    pub(super) outcome: Outcome,
}

impl CaseResult {
    pub(super) fn to_json(&self) -> Value {
        let (status, failures, reason) = match &self.outcome {
            Outcome::Passed => ("passed", Vec::new(), None),
            Outcome::Failed(lines) => ("failed", lines.clone(), None),
            Outcome::Skipped(why) => ("skipped", Vec::new(), Some(why.clone())),
        };
        json!({
            "model": self.model,
            "case": self.case,
            "file": self.file.display().to_string(),
            "requests": self.requests,
            "status": status,
            "failures": failures,
            "skip_reason": reason,
            "time_ms": self.elapsed.as_secs_f64() * 1e3,
        })
    }
}

pub(super) fn model_name(model_dir: &Path) -> String {
    model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn run_model(
    model_dir: &Path,
    files: &[PathBuf],
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Vec<CaseResult> {
    let model = model_name(model_dir);
    let result = |file: &Path, requests, elapsed, outcome| CaseResult {
        model: model.clone(),
        case: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file: file.to_path_buf(),
        requests,
        elapsed,
        outcome,
    };
    // The spec (dtypes, batching) always comes from the local model; loading
    // it also checks the model the way the backend will.
    let local = match LocalModel::load(model_dir, None) {
        Ok(m) => m,
        Err(e) => {
            return files
                .iter()
                .map(|f| {
                    result(
                        f,
                        0,
                        Duration::ZERO,
                        Outcome::Failed(vec![format!("model did not load: {}", e.message)]),
                    )
                })
                .collect()
        }
    };
    let decl = rustpy_core::params::load_declaration(&model, model_dir)
        .ok()
        .flatten();
    let mut out = Vec::new();
    for file in files {
        let case = match load_case(file, &local.spec) {
            Ok(c) => c,
            Err(e) => {
                out.push(result(
                    file,
                    0,
                    Duration::ZERO,
                    Outcome::Failed(vec![format!("invalid case file: {e}")]),
                ));
                continue;
            }
        };
        let started = Instant::now();
        let outcome = match server {
            None => {
                let (responses, _) = local.infer(&case.owned_requests(decl.as_ref()), timeout);
                let actual: Vec<Vec<Actual>> = responses
                    .iter()
                    .map(|rs| rs.iter().map(Actual::from_local).collect())
                    .collect();
                case.judge(&actual, local.spec.decoupled)
            }
            Some(addr) if local.spec.decoupled => match generate_bodies(&case) {
                Ok(bodies) => {
                    let actual = infer_generate_stream(addr, &model, &bodies, timeout);
                    case.judge(&actual, true)
                }
                Err(why) => Outcome::Skipped(why),
            },
            Some(addr) => {
                let actual = infer_http(addr, &model, &case, timeout);
                case.judge(&actual, false)
            }
        };
        out.push(result(
            file,
            case.requests.len(),
            started.elapsed(),
            outcome,
        ));
    }
    let _ = local.finalize();
    out
}

/// Runs a freshly scaffolded model on `case` (inputs and parameters only) and
/// fills in the outputs it produced, so `rustpy init` ships a passing golden
/// case. Returns the completed case.
pub fn record_case(model_dir: &Path, mut case: Value) -> anyhow::Result<Value> {
    let model = LocalModel::load(model_dir, None).map_err(|e| anyhow!(e.message))?;
    let decl = rustpy_core::params::load_declaration(&model.spec.name, model_dir)
        .map_err(|e| anyhow!(e.message))?;
    let parsed = parse_case(&case, &model.spec)?;
    let (responses, _) = model.infer(
        &parsed.owned_requests(decl.as_ref()),
        Duration::from_secs(60),
    );
    let streaming = model.spec.decoupled;
    let _ = model.finalize();
    let recorded: Vec<Value> = responses
        .iter()
        .map(|rs| {
            let outs: Vec<Value> = rs
                .iter()
                .filter_map(|r| match r {
                    LocalResponse::Outputs(ts) if !ts.is_empty() => Some(Value::Object(
                        ts.iter()
                            .map(|t| (t.name.clone(), local::tensor_to_json(t)))
                            .collect(),
                    )),
                    LocalResponse::Outputs(_) => None,
                    LocalResponse::Error(e) => Some(json!({"error": e.message})),
                })
                .collect();
            outs
        })
        .map(Value::Array)
        .collect();
    let slots: Vec<&mut Value> = match case.get_mut("requests") {
        Some(Value::Array(list)) => list.iter_mut().collect(),
        _ => vec![&mut case],
    };
    for (slot, got) in slots.into_iter().zip(recorded) {
        let Value::Object(obj) = slot else { continue };
        if obj.contains_key("error") {
            continue;
        }
        let got = got.as_array().cloned().unwrap_or_default();
        if let Some(err) = got.iter().find_map(|g| g.get("error")) {
            anyhow::bail!("the scaffolded model failed: {err}");
        }
        if streaming {
            obj.insert("responses".into(), Value::Array(got));
        } else if let Some(first) = got.into_iter().next() {
            obj.insert("outputs".into(), first);
        }
    }
    Ok(case)
}
