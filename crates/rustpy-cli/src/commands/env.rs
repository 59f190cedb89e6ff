//! `rustpy env REPO --target DIR`: install the merged requirements.txt of
//! every in-process model with pip into DIR, which the backend puts on
//! `sys.path` with `--backend-config=rustpy,site-packages=DIR`. Only what the
//! serving interpreter does not already satisfy is installed; conflicting
//! pins between models stop it before pip runs.

use std::process::Command;

use anyhow::Context as _;

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
        "installing {} requirement(s) from {} model(s) into {} with {} -m pip",
        outcome.needed.len(),
        files.len(),
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
        ])
        .args(if global.quiet { &["-q"][..] } else { &[][..] })
        .arg("--target")
        .arg(&args.target)
        .arg("-r")
        .arg(list.path())
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
