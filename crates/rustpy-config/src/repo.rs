//! Model repository layout, by Triton's rules: which directories are models
//! ([`model_dirs`], [`is_model_dir`]), which are versions ([`version_dirs`],
//! used by the core to find a model's file when it runs outside Triton) and
//! which Python files a model runs ([`model_files`]). [`crate::check`] and
//! the CLI's commands both discover models here.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    model::{model_filename, DEFAULT_MODEL_FILENAME},
    parse_pbtxt,
    proto::ModelConfig,
};

/// The model configuration file Triton reads in each model directory.
pub const CONFIG_FILE: &str = "config.pbtxt";

/// The directory of a model's golden cases (`rustpy test`); not a version.
pub const TESTS_DIR: &str = "tests";

/// The model directories [`check_path`](crate::check::check_path) checks for `path`, sorted: the model
/// itself for a model directory or its `config.pbtxt`, else the repository's
/// non-hidden subdirectories.
pub fn model_dirs(path: &Path) -> Vec<PathBuf> {
    let path = model_path_of_config(path).unwrap_or(path);
    if !path.is_dir() {
        Vec::new()
    } else if is_model_dir(path) {
        vec![path.to_path_buf()]
    } else {
        subdirs(path)
            .into_iter()
            .filter(|d| !file_name(d).starts_with('.'))
            .collect()
    }
}

/// The model directory of a path naming a `config.pbtxt` file.
pub(crate) fn model_path_of_config(path: &Path) -> Option<&Path> {
    (path.is_file() && path.file_name()? == CONFIG_FILE)
        .then(|| path.parent())
        .flatten()
}

/// A directory is a model directory if it holds a `config.pbtxt` or a
/// version directory (a positive integer name); anything else is taken as a
/// repository of models.
pub fn is_model_dir(path: &Path) -> bool {
    path.join(CONFIG_FILE).is_file()
        || subdirs(path).iter().any(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| version_number(n).is_some())
        })
}

/// The model file of each version of a model, in version order, for the
/// backends that run Python files (`python`, `rustpy`, or none set): the
/// version's `default_model_filename` (or `model.py`) where it exists. Empty
/// for other backends.
pub fn model_files(model_dir: &Path) -> Vec<PathBuf> {
    let cfg = fs::read_to_string(model_dir.join(CONFIG_FILE))
        .ok()
        .and_then(|text| parse_pbtxt(&text).ok());
    let filename = match &cfg {
        Some(cfg) if !runs_python_files(cfg) => return Vec::new(),
        Some(cfg) => model_filename(cfg).to_owned(),
        None => DEFAULT_MODEL_FILENAME.to_owned(),
    };
    version_dirs(model_dir)
        .0
        .into_iter()
        .map(|(_, dir)| dir.join(&filename))
        .filter(|file| file.is_file())
        .collect()
}

pub(crate) fn runs_python_files(cfg: &ModelConfig) -> bool {
    matches!(cfg.backend.as_str(), "python" | "rustpy")
        || (cfg.backend.is_empty() && cfg.platform.is_empty())
}

/// Triton loads only version directories named by a positive integer without
/// leading zeros; it silently skips the rest.
fn version_number(name: &str) -> Option<u64> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|&v| v > 0)
}

/// Subdirectories, sorted by name (unreadable directories have none).
pub(crate) fn subdirs(path: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// (version dirs sorted by version, other subdirectories), by Triton's rule
/// for which directories are versions.
pub fn version_dirs(model_dir: &Path) -> (Vec<(u64, PathBuf)>, Vec<PathBuf>) {
    let mut versions = Vec::new();
    let mut ignored = Vec::new();
    for dir in subdirs(model_dir) {
        match dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(version_number)
        {
            Some(v) => versions.push((v, dir)),
            None => ignored.push(dir),
        }
    }
    versions.sort();
    (versions, ignored)
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_follow_triton() {
        assert_eq!(version_number("1"), Some(1));
        assert_eq!(version_number("42"), Some(42));
        assert_eq!(version_number("0"), None);
        assert_eq!(version_number("01"), None);
        assert_eq!(version_number("v1"), None);
        assert_eq!(version_number(""), None);
    }
}
