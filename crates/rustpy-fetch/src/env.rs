//! Per-model Python environments (`EXECUTION_ENV_PATH`, a conda-pack
//! archive) unpacked once into `$RUSTPY_CACHE/envs/<sha256 of the archive>/`.
//!
//! Same discipline as checkpoints: an exclusive lock on `<key>.lock` (models,
//! instances and servers on one machine wait for the first one), unpacked
//! into `.tmp/<key>.<pid>.<n>/`, then renamed into place: a reader sees a
//! whole environment or none. Later loads (other models, reloads, restarts)
//! find it by the archive's content hash and do not unpack again.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{file_sha256, FetchError, Options};

/// Written last into an unpacked environment (marks it complete).
pub const ENV_META_FILE: &str = ".rustpy-env.json";

/// An unpacked environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedEnv {
    /// The environment's root (holds `bin/`, `lib/pythonX.Y/`).
    pub dir: PathBuf,
    /// Hex sha256 of the archive (the cache key).
    pub sha256: String,
    /// True when the cache already had it.
    pub cache_hit: bool,
}

/// Unpacks `archive` (`.tar.gz`, `.tgz` or `.tar`) into the cache, or finds it there.
pub fn unpack_env(archive: &Path, opts: &Options) -> Result<UnpackedEnv, FetchError> {
    let fail = |e: String| FetchError::new(format!("environment {}: {e}", archive.display()));
    let sha256 = file_sha256(archive).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let root = opts.cache_dir.join("envs");
    let final_dir = root.join(&sha256);
    let hit = |cache_hit| UnpackedEnv {
        dir: final_dir.clone(),
        sha256: sha256.clone(),
        cache_hit,
    };
    if final_dir.join(ENV_META_FILE).is_file() {
        return Ok(hit(true));
    }
    let tmp_root = root.join(".tmp");
    fs::create_dir_all(&tmp_root)
        .map_err(|e| fail(format!("creating the cache {}: {e}", root.display())))?;
    let lock_path = root.join(format!("{sha256}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| fail(format!("opening {}: {e}", lock_path.display())))?;
    lock.lock()
        .map_err(|e| fail(format!("locking {}: {e}", lock_path.display())))?;
    if final_dir.join(ENV_META_FILE).is_file() {
        return Ok(hit(true));
    }
    // Left over by an unpack that died while holding this lock.
    if let Ok(entries) = fs::read_dir(&tmp_root) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{sha256}."))
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    // An incomplete directory (no metadata file) cannot come from a rename;
    // remove whatever is there so the rename below can happen.
    let _ = fs::remove_dir_all(&final_dir);
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let stage = tmp_root.join(format!(
        "{sha256}.{}.{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
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
        // `unpack` skips entries that would land outside `stage` (`..`, absolute).
        a.unpack(&stage)
            .map_err(|e| format!("unpacking into {}: {e}", stage.display()))?;
        let meta = serde_json::json!({ "archive": archive.to_string_lossy(), "sha256": sha256 });
        fs::write(stage.join(ENV_META_FILE), meta.to_string()).map_err(|e| e.to_string())?;
        fs::rename(&stage, &final_dir)
            .map_err(|e| format!("moving into the cache {}: {e}", final_dir.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    drop(lock);
    result.map_err(fail)?;
    Ok(hit(false))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn unpacks_once_then_reuses() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            cache_dir: d.path().join("cache"),
            offline: false,
            progress: None,
        };
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
        let opts = Options {
            cache_dir: d.path().join("cache"),
            offline: false,
            progress: None,
        };
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

    #[test]
    fn a_broken_archive_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let opts = Options {
            cache_dir: d.path().join("cache"),
            offline: false,
            progress: None,
        };
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
