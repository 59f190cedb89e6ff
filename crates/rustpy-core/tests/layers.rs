//! The layers of `rustpy-core` as docs/architecture.md draws them, checked on
//! the sources: the Python-free modules use neither pyo3 nor anything above
//! them, and the modules of `python/` import each other without a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A file's code: comments and the `#[cfg(test)]` module left out.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// The `.rs` files of `dir` (with `deep`, of its subdirectories too).
fn rust_files(dir: &Path, deep: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if path.is_dir() && deep {
            files.extend(rust_files(&path, true));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn the_python_free_layer_uses_no_python_and_nothing_above_it() {
    let src = src();
    let mut files = rust_files(&src.join("rules"), true);
    for base in [
        "error.rs",
        "constants.rs",
        "engine.rs",
        "admission.rs",
        "echo.rs",
    ] {
        files.push(src.join(base));
    }
    assert!(files.len() >= 12, "{files:?}");
    let mut found = Vec::new();
    for file in &files {
        let in_rules = file.starts_with(src.join("rules"));
        let mut forbidden = vec![
            "pyo3",
            "numpy::",
            "crate::python",
            "crate::isolation",
            "crate::host",
            "crate::local",
        ];
        if in_rules {
            // The rules sit below the response contract and execution.
            forbidden.extend([
                "crate::engine",
                "crate::admission",
                "crate::echo",
                "crate::server",
            ]);
        }
        let code = code(file);
        for word in forbidden {
            if code.contains(word) {
                found.push(format!("{} uses {word}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `super::NAME` and `crate::python::NAME` references of each python/ module.
fn python_imports() -> BTreeMap<String, BTreeSet<String>> {
    let dir = src().join("python");
    let files = rust_files(&dir, false);
    let modules: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "mod")
        .collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "mod" {
            continue;
        }
        let code = code(file);
        let mut uses = BTreeSet::new();
        for prefix in ["super::", "crate::python::"] {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains(&word) && word != name {
                    uses.insert(word);
                }
            }
        }
        graph.insert(name, uses);
    }
    graph
}

#[test]
fn python_modules_import_each_other_without_a_cycle() {
    let graph = python_imports();
    assert!(graph.len() >= 10, "{graph:?}");
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("python/ import cycle: {}", cycle.join(" -> "));
        }
    }
}

/// Every process-wide `static` in the workspace's sources is one that
/// docs/architecture.md ("Process-wide state") names, with why it stays.
#[test]
fn every_static_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let section = doc
        .split("## Process-wide state")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/architecture.md has a Process-wide state section");
    let mut dirs = vec![root.join("src")];
    for krate in fs::read_dir(root.join("crates")).unwrap() {
        dirs.push(krate.unwrap().path().join("src"));
    }
    let mut missing = Vec::new();
    let mut seen = 0;
    for file in dirs
        .iter()
        .filter(|d| d.is_dir())
        .flat_map(|d| rust_files(d, true))
    {
        for line in code(&file).lines() {
            let line = line.trim_start();
            let Some(rest) = line
                .strip_prefix("static ")
                .or_else(|| line.strip_prefix("pub static "))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            seen += 1;
            if !section.contains(&format!("`{name}`")) && !section.contains(&format!("`{name}`s")) {
                missing.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(seen >= 8, "found only {seen} statics");
    assert!(
        missing.is_empty(),
        "undocumented statics:\n{}",
        missing.join("\n")
    );
}
