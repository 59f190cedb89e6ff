//! `rustpy init`: every task scaffolds a model that passes `rustpy check`
//! and really runs under the batched API.

mod common;

use std::{fs, path::Path, process::Command};

use common::*;

const HARNESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/harness.py");

fn python() -> String {
    if Path::new("/usr/bin/python3.11").is_file() {
        "/usr/bin/python3.11".into()
    } else {
        "python3".into()
    }
}

#[test]
fn every_task_scaffolds_the_expected_files() {
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        let name = task.replace('-', "_");
        init(tmp.path(), "repo", &name, task, &[]);
        let model = tmp.path().join("repo").join(&name);
        let config = fs::read_to_string(model.join("config.pbtxt")).unwrap();
        assert!(config.contains(&format!("name: \"{name}\"")), "{config}");
        assert!(config.contains("backend: \"rustpy\""), "{config}");
        assert!(config.contains("max_batch_size: 8"), "{config}");
        assert!(config.contains("dynamic_batching { }"), "{config}");
        assert!(config.contains("kind: KIND_CPU"), "{config}");
        let code = fs::read_to_string(model.join("1/model.py")).unwrap();
        assert!(code.contains("class Model"));
        assert!(code.contains("def predict(self, inputs, requests)"));
        assert!(fs::read_to_string(model.join("requirements.txt"))
            .unwrap()
            .contains("numpy"));
        let has_labels = matches!(*task, "image-classification" | "object-detection");
        assert_eq!(model.join("labels.txt").is_file(), has_labels, "{task}");
    }
    let gen = fs::read_to_string(tmp.path().join("repo/text_generation/config.pbtxt")).unwrap();
    assert!(gen.contains("decoupled: true"), "{gen}");
    let cls =
        fs::read_to_string(tmp.path().join("repo/image_classification/config.pbtxt")).unwrap();
    assert!(cls.contains("label_filename: \"labels.txt\""), "{cls}");
    assert!(cls.contains("dims: [ 224, 224, 3 ]"), "{cls}");
}

#[test]
fn scaffolds_pass_check_with_and_without_batching() {
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        let name = task.replace('-', "_");
        init(tmp.path(), "batched", &name, task, &[]);
        init(
            tmp.path(),
            "single",
            &name,
            task,
            &["--max-batch-size", "0"],
        );
    }
    let cfg = fs::read_to_string(tmp.path().join("single/passthrough/config.pbtxt")).unwrap();
    assert!(!cfg.contains("dynamic_batching"), "{cfg}");
    for repo in ["batched", "single"] {
        let out = run_in(tmp.path(), &["check", repo]);
        assert_code(&out, 0);
        assert!(
            stdout(&out).contains("ok: 5 models checked, no problems"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn scaffolded_models_run_under_the_batched_api() {
    let tmp = tempfile::tempdir().unwrap();
    for task in TASKS {
        for (repo, mbs) in [("batched", "4"), ("single", "0")] {
            let name = task.replace('-', "_");
            init(
                tmp.path(),
                repo,
                &name,
                task,
                &["--max-batch-size", mbs, "--quiet"],
            );
            let model = tmp.path().join(repo).join(&name);
            let out = Command::new(python())
                .args(["-I", "-B", HARNESS])
                .arg(&model)
                .args([task, mbs])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{task} (max_batch_size {mbs}) failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn image_shape_is_configurable() {
    let tmp = tempfile::tempdir().unwrap();
    init(
        tmp.path(),
        "repo",
        "det",
        "object-detection",
        &["--image-shape", "320,640"],
    );
    let cfg = fs::read_to_string(tmp.path().join("repo/det/config.pbtxt")).unwrap();
    assert!(cfg.contains("dims: [ 320, 640, 3 ]"), "{cfg}");
    assert!(cfg.contains("dims: [ 10, 4 ]"), "{cfg}");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &[]);
    fs::write(tmp.path().join("repo/m/1/model.py"), "# edited\n").unwrap();
    let out = run_in(
        tmp.path(),
        &["init", "m", "--task", "passthrough", "--dir", "repo"],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(tmp.path().join("repo/m/1/model.py")).unwrap(),
        "# edited\n"
    );

    init(tmp.path(), "repo", "m", "passthrough", &["--force"]);
    assert!(fs::read_to_string(tmp.path().join("repo/m/1/model.py"))
        .unwrap()
        .contains("class Model"));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["init", "../escape", "--task", "passthrough"][..],
        &[
            "init",
            "m",
            "--task",
            "passthrough",
            "--image-shape",
            "32,32",
        ],
        &[
            "init",
            "m",
            "--task",
            "image-classification",
            "--image-shape",
            "32",
        ],
        &["init", "m", "--task", "nope"],
    ] {
        let out = run_in(tmp.path(), args);
        assert_code(&out, 2);
    }
    assert!(!tmp.path().join("model_repository").exists());
}

#[test]
fn default_repository_is_model_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_in(tmp.path(), &["init", "m", "--task", "text-embedding"]);
    assert_code(&out, 0);
    assert!(tmp.path().join("model_repository/m/config.pbtxt").is_file());
}
