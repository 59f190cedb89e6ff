//! The `rustpy` binary: parse, run, and turn the outcome into an exit code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use rustpy_cli::{cli::Cli, report_error};

fn main() -> ExitCode {
    // clap exits by itself with 2 on usage errors and 0 for --help/--version.
    let cli = Cli::parse();
    match rustpy_cli::run(cli) {
        Ok(status) => status.exit_code(),
        Err(err) => {
            report_error(&err);
            err.exit_code()
        }
    }
}
