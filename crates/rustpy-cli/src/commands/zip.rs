//! `rustpy zip REPO -o OUT.zip`: package a model repository into a
//! deterministic archive with a sha256 manifest; `rustpy zip --verify ZIP`
//! re-hashes an archive against its manifest.

use std::{
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    archive::{self, Limits, Verification},
    cli::{LimitArgs, ZipArgs},
    commands::check,
    progress, Error, Global, Result, Status,
};

#[derive(Debug, Serialize)]
struct Summary {
    output: PathBuf,
    files: usize,
    /// Total uncompressed size of the packaged files.
    bytes: u64,
    /// Size of the archive itself.
    archive_bytes: u64,
    sha256: String,
    models: Vec<String>,
}

pub fn run(global: &Global, args: ZipArgs) -> Result {
    if let Some(zip) = &args.verify {
        return verify(global, zip, args.json, &limits(&args.limits));
    }
    // clap enforces both when --verify is absent; stay graceful regardless.
    let (Some(repo), Some(output)) = (args.repo.as_deref(), args.output.as_deref()) else {
        return Err(Error::usage(
            "`rustpy zip` needs REPO and -o OUT.zip (or --verify ZIP)",
        ));
    };
    if !repo.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory",
            repo.display()
        )));
    }
    let models = selected_models(repo, &args.models)?;

    // Refuse to ship a repository that would fail to load.
    if let Some(status) = refuse_failing(global, repo, &models, args.force)? {
        return Ok(status);
    }

    let mut collected = archive::collect(repo, &models, Some(output))?;
    let model_names = if models.is_empty() {
        top_level_dirs(&collected.dirs)
    } else {
        models.clone()
    };
    let checkpoints = checkpoints(
        global,
        repo,
        &model_names,
        args.with_checkpoints,
        &mut collected,
    )?;
    if args.no_tests {
        // `<model>/tests/...`: the golden cases of `rustpy test`.
        let is_test = |name: &str| name.split('/').nth(1) == Some(super::test::TESTS_DIR);
        collected.files.retain(|f| !is_test(&f.name));
        collected.dirs.retain(|d| !is_test(d));
    }
    for path in &collected.skipped {
        global.status(format!(
            "warning: skipping {} (not a regular file)",
            path.display()
        ));
    }

    let manifest = write_archive(global, &collected, checkpoints, output)?;

    let summary = Summary {
        output: output.to_path_buf(),
        files: manifest.files.len(),
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        archive_bytes: fs::metadata(output).map(|m| m.len()).unwrap_or_default(),
        sha256: archive::sha256_file(output)?,
        models: if models.is_empty() {
            top_level_dirs(&collected.dirs)
        } else {
            models
        },
    };
    if args.json {
        print_json(&summary)?;
    } else {
        println!(
            "wrote {} ({} files, {} bytes, {} compressed)\nsha256 {}",
            summary.output.display(),
            summary.files,
            summary.bytes,
            summary.archive_bytes,
            summary.sha256
        );
    }
    Ok(Status::Success)
}

/// `rustpy check` on what will be packed: a repository that fails it is
/// refused (`Some(Failed)`) unless `force`.
fn refuse_failing(
    global: &Global,
    repo: &Path,
    models: &[String],
    force: bool,
) -> Result<Option<Status>> {
    let rules = archive::ignore_rules(repo).map_err(Error::invalid)?;
    match check::check_for_packaging(repo, models) {
        Ok(mut report) => {
            // Problems in paths that won't be packed (.rustpyignore, junk)
            // don't count.
            report
                .diagnostics
                .retain(|d| !archive::is_excluded(&rules, repo, &d.file));
            if report.errors() > 0 {
                check::print_human(&report, std::io::stderr().lock());
                if !force {
                    eprintln!(
                        "error: refusing to package a repository that fails `rustpy check` \
                         (use --force to override)"
                    );
                    return Ok(Some(Status::Failed));
                }
                global.status("warning: packaging anyway (--force)");
            }
        }
        // The check could not run at all (e.g. no Python): --force still packs.
        Err(e) if force => global.status(format!(
            "warning: could not check the repository ({e:#}); packaging anyway (--force)"
        )),
        Err(e) => {
            return Err(e
                .context("cannot check the repository before packaging (--force skips this)")
                .into())
        }
    }
    Ok(None)
}

/// Writes the archive next to `output` and renames it into place, so a
/// failed run never leaves a truncated archive behind.
fn write_archive(
    global: &Global,
    collected: &archive::Collected,
    checkpoints: Vec<archive::CheckpointEntry>,
    output: &Path,
) -> Result<archive::Manifest> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    // Written next to the destination and renamed into place, so a failed run
    // never leaves a truncated archive behind.
    let tmp = tempfile::Builder::new()
        .prefix(".rustpy-zip-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;

    let bar = progress::bytes(global, collected.total_bytes(), "zip");
    let manifest = archive::write_zip(collected, checkpoints, BufWriter::new(tmp.as_file()), &bar)?;
    bar.finish_and_clear();
    tmp.as_file().sync_all().context("cannot flush archive")?;
    tmp.persist(output)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(manifest)
}

/// Records each model's checkpoint; with `--with-checkpoints` fetches it
/// (through the cache) and adds its files under `MODEL/.rustpy-checkpoint/`,
/// where the backend finds them before fetching.
fn checkpoints(
    global: &Global,
    repo: &Path,
    models: &[String],
    include: bool,
    collected: &mut archive::Collected,
) -> Result<Vec<archive::CheckpointEntry>> {
    let mut out = Vec::new();
    for model in models {
        let dir = repo.join(model);
        let Some(Ok(ck)) = super::fetch::model_checkpoint(&dir) else {
            continue;
        };
        let mut opts = rustpy_fetch::Options::from_env();
        opts.offline = !include;
        let fetched = match rustpy_fetch::fetch(&ck, &dir, &opts) {
            Ok(f) => Some(f),
            Err(e) if include => {
                return Err(Error::Runtime(anyhow::anyhow!("{model}: {e}")));
            }
            Err(_) => None,
        };
        let mut included = false;
        if let (true, Some(f)) = (include, &fetched) {
            global.status(format!("{model}: including {}", f.dir.display()));
            let base = format!("{model}/{}", rustpy_core::checkpoint::BUNDLED_DIR);
            collected.dirs.push(format!("{base}/"));
            for entry in walkdir::WalkDir::new(&f.dir)
                .follow_links(true)
                .min_depth(1)
            {
                let entry = entry.map_err(|e| Error::Runtime(e.into()))?;
                let rel = entry
                    .path()
                    .strip_prefix(&f.dir)
                    .map_err(|e| Error::Runtime(e.into()))?
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel == rustpy_fetch::META_FILE {
                    continue;
                }
                let name = format!("{base}/{rel}");
                if entry.file_type().is_dir() {
                    collected.dirs.push(format!("{name}/"));
                } else if entry.file_type().is_file() {
                    let size = entry
                        .metadata()
                        .map_err(|e| Error::Runtime(e.into()))?
                        .len();
                    collected.files.push(archive::SourceFile {
                        name,
                        path: entry.path().to_path_buf(),
                        size,
                        executable: false,
                    });
                }
            }
            included = true;
        }
        out.push(archive::CheckpointEntry {
            model: model.clone(),
            source: ck.source.redacted(),
            sha256: ck.sha256.clone(),
            digest: fetched.map(|f| f.digest),
            included,
        });
    }
    collected.dirs.sort();
    collected.dirs.dedup();
    collected.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Validates `-m` names: each must be a directory directly under `repo`.
fn selected_models(repo: &Path, models: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in models {
        let plain = Path::new(name).components().count() == 1
            && !matches!(name.as_str(), "." | "..")
            && !name.contains(['/', '\\']);
        if !plain {
            return Err(Error::usage(format!(
                "-m takes a model name, not a path: `{name}`"
            )));
        }
        if !repo.join(name).is_dir() {
            return Err(Error::usage(format!(
                "no model `{name}` in {} (expected directory {})",
                repo.display(),
                repo.join(name).display()
            )));
        }
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out.sort();
    Ok(out)
}

fn top_level_dirs(dirs: &[String]) -> Vec<String> {
    dirs.iter()
        .filter_map(|d| d.strip_suffix('/'))
        .filter(|d| !d.contains('/'))
        .map(str::to_owned)
        .collect()
}

fn verify(global: &Global, path: &Path, json: bool, limits: &Limits) -> Result {
    let verification = verify_file(global, path, limits)?;
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            archive: &'a Path,
            ok: bool,
            #[serde(flatten)]
            verification: &'a Verification,
        }
        print_json(&Out {
            archive: path,
            ok: verification.ok(),
            verification: &verification,
        })?;
    } else {
        for line in verification.problems() {
            println!("{line}");
        }
        if verification.ok() {
            println!(
                "ok: {} files ({} bytes) match the manifest of {}",
                verification.files,
                verification.bytes,
                path.display()
            );
        } else {
            println!(
                "FAILED: {}: {} mismatched, {} missing, {} extra",
                path.display(),
                verification.mismatched.len(),
                verification.missing.len(),
                verification.extra.len()
            );
        }
    }
    Ok(if verification.ok() {
        Status::Success
    } else {
        Status::Failed
    })
}

/// Opens and verifies an archive; an unreadable archive or manifest is an
/// invalid input (exit 1), a missing file a usage error.
pub(crate) fn verify_file(global: &Global, path: &Path, limits: &Limits) -> Result<Verification> {
    let mut zip = open_archive(path)?;
    check_limits(&mut zip, path, limits)?;
    let total = (0..zip.len())
        .filter_map(|i| zip.by_index_raw(i).ok().map(|e| e.size()))
        .sum();
    let bar = progress::bytes(global, total, "verify");
    let verification = archive::verify(&mut zip, &bar)
        .map_err(|e| Error::invalid(e.context(format!("{}", path.display()))))?;
    bar.finish_and_clear();
    Ok(verification)
}

pub(crate) fn limits(args: &LimitArgs) -> Limits {
    Limits {
        max_entry: args.max_entry_size,
        max_total: args.max_total_size,
        max_ratio: args.max_ratio,
    }
}

/// Refuses (exit 1) an archive whose declared sizes break `limits`, before
/// anything is decompressed.
pub(crate) fn check_limits(
    zip: &mut zip::ZipArchive<fs::File>,
    path: &Path,
    limits: &Limits,
) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    archive::check_limits(zip, len, limits)
        .map_err(|e| Error::invalid(e.context(format!("refusing {}", path.display()))))
}

pub(crate) fn open_archive(path: &Path) -> Result<zip::ZipArchive<fs::File>> {
    let file = fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::usage(format!("{}: no such file", path.display()))
        } else {
            anyhow::Error::new(e)
                .context(format!("cannot open {}", path.display()))
                .into()
        }
    })?;
    zip::ZipArchive::new(file).map_err(|e| {
        Error::invalid(
            anyhow::Error::new(e).context(format!("{}: not a valid zip archive", path.display())),
        )
    })
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    println!("{text}");
    Ok(())
}
