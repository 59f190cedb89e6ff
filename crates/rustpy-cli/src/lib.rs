//! The `rustpy` command line: scaffold (`init`), check, package (`zip`,
//! `unzip`) and serve Triton model repositories for the rustpy backend.
//!
//! `main.rs` only parses and maps the outcome to an exit code; each
//! subcommand lives in its own module under `commands`.
//!
//! `unsafe` is denied; only `serve`'s two process-control calls (`isolate`,
//! `terminate`) are allowed it.

#![deny(unsafe_code)]

mod archive;
pub mod cli;
mod commands;
mod error;
mod progress;

pub use error::{code, report_error, Error, Result, Status};

use cli::{Cli, Command};

/// Settings shared by every command.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    pub quiet: bool,
}

impl Global {
    /// Prints a status line on stderr unless `--quiet`.
    pub fn status(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result {
    let global = Global { quiet: cli.quiet };
    match cli.command {
        Command::Init(args) => commands::init::run(&global, args),
        Command::Check(args) => commands::check::run(&global, args),
        Command::Fetch(args) => commands::fetch::run(&global, args),
        Command::Env(args) => commands::env::run(&global, args),
        Command::Zip(args) => commands::zip::run(&global, args),
        Command::Unzip(args) => commands::unzip::run(&global, args),
        Command::Serve(args) => commands::serve::run(&global, args),
        Command::Run(args) => commands::run::run(&global, args),
        Command::Test(args) => commands::test::run(&global, args),
        Command::Cache(cli::CacheCommand::Prune(args)) => commands::cache::prune(&global, args),
        Command::Top(args) => commands::top::run(&global, args),
    }
}
