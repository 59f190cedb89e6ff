//! The error type every command returns, and the exit codes it maps to.
//!
//! | code | meaning                                                              |
//! |------|----------------------------------------------------------------------|
//! | 0    | success                                                              |
//! | 1    | the thing inspected is invalid: check errors, zip --verify mismatch, |
//! |      | an unsafe or corrupt archive                                         |
//! | 2    | usage error: bad arguments (clap), or an invocation that can't go on |
//! |      | as asked (target exists without --force, unknown model name, a path  |
//! |      | given by flag or environment variable that does not exist, ...)      |
//! | 4    | runtime error: I/O failure, an external tool that is not installed   |
//! |      | or fails (python, tritonserver), server never became ready           |
//! | n    | `rustpy serve` exits with tritonserver's own exit code (128+signal   |
//! |      | when it was killed by a signal)                                      |

use std::process::ExitCode;

/// Exit code constants; see the module documentation.
pub mod code {
    pub const SUCCESS: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const RUNTIME: u8 = 4;
}

/// How a command that ran to completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// Validation found problems; they have already been printed.
    Failed,
    /// Exit with this code (`serve` propagating tritonserver's status).
    Code(u8),
}

impl Status {
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Status::Success => code::SUCCESS,
            Status::Failed => code::FAILED,
            Status::Code(c) => c,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is invalid (exit 1), e.g. an archive with an unsafe path.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    /// The invocation cannot proceed as asked (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else that went wrong while running (exit 4).
    #[error("{0:#}")]
    Runtime(#[from] anyhow::Error),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn invalid(err: impl Into<anyhow::Error>) -> Self {
        Error::Invalid(err.into())
    }

    pub fn code(&self) -> u8 {
        match self {
            Error::Invalid(_) => code::FAILED,
            Error::Usage(_) => code::USAGE,
            Error::Runtime(_) => code::RUNTIME,
        }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Runtime(err.into())
    }
}

pub type Result<T = Status, E = Error> = std::result::Result<T, E>;

/// Prints `err` the way every command reports a fatal error.
pub fn report_error(err: &Error) {
    eprintln!("error: {err}");
}
