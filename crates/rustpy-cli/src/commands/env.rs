//! `rustpy env REPO --target DIR`: install the merged requirements.txt of
//! every in-process model with pip into DIR, which the backend puts on
//! `sys.path` with `--backend-config=rustpy,site-packages=DIR`. Only what the
//! serving interpreter does not already satisfy is installed; conflicting
//! pins between models stop it before pip runs.
//!
//! What the serving interpreter has is fixed (env_plan.py): pip resolves with
//! every one of its distributions pinned (`pip install --target` alone would
//! ignore them and put, say, numpy 2 beside Debian's numpy 1.24, which the
//! server imports first, so packages built against numpy 2 would not load),
//! and the target gets only what the interpreter does not provide, with
//! `--no-deps`. A requirement that cannot be met with those versions stops
//! it, saying which.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use serde::Deserialize;

const PLAN: &str = include_str!("env_plan.py");

#[derive(Debug, Deserialize)]
struct Plan {
    python: String,
    install: Vec<String>,
    error: Option<String>,
    fixed: Vec<String>,
}

/// Resolves `requirements` in `python` with its own distributions fixed.
fn plan(
    python: &std::path::Path,
    requirements: &std::path::Path,
    pip_args: &[String],
) -> anyhow::Result<Plan> {
    let input = serde_json::json!({"requirements": requirements, "pip_args": pip_args});
    let mut child = Command::new(python)
        .args(["-I", "-B", "-c", PLAN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "resolving the requirements with {} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("the resolver printed invalid JSON")
}

use crate::{
    cli::EnvArgs,
    commands::check::{self, requirements},
    Error, Global, Result, Status,
};

pub fn run(global: &Global, args: EnvArgs) -> Result {
    if !args.repo.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory",
            args.repo.display()
        )));
    }
    let python = check::python_interpreter();
    let files = check::rustpy_requirements(&rustpy_config::repo::model_dirs(&args.repo));
    if files.is_empty() {
        global.status("no backend: \"rustpy\" model has a requirements.txt; nothing to install");
        return Ok(Status::Success);
    }
    // What the serving interpreter itself lacks is what goes into the target
    // (packages it already satisfies, e.g. Debian's numpy, are not duplicated).
    let outcome = requirements::check(&python, &files, &[])?;
    let blocking: Vec<_> = outcome
        .diagnostics
        .iter()
        .filter(|d| matches!(d.code, "requirements.conflict" | "requirements.syntax"))
        .collect();
    if !blocking.is_empty() {
        for d in &blocking {
            eprintln!("{d}");
            if !d.hint.is_empty() {
                eprintln!("  = hint: {}", d.hint);
            }
        }
        eprintln!("error: not installing: the models' requirements conflict (one interpreter serves them all)");
        return Ok(Status::Failed);
    }
    if outcome.needed.is_empty() {
        global.status(format!(
            "nothing to install: {} satisfies every requirement",
            python.display()
        ));
        return Ok(Status::Success);
    }
    let merged = outcome.needed.join("\n") + "\n";
    if args.dry_run {
        print!("{merged}");
        return Ok(Status::Success);
    }
    std::fs::create_dir_all(&args.target)
        .with_context(|| format!("cannot create {}", args.target.display()))?;
    let list = tempfile::Builder::new()
        .prefix("rustpy-requirements-")
        .suffix(".txt")
        .tempfile()
        .context("cannot create a temporary file")?;
    std::fs::write(list.path(), &merged).context("cannot write the merged requirements")?;
    global.status(format!(
        "resolving {} requirement(s) from {} model(s) with {}'s own packages fixed",
        outcome.needed.len(),
        files.len(),
        python.display()
    ));
    let plan = plan(&python, list.path(), &args.pip_args)?;
    if let Some(error) = &plan.error {
        // pip names the pins it could not get past: "(constraint) numpy==1.24.2".
        let fixed: Vec<&String> = plan
            .fixed
            .iter()
            .filter(|f| error.contains(&format!("(constraint) {f}")))
            .collect();
        eprintln!("{error}");
        eprintln!(
            "error: the requirements cannot be met with the packages the serving Python {} already has{}: the server imports its own copies, so rustpy env installs no other version of them. Choose versions of the models' requirements that work with them (e.g. built for its numpy), or serve with a Python that has the versions they need.",
            plan.python,
            if fixed.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    fixed.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                )
            }
        );
        return Ok(Status::Failed);
    }
    if let Some(numpy) = plan
        .fixed
        .iter()
        .find(|f| f.to_ascii_lowercase().starts_with("numpy=="))
    {
        global.status(format!(
            "the serving interpreter's packages are kept as they are ({numpy} and {} more): none is installed again",
            plan.fixed.len() - 1
        ));
    }
    if plan.install.is_empty() {
        global.status("nothing to install: the serving interpreter provides every package");
        return Ok(Status::Success);
    }
    global.status(format!(
        "installing {} into {} with {} -m pip",
        plan.install.join(" "),
        args.target.display(),
        python.display()
    ));
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .args(if global.quiet { &["-q"][..] } else { &[][..] })
        .arg("--target")
        .arg(&args.target)
        .args(&plan.install)
        .args(&args.pip_args)
        .status()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    if !status.success() {
        return Err(Error::Runtime(anyhow::anyhow!(
            "pip install failed ({status}); nothing else was changed"
        )));
    }
    println!(
        "installed into {}\nserve with: --backend-config=rustpy,site-packages={}",
        args.target.display(),
        args.target.display()
    );
    Ok(Status::Success)
}
