//! `git+https://…@COMMIT` / `git+file://…@COMMIT` with the `git` and
//! `git-lfs` commands: clone without smudging, check out the commit, then
//! `git lfs pull` the LFS objects it references.

use std::fs;
use std::path::Path;
use std::process::Command;

use rustpy_config::checkpoint::{redact_url, Checkpoint, Source};

const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

fn git(dir: Option<&Path>, args: &[&str], url: &str) -> Result<(), String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args([
        "-c",
        "protocol.file.allow=always",
        "-c",
        "advice.detachedHead=false",
    ])
    .args(args)
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_LFS_SKIP_SMUDGE", "1")
    .env_remove("GIT_DIR")
    .env_remove("GIT_WORK_TREE");
    let out = cmd
        .output()
        .map_err(|e| format!("running git: {e} (git sources need the git and git-lfs commands)"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).replace(url, &redact_url(url));
    let stderr = stderr.trim();
    let what = args.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
    if stderr.contains("is not a git command") && args.first() == Some(&"lfs") {
        return Err("git-lfs is not installed (apt-get install git-lfs)".into());
    }
    Err(format!("git {what} failed: {stderr}"))
}

pub(crate) fn fetch(ck: &Checkpoint, stage: &Path, work: &Path) -> Result<(), String> {
    let Source::Git { url, commit } = &ck.source else {
        unreachable!()
    };
    let clone = work.join("clone");
    let clone_s = clone.to_string_lossy().to_string();
    git(
        None,
        &["clone", "--quiet", "--no-checkout", url, &clone_s],
        url,
    )?;
    git(
        Some(&clone),
        &["checkout", "--quiet", "--detach", commit],
        url,
    )
    .map_err(|e| format!("{e} (is {commit} a commit of the repository?)"))?;
    // `git lfs pull` only checks out into a repository with the LFS filters
    // configured; set them for this clone alone (no global config needed).
    git(
        Some(&clone),
        &["lfs", "install", "--local", "--skip-smudge"],
        url,
    )?;
    git(Some(&clone), &["lfs", "pull"], url)?;
    // Move the checked-out files (without .git) into the stage.
    let mut n = 0;
    for entry in walkdir::WalkDir::new(&clone)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
    {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(&clone)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .to_string();
        if rel == ".gitattributes" || !ck.includes(&rel) {
            continue;
        }
        let mut head = [0u8; 64];
        let n_read = fs::File::open(entry.path())
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|e| e.to_string())?;
        if head[..n_read].starts_with(LFS_POINTER) {
            return Err(format!(
                "{rel} is still a git-lfs pointer after `git lfs pull`: the LFS object is missing on the remote"
            ));
        }
        let dest = stage.join(&rel);
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        fs::rename(entry.path(), &dest).map_err(|e| e.to_string())?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("no files at commit {commit}"));
    }
    Ok(())
}
