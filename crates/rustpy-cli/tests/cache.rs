//! `rustpy cache prune`: unpacked EXECUTION_ENV_PATH environments that no
//! process uses are deleted; one a process holds (as a server holds the
//! environment of each loaded model) is kept, whatever its age.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A minimal uncompressed archive holding `lib/python3.11/site-packages/<name>.py`.
fn archive(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let data = format!("NAME = {name:?}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(
        &mut h,
        format!("lib/python3.11/site-packages/{name}.py"),
        data.as_bytes(),
    )
    .unwrap();
    b.into_inner().unwrap();
    path
}

fn prune(cache: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = rustpy()
        .args(["cache", "prune", "--json", "--cache-dir"])
        .arg(cache)
        .args(extra)
        .output()
        .unwrap();
    assert_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn action<'a>(entries: &'a [serde_json::Value], sha: &str) -> &'a str {
    entries
        .iter()
        .find(|e| e["sha256"] == sha)
        .and_then(|e| e["action"].as_str())
        .unwrap_or("absent")
}

#[test]
fn prune_deletes_unused_environments_and_keeps_the_ones_in_use() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let opts = rustpy_fetch::Options {
        cache_dir: cache.clone(),
        offline: false,
        progress: None,
    };
    let used = rustpy_fetch::env::unpack_env(&archive(d.path(), "used"), &opts).unwrap();
    let unused = rustpy_fetch::env::unpack_env(&archive(d.path(), "unused"), &opts).unwrap();
    let unused_sha = unused.sha256.clone();
    drop(unused); // its user went away (a model unloaded)

    // Used within the last day: --older-than keeps both.
    let r = prune(&cache, &["--older-than", "1d"]);
    assert_eq!(action(&r, &used.sha256), "in use", "{r:?}");
    assert_eq!(action(&r, &unused_sha), "recent", "{r:?}");

    // A dry run reports, deletes nothing.
    let r = prune(&cache, &["--dry-run"]);
    assert_eq!(action(&r, &unused_sha), "removed", "{r:?}");
    assert!(cache.join("envs").join(&unused_sha).is_dir());

    let r = prune(&cache, &[]);
    assert_eq!(action(&r, &used.sha256), "in use", "{r:?}");
    assert_eq!(action(&r, &unused_sha), "removed", "{r:?}");
    assert!(r.iter().all(|e| e["bytes"].as_u64().unwrap() > 0), "{r:?}");
    assert!(!cache.join("envs").join(&unused_sha).exists());
    assert!(used
        .dir
        .join("lib/python3.11/site-packages/used.py")
        .is_file());

    // Once nobody holds it, it goes too.
    drop(used);
    let r = prune(&cache, &[]);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["action"], "removed");
    assert!(prune(&cache, &[]).is_empty());
}

#[test]
fn prune_rejects_a_bad_age_and_handles_an_empty_cache() {
    let d = tempfile::tempdir().unwrap();
    let out = rustpy()
        .args(["cache", "prune", "--older-than", "soon", "--cache-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--older-than"), "{}", stderr(&out));
    assert!(prune(d.path(), &[]).is_empty());
    let out = rustpy()
        .args(["cache", "prune", "--cache-dir"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_code(&out, 0);
}
