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

/// The CPython versions other than `embedded` that the packages in `dir`
/// were built for, each with up to three examples (a path under `dir`):
/// extension modules named `*.cpython-3XY-*.so` and wheels tagged `cp3XY`
/// (in `*.dist-info/WHEEL`). Pure-Python and `abi3` packages fit any version.
pub fn foreign_builds(dir: &Path, embedded: PyVersion) -> Vec<(PyVersion, Vec<String>)> {
    let mut found: std::collections::BTreeMap<PyVersion, Vec<String>> = Default::default();
    let mut note = |v: PyVersion, what: String| {
        if v != embedded {
            let list = found.entry(v).or_default();
            if list.len() < 3 && !list.contains(&what) {
                list.push(what);
            }
        }
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(kind) = e.file_type() else { continue };
            let shown = || {
                path.strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string()
            };
            if kind.is_dir() {
                if name.ends_with(".dist-info") {
                    if let Ok(wheel) = fs::read_to_string(path.join("WHEEL")) {
                        for tag in wheel.lines().filter_map(|l| l.strip_prefix("Tag:")) {
                            // cp312-cp312-manylinux...: the interpreter and ABI tags.
                            let mut parts = tag.trim().split('-');
                            let (py, abi) =
                                (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                            if abi != "abi3" && abi != "none" {
                                if let Some(v) = cp_tag_version(py) {
                                    note(v, shown());
                                }
                            }
                        }
                    }
                } else {
                    stack.push(path);
                }
            } else if let Some(v) = extension_version(&name) {
                note(v, shown());
            }
        }
    }
    found.into_iter().collect()
}

/// "cp312" -> 3.12.
fn cp_tag_version(tag: &str) -> Option<PyVersion> {
    let digits = tag.strip_prefix("cp")?;
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(1);
    Some(PyVersion {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

/// "_multiarray_umath.cpython-312-x86_64-linux-gnu.so" -> 3.12.
fn extension_version(file: &str) -> Option<PyVersion> {
    if !file.ends_with(".so") {
        return None;
    }
    let at = file.find(".cpython-")? + ".cpython-".len();
    let digits: String = file[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    cp_tag_version(&format!("cp{digits}"))
}

/// A site-packages directory (`--site-packages`, `rustpy,site-packages=`)
/// must hold no package built for another Python than the embedded one.
pub fn require_site_packages_for(dir: &Path, embedded: PyVersion) -> Result<(), String> {
    let foreign = foreign_builds(dir, embedded);
    if foreign.is_empty() {
        return Ok(());
    }
    let what = foreign
        .iter()
        .map(|(v, examples)| format!("Python {v} ({})", examples.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    Err(format!(
        "{} holds packages built for {what}, but rustpy embeds Python {embedded}: install them with the serving interpreter (`rustpy env` does), or build rustpy for that Python (PYO3_PYTHON)",
        dir.display()
    ))
}

/// What the process environment asks of the embedded interpreter that
/// another Python version would provide: PYTHONHOME without this version's
/// standard library (Python would abort the whole process while starting),
/// PYTHONPATH entries holding another version's packages.
pub fn environment_problems(
    home: Option<&str>,
    path: Option<&str>,
    embedded: PyVersion,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(home) = home.filter(|h| !h.is_empty()) {
        // PYTHONHOME is prefix[:exec_prefix]; the standard library is under prefix.
        let prefix = home.split(':').next().unwrap_or(home);
        let stdlib = Path::new(prefix)
            .join("lib")
            .join(format!("python{embedded}"));
        if !stdlib.join("os.py").is_file() {
            let other = lib_versions(Path::new(prefix));
            let has = if other.is_empty() {
                String::new()
            } else {
                format!(
                    " (it has Python {})",
                    other
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            problems.push(format!(
                "PYTHONHOME={home} has no Python {embedded} standard library at {}{has}, and rustpy embeds Python {embedded}: unset PYTHONHOME or point it at a Python {embedded} installation",
                stdlib.display()
            ));
        }
    }
    for entry in path.unwrap_or("").split(':').filter(|e| !e.is_empty()) {
        let dir = Path::new(entry);
        let named = dir
            .components()
            .filter_map(|c| PyVersion::from_lib_name(&c.as_os_str().to_string_lossy()))
            .find(|v| *v != embedded);
        if let Some(v) = named {
            problems.push(format!(
                "PYTHONPATH entry {entry} belongs to Python {v}, but rustpy embeds Python {embedded}"
            ));
        } else if dir.is_dir() {
            if let Err(e) = require_site_packages_for(dir, embedded) {
                problems.push(format!("PYTHONPATH entry {e}"));
            }
        }
    }
    problems
}

/// The Python version a library or executable links (its `libpython3.X.so`
/// needed entry, read from the file), e.g. which Python a libtriton_rustpy.so
/// was built for.
pub fn linked_python_version(file: &Path) -> Option<PyVersion> {
    let bytes = fs::read(file).ok()?;
    let needle = b"libpython";
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + i;
        let end = bytes[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(bytes.len(), |n| start + n);
        if let Ok(name) = std::str::from_utf8(&bytes[start..end]) {
            if name.contains(".so") {
                if let Some(v) = PyVersion::from_libpython(name) {
                    return Some(v);
                }
            }
        }
        at = start + needle.len();
    }
    None
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

    fn v(s: &str) -> PyVersion {
        PyVersion::parse(s).unwrap()
    }

    #[test]
    fn site_packages_of_another_python_are_named_with_their_evidence() {
        let d = tempfile::tempdir().unwrap();
        let sp = d.path();
        // Pure Python, abi3 and this version's builds fit.
        fs::create_dir_all(sp.join("purelib")).unwrap();
        fs::write(sp.join("purelib/__init__.py"), "").unwrap();
        fs::write(sp.join("purelib/_speed.abi3.so"), "").unwrap();
        fs::write(sp.join("purelib/_ok.cpython-311-x86_64-linux-gnu.so"), "").unwrap();
        fs::create_dir_all(sp.join("ok-1.0.dist-info")).unwrap();
        fs::write(
            sp.join("ok-1.0.dist-info/WHEEL"),
            "Wheel-Version: 1.0\nTag: cp311-abi3-manylinux_2_17_x86_64\nTag: py3-none-any\n",
        )
        .unwrap();
        assert!(require_site_packages_for(sp, v("3.11")).is_ok());
        // A package built for 3.12: its extension module and its wheel tag.
        fs::create_dir_all(sp.join("numpy/core")).unwrap();
        fs::write(
            sp.join("numpy/core/_multiarray_umath.cpython-312-x86_64-linux-gnu.so"),
            "",
        )
        .unwrap();
        fs::create_dir_all(sp.join("numpy-2.0.0.dist-info")).unwrap();
        fs::write(
            sp.join("numpy-2.0.0.dist-info/WHEEL"),
            "Tag: cp312-cp312-manylinux_2_17_x86_64\n",
        )
        .unwrap();
        let foreign = foreign_builds(sp, v("3.11"));
        assert_eq!(foreign.len(), 1);
        assert_eq!(foreign[0].0, v("3.12"));
        let e = require_site_packages_for(sp, v("3.11")).unwrap_err();
        assert!(
            e.contains("built for Python 3.12") && e.contains("rustpy embeds Python 3.11"),
            "{e}"
        );
        assert!(
            e.contains("_multiarray_umath.cpython-312") && e.contains("numpy-2.0.0.dist-info"),
            "{e}"
        );
        // From 3.12's point of view the 3.11 build is the foreign one.
        assert_eq!(foreign_builds(sp, v("3.12"))[0].0, v("3.11"));
        assert_eq!(extension_version("x.cpython-39-darwin.so"), Some(v("3.9")));
        assert_eq!(extension_version("x.abi3.so"), None);
    }

    #[test]
    fn pythonhome_and_pythonpath_of_another_python_are_problems() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("py312");
        fs::create_dir_all(home.join("lib/python3.12")).unwrap();
        fs::write(home.join("lib/python3.12/os.py"), "").unwrap();
        let h = home.to_string_lossy().into_owned();
        let p = environment_problems(Some(&h), None, v("3.11"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("PYTHONHOME") && p[0].contains("it has Python 3.12"),
            "{p:?}"
        );
        assert!(environment_problems(Some(&h), None, v("3.12")).is_empty());
        assert!(environment_problems(None, None, v("3.11")).is_empty());
        let sp = home.join("lib/python3.12/site-packages");
        fs::create_dir_all(&sp).unwrap();
        let path = format!("{}:/nonexistent", sp.display());
        let p = environment_problems(None, Some(&path), v("3.11"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("PYTHONPATH entry") && p[0].contains("Python 3.12"),
            "{p:?}"
        );
        assert!(environment_problems(None, Some(&path), v("3.12")).is_empty());
    }

    #[test]
    fn the_linked_libpython_is_read_from_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("libx.so");
        fs::write(
            &f,
            b"\x7fELF...cannot locate libpython (dladdr failed)\0libpython3.12.so.1.0\0libc.so.6\0",
        )
        .unwrap();
        assert_eq!(linked_python_version(&f), Some(v("3.12")));
        fs::write(&f, b"no python here").unwrap();
        assert_eq!(linked_python_version(&f), None);
    }
}
