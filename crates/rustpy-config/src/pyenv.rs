//! The Python version of a per-model environment (`rustpy.python_env`, a
//! virtualenv; `EXECUTION_ENV_PATH`, a conda-pack archive) and of the
//! interpreter rustpy embeds. A worker embeds the server's libpython, so an
//! environment is usable only when its major.minor is the same.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A Python `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PyVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl PyVersion {
    /// "3.11", "3.11.7", "3.11.7.final.0" -> 3.11.
    pub fn parse(text: &str) -> Option<PyVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.trim().parse().ok()?;
        let minor = parts.next()?.trim().parse().ok()?;
        Some(PyVersion { major, minor })
    }

    /// "python3.11" (a `lib/` entry) -> 3.11; "python3" -> None.
    fn from_lib_name(name: &str) -> Option<PyVersion> {
        let v = name.strip_prefix("python")?;
        if !v.contains('.') {
            return None;
        }
        PyVersion::parse(v)
    }

    /// "libpython3.11.so.1.0" (anywhere in `text`) -> 3.11.
    fn from_libpython(text: &str) -> Option<PyVersion> {
        let at = text.find("libpython")? + "libpython".len();
        let rest = &text[at..];
        let end = rest.find(".so").unwrap_or(rest.len());
        let v = rest[..end].trim_end_matches(|c: char| !c.is_ascii_digit());
        PyVersion::parse(v)
    }
}

/// The Python version of the libpython this process has mapped: the backend,
/// `rustpy-worker` and the `rustpy` CLI all link the same one. `None` when no
/// libpython is mapped (a process that does not embed Python).
pub fn embedded_python_version() -> Option<PyVersion> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter(|l| l.contains("/libpython"))
        .find_map(PyVersion::from_libpython)
}

/// The versions of the `lib/pythonX.Y/` directories under `root`.
fn lib_versions(root: &Path) -> Vec<PyVersion> {
    let mut found: Vec<PyVersion> = fs::read_dir(root.join("lib"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .filter_map(|e| PyVersion::from_lib_name(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.dedup();
    found
}

/// A virtualenv (or an unpacked environment): its Python version, from
/// `pyvenv.cfg` (`version` / `version_info`) or else its `lib/pythonX.Y/`.
pub fn dir_version(root: &Path) -> Result<PyVersion, String> {
    if let Ok(cfg) = fs::read_to_string(root.join("pyvenv.cfg")) {
        for line in cfg.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if matches!(key.trim(), "version" | "version_info") {
                if let Some(v) = PyVersion::parse(value) {
                    return Ok(v);
                }
            }
        }
    }
    match lib_versions(root).as_slice() {
        [v] => Ok(*v),
        [] => Err(format!(
            "{} has neither a pyvenv.cfg with its Python version nor a lib/pythonX.Y directory (is it a virtualenv?)",
            root.display()
        )),
        many => Err(format!(
            "{} holds several Python versions ({}) and no pyvenv.cfg",
            root.display(),
            many.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The site-packages directory of an environment of Python `version`.
pub fn site_packages(root: &Path, version: PyVersion) -> PathBuf {
    root.join("lib")
        .join(format!("python{version}"))
        .join("site-packages")
}

/// The Python version of a conda-pack archive (`.tar.gz`, `.tgz` or `.tar`),
/// from its `lib/pythonX.Y/` entries, read without unpacking.
pub fn archive_version(path: &Path) -> Result<PyVersion, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let name = path.to_string_lossy().to_ascii_lowercase();
    let reader: Box<dyn Read> = if name.ends_with(".tar") {
        Box::new(file)
    } else {
        Box::new(flate2::read::GzDecoder::new(file))
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("cannot read {} as a tar.gz: {e}", path.display()))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| format!("cannot read {} as a tar.gz: {e}", path.display()))?;
        let Ok(p) = entry.path() else { continue };
        let mut parts = p
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir));
        if parts.next().is_some_and(|c| c.as_os_str() == "lib") {
            if let Some(v) = parts
                .next()
                .and_then(|c| PyVersion::from_lib_name(&c.as_os_str().to_string_lossy()))
            {
                if !found.contains(&v) {
                    found.push(v);
                }
            }
        }
    }
    found.sort();
    match found.as_slice() {
        [v] => Ok(*v),
        [] => Err(format!(
            "{} holds no lib/pythonX.Y/ (not a conda-pack environment: pack one with `conda pack`)",
            path.display()
        )),
        many => Err(format!(
            "{} holds several Python versions ({})",
            path.display(),
            many.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The environment's version must be the embedded one's.
pub fn require_same(env: PyVersion, embedded: PyVersion) -> Result<(), String> {
    if env == embedded {
        Ok(())
    } else {
        Err(format!(
            "it is a Python {env} environment, but rustpy embeds Python {embedded}: a worker can only use an environment of the same Python major.minor"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            PyVersion::parse("3.11.7"),
            Some(PyVersion {
                major: 3,
                minor: 11
            })
        );
        assert_eq!(PyVersion::parse("3.12.1.final.0").unwrap().minor, 12);
        assert_eq!(PyVersion::parse("3"), None);
        assert_eq!(PyVersion::from_lib_name("python3"), None);
        assert_eq!(PyVersion::from_lib_name("python3.10").unwrap().minor, 10);
        let l = "7f8e3fe00000-7f8e3fe01000 r--p 00000000 08:01 1 /lib/x86_64-linux-gnu/libpython3.11.so.1.0";
        assert_eq!(PyVersion::from_libpython(l).unwrap().to_string(), "3.11");
        assert_eq!(
            PyVersion::from_libpython("/opt/lib/libpython3.13t.so")
                .unwrap()
                .to_string(),
            "3.13"
        );
    }

    #[test]
    fn venv_and_lib_dirs() {
        let d = tempfile::tempdir().unwrap();
        assert!(dir_version(d.path()).unwrap_err().contains("pyvenv.cfg"));
        fs::create_dir_all(d.path().join("lib/python3.9/site-packages")).unwrap();
        assert_eq!(dir_version(d.path()).unwrap().to_string(), "3.9");
        fs::write(
            d.path().join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
        )
        .unwrap();
        assert_eq!(dir_version(d.path()).unwrap().to_string(), "3.11");
        let v = PyVersion::parse("3.11").unwrap();
        assert!(site_packages(d.path(), v).ends_with("lib/python3.11/site-packages"));
        assert!(require_same(v, v).is_ok());
        let e = require_same(PyVersion::parse("3.9").unwrap(), v).unwrap_err();
        assert!(e.contains("Python 3.9") && e.contains("Python 3.11"), "{e}");
    }
}
