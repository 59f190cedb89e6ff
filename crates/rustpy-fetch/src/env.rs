//! Per-model Python environments (`EXECUTION_ENV_PATH`, a conda-pack
//! archive) unpacked once into `$RUSTPY_CACHE/envs/<sha256 of the archive>/`.
//!
//! Same discipline as checkpoints: an exclusive lock on `<key>.lock` (models,
//! instances and servers on one machine wait for the first one), unpacked
//! into `.tmp/<key>.<pid>.<n>/`, then renamed into place: a reader sees a
//! whole environment or none. Later loads (other models, reloads, restarts)
//! find it by the archive's content hash and do not unpack again.
//!
//! A conda-pack archive's `bin/conda-unpack` (which rewrites the build
//! prefixes to the unpacked location) runs once, in place, under the lock,
//! before the entry is marked complete.
//!
//! In use: whoever uses an entry holds an [`EnvLease`] (a shared lock on its
//! metadata file, whose modification time records the last use);
//! [`prune_envs`] (`rustpy cache prune`) deletes only entries nobody holds.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{file_sha256, lock_key, EntryLock, FetchError, Options};

/// Written last into an unpacked environment (marks it complete).
pub const ENV_META_FILE: &str = ".rustpy-env.json";

/// conda-pack's script that rewrites prefixes after unpacking (run once).
pub const CONDA_UNPACK: &str = "bin/conda-unpack";

/// An unpacked environment.
#[derive(Debug, Clone)]
pub struct UnpackedEnv {
    /// The environment's root (holds `bin/`, `lib/pythonX.Y/`).
    pub dir: PathBuf,
    /// Hex sha256 of the archive (the cache key).
    pub sha256: String,
    /// True when the cache already had it.
    pub cache_hit: bool,
    /// Keeps the entry from being pruned while this (or a clone) lives.
    pub lease: Arc<EnvLease>,
}

/// An environment in use: a shared lock on its metadata file. While any
/// process holds one, [`prune_envs`] leaves the entry alone.
#[derive(Debug)]
pub struct EnvLease {
    _file: fs::File,
}

/// Takes a lease on the complete entry `dir`, recording the use (the
/// metadata file's modification time). `None`: no complete entry there
/// (never unpacked, or pruned meanwhile).
fn take_lease(dir: &Path) -> io::Result<Option<EnvLease>> {
    let meta = dir.join(ENV_META_FILE);
    // Read-write to record the use; a read-only cache still works.
    let file = match fs::OpenOptions::new().read(true).write(true).open(&meta) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(_) => match fs::File::open(&meta) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    file.lock_shared()?;
    // A prune may have removed the entry between the open and the lock: the
    // path must still name this very file.
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match fs::metadata(&meta) {
        Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let _ = file.set_modified(SystemTime::now());
    Ok(Some(EnvLease { _file: file }))
}

/// Unpacks `archive` (`.tar.gz`, `.tgz` or `.tar`) into the cache, or finds it there.
pub fn unpack_env(archive: &Path, opts: &Options) -> Result<UnpackedEnv, FetchError> {
    let fail = |e: String| FetchError::new(format!("environment {}: {e}", archive.display()));
    let sha256 = file_sha256(archive).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let root = opts.cache_dir.join("envs");
    let final_dir = root.join(&sha256);
    let hit = |cache_hit, lease| UnpackedEnv {
        dir: final_dir.clone(),
        sha256: sha256.clone(),
        cache_hit,
        lease: Arc::new(lease),
    };
    let lease = |dir: &Path| {
        take_lease(dir).map_err(|e| fail(format!("cannot lock {}: {e}", dir.display())))
    };
    if let Some(l) = lease(&final_dir)? {
        return Ok(hit(true, l));
    }
    let entry = EntryLock::acquire(&root, &sha256).map_err(fail)?;
    if let Some(l) = lease(&final_dir)? {
        return Ok(hit(true, l));
    }
    entry.clear_leftovers();
    // An incomplete directory (no metadata file) cannot come from a rename;
    // remove whatever is there so the rename below can happen.
    let _ = fs::remove_dir_all(&final_dir);
    let stage = entry.stage("");
    let result = (|| -> Result<(), String> {
        fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
        let file = fs::File::open(archive).map_err(|e| e.to_string())?;
        let name = archive.to_string_lossy().to_ascii_lowercase();
        let reader: Box<dyn std::io::Read> = if name.ends_with(".tar") {
            Box::new(file)
        } else {
            Box::new(flate2::read::GzDecoder::new(file))
        };
        let mut a = tar::Archive::new(reader);
        // rwx bits are kept (bin/ stays executable); setuid/setgid/sticky are dropped.
        a.set_preserve_permissions(false);
        unpack_contained(&mut a, &stage)?;
        fs::rename(&stage, &final_dir)
            .map_err(|e| format!("moving into the cache {}: {e}", final_dir.display()))?;
        // In place: conda-unpack rewrites prefixes to where it sits.
        run_conda_unpack(&final_dir)?;
        let meta = serde_json::json!({ "archive": archive.to_string_lossy(), "sha256": sha256 });
        fs::write(final_dir.join(ENV_META_FILE), meta.to_string()).map_err(|e| e.to_string())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
        // Without its metadata file the entry is incomplete: never used.
        let _ = fs::remove_dir_all(&final_dir);
    }
    let taken = result
        .map_err(fail)
        .and_then(|()| lease(&final_dir))
        .and_then(|l| l.ok_or_else(|| fail("the unpacked entry vanished".into())));
    drop(entry);
    Ok(hit(false, taken?))
}

/// Unpacks every entry of `a` into `dest`, refusing the whole archive (as
/// the official backend does since r26.06) at the first entry that would
/// write outside `dest`: an absolute path, a `..` component, a path through
/// a symlink an earlier entry made, or a hard link to such a path. Symlinks
/// themselves may point anywhere (conda environments have some); nothing is
/// ever written through one.
fn unpack_contained<R: io::Read>(a: &mut tar::Archive<R>, dest: &Path) -> Result<(), String> {
    use std::path::Component;
    let escapes = |p: &Path| {
        p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    };
    let refuse = |p: &Path, why: &str| {
        Err(format!(
            "archive entry '{}' {why}; the archive is refused (path traversal)",
            p.display()
        ))
    };
    for entry in a
        .entries()
        .map_err(|e| format!("reading the archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("reading the archive: {e}"))?
            .into_owned();
        if escapes(&path) {
            return refuse(&path, "is absolute or climbs out with '..'");
        }
        let mut at = dest.to_path_buf();
        for part in path.parent().into_iter().flat_map(Path::components) {
            at.push(part);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return refuse(&path, "would be written through a symlink");
            }
        }
        if entry.header().entry_type().is_hard_link() {
            if let Some(target) = entry
                .link_name()
                .map_err(|e| format!("reading the archive: {e}"))?
            {
                if escapes(&target) {
                    return refuse(&path, "is a hard link out of the archive");
                }
            }
        }
        entry
            .unpack_in(dest)
            .map_err(|e| format!("unpacking {} into {}: {e}", path.display(), dest.display()))?;
    }
    Ok(())
}

/// Runs `<dir>/bin/conda-unpack` if the archive has one (conda-pack's
/// prefix rewriting), with the environment's `bin/` first on PATH (its
/// `#!/usr/bin/env python` finds the environment's Python, as after
/// `source bin/activate`). A failure fails the unpack with its output.
fn run_conda_unpack(dir: &Path) -> Result<(), String> {
    let script = dir.join(CONDA_UNPACK);
    if !script.is_file() {
        return Ok(());
    }
    let mut path = std::ffi::OsString::from(dir.join("bin"));
    if let Some(old) = std::env::var_os("PATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let out = std::process::Command::new(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env("CONDA_PREFIX", dir)
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if said.is_empty() {
        said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    }
    let tail: Vec<&str> = said.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{} failed ({}): {}",
        script.display(),
        out.status,
        tail.join(" / ")
    ))
}

/// What [`prune_envs`] did with one cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneAction {
    /// Deleted (or, with `dry_run`, would be).
    Removed,
    /// A process holds it (a loaded model).
    InUse,
    /// Used more recently than `older_than`.
    Recent,
    /// Being unpacked right now.
    Busy,
}

impl PruneAction {
    pub fn name(self) -> &'static str {
        match self {
            PruneAction::Removed => "removed",
            PruneAction::InUse => "in use",
            PruneAction::Recent => "recent",
            PruneAction::Busy => "busy",
        }
    }
}

/// One entry of `$RUSTPY_CACHE/envs/`.
#[derive(Debug, Clone)]
pub struct PrunedEnv {
    pub sha256: String,
    pub dir: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
    /// Last use (its metadata file's modification time); `None`: incomplete.
    pub last_used: Option<SystemTime>,
    /// The archive it came from, as recorded when unpacked.
    pub archive: Option<String>,
    pub action: PruneAction,
}

fn dir_bytes(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn is_key(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Deletes the unpacked environments under `cache_dir/envs/` that no process
/// uses (no [`EnvLease`] held) and, with `older_than`, that were last used
/// longer ago than that; also incomplete entries and staging left-overs of
/// unpacks that died. `dry_run` only reports. Entries are returned sorted by
/// key. An entry being unpacked or in use is never touched; a load that
/// races with the deletion unpacks the archive again.
pub fn prune_envs(
    cache_dir: &Path,
    older_than: Option<Duration>,
    dry_run: bool,
) -> io::Result<Vec<PrunedEnv>> {
    let root = cache_dir.join("envs");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut keys: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_key(n))
        .collect();
    keys.sort();
    let tmp_root = root.join(".tmp");
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    for sha256 in keys {
        let dir = root.join(&sha256);
        let meta_path = dir.join(ENV_META_FILE);
        let meta_text = fs::read_to_string(&meta_path).ok();
        let archive = meta_text
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("archive").and_then(|a| a.as_str()).map(String::from));
        let mut entry = PrunedEnv {
            sha256: sha256.clone(),
            bytes: dir_bytes(&dir),
            last_used: fs::metadata(&meta_path).and_then(|m| m.modified()).ok(),
            archive,
            dir: dir.clone(),
            action: PruneAction::Removed,
        };
        // No unpack of this key may run meanwhile.
        let Some(lock) = lock_key(&root, &sha256, false)? else {
            entry.action = PruneAction::Busy;
            out.push(entry);
            continue;
        };
        // Held by a user (a shared lock on the metadata file)?
        let meta = fs::OpenOptions::new().read(true).open(&meta_path);
        let _meta_lock = match meta {
            Ok(f) => {
                if f.try_lock().is_err() {
                    entry.action = PruneAction::InUse;
                    out.push(entry);
                    continue;
                }
                Some(f)
            }
            Err(_) => None, // incomplete: nobody can use it
        };
        if let (Some(limit), Some(used)) = (older_than, entry.last_used) {
            let age = SystemTime::now().duration_since(used).unwrap_or_default();
            if age < limit {
                entry.action = PruneAction::Recent;
                out.push(entry);
                continue;
            }
        }
        if !dry_run {
            // Out of the way first (one rename), so nobody finds half of it.
            fs::create_dir_all(&tmp_root)?;
            let doomed = tmp_root.join(format!(
                "{sha256}.prune.{}.{}",
                std::process::id(),
                SERIAL.fetch_add(1, Ordering::Relaxed)
            ));
            fs::rename(&dir, &doomed)?;
            fs::remove_dir_all(&doomed)?;
            // Its lock file goes too, while locked: whoever waits on it
            // finds it is no longer the key's lock and takes a new one.
            remove_lock_file(&root, &sha256, lock);
        }
        out.push(entry);
    }
    if !dry_run {
        clear_dead_staging(&root, &tmp_root);
        clear_orphan_locks(&root)?;
    }
    Ok(out)
}

/// Removes the staging directories under `tmp_root` of unpacks that died
/// (nobody holds their key's lock in `root`).
fn clear_dead_staging(root: &Path, tmp_root: &Path) {
    if let Ok(stages) = fs::read_dir(tmp_root) {
        for st in stages.flatten() {
            let name = st.file_name().to_string_lossy().into_owned();
            let Some(key) = name.split('.').next().filter(|k| is_key(k)) else {
                continue;
            };
            if let Ok(Some(_lock)) = lock_key(root, key, false) {
                let _ = fs::remove_dir_all(st.path());
            }
        }
    }
}

/// Removes the lock files in `root` whose entry is gone (and that nobody
/// holds).
fn clear_orphan_locks(root: &Path) -> io::Result<()> {
    let locks: Vec<String> = fs::read_dir(root)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".lock")
                .filter(|k| is_key(k))
                .map(String::from)
        })
        .collect();
    for key in locks {
        if root.join(&key).exists() {
            continue;
        }
        if let Ok(Some(lock)) = lock_key(root, &key, false) {
            // Nobody unpacks it (that needs the lock) and no entry is
            // left: the lock file only takes room.
            if !root.join(&key).exists() {
                remove_lock_file(root, &key, lock);
            }
        }
    }
    Ok(())
}

/// Deletes `<root>/<key>.lock` while `lock` (its lock) is held.
fn remove_lock_file(root: &Path, key: &str, lock: fs::File) {
    let _ = fs::remove_file(root.join(format!("{key}.lock")));
    drop(lock);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options with the cache under `dir`.
    fn cache_in(dir: &Path) -> Options {
        Options {
            cache_dir: dir.join("cache"),
            offline: false,
            progress: None,
        }
    }

    fn archive(dir: &Path) -> PathBuf {
        let path = dir.join("env.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        let data = b"VALUE = 1\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "lib/python3.11/site-packages/m.py", &data[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o4755);
        h.set_cksum();
        b.append_data(&mut h, "bin/tool", &b"#!\n"[..]).unwrap();
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    /// A .tar.gz whose entries are written as given: (raw path, kind, data
    /// or link target). tar's Builder refuses `..`, so the names go into
    /// the header bytes directly.
    fn raw_archive(dir: &Path, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
        let path = dir.join("evil.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if kind.is_file() {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            } else {
                h.as_old_mut().linkname[..data.len()].copy_from_slice(data.as_bytes());
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &b""[..]).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn archives_that_write_outside_their_directory_are_refused() {
        use tar::EntryType::{Link, Regular, Symlink};
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let out = outside.display().to_string();
        type Entries = Vec<(String, tar::EntryType, String)>;
        let cases: Vec<(Entries, &str)> = vec![
            (vec![("../escaped.py".into(), Regular, "x".into())], "'..'"),
            (
                vec![("lib/../../escaped.py".into(), Regular, "x".into())],
                "'..'",
            ),
            (
                vec![(format!("{out}/escaped.py"), Regular, "x".into())],
                "absolute",
            ),
            (
                vec![
                    ("lib".into(), Symlink, out.clone()),
                    ("lib/escaped.py".into(), Regular, "x".into()),
                ],
                "through a symlink",
            ),
            (
                vec![("lib/link".into(), Link, "../../etc/passwd".into())],
                "hard link",
            ),
        ];
        for (k, (entries, why)) in cases.iter().enumerate() {
            let case = d.path().join(format!("case{k}"));
            fs::create_dir(&case).unwrap();
            let refs: Vec<(&str, tar::EntryType, &str)> = entries
                .iter()
                .map(|(p, t, v)| (p.as_str(), *t, v.as_str()))
                .collect();
            let a = raw_archive(&case, &refs);
            let err = unpack_env(&a, &cache_in(&case)).unwrap_err().0;
            assert!(err.contains("path traversal") && err.contains(why), "{err}");
            // Nothing landed outside, nothing was cached.
            assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "case {k}");
            assert!(!case.join("escaped.py").exists());
            let envs = case.join("cache").join("envs");
            let complete = fs::read_dir(&envs)
                .map(|r| r.flatten().any(|e| e.path().join(ENV_META_FILE).exists()))
                .unwrap_or(false);
            assert!(!complete, "case {k}");
        }
        // A symlink out of the archive is kept (writing through it is what is refused).
        let ok = d.path().join("ok");
        fs::create_dir(&ok).unwrap();
        let a = raw_archive(
            &ok,
            &[
                ("bin/python3", Symlink, "/usr/bin/python3"),
                ("lib/m.py", Regular, "V = 1\n"),
            ],
        );
        let env = unpack_env(&a, &cache_in(&ok)).unwrap();
        assert!(env.dir.join("lib/m.py").is_file());
        assert!(fs::symlink_metadata(env.dir.join("bin/python3"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn unpacks_once_then_reuses() {
        let d = tempfile::tempdir().unwrap();
        let opts = cache_in(d.path());
        let a = archive(d.path());
        let first = unpack_env(&a, &opts).unwrap();
        assert!(!first.cache_hit);
        assert!(first
            .dir
            .join("lib/python3.11/site-packages/m.py")
            .is_file());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(first.dir.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "executable, not setuid: {mode:o}");
        fs::write(first.dir.join("sentinel"), "x").unwrap();
        let second = unpack_env(&a, &opts).unwrap();
        assert!(second.cache_hit);
        assert_eq!(first.dir, second.dir);
        assert!(second.dir.join("sentinel").is_file(), "not unpacked again");
        // Nothing left in the staging area.
        let left = fs::read_dir(opts.cache_dir.join("envs/.tmp"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn concurrent_unpacks_agree() {
        let d = tempfile::tempdir().unwrap();
        let opts = cache_in(d.path());
        let a = archive(d.path());
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| unpack_env(&a, &opts).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| !r.cache_hit).count(), 1);
        assert!(results.iter().all(|r| r.dir == results[0].dir));
    }

    fn opts(d: &Path) -> Options {
        Options {
            cache_dir: d.join("cache"),
            offline: false,
            progress: None,
        }
    }

    #[test]
    fn prune_keeps_what_is_in_use_and_what_is_recent() {
        let d = tempfile::tempdir().unwrap();
        let opts = opts(d.path());
        let a = archive(d.path());
        let held = unpack_env(&a, &opts).unwrap();
        // In use: never removed, whatever its age.
        let r = prune_envs(&opts.cache_dir, None, false).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].action, PruneAction::InUse);
        assert!(r[0].bytes > 0);
        assert!(held.dir.join(ENV_META_FILE).is_file());
        drop(held);
        // Recent: kept with --older-than.
        let r = prune_envs(&opts.cache_dir, Some(Duration::from_secs(3600)), false).unwrap();
        assert_eq!(r[0].action, PruneAction::Recent);
        // A dry run removes nothing.
        let r = prune_envs(&opts.cache_dir, None, true).unwrap();
        assert_eq!(r[0].action, PruneAction::Removed);
        let dir = opts.cache_dir.join("envs").join(&r[0].sha256);
        assert!(dir.is_dir());
        let lock_file = opts
            .cache_dir
            .join("envs")
            .join(format!("{}.lock", r[0].sha256));
        assert!(lock_file.is_file());
        let r = prune_envs(&opts.cache_dir, None, false).unwrap();
        assert_eq!(r[0].action, PruneAction::Removed);
        assert!(!dir.exists());
        assert!(!lock_file.exists(), "a pruned entry left its lock file");
        assert!(prune_envs(&opts.cache_dir, None, false).unwrap().is_empty());
        // The next use unpacks it again.
        let again = unpack_env(&a, &opts).unwrap();
        assert!(!again.cache_hit);
        assert!(again.dir.join(ENV_META_FILE).is_file());
    }

    #[test]
    fn a_lock_taken_on_a_lock_file_a_pruner_deleted_is_taken_again() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("envs");
        fs::create_dir_all(&root).unwrap();
        let key = "a".repeat(64);
        let path = root.join(format!("{key}.lock"));
        // Somebody opened the lock file before a pruner deleted it.
        let stale = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        fs::remove_file(&path).unwrap();
        let held = lock_key(&root, &key, false).unwrap().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            held.metadata().unwrap().ino(),
            fs::metadata(&path).unwrap().ino()
        );
        // The stale file's lock excludes nobody; the new file's does.
        assert!(stale.try_lock().is_ok());
        assert!(lock_key(&root, &key, false).unwrap().is_none());
        drop(held);
        assert!(lock_key(&root, &key, false).unwrap().is_some());
    }

    #[test]
    fn prune_removes_lock_files_left_without_an_entry_but_not_held_ones() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("cache").join("envs");
        fs::create_dir_all(&root).unwrap();
        let (orphan, held_key) = ("b".repeat(64), "c".repeat(64));
        fs::write(root.join(format!("{orphan}.lock")), b"").unwrap();
        let held = lock_key(&root, &held_key, false).unwrap().unwrap();
        assert!(prune_envs(&d.path().join("cache"), None, false)
            .unwrap()
            .is_empty());
        assert!(!root.join(format!("{orphan}.lock")).exists());
        // One being held (an unpack about to start) stays.
        assert!(root.join(format!("{held_key}.lock")).exists());
        drop(held);
    }

    #[test]
    fn conda_unpack_runs_once_in_place_before_the_entry_is_complete() {
        let d = tempfile::tempdir().unwrap();
        let opts = opts(d.path());
        let path = d.path().join("env.tar.gz");
        let gz = flate2::write::GzEncoder::new(
            fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut b = tar::Builder::new(gz);
        // Appends its working directory (the entry) to a log beside the cache.
        let log = d.path().join("unpacked.log");
        let script = format!(
            "#!/bin/sh\ntest -f {meta} && exit 9\npwd >> {log}\n",
            meta = ENV_META_FILE,
            log = log.display()
        );
        let mut h = tar::Header::new_gnu();
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, CONDA_UNPACK, script.as_bytes())
            .unwrap();
        b.into_inner().unwrap().finish().unwrap();
        let first = unpack_env(&path, &opts).unwrap();
        let second = unpack_env(&path, &opts).unwrap();
        assert!(second.cache_hit);
        let ran = fs::read_to_string(&log).unwrap();
        assert_eq!(ran.lines().count(), 1, "{ran}");
        assert_eq!(
            fs::canonicalize(ran.trim()).unwrap(),
            fs::canonicalize(&first.dir).unwrap()
        );
    }

    #[test]
    fn a_failing_conda_unpack_fails_the_unpack_and_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let opts = opts(d.path());
        let path = d.path().join("env.tar");
        let mut b = tar::Builder::new(fs::File::create(&path).unwrap());
        let script = b"#!/bin/sh\necho 'prefix rewrite failed' >&2\nexit 4\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(script.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, CONDA_UNPACK, &script[..]).unwrap();
        b.into_inner().unwrap();
        let e = unpack_env(&path, &opts).unwrap_err();
        assert!(
            e.0.contains("conda-unpack") && e.0.contains("prefix rewrite failed"),
            "{e}"
        );
        let left: Vec<_> = fs::read_dir(opts.cache_dir.join("envs"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != ".tmp")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_broken_archive_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let opts = cache_in(d.path());
        let a = d.path().join("bad.tar.gz");
        fs::write(&a, b"not gzip at all").unwrap();
        let e = unpack_env(&a, &opts).unwrap_err();
        assert!(e.0.contains("bad.tar.gz"), "{e}");
        let envs = opts.cache_dir.join("envs");
        let dirs: Vec<_> = fs::read_dir(&envs)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir() && e.file_name() != ".tmp")
            .collect();
        assert!(dirs.is_empty());
        assert_eq!(fs::read_dir(envs.join(".tmp")).unwrap().count(), 0);
    }
}
