//! `rustpy zip`: deterministic archives, exclusions, the manifest, the
//! pre-packaging check and `--verify`.

mod common;

use std::{
    fs,
    io::{Read, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use common::*;
use zip::write::SimpleFileOptions;

/// A repository with two good models.
fn repo(dir: &Path) {
    init(dir, "repo", "embed", "text-embedding", &["-q"]);
    init(dir, "repo", "echo", "passthrough", &["-q"]);
}

fn zip_ok(dir: &Path, args: &[&str]) {
    let mut all = vec!["zip"];
    all.extend_from_slice(args);
    assert_code(&run_in(dir, &all), 0);
}

fn read_entry(zip_path: &Path, name: &str) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(fs::File::open(zip_path).unwrap()).unwrap();
    let mut entry = zip.by_name(name).unwrap();
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    data
}

fn set_mtime_recursively(root: &Path, when: SystemTime) {
    for entry in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file() {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(entry.path())
                .unwrap();
            f.set_modified(when).unwrap();
        }
    }
}

#[test]
fn same_input_gives_byte_identical_archives() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "a.zip", "-q"]);
    set_mtime_recursively(
        &tmp.path().join("repo"),
        SystemTime::now() + Duration::from_secs(3600),
    );
    zip_ok(tmp.path(), &["repo", "-o", "b.zip", "-q"]);
    let a = fs::read(tmp.path().join("a.zip")).unwrap();
    let b = fs::read(tmp.path().join("b.zip")).unwrap();
    assert!(a == b, "archives differ after touching mtimes");

    // The same tree built in another order and place packs identically too.
    let other = tempfile::tempdir().unwrap();
    init(other.path(), "repo", "echo", "passthrough", &["-q"]);
    init(other.path(), "repo", "embed", "text-embedding", &["-q"]);
    zip_ok(other.path(), &["repo", "-o", "c.zip", "-q"]);
    assert!(
        a == fs::read(other.path().join("c.zip")).unwrap(),
        "archives differ across trees"
    );
}

#[test]
fn entries_are_sorted_with_fixed_time_and_normalised_modes() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    let script = tmp.path().join("repo/echo/1/prepare.sh");
    write(&script, "#!/bin/sh\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
        let cfg = tmp.path().join("repo/echo/config.pbtxt");
        fs::set_permissions(&cfg, fs::Permissions::from_mode(0o600)).unwrap();
    }
    zip_ok(tmp.path(), &["repo", "-o", "out.zip", "-q"]);

    let names = zip_names(&tmp.path().join("out.zip"));
    let (manifest, entries) = names.split_last().unwrap();
    assert_eq!(manifest, "rustpy-manifest.json");
    let mut sorted = entries.to_vec();
    sorted.sort();
    assert_eq!(entries, sorted.as_slice());
    assert!(entries.contains(&"echo/1/".to_owned()), "{entries:?}");

    let mut zip =
        zip::ZipArchive::new(fs::File::open(tmp.path().join("out.zip")).unwrap()).unwrap();
    for i in 0..zip.len() {
        let e = zip.by_index(i).unwrap();
        let t = e.last_modified().unwrap();
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (1980, 1, 1, 0, 0)
        );
        let mode = e.unix_mode().unwrap() & 0o777;
        let want = if e.is_dir() || e.name().ends_with(".sh") {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode, want, "{}", e.name());
    }
}

#[test]
fn junk_and_rustpyignore_patterns_are_excluded() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    let r = tmp.path().join("repo");
    for junk in [
        "echo/1/__pycache__/model.cpython-311.pyc",
        "echo/1/helper.pyc",
        ".git/HEAD",
        ".DS_Store",
        "echo/.DS_Store",
        "echo/1/model.py~",
        "echo/1/.model.py.swp",
        ".idea/workspace.xml",
        "echo/.vscode/settings.json",
        "echo/1/notes.tmp",
        "scratch/big.bin",
        "echo/1/weights.ckpt",
    ] {
        write(&r.join(junk), "junk");
    }
    write(&r.join("echo/1/keep.ckpt"), "keep");
    write(&r.join("README.md"), "# models\n");
    write(
        &r.join(".rustpyignore"),
        "# gitignore syntax\n*.tmp\n/scratch/\n*.ckpt\n!keep.ckpt\n",
    );
    let out = run_in(tmp.path(), &["zip", "repo", "-o", "out.zip", "--json"]);
    assert_code(&out, 0);

    let files: Vec<String> = zip_names(&tmp.path().join("out.zip"))
        .into_iter()
        .filter(|n| !n.ends_with('/'))
        .collect();
    assert_eq!(
        files,
        [
            "README.md",
            "echo/1/keep.ckpt",
            "echo/1/model.py",
            "echo/config.pbtxt",
            "echo/request_parameters.json",
            "echo/requirements.txt",
            "echo/tests/basic.json",
            "embed/1/model.py",
            "embed/config.pbtxt",
            "embed/request_parameters.json",
            "embed/requirements.txt",
            "embed/tests/basic.json",
            "rustpy-manifest.json",
        ]
    );
}

#[test]
fn manifest_lists_every_file_with_size_and_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "out.zip", "-q"]);
    let zip_path = tmp.path().join("out.zip");
    let manifest: serde_json::Value =
        serde_json::from_slice(&read_entry(&zip_path, "rustpy-manifest.json")).unwrap();
    assert_eq!(manifest["format"], "rustpy-manifest/1");
    let files = manifest["files"].as_array().unwrap();
    let listed: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(listed, list_files(&tmp.path().join("repo")));
    for f in files {
        let path = f["path"].as_str().unwrap();
        let on_disk = fs::read(tmp.path().join("repo").join(path)).unwrap();
        assert_eq!(f["size"], on_disk.len());
        assert_eq!(f["sha256"], sha256_hex(&on_disk));
        assert_eq!(read_entry(&zip_path, path), on_disk);
    }
}

#[test]
fn json_summary_describes_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    let out = run_in(tmp.path(), &["zip", "repo", "-o", "dist/out.zip", "--json"]);
    assert_code(&out, 0);
    let summary: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let bytes = fs::read(tmp.path().join("dist/out.zip")).unwrap();
    assert_eq!(summary["sha256"], sha256_hex(&bytes));
    assert_eq!(summary["archive_bytes"], bytes.len());
    assert_eq!(summary["files"], 10);
    assert_eq!(summary["output"], "dist/out.zip");
    assert_eq!(summary["models"], serde_json::json!(["echo", "embed"]));
}

#[test]
fn model_selection() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-m", "echo", "-o", "echo.zip", "-q"]);
    let names = zip_names(&tmp.path().join("echo.zip"));
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("echo/") || n == "rustpy-manifest.json"),
        "{names:?}"
    );
    assert!(names.contains(&"echo/1/model.py".to_owned()));

    let out = run_in(tmp.path(), &["zip", "repo", "-m", "nope", "-o", "x.zip"]);
    assert_code(&out, 2);
    let out = run_in(tmp.path(), &["zip", "repo", "-m", "../repo", "-o", "x.zip"]);
    assert_code(&out, 2);
    assert!(!tmp.path().join("x.zip").exists());
}

#[test]
fn output_inside_the_repository_is_not_packed_into_itself() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "repo/self.zip", "-q"]);
    let first = fs::read(tmp.path().join("repo/self.zip")).unwrap();
    zip_ok(tmp.path(), &["repo", "-o", "repo/self.zip", "-q"]);
    assert!(first == fs::read(tmp.path().join("repo/self.zip")).unwrap());
    assert!(!zip_names(&tmp.path().join("repo/self.zip")).contains(&"self.zip".to_owned()));
}

#[test]
fn refuses_a_failing_repository_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    fs::write(
        tmp.path().join("repo/echo/1/model.py"),
        "class Model:\n    def predict(self, inputs:\n",
    )
    .unwrap();
    let out = run_in(tmp.path(), &["zip", "repo", "-o", "out.zip"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains("python.syntax"), "{}", stderr(&out));
    assert!(!tmp.path().join("out.zip").exists());

    let out = run_in(tmp.path(), &["zip", "repo", "-o", "out.zip", "--force"]);
    assert_code(&out, 0);
    assert!(tmp.path().join("out.zip").is_file());
}

#[test]
fn verify_accepts_an_intact_archive() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "out.zip", "-q"]);
    let out = run_in(tmp.path(), &["zip", "--verify", "out.zip"]);
    assert_code(&out, 0);
    assert!(stdout(&out).starts_with("ok: 10 files"), "{}", stdout(&out));
    let out = run_in(tmp.path(), &["zip", "--verify", "out.zip", "--json"]);
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], true);
}

/// Copies `src` to `dst` entry by entry, letting `edit` change or drop
/// entries (returning None) and append new ones.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>,
    extra: &[(&str, &[u8])],
) {
    let mut input = zip::ZipArchive::new(fs::File::open(src).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(fs::File::create(dst).unwrap());
    let opts = SimpleFileOptions::default();
    for i in 0..input.len() {
        let mut e = input.by_index(i).unwrap();
        let name = e.name().to_owned();
        if e.is_dir() {
            out.add_directory(name, opts).unwrap();
            continue;
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&name, data) {
            out.start_file(name, opts).unwrap();
            out.write_all(&data).unwrap();
        }
    }
    for (name, data) in extra {
        out.start_file(*name, opts).unwrap();
        out.write_all(data).unwrap();
    }
    out.finish().unwrap();
}

#[test]
fn verify_reports_modified_missing_and_extra_entries() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "out.zip", "-q"]);
    let good = tmp.path().join("out.zip");
    let bad = tmp.path().join("bad.zip");
    rewrite(
        &good,
        &bad,
        |name, data| match name {
            "echo/1/model.py" => Some(b"import os\nos.system('evil')\n".to_vec()),
            "embed/config.pbtxt" => None,
            _ => Some(data),
        },
        &[("echo/1/backdoor.py", b"print('hi')\n")],
    );
    let out = run_in(tmp.path(), &["zip", "--verify", "bad.zip"]);
    assert_code(&out, 1);
    let text = stdout(&out);
    assert!(text.contains("mismatch  echo/1/model.py"), "{text}");
    assert!(text.contains("missing   embed/config.pbtxt"), "{text}");
    assert!(text.contains("extra     echo/1/backdoor.py"), "{text}");
    assert!(text.contains("FAILED"), "{text}");

    let out = run_in(tmp.path(), &["zip", "--verify", "bad.zip", "--json"]);
    assert_code(&out, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["mismatched"][0]["path"], "echo/1/model.py");
    assert_eq!(v["missing"], serde_json::json!(["embed/config.pbtxt"]));
    assert_eq!(v["extra"], serde_json::json!(["echo/1/backdoor.py"]));
}

#[test]
fn verify_rejects_archives_without_a_manifest_or_not_zips() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    zip_ok(tmp.path(), &["repo", "-o", "out.zip", "-q"]);
    rewrite(
        &tmp.path().join("out.zip"),
        &tmp.path().join("plain.zip"),
        |name, data| (name != "rustpy-manifest.json").then_some(data),
        &[],
    );
    let out = run_in(tmp.path(), &["zip", "--verify", "plain.zip"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("rustpy-manifest.json"),
        "{}",
        stderr(&out)
    );

    fs::write(tmp.path().join("junk.zip"), "not a zip").unwrap();
    assert_code(&run_in(tmp.path(), &["zip", "--verify", "junk.zip"]), 1);
    assert_code(&run_in(tmp.path(), &["zip", "--verify", "absent.zip"]), 2);
}

#[test]
fn missing_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    assert_code(&run_in(tmp.path(), &["zip", "repo"]), 2);
    assert_code(&run_in(tmp.path(), &["zip", "-o", "x.zip"]), 2);
    assert_code(&run_in(tmp.path(), &["zip", "nope", "-o", "x.zip"]), 2);
    assert_code(
        &run_in(
            tmp.path(),
            &["zip", "repo", "-o", "x.zip", "--verify", "y.zip"],
        ),
        2,
    );
}

#[test]
fn a_check_that_cannot_run_blocks_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path());
    let zip = |extra: &[&str]| {
        rustpy()
            .current_dir(tmp.path())
            .env("RUSTPY_PYTHON", "/nonexistent/python3")
            .args(["zip", "repo", "-o", "out.zip"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = zip(&[]);
    assert_code(&out, 4);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(!tmp.path().join("out.zip").exists());
    assert_code(&zip(&["--force"]), 0);
    assert!(tmp.path().join("out.zip").is_file());
}
