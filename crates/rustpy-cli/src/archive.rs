//! Deterministic model-repository archives and their manifest.
//!
//! Shared by `rustpy zip` (collect, write, verify) and `rustpy unzip`
//! (verify). An archive holds the repository's files relative to its root,
//! directory entries, and [`MANIFEST_NAME`] listing every file's size and
//! sha256. Same input tree => byte-identical archive: entries are sorted,
//! timestamps are fixed to 1980-01-01 and permissions normalised.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{self, Read, Seek, Write},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zip::{write::SimpleFileOptions, CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// Name of the manifest entry at the archive's root.
pub const MANIFEST_NAME: &str = "rustpy-manifest.json";
/// Format tag written into every manifest.
pub const MANIFEST_FORMAT: &str = "rustpy-manifest/1";
/// Per-repository ignore file (gitignore syntax), read from the root only.
pub const IGNORE_FILE: &str = ".rustpyignore";

/// Never packaged: caches, VCS metadata and editor/OS junk. Listed before the
/// user's .rustpyignore, so a `!pattern` there can bring one back.
const DEFAULT_IGNORES: &[&str] = &[
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".git",
    ".hg/",
    ".svn/",
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "desktop.ini",
    "*~",
    "*.swp",
    "*.swo",
    ".idea/",
    ".vscode/",
    ".ipynb_checkpoints/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    // Packaging metadata, not model content: the manifest is regenerated.
    "/.rustpyignore",
    "/rustpy-manifest.json",
];

/// Entries above this size are written as ZIP64. Decided from the size alone
/// (not the compressed size, unknown up front) to stay deterministic.
const ZIP64_THRESHOLD: u64 = 1 << 31;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub files: Vec<ManifestEntry>,
    /// Each packaged model's `rustpy.checkpoint`: where its weights come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointEntry>,
}

/// A model's checkpoint as recorded by `rustpy zip` (credentials redacted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub model: String,
    pub source: String,
    /// The pinned `rustpy.checkpoint.sha256`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Tree digest of the fetched files (when they were in the cache or included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The fetched files are in the archive under `MODEL/.rustpy-checkpoint/`.
    #[serde(default)]
    pub included: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A regular file to package.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path inside the archive, `/`-separated.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub executable: bool,
}

/// What [`collect`] found, sorted by archive name.
#[derive(Debug, Default)]
pub struct Collected {
    pub dirs: Vec<String>,
    pub files: Vec<SourceFile>,
    /// Paths skipped because they are neither files nor directories.
    pub skipped: Vec<PathBuf>,
}

impl Collected {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Builds the ignore matcher: built-in defaults, then `<root>/.rustpyignore`.
pub fn ignore_rules(root: &Path) -> anyhow::Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(root);
    for line in DEFAULT_IGNORES {
        builder
            .add_line(None, line)
            .with_context(|| format!("built-in ignore pattern `{line}`"))?;
    }
    let user = root.join(IGNORE_FILE);
    if user.is_file() {
        if let Some(err) = builder.add(&user) {
            return Err(anyhow::Error::new(err).context(format!("invalid {}", user.display())));
        }
    }
    builder.build().context("cannot build ignore rules")
}

/// Lists the files to package from `root` (or only `root/<model>` for each
/// of `models`), skipping ignored paths and `exclude` (e.g. the output zip
/// itself when it lives inside the repository). Symlinks are followed, so the
/// archive is self-contained.
pub fn collect(
    root: &Path,
    models: &[String],
    exclude: Option<&Path>,
) -> anyhow::Result<Collected> {
    let rules = ignore_rules(root)?;
    let exclude =
        exclude.and_then(|p| Some((p.file_name()?.to_owned(), fs::canonicalize(p).ok()?)));

    let starts: Vec<PathBuf> = if models.is_empty() {
        vec![root.to_path_buf()]
    } else {
        models.iter().map(|m| root.join(m)).collect()
    };

    let mut out = Collected::default();
    let mut seen = BTreeSet::new();
    for start in starts {
        let walker = walkdir::WalkDir::new(&start)
            .follow_links(true)
            .into_iter()
            .filter_entry(|e| {
                // Pruning an ignored directory also skips its contents, as git does.
                e.path() == root || !is_ignored(&rules, root, e.path(), e.file_type().is_dir())
            });
        for entry in walker {
            let entry = entry.with_context(|| format!("cannot walk {}", start.display()))?;
            let path = entry.path();
            if path == root {
                continue;
            }
            let name = archive_name(root, path)?;
            if !seen.insert(name.clone()) {
                continue;
            }
            let file_type = entry.file_type();
            if file_type.is_dir() {
                out.dirs.push(name + "/");
            } else if file_type.is_file() {
                if let Some((file_name, canonical)) = &exclude {
                    if entry.file_name() == file_name.as_os_str()
                        && fs::canonicalize(path).ok().as_deref() == Some(canonical.as_path())
                    {
                        continue;
                    }
                }
                let meta = entry
                    .metadata()
                    .with_context(|| format!("cannot stat {}", path.display()))?;
                out.files.push(SourceFile {
                    name,
                    path: path.to_path_buf(),
                    size: meta.len(),
                    executable: is_executable(&meta),
                });
            } else {
                out.skipped.push(path.to_path_buf());
            }
        }
    }
    out.dirs.sort();
    out.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether `path` (under `root`) or any directory above it is ignored, i.e.
/// whether [`collect`] would leave it out of the archive.
pub fn is_excluded(rules: &Gitignore, root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut prefix = PathBuf::new();
    rel.components().any(|comp| {
        prefix.push(comp);
        rules
            .matched(&prefix, root.join(&prefix).is_dir())
            .is_ignore()
    })
}

fn is_ignored(rules: &Gitignore, root: &Path, path: &Path, is_dir: bool) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rules.matched(rel, is_dir).is_ignore()
}

/// `/`-separated path of `path` relative to `root`; zip names must be UTF-8.
fn archive_name(root: &Path, path: &Path) -> anyhow::Result<String> {
    let rel = path
        .strip_prefix(root)
        .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
    let mut parts = Vec::new();
    for comp in rel.components() {
        match comp.as_os_str().to_str() {
            Some(s) => parts.push(s),
            None => bail!("{}: file name is not valid UTF-8", path.display()),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

fn file_options(mode: u32, size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        // Pinned rather than left to the library default, for reproducibility.
        .compression_level(Some(6))
        .last_modified_time(DateTime::default())
        .unix_permissions(mode)
        .large_file(size >= ZIP64_THRESHOLD)
}

/// Writes `collected` and its manifest as a deterministic zip into `out`.
pub fn write_zip<W: Write + Seek>(
    collected: &Collected,
    checkpoints: Vec<CheckpointEntry>,
    out: W,
    progress: &ProgressBar,
) -> anyhow::Result<Manifest> {
    let mut zip = ZipWriter::new(out);
    let dir_options = SimpleFileOptions::default()
        .last_modified_time(DateTime::default())
        .unix_permissions(0o755);

    // Merge directories and files into one sorted sequence of entries.
    enum Item<'a> {
        Dir(&'a str),
        File(&'a SourceFile),
    }
    let mut items: Vec<(&str, Item)> = collected
        .dirs
        .iter()
        .map(|d| (d.as_str(), Item::Dir(d)))
        .chain(
            collected
                .files
                .iter()
                .map(|f| (f.name.as_str(), Item::File(f))),
        )
        .collect();
    items.sort_by(|a, b| a.0.cmp(b.0));

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        files: Vec::with_capacity(collected.files.len()),
        checkpoints,
    };
    for (_, item) in items {
        match item {
            Item::Dir(name) => zip
                .add_directory(name, dir_options)
                .with_context(|| format!("cannot add {name}"))?,
            Item::File(file) => {
                let mode = if file.executable { 0o755 } else { 0o644 };
                zip.start_file(file.name.as_str(), file_options(mode, file.size))
                    .with_context(|| format!("cannot add {}", file.name))?;
                let mut src = fs::File::open(&file.path)
                    .with_context(|| format!("cannot open {}", file.path.display()))?;
                let (size, sha256) = copy_hashing(&mut src, &mut zip, progress)
                    .with_context(|| format!("cannot archive {}", file.path.display()))?;
                manifest.files.push(ManifestEntry {
                    path: file.name.clone(),
                    size,
                    sha256,
                });
            }
        }
    }

    let mut json = serde_json::to_vec_pretty(&manifest).context("cannot encode manifest")?;
    json.push(b'\n');
    zip.start_file(MANIFEST_NAME, file_options(0o644, json.len() as u64))
        .context("cannot add manifest")?;
    zip.write_all(&json).context("cannot write manifest")?;
    let mut out = zip.finish().context("cannot finish archive")?;
    // A BufWriter would swallow this error on drop.
    out.flush().context("cannot write archive")?;
    Ok(manifest)
}

/// Copies `src` to `dst`, returning the byte count and the sha256 in hex.
pub fn copy_hashing(
    src: &mut impl Read,
    dst: &mut impl Write,
    progress: &ProgressBar,
) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        total += n as u64;
        progress.inc(n as u64);
    }
    Ok((total, hex(&hasher.finalize())))
}

/// Decompression bounds for reading an archive (`zip --verify`, `unzip`).
/// Sizes come from the central directory and are checked before anything is
/// decompressed; while reading, an entry is cut off at its declared size, so
/// a header that lies cannot let more bytes through than was vetted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decompressed size of one entry.
    pub max_entry: u64,
    /// Largest decompressed size of all entries together.
    pub max_total: u64,
    /// Largest expansion (decompressed / compressed) of an entry, and of the
    /// whole archive (all entries / archive file size); 0 = no ratio check.
    pub max_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry: 16 << 30,
            max_total: 64 << 30,
            max_ratio: 200,
        }
    }
}

/// Entries (and archives) that decompress to at most this many bytes pass the
/// ratio check whatever their ratio: a tiny config of blanks may well
/// compress 100:1 and harms no one.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// The manifest is a list of paths and hashes; this bounds it well beyond
/// any real repository (~300,000 files).
const MAX_MANIFEST: u64 = 64 << 20;

/// Checks every entry's declared sizes against `limits` before anything is
/// decompressed. `archive_len` is the archive file's size in bytes.
pub fn check_limits<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    archive_len: u64,
    limits: &Limits,
) -> anyhow::Result<()> {
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .with_context(|| format!("cannot read entry #{i}"))?;
        let (name, size, packed) = (entry.name(), entry.size(), entry.compressed_size());
        if size > limits.max_entry {
            bail!(
                "entry `{name}` decompresses to {size} bytes, over the limit of {} per entry \
                 (--max-entry-size)",
                limits.max_entry
            );
        }
        if limits.max_ratio > 0 && size > RATIO_FLOOR && size / packed.max(1) >= limits.max_ratio {
            bail!(
                "entry `{name}` expands {}:1 ({packed} compressed bytes to {size}), over the limit \
                 of {}:1 (--max-ratio): refusing a likely zip bomb",
                size / packed.max(1),
                limits.max_ratio
            );
        }
        total = total.saturating_add(size);
        if total > limits.max_total {
            bail!(
                "the entries decompress to more than {} bytes in total (--max-total-size)",
                limits.max_total
            );
        }
    }
    if limits.max_ratio > 0 && total > RATIO_FLOOR && total / archive_len.max(1) >= limits.max_ratio
    {
        bail!(
            "the archive expands {}:1 ({archive_len} bytes to {total}), over the limit of {}:1 \
             (--max-ratio): refusing a likely zip bomb (entries sharing their data?)",
            total / archive_len.max(1),
            limits.max_ratio
        );
    }
    Ok(())
}

/// Like [`copy_hashing`] for an archive entry, but stops at `declared`
/// bytes (the size its header declares and [`check_limits`] vetted): an entry
/// that would decompress to more is an error, and at most one byte past the
/// declared size is ever decompressed.
pub fn copy_entry(
    entry: &mut impl Read,
    declared: u64,
    dst: &mut impl Write,
    progress: &ProgressBar,
) -> io::Result<(u64, String)> {
    let mut bounded = entry.take(declared.saturating_add(1));
    let mut capped = Capped {
        inner: dst,
        declared,
        written: 0,
    };
    copy_hashing(&mut bounded, &mut capped, progress)
}

/// A writer that refuses the byte after the declared size (before writing
/// anything of that chunk).
struct Capped<'a, W> {
    inner: &'a mut W,
    declared: u64,
    written: u64,
}

impl<W: Write> Write for Capped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "decompresses to more than the {} bytes its header declares (a lying header?)",
                    self.declared
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a whole file, in hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let (_, digest) = copy_hashing(&mut f, &mut io::sink(), &ProgressBar::hidden())
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(digest)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry whose contents do not match the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub expected_size: u64,
    pub expected_sha256: String,
    /// `None` when the entry could not be read (corrupt data, bad CRC).
    pub actual_size: Option<u64>,
    pub actual_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Result of re-hashing an archive against its manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// Files listed in the manifest.
    pub files: usize,
    pub bytes: u64,
    pub mismatched: Vec<Mismatch>,
    /// In the manifest but not in the archive.
    pub missing: Vec<String>,
    /// In the archive but not in the manifest.
    pub extra: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.mismatched.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }

    /// Human-readable problem lines, one per entry.
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for m in &self.mismatched {
            lines.push(match (&m.actual_sha256, &m.error) {
                (_, Some(err)) => format!("corrupt   {}: {err}", m.path),
                (Some(sha), None) => format!(
                    "mismatch  {}: expected {} bytes sha256 {}, found {} bytes sha256 {}",
                    m.path,
                    m.expected_size,
                    m.expected_sha256,
                    m.actual_size.unwrap_or_default(),
                    sha
                ),
                (None, None) => format!("mismatch  {}", m.path),
            });
        }
        lines.extend(self.missing.iter().map(|p| format!("missing   {p}")));
        lines.extend(self.extra.iter().map(|p| format!("extra     {p}")));
        lines
    }
}

/// Reads and parses the archive's manifest.
pub fn read_manifest<R: Read + Seek>(archive: &mut ZipArchive<R>) -> anyhow::Result<Manifest> {
    let mut entry = archive
        .by_name(MANIFEST_NAME)
        .map_err(|_| anyhow::anyhow!("no {MANIFEST_NAME}: not an archive made by `rustpy zip`"))?;
    let mut json = Vec::new();
    (&mut entry)
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut json)
        .with_context(|| format!("cannot read {MANIFEST_NAME}"))?;
    if json.len() as u64 > MAX_MANIFEST {
        bail!("{MANIFEST_NAME} is larger than {MAX_MANIFEST} bytes");
    }
    let manifest: Manifest =
        serde_json::from_slice(&json).with_context(|| format!("invalid {MANIFEST_NAME}"))?;
    if manifest.format != MANIFEST_FORMAT {
        bail!(
            "unsupported manifest format `{}` (expected `{MANIFEST_FORMAT}`)",
            manifest.format
        );
    }
    Ok(manifest)
}

/// Re-hashes every entry of `archive` against its manifest. Errors only when
/// the manifest itself is absent or unreadable; content problems are
/// reported in the returned [`Verification`].
pub fn verify<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    progress: &ProgressBar,
) -> anyhow::Result<Verification> {
    let manifest = read_manifest(archive)?;
    let mut expected: BTreeMap<&str, &ManifestEntry> = BTreeMap::new();
    for entry in &manifest.files {
        if expected.insert(entry.path.as_str(), entry).is_some() {
            bail!("{MANIFEST_NAME} lists `{}` twice", entry.path);
        }
    }

    let mut report = Verification {
        files: manifest.files.len(),
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        ..Verification::default()
    };
    let mut seen = BTreeSet::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .with_context(|| format!("cannot read entry #{i}"))?;
        let name = entry.name().to_owned();
        if name == MANIFEST_NAME || entry.is_dir() {
            continue;
        }
        let Some(want) = expected.get(name.as_str()) else {
            report.extra.push(name);
            continue;
        };
        seen.insert(name.clone());
        let declared = entry.size();
        match copy_entry(&mut entry, declared, &mut io::sink(), progress) {
            Ok((size, sha)) if size == want.size && sha == want.sha256 => {}
            Ok((size, sha)) => report.mismatched.push(Mismatch {
                path: name,
                expected_size: want.size,
                expected_sha256: want.sha256.clone(),
                actual_size: Some(size),
                actual_sha256: Some(sha),
                error: None,
            }),
            Err(e) => report.mismatched.push(Mismatch {
                path: name,
                expected_size: want.size,
                expected_sha256: want.sha256.clone(),
                actual_size: None,
                actual_sha256: None,
                error: Some(e.to_string()),
            }),
        }
    }
    report.missing = expected
        .keys()
        .filter(|p| !seen.contains(**p))
        .map(|p| (*p).to_owned())
        .collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_ignore_junk_and_keep_models() {
        let dir = tempfile::tempdir().unwrap();
        let rules = ignore_rules(dir.path()).unwrap();
        let ignored = |p: &str, is_dir| rules.matched(p, is_dir).is_ignore();
        assert!(ignored("m/1/__pycache__", true));
        assert!(ignored("m/1/model.cpython-311.pyc", false));
        assert!(ignored(".git", true));
        assert!(ignored("m/.DS_Store", false));
        assert!(ignored("m/1/model.py~", false));
        assert!(ignored("m/1/.model.py.swp", false));
        assert!(ignored(".vscode", true));
        assert!(ignored("rustpy-manifest.json", false));
        assert!(!ignored("m/rustpy-manifest.json", false));
        assert!(!ignored("m/1/model.py", false));
        assert!(!ignored("m/config.pbtxt", false));
    }

    #[test]
    fn user_rules_can_negate_defaults() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(IGNORE_FILE), "*.bin\n!.vscode/\n").unwrap();
        let rules = ignore_rules(dir.path()).unwrap();
        assert!(rules.matched("m/1/weights.bin", false).is_ignore());
        assert!(!rules.matched(".vscode", true).is_ignore());
    }
}
