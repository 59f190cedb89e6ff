//! `rustpy unzip`: verified, safe extraction. The malicious archives are
//! crafted here with the zip crate, each with a consistent manifest so that
//! it is the path check, not the hash check, that must stop them.

mod common;

use std::{fs, io::Write, path::Path};

use common::*;
use zip::write::SimpleFileOptions;

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// Writes a zip of `entries` plus a manifest that matches their contents.
fn craft(path: &Path, entries: &[Entry]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    // Stored, so a test can find and flip payload bytes in the file.
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut files = Vec::new();
    for entry in entries {
        let (name, data) = match entry {
            Entry::File(name, data) => {
                zip.start_file(*name, opts).unwrap();
                zip.write_all(data).unwrap();
                (*name, data.to_vec())
            }
            Entry::Symlink(name, target) => {
                zip.add_symlink(*name, *target, opts).unwrap();
                (*name, target.as_bytes().to_vec())
            }
        };
        files.push(serde_json::json!({
            "path": name, "size": data.len(), "sha256": sha256_hex(&data)
        }));
    }
    let manifest = serde_json::json!({ "format": "rustpy-manifest/1", "files": files });
    zip.start_file("rustpy-manifest.json", opts).unwrap();
    zip.write_all(manifest.to_string().as_bytes()).unwrap();
    zip.finish().unwrap();
}

/// Asserts that `rustpy unzip evil.zip -o sandbox/out` fails with exit 1,
/// writes nothing anywhere, and names the offending entry.
#[track_caller]
fn assert_rejected(entries: &[Entry], offending: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = tmp.path().join("sandbox");
    fs::create_dir(&sandbox).unwrap();
    craft(&tmp.path().join("evil.zip"), entries);
    let before = list_files(tmp.path());

    let out = run_in(tmp.path(), &["unzip", "evil.zip", "-o", "sandbox/out"]);
    assert_code(&out, 1);
    assert!(stderr(&out).contains(offending), "{}", stderr(&out));
    assert_eq!(list_files(tmp.path()), before, "files were written");
    assert_eq!(
        fs::read_dir(&sandbox).unwrap().count(),
        0,
        "sandbox not empty"
    );
}

#[test]
fn round_trip_restores_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "gen", "text-generation", &["-q"]);
    init(tmp.path(), "repo", "cls", "image-classification", &["-q"]);
    assert_code(
        &run_in(tmp.path(), &["zip", "repo", "-o", "repo.zip", "-q"]),
        0,
    );
    let out = run_in(tmp.path(), &["unzip", "repo.zip", "-o", "deploy/models"]);
    assert_code(&out, 0);

    let restored = tmp.path().join("deploy/models");
    let mut want = list_files(&tmp.path().join("repo"));
    want.push("rustpy-manifest.json".into());
    want.sort();
    assert_eq!(list_files(&restored), want);
    for rel in list_files(&tmp.path().join("repo")) {
        assert_eq!(
            fs::read(restored.join(&rel)).unwrap(),
            fs::read(tmp.path().join("repo").join(&rel)).unwrap(),
            "{rel}"
        );
    }
    // The extracted repository checks clean and re-packs to the same bytes.
    assert_code(&run_in(tmp.path(), &["check", "deploy/models"]), 0);
    assert_code(
        &run_in(
            tmp.path(),
            &["zip", "deploy/models", "-o", "again.zip", "-q"],
        ),
        0,
    );
    assert!(
        fs::read(tmp.path().join("repo.zip")).unwrap()
            == fs::read(tmp.path().join("again.zip")).unwrap()
    );
}

#[test]
fn into_an_existing_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    assert_code(
        &run_in(tmp.path(), &["zip", "repo", "-o", "repo.zip", "-q"]),
        0,
    );
    fs::create_dir(tmp.path().join("empty")).unwrap();
    assert_code(
        &run_in(tmp.path(), &["unzip", "repo.zip", "-o", "empty"]),
        0,
    );
    assert!(tmp.path().join("empty/m/1/model.py").is_file());
}

#[test]
fn refuses_a_non_empty_destination() {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), "repo", "m", "passthrough", &["-q"]);
    assert_code(
        &run_in(tmp.path(), &["zip", "repo", "-o", "repo.zip", "-q"]),
        0,
    );
    let out = run_in(tmp.path(), &["unzip", "repo.zip", "-o", "repo"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("not an empty directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rejects_parent_directory_components() {
    assert_rejected(&[Entry::File("../escaped.txt", b"pwned")], "../escaped.txt");
    assert_rejected(
        &[Entry::File("m/1/../../../escaped.txt", b"pwned")],
        "escaped.txt",
    );
}

#[test]
fn rejects_absolute_paths() {
    assert_rejected(
        &[Entry::File("/tmp/rustpy-absolute-test.txt", b"pwned")],
        "absolute",
    );
    assert_rejected(
        &[Entry::File("C:/windows/evil.txt", b"pwned")],
        "C:/windows",
    );
    assert_rejected(&[Entry::File("..\\evil.txt", b"pwned")], "backslash");
}

#[cfg(unix)]
#[test]
fn rejects_symlinks_that_escape() {
    assert_rejected(&[Entry::Symlink("m/link", "../../outside")], "m/link");
    assert_rejected(&[Entry::Symlink("etc", "/etc")], "etc");
    // A link that stays inside but is then written through.
    assert_rejected(
        &[
            Entry::Symlink("m/data", "../other"),
            Entry::File("m/data/payload.bin", b"x"),
        ],
        "lies under symlink",
    );
    // Each link looks inside on its own; resolved together they escape.
    assert_rejected(
        &[Entry::Symlink("a", "."), Entry::Symlink("b", "a/..")],
        "resolves outside",
    );
}

#[cfg(unix)]
#[test]
fn keeps_symlinks_that_stay_inside() {
    let tmp = tempfile::tempdir().unwrap();
    craft(
        &tmp.path().join("ok.zip"),
        &[
            Entry::File("shared/weights.bin", b"\x00\x01"),
            Entry::Symlink("m/1/weights.bin", "../../shared/weights.bin"),
        ],
    );
    let out = run_in(tmp.path(), &["unzip", "ok.zip", "-o", "out"]);
    assert_code(&out, 0);
    let link = tmp.path().join("out/m/1/weights.bin");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&link).unwrap(), b"\x00\x01");
}

#[test]
fn refuses_a_tampered_archive_and_extracts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.zip");
    craft(&path, &[Entry::File("m/1/model.py", b"class Model: ...\n")]);
    // Rewrite the payload after the manifest was computed.
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(5).position(|w| w == b"class").unwrap();
    bytes[at] = b'C';
    fs::write(&path, bytes).unwrap();

    let out = run_in(tmp.path(), &["unzip", "t.zip", "-o", "out"]);
    assert_code(&out, 1);
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn plain_zips_need_no_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipWriter::new(fs::File::create(tmp.path().join("plain.zip")).unwrap());
    zip.start_file("m/config.pbtxt", SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"name: \"m\"\n").unwrap();
    zip.finish().unwrap();

    let out = run_in(tmp.path(), &["unzip", "plain.zip", "-o", "a"]);
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("rustpy-manifest.json"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("a").exists());

    assert_code(
        &run_in(
            tmp.path(),
            &["unzip", "plain.zip", "-o", "b", "--no-verify"],
        ),
        0,
    );
    assert!(tmp.path().join("b/m/config.pbtxt").is_file());
}

// ---- Decompression bounds (issue 9) ----

/// Writes a zip whose entries are deflated, plus a manifest matching them.
fn craft_deflated(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut files = Vec::new();
    for (name, data) in entries {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(data).unwrap();
        files.push(serde_json::json!({
            "path": name, "size": data.len(), "sha256": sha256_hex(data)
        }));
    }
    let manifest = serde_json::json!({ "format": "rustpy-manifest/1", "files": files });
    zip.start_file("rustpy-manifest.json", opts).unwrap();
    zip.write_all(manifest.to_string().as_bytes()).unwrap();
    zip.finish().unwrap();
}

/// Rewrites the uncompressed size of the archive's first entry, in its local
/// header and in the central directory, to `size`: a lying header.
fn lie_about_first_size(path: &Path, size: u32) {
    let mut bytes = fs::read(path).unwrap();
    let local = bytes.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    bytes[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
    let central = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    bytes[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[track_caller]
fn assert_refused(dir: &Path, args: &[&str], message: &str) {
    let out = run_in(dir, args);
    assert_code(&out, 1);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains(message), "{args:?}: {all}");
}

#[test]
fn refuses_a_zip_bomb_before_decompressing_it() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB of zeros deflate to ~64 KiB: a 1000:1 bomb.
    let zeros = vec![0u8; 64 << 20];
    craft_deflated(
        &tmp.path().join("bomb.zip"),
        &[
            ("m/config.pbtxt", b"name: \"m\"\n"),
            ("m/1/weights.bin", &zeros),
        ],
    );
    drop(zeros);
    assert!(fs::metadata(tmp.path().join("bomb.zip")).unwrap().len() < 1 << 20);

    for args in [
        &["unzip", "bomb.zip", "-o", "out"][..],
        &["unzip", "bomb.zip", "-o", "out", "--no-verify"],
        &["zip", "--verify", "bomb.zip"],
    ] {
        assert_refused(tmp.path(), args, "refusing a likely zip bomb");
        assert_refused(tmp.path(), args, "m/1/weights.bin");
        assert!(!tmp.path().join("out").exists());
    }
    assert_eq!(
        list_files(tmp.path()),
        vec!["bomb.zip".to_string()],
        "something was extracted"
    );

    // The caps are flags: a user who trusts the archive can lift them.
    let out = run_in(
        tmp.path(),
        &["unzip", "bomb.zip", "-o", "out", "--max-ratio", "0"],
    );
    assert_code(&out, 0);
    assert_eq!(
        fs::metadata(tmp.path().join("out/m/1/weights.bin"))
            .unwrap()
            .len(),
        64 << 20
    );
}

#[test]
fn caps_each_entry_and_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    // Incompressible-ish bytes, so only the size caps can stop them.
    let noise: Vec<u8> = (0..(3u32 << 19))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (a, b) = noise.split_at(noise.len() / 2);
    craft_deflated(
        &tmp.path().join("big.zip"),
        &[("m/1/a.bin", a), ("m/1/b.bin", b)],
    );
    for cmd in [
        &["unzip", "big.zip", "-o", "out"][..],
        &["zip", "--verify", "big.zip"],
    ] {
        let with = |extra: &[&'static str]| [cmd, extra].concat();
        assert_refused(
            tmp.path(),
            &with(&["--max-entry-size", "512K"]),
            "decompresses to 786432 bytes, over the limit of 524288 per entry (--max-entry-size)",
        );
        assert_refused(
            tmp.path(),
            &with(&["--max-total-size", "1M"]),
            "more than 1048576 bytes in total (--max-total-size)",
        );
        assert!(!tmp.path().join("out").exists());
    }
    // Within the caps it extracts.
    let out = run_in(
        tmp.path(),
        &[
            "unzip",
            "big.zip",
            "-o",
            "out",
            "--max-entry-size",
            "1M",
            "--max-total-size",
            "2M",
        ],
    );
    assert_code(&out, 0);
    assert_eq!(fs::read(tmp.path().join("out/m/1/b.bin")).unwrap(), b);
}

#[test]
fn stops_reading_at_the_declared_size() {
    let tmp = tempfile::tempdir().unwrap();
    let payload = vec![b'x'; 1 << 20];
    craft_deflated(
        &tmp.path().join("lie.zip"),
        &[("m/1/weights.bin", &payload)],
    );
    // The headers now claim 100 bytes, which every cap lets through.
    lie_about_first_size(&tmp.path().join("lie.zip"), 100);

    for args in [
        &["unzip", "lie.zip", "-o", "out", "--no-verify"][..],
        &["unzip", "lie.zip", "-o", "out"],
        &["zip", "--verify", "lie.zip"],
    ] {
        assert_refused(
            tmp.path(),
            args,
            "decompresses to more than the 100 bytes its header declares",
        );
        assert!(!tmp.path().join("out").exists());
    }
    assert_eq!(list_files(tmp.path()), vec!["lie.zip".to_string()]);
}

#[test]
fn symlink_bodies_are_bounded_whatever_the_header_says() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("link.zip");
    let target = "a/".repeat(50_000) + "w.bin";
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.add_symlink("m/1/link", &target, opts).unwrap();
    zip.finish().unwrap();
    lie_about_first_size(&path, 10);

    assert_refused(
        tmp.path(),
        &["unzip", "link.zip", "-o", "out", "--no-verify"],
        "symlink `m/1/link` has an implausibly long target",
    );
    assert!(!tmp.path().join("out").exists());
}
