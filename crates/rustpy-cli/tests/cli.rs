//! Exit codes and argument handling common to every command.

mod common;

use common::*;

#[test]
fn no_arguments_is_a_usage_error() {
    let out = rustpy().output().unwrap();
    assert_code(&out, 2);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = rustpy().args(["zip", "--frobnicate"]).output().unwrap();
    assert_code(&out, 2);
}

#[test]
fn version_and_help_succeed() {
    assert_code(&rustpy().arg("--version").output().unwrap(), 0);
    let help = rustpy().arg("--help").output().unwrap();
    assert_code(&help, 0);
    assert!(stdout(&help).contains("Exit codes"));
}

/// The leading numbers of the `,`/`;`-separated items after `marker`.
fn listed_codes(text: &str, marker: &str) -> Vec<u8> {
    let after = &text[text.find(marker).expect("marker present") + marker.len()..];
    after
        .split([',', ';'])
        .map(str::trim)
        .map_while(|item| {
            let digits: String = item.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// `--help`, the CLI README's table and the code constants name the same
/// exit codes (no reserved code that no command returns).
#[test]
fn advertised_exit_codes_match_the_code() {
    use rustpy_cli::code;
    let want = vec![code::SUCCESS, code::FAILED, code::USAGE, code::RUNTIME];

    let help = stdout(&rustpy().arg("--help").output().unwrap());
    assert_eq!(listed_codes(&help, "Exit codes:"), want, "{help}");

    let readme = include_str!("../README.md");
    let table = &readme[readme.find("## Exit codes").expect("README has exit codes")..];
    let documented: Vec<u8> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1)?.trim().parse().ok())
        .collect();
    assert_eq!(documented, want, "README exit code table");
}
