//! `rustpy unzip IN.zip -o DIR`: verify an archive, then extract it without
//! ever writing outside DIR.
//!
//! Every entry is vetted before anything is written: absolute paths, `..`
//! components, drive prefixes, backslashes and duplicates are rejected, and
//! symlinks are allowed only when their target stays inside DIR. Extraction
//! goes to a staging directory next to DIR that is renamed into place at the
//! end, so a failure leaves nothing half-extracted.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{self, Read},
    path::{Component, Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _};

use crate::{
    archive,
    cli::UnzipArgs,
    commands::zip::{check_limits, limits, open_archive, verify_file},
    progress, Error, Global, Result, Status,
};

/// Symlink targets are short paths; anything larger is not a real link.
const MAX_LINK_TARGET: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File { executable: bool },
    Symlink { target: String },
}

#[derive(Debug)]
struct Planned {
    index: usize,
    /// The entry's name in the archive (as the manifest lists it).
    name: String,
    /// Normalised relative path (no `.`/`..`, no root).
    rel: PathBuf,
    kind: Kind,
}

pub fn run(global: &Global, args: UnzipArgs) -> Result {
    let dest = &args.output;
    if fs::symlink_metadata(dest).is_ok() {
        let empty_dir = dest.is_dir()
            && fs::read_dir(dest)
                .with_context(|| format!("cannot read {}", dest.display()))?
                .next()
                .is_none();
        if !empty_dir {
            return Err(Error::usage(format!(
                "{} already exists and is not an empty directory",
                dest.display()
            )));
        }
    }

    let limits = limits(&args.limits);
    let mut zip = open_archive(&args.archive)?;
    check_limits(&mut zip, &args.archive, &limits)?;
    let plan = plan(&mut zip).map_err(|e| {
        Error::invalid(e.context(format!("refusing to extract {}", args.archive.display())))
    })?;

    // The manifest is also checked while extracting: the archive file could
    // change between verification and extraction.
    let mut expected = BTreeMap::new();
    if !args.no_verify {
        let verification = verify_file(global, &args.archive, &limits)?;
        if !verification.ok() {
            for line in verification.problems() {
                eprintln!("{line}");
            }
            eprintln!(
                "error: {} does not match its manifest; nothing was extracted",
                args.archive.display()
            );
            return Ok(Status::Failed);
        }
        let manifest = archive::read_manifest(&mut zip).map_err(Error::invalid)?;
        expected = manifest
            .files
            .into_iter()
            .map(|f| (f.path, (f.size, f.sha256)))
            .collect();
    }

    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".rustpy-unzip-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))?;

    let total = plan
        .iter()
        .filter(|p| matches!(p.kind, Kind::File { .. }))
        .filter_map(|p| zip.by_index_raw(p.index).ok().map(|e| e.size()))
        .sum();
    let bar = progress::bytes(global, total, "extract");
    extract(&mut zip, &plan, staging.path(), &expected, &bar)?;
    bar.finish_and_clear();
    links_stay_inside(&plan, staging.path()).map_err(|e| {
        Error::invalid(e.context(format!("refusing to extract {}", args.archive.display())))
    })?;

    // Move into place. An existing empty DIR is replaced (rename onto a
    // non-empty directory would fail, which is what we want).
    if dest.is_dir() {
        fs::remove_dir(dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        return Err(anyhow::Error::new(e)
            .context(format!(
                "cannot move the extracted files to {}",
                dest.display()
            ))
            .into());
    }

    let files = plan.iter().filter(|p| !matches!(p.kind, Kind::Dir)).count();
    global.status(format!(
        "extracted {files} files from {} to {}",
        args.archive.display(),
        dest.display()
    ));
    Ok(Status::Success)
}

/// Vets every entry; returns the extraction plan or the first unsafe entry.
fn plan<R: Read + io::Seek>(zip: &mut zip::ZipArchive<R>) -> anyhow::Result<Vec<Planned>> {
    let mut plan = Vec::with_capacity(zip.len());
    let mut seen = BTreeSet::new();
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .with_context(|| format!("cannot read entry #{index}"))?;
        let name = entry.name().to_owned();
        let rel = safe_relative_path(&name).with_context(|| format!("unsafe entry `{name}`"))?;
        if rel.as_os_str().is_empty() {
            continue; // "./" and the like: the root itself
        }
        if !seen.insert(rel.clone()) {
            bail!("duplicate entry `{name}`");
        }
        let kind = if entry.is_symlink() {
            if entry.size() > MAX_LINK_TARGET {
                bail!("symlink `{name}` has an implausibly long target");
            }
            // Bounded whatever the header says: it may lie.
            let mut target = String::new();
            (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_string(&mut target)
                .with_context(|| format!("symlink `{name}`: target is not UTF-8"))?;
            if target.len() as u64 > MAX_LINK_TARGET {
                bail!("symlink `{name}` has an implausibly long target");
            }
            check_link_target(&rel, &target).with_context(|| {
                format!("symlink `{name}` -> `{target}` escapes the output directory")
            })?;
            Kind::Symlink { target }
        } else if entry.is_dir() {
            Kind::Dir
        } else {
            let executable = entry.unix_mode().is_some_and(|m| m & 0o111 != 0);
            Kind::File { executable }
        };
        plan.push(Planned {
            index,
            name,
            rel,
            kind,
        });
    }

    // Nothing may be written through a symlink from the same archive, even
    // one that points inside: that is how link chains escape.
    let links: Vec<&Path> = plan
        .iter()
        .filter(|p| matches!(p.kind, Kind::Symlink { .. }))
        .map(|p| p.rel.as_path())
        .collect();
    for p in &plan {
        if let Some(link) = links.iter().find(|l| p.rel != **l && p.rel.starts_with(l)) {
            bail!(
                "entry `{}` lies under symlink `{}`",
                p.rel.display(),
                link.display()
            );
        }
    }
    Ok(plan)
}

/// Turns a zip entry name into a relative path that cannot leave the
/// extraction root, or explains why it can't be.
fn safe_relative_path(name: &str) -> anyhow::Result<PathBuf> {
    if name.contains('\0') {
        bail!("name contains a NUL byte");
    }
    // Backslashes are separators on Windows: `..\x` must not sneak through.
    if name.contains('\\') {
        bail!("name contains a backslash");
    }
    if name.starts_with('/') {
        bail!("absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        bail!("drive-letter path");
    }
    let mut rel = PathBuf::new();
    for comp in Path::new(name).components() {
        match comp {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => bail!("`..` component"),
            Component::RootDir | Component::Prefix(_) => bail!("absolute path"),
        }
    }
    Ok(rel)
}

/// A link at `link` (relative to the root) with `target` must resolve,
/// lexically, to a path inside the root.
fn check_link_target(link: &Path, target: &str) -> anyhow::Result<()> {
    if target.is_empty() {
        bail!("empty target");
    }
    let target = Path::new(target);
    if target.is_absolute() || target.has_root() || target.to_string_lossy().contains('\\') {
        bail!("absolute target");
    }
    let mut depth: Vec<&std::ffi::OsStr> = link
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str()).collect())
        .unwrap_or_default();
    for comp in target.components() {
        match comp {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    bail!("target leaves the output directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => bail!("absolute target"),
        }
    }
    Ok(())
}

fn extract<R: Read + io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    plan: &[Planned],
    root: &Path,
    expected: &BTreeMap<String, (u64, String)>,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    // Directories and files first, symlinks last: no write can then follow
    // a link created from the archive.
    for p in plan
        .iter()
        .filter(|p| !matches!(p.kind, Kind::Symlink { .. }))
    {
        let path = root.join(&p.rel);
        match p.kind {
            Kind::Dir => fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?,
            Kind::File { executable } => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                let mut entry = zip
                    .by_index(p.index)
                    .with_context(|| format!("cannot read {}", p.name))?;
                let mut out = create_new_file(&path, executable)?;
                let declared = entry.size();
                let actual =
                    archive::copy_entry(&mut entry, declared, &mut out, bar).map_err(|e| {
                        let invalid = e.kind() == io::ErrorKind::InvalidData;
                        let e = anyhow::Error::new(e).context(format!("cannot extract {}", p.name));
                        if invalid {
                            Error::invalid(e)
                        } else {
                            e.into()
                        }
                    })?;
                if let Some(want) = expected.get(&p.name) {
                    if *want != actual {
                        return Err(Error::invalid(anyhow!(
                            "{} changed while extracting: it no longer matches the manifest",
                            p.name
                        )));
                    }
                }
            }
            Kind::Symlink { .. } => {}
        }
    }
    for p in plan {
        if let Kind::Symlink { target } = &p.kind {
            make_symlink(target, &root.join(&p.rel))?;
        }
    }
    Ok(())
}

/// Defence in depth after extraction (into the staging directory): resolve
/// every link for real and make sure it lands inside the root, since a
/// lexical check of each link alone can be fooled by link chains.
fn links_stay_inside(plan: &[Planned], root: &Path) -> anyhow::Result<()> {
    let real_root = fs::canonicalize(root)?;
    for p in plan
        .iter()
        .filter(|p| matches!(p.kind, Kind::Symlink { .. }))
    {
        let path = root.join(&p.rel);
        let resolved = fs::canonicalize(&path).map_err(|_| {
            anyhow!(
                "symlink `{}` does not resolve inside the archive",
                p.rel.display()
            )
        })?;
        if !resolved.starts_with(&real_root) {
            bail!(
                "symlink `{}` resolves outside the output directory",
                p.rel.display()
            );
        }
    }
    Ok(())
}

#[cfg(unix)]
fn create_new_file(path: &Path, executable: bool) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(not(unix))]
fn create_new_file(path: &Path, _executable: bool) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

#[cfg(unix)]
fn make_symlink(target: &str, link: &Path) -> anyhow::Result<()> {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot create symlink {}", link.display()))
}

#[cfg(not(unix))]
fn make_symlink(_target: &str, link: &Path) -> anyhow::Result<()> {
    bail!("{}: symlinks are only extracted on Unix", link.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        assert_eq!(
            safe_relative_path("a/./b/c.py").unwrap(),
            PathBuf::from("a/b/c.py")
        );
        assert_eq!(safe_relative_path("m/1/").unwrap(), PathBuf::from("m/1"));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/..",
            "C:/x",
            "c:x",
            "..\\x",
            "a\0b",
        ] {
            assert!(safe_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_targets() {
        let link = Path::new("m/1/weights");
        assert!(check_link_target(link, "../data/w.bin").is_ok());
        assert!(check_link_target(link, "../../other/w.bin").is_ok());
        assert!(check_link_target(link, "../../../w.bin").is_err());
        assert!(check_link_target(link, "/etc/passwd").is_err());
        assert!(check_link_target(Path::new("top"), "..").is_err());
        assert!(check_link_target(Path::new("top"), ".").is_ok());
    }
}
