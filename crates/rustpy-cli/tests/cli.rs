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
