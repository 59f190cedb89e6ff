//! The unsafe boundary the README states, checked on the workspace's sources
//! (issue 9, item 5): every crate root denies `unsafe_code`; only the modules
//! listed here (and named in the README) allow it; every unsafe block or impl
//! in them carries a `// SAFETY:` comment. (`cargo clippy` checks the last
//! point precisely with `clippy::undocumented_unsafe_blocks`, which these
//! modules enable; this test keeps it from regressing under `cargo test`.)

use std::fs;
use std::path::{Path, PathBuf};

/// Files allowed `unsafe`, relative to the workspace root.
const ALLOWED: &[&str] = &[
    "src/ffi/mod.rs", // covers src/ffi/*
    "crates/rustpy-core/src/python/numpy_io.rs",
    "crates/rustpy-core/src/rules/shared.rs", // declares the unsafe trait SharedMemory
    "crates/rustpy-cli/src/commands/serve/mod.rs",
    "crates/rustpy-bench/src/inproc/main.rs", // covers its modules (tserver, slots, driver)
    "crates/rustpy-core/src/isolation/sys.rs",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    for krate in fs::read_dir(root.join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn code_of(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

#[test]
fn every_crate_root_denies_unsafe_code() {
    let roots: Vec<(String, String)> = sources()
        .into_iter()
        .filter(|(p, _)| p.ends_with("src/lib.rs") || p.ends_with("src/main.rs"))
        .collect();
    assert!(
        roots.len() >= 6,
        "{:?}",
        roots.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (path, text) in roots {
        assert!(
            text.contains("#![deny(unsafe_code)]") || text.contains("#![forbid(unsafe_code)]"),
            "{path}: the crate root must deny unsafe_code"
        );
    }
}

#[test]
fn only_the_listed_modules_allow_unsafe_and_the_readme_names_them() {
    let allowing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| {
            text.lines()
                .any(|l| code_of(l).contains("allow(unsafe_code)"))
        })
        .map(|(p, _)| p)
        .collect();
    assert_eq!(allowing, {
        let mut a: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
        a.sort();
        a
    });
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    for name in [
        "src/ffi/",
        "python::numpy_io",
        "rules::shared",
        "rustpy serve",
        "rustpy-inproc",
        "isolation::sys",
    ] {
        assert!(
            readme.contains(name),
            "README must name the unsafe module {name}"
        );
    }
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut missing = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = code_of(line);
            let is_block = code.contains("unsafe {") || code.contains("unsafe impl");
            if !is_block {
                continue;
            }
            let from = i.saturating_sub(4);
            if !lines[from..=i].iter().any(|l| l.contains("SAFETY")) {
                missing.push(format!("{path}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "unsafe without a SAFETY comment:\n{}",
        missing.join("\n")
    );
}
