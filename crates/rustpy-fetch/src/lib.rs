//! Fetches a model's checkpoint (see `rustpy_config::checkpoint`) into
//! rustpy's cache, once per machine.
//!
//! - **Cache**: `$RUSTPY_CACHE/checkpoints/<key>/`, `RUSTPY_CACHE` defaulting
//!   to `$XDG_CACHE_HOME/rustpy`, else `~/.cache/rustpy`. The key is the
//!   sha256 of the canonical source (kind, location, revision/commit, pinned
//!   hash, include patterns, effective endpoint), so a pinned source always
//!   lands in the same directory.
//! - **Once**: a fetch takes an exclusive lock on `<key>.lock` (an OS file
//!   lock, so instances, models and servers on one machine wait for the first
//!   one) and re-checks the cache after getting it.
//! - **Never partial**: files are fetched into `.tmp/<key>.<pid>.<n>/`,
//!   verified (pinned sha256 of the archive, or of the tree: [`tree_digest`]),
//!   and only then renamed to `<key>/`. A failed fetch removes its temp dir.
//! - **Offline** (`RUSTPY_OFFLINE=1` or [`Options::offline`]): only the cache
//!   is used; a cold cache is an error saying what to prefetch.
//! - **Environments** (`EXECUTION_ENV_PATH` archives): [`env::unpack_env`],
//!   same cache discipline, keyed by the archive's sha256, under `envs/`.
//! - **Credentials** come from the environment (`HF_TOKEN`, `AWS_*`, user-info
//!   in a git/https URL) and are scrubbed from every error message.

#![forbid(unsafe_code)]

mod archive;
pub mod env;
mod git;
mod hf;
mod s3;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustpy_config::checkpoint::{Checkpoint, Source};
use sha2::{Digest, Sha256};

pub use rustpy_config::checkpoint;

/// The metadata file inside a cached checkpoint (not part of its digest).
pub const META_FILE: &str = ".rustpy-checkpoint.json";

/// A failed fetch; the message names the source (redacted) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    fn new(msg: impl Into<String>) -> Self {
        FetchError(scrub(&msg.into()))
    }
}

/// Progress reports for a fetch (the CLI draws a bar; the backend has none).
pub trait Progress: Send + Sync {
    /// A file (or archive) starts; `total` bytes when known.
    fn begin(&self, what: &str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    fn end(&self);
}

/// How to fetch.
#[derive(Clone)]
pub struct Options {
    pub cache_dir: PathBuf,
    pub offline: bool,
    pub progress: Option<Arc<dyn Progress>>,
}

impl Options {
    /// `RUSTPY_CACHE` (else `$XDG_CACHE_HOME/rustpy`, else `~/.cache/rustpy`)
    /// and `RUSTPY_OFFLINE` (`1`/`true`/`yes`).
    pub fn from_env() -> Options {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let cache_dir = env("RUSTPY_CACHE")
            .map(PathBuf::from)
            .or_else(|| env("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("rustpy")))
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache").join("rustpy")))
            .unwrap_or_else(|| std::env::temp_dir().join("rustpy-cache"));
        let offline = std::env::var("RUSTPY_OFFLINE")
            .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Options {
            cache_dir,
            offline,
            progress: None,
        }
    }

    pub(crate) fn begin(&self, what: &str, total: Option<u64>) {
        if let Some(p) = &self.progress {
            p.begin(what, total);
        }
    }
    pub(crate) fn advance(&self, n: u64) {
        if let Some(p) = &self.progress {
            p.advance(n);
        }
    }
    pub(crate) fn end(&self) {
        if let Some(p) = &self.progress {
            p.end();
        }
    }
}

/// A fetched checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The directory the model reads (`ctx.checkpoint_dir`).
    pub dir: PathBuf,
    /// [`tree_digest`] of `dir`.
    pub digest: String,
    /// The archive's sha256 (archive sources).
    pub archive_sha256: Option<String>,
    /// True when the cache already had it.
    pub cache_hit: bool,
    /// Bytes of the checkpoint files this fetch put in the cache (0 for a
    /// cache hit or a local path).
    pub bytes: u64,
}

/// The cache key of a checkpoint (hex sha256 of its canonical description).
pub fn cache_key(ck: &Checkpoint) -> String {
    let mut h = Sha256::new();
    let mut line = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([b'\n']);
    };
    line("v", "1");
    line("kind", ck.source.kind());
    match &ck.source {
        Source::HuggingFace {
            repo,
            revision,
            subpath,
        } => {
            line("repo", repo);
            line("revision", revision);
            line("subpath", subpath);
            line("endpoint", &hf::endpoint());
        }
        Source::Git { url, commit } => {
            line("url", url);
            line("commit", commit);
        }
        Source::S3 { bucket, prefix } => {
            line("bucket", bucket);
            line("prefix", prefix);
            line("endpoint", &s3::endpoint(ck).unwrap_or_default());
        }
        Source::Archive { url } => line("url", url),
        Source::Local { path } => line("path", path),
    }
    line("sha256", ck.sha256.as_deref().unwrap_or(""));
    line("include", &ck.include.join(","));
    hex(&h.finalize())
}

/// Fetches `ck` (or finds it in the cache). `model_dir` resolves relative
/// local paths. Local sources are used in place (verified when pinned).
pub fn fetch(ck: &Checkpoint, model_dir: &Path, opts: &Options) -> Result<Fetched, FetchError> {
    let what = ck.source.redacted();
    let fail = |e: String| FetchError::new(format!("checkpoint {what}: {e}"));

    if let Source::Local { path } = &ck.source {
        let dir = model_dir.join(path);
        let dir = fs::canonicalize(&dir)
            .map_err(|e| fail(format!("local path {}: {e}", dir.display())))?;
        let digest = tree_digest(&dir).map_err(|e| fail(format!("reading: {e}")))?;
        verify_tree(ck, &digest).map_err(fail)?;
        return Ok(Fetched {
            dir,
            digest,
            archive_sha256: None,
            cache_hit: true,
            bytes: 0,
        });
    }

    let key = cache_key(ck);
    let root = opts.cache_dir.join("checkpoints");
    let final_dir = root.join(&key);
    if let Some(hit) = cached(&final_dir) {
        return Ok(hit);
    }
    if opts.offline {
        return Err(fail(format!(
            "offline (RUSTPY_OFFLINE) and not in the cache {}: prefetch it with `rustpy fetch REPO` (same RUSTPY_CACHE) or unset RUSTPY_OFFLINE",
            root.display()
        )));
    }
    // One fetch per key on this machine: the others wait here, then find it.
    let entry = EntryLock::acquire(&root, &key).map_err(fail)?;
    if let Some(hit) = cached(&final_dir) {
        return Ok(hit);
    }
    entry.clear_leftovers();
    let (stage, work) = (entry.stage(""), entry.stage(".work"));
    let result = (|| -> Result<Fetched, String> {
        fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
        fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let archive_sha256 = match &ck.source {
            Source::HuggingFace { .. } => hf::fetch(ck, &stage, &work, opts).map(|_| None),
            Source::Git { .. } => git::fetch(ck, &stage, &work).map(|_| None),
            Source::S3 { .. } => s3::fetch(ck, &stage, opts).map(|_| None),
            Source::Archive { url } => archive::fetch(url, ck, &stage, &work, opts).map(Some),
            Source::Local { .. } => unreachable!("handled above"),
        }?;
        let digest = tree_digest(&stage).map_err(|e| format!("reading what was fetched: {e}"))?;
        if archive_sha256.is_none() {
            verify_tree(ck, &digest)?;
        }
        let meta = serde_json::json!({
            "source": ck.source.redacted(),
            "digest": digest,
            "archive_sha256": archive_sha256,
        });
        let bytes = tree_size(&stage);
        fs::write(stage.join(META_FILE), meta.to_string()).map_err(|e| e.to_string())?;
        fs::rename(&stage, &final_dir)
            .map_err(|e| format!("moving into the cache {}: {e}", final_dir.display()))?;
        Ok(Fetched {
            dir: final_dir.clone(),
            digest,
            archive_sha256,
            cache_hit: false,
            bytes,
        })
    })();
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = fs::remove_dir_all(&stage);
    }
    drop(entry);
    result.map_err(fail)
}

/// The writing side of cache entry `<root>/<key>` (a checkpoint or an
/// unpacked environment): an exclusive lock on `<root>/<key>.lock`, so one
/// writer per key on this machine, and the staging area `<root>/.tmp` where
/// the entry is built before it is renamed into place. Unlocked on drop.
pub(crate) struct EntryLock {
    _lock: fs::File,
    tmp_root: PathBuf,
    key: String,
}

/// Locks `<root>/<key>.lock` exclusively (`wait`: blocking, else `None`
/// when another process holds it). A pruner deletes the lock file of an
/// entry it removed while holding it, so a lock taken on a file that is no
/// longer the one at that path excludes nobody: then the file is opened
/// and locked again, until the lock held is on the file the path names.
pub(crate) fn lock_key(root: &Path, key: &str, wait: bool) -> io::Result<Option<fs::File>> {
    use std::os::unix::fs::MetadataExt;
    let path = root.join(format!("{key}.lock"));
    loop {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if wait {
            lock.lock()?;
        } else if lock.try_lock().is_err() {
            return Ok(None);
        }
        let held = lock.metadata()?;
        match fs::metadata(&path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => return Ok(Some(lock)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

impl EntryLock {
    /// Waits for the key's lock (creating the staging area first).
    pub(crate) fn acquire(root: &Path, key: &str) -> Result<EntryLock, String> {
        let tmp_root = root.join(".tmp");
        fs::create_dir_all(&tmp_root)
            .map_err(|e| format!("creating the cache {}: {e}", root.display()))?;
        let lock = lock_key(root, key, true)
            .and_then(|l| l.ok_or_else(|| io::Error::other("not locked")))
            .map_err(|e| {
                format!(
                    "locking {}: {e}",
                    root.join(format!("{key}.lock")).display()
                )
            })?;
        Ok(EntryLock {
            _lock: lock,
            tmp_root,
            key: key.to_string(),
        })
    }

    /// Removes the staging directories a writer of this key left when it
    /// died while holding the lock.
    pub(crate) fn clear_leftovers(&self) {
        let prefix = format!("{}.", self.key);
        if let Ok(entries) = fs::read_dir(&self.tmp_root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// A fresh staging path for this key, `<key>.<pid>.<n><suffix>`.
    pub(crate) fn stage(&self, suffix: &str) -> PathBuf {
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        self.tmp_root.join(format!(
            "{}.{}.{}{suffix}",
            self.key,
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

fn verify_tree(ck: &Checkpoint, digest: &str) -> Result<(), String> {
    match &ck.sha256 {
        Some(want) if want != digest => Err(format!(
            "sha256 mismatch: {} pins {want}, the fetched files hash to {digest}; nothing was cached",
            checkpoint::SHA256_PARAMETER
        )),
        _ => Ok(()),
    }
}

fn cached(dir: &Path) -> Option<Fetched> {
    let meta = fs::read_to_string(dir.join(META_FILE)).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
    Some(Fetched {
        dir: dir.to_path_buf(),
        digest: meta["digest"].as_str()?.to_string(),
        archive_sha256: meta["archive_sha256"].as_str().map(str::to_string),
        cache_hit: true,
        bytes: 0,
    })
}

/// Total size of the regular files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// sha256 over the lines `"<sha256 of file>  <relative path>\n"` of every
/// regular file under `dir` (sorted by path; the cache's metadata file and
/// any `.git` directory left out). A single file hashes as its own entry.
pub fn tree_digest(dir: &Path) -> io::Result<String> {
    let mut lines = Vec::new();
    if dir.is_file() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        lines.push(format!("{}  {name}\n", file_sha256(dir)?));
    } else {
        for entry in walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
        {
            let entry = entry.map_err(io::Error::other)?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(dir)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            if rel == META_FILE {
                continue;
            }
            lines.push(format!("{}  {rel}\n", file_sha256(entry.path())?));
        }
    }
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Hex sha256 of a file's bytes.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces the values of credential variables with `***`.
pub fn scrub(msg: &str) -> String {
    let mut out = msg.to_string();
    for k in [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
    ] {
        if let Ok(v) = std::env::var(k) {
            if v.len() >= 4 {
                out = out.replace(&v, "***");
            }
        }
    }
    out
}

/// A tokio runtime for one fetch (the backend and the CLI are synchronous).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the I/O runtime: {e}"))
}

/// Writes `rel` (a `/`-separated relative path from a listing) under `root`,
/// refusing absolute paths and `..`.
pub(crate) fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut out = root.to_path_buf();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("refusing path with '..': {rel}")),
            c => out.push(c),
        }
    }
    if out == root {
        return Err(format!("empty file path: {rel:?}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_pinned_part() {
        let c = |s: &str, sha: Option<&str>, inc: Option<&str>| {
            Checkpoint::new(
                s,
                sha.map(str::to_string),
                inc.map(str::to_string),
                None,
                None,
            )
            .unwrap()
        };
        let a = cache_key(&c("hf://o/n@v1", None, None));
        assert_eq!(a, cache_key(&c("hf://o/n@v1", None, None)));
        assert_ne!(a, cache_key(&c("hf://o/n@v2", None, None)));
        assert_ne!(a, cache_key(&c("hf://o/n@v1", None, Some("*.json"))));
        assert_ne!(a, cache_key(&c("hf://o/n@v1", Some(&"0".repeat(64)), None)));
    }

    #[test]
    fn tree_digest_is_order_independent_and_content_sensitive() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a")).unwrap();
        fs::write(d.path().join("a/x"), b"1").unwrap();
        fs::write(d.path().join("b"), b"2").unwrap();
        let one = tree_digest(d.path()).unwrap();
        fs::write(d.path().join(META_FILE), b"{}").unwrap();
        assert_eq!(one, tree_digest(d.path()).unwrap());
        fs::write(d.path().join("b"), b"3").unwrap();
        assert_ne!(one, tree_digest(d.path()).unwrap());
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let r = Path::new("/r");
        assert!(safe_join(r, "../x").is_err());
        assert!(safe_join(r, "a/../../x").is_err());
        assert_eq!(safe_join(r, "/a/b").unwrap(), PathBuf::from("/r/a/b"));
    }
}
