//! The one error type of the core. The backend maps it to TRITONSERVER_Error.

use std::fmt;

/// Triton's error codes (values are `TRITONSERVER_Error_Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    Unknown = 0,
    Internal = 1,
    NotFound = 2,
    InvalidArg = 3,
    Unavailable = 4,
    Unsupported = 5,
    AlreadyExists = 6,
    Cancelled = 7,
}

impl ErrorCode {
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => ErrorCode::Internal,
            2 => ErrorCode::NotFound,
            3 => ErrorCode::InvalidArg,
            4 => ErrorCode::Unavailable,
            5 => ErrorCode::Unsupported,
            6 => ErrorCode::AlreadyExists,
            7 => ErrorCode::Cancelled,
            _ => ErrorCode::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArg, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    /// Prefixes the message with context ("model 'x': ...").
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The largest error message handed to the server, in "wire bytes": gRPC
/// carries the message in a trailer (grpc-message) whose size is limited
/// (8 KiB soft, 16 KiB hard, percent-encoding every byte outside printable
/// ASCII as 3), and a longer one makes the client see "Stream removed"
/// instead of the error.
pub const WIRE_MESSAGE_BUDGET: usize = 4096;

/// `message` cut to at most `budget` wire bytes (see [`WIRE_MESSAGE_BUDGET`]),
/// keeping its head (model, exception type and message) and its tail (the
/// last traceback lines) around a note of what was cut.
pub fn bounded_message(message: &str, budget: usize) -> std::borrow::Cow<'_, str> {
    fn wire(c: char) -> usize {
        if (' '..='~').contains(&c) && c != '%' {
            1
        } else {
            3 * c.len_utf8()
        }
    }
    let total: usize = message.chars().map(wire).sum();
    if total <= budget {
        return std::borrow::Cow::Borrowed(message);
    }
    // 64 wire bytes are kept for the note.
    let keep = budget.saturating_sub(64);
    let (head_budget, tail_budget) = (keep * 2 / 3, keep / 3);
    let mut used = 0;
    let head_end = message
        .char_indices()
        .find(|&(_, c)| {
            used += wire(c);
            used > head_budget
        })
        .map_or(message.len(), |(i, _)| i);
    used = 0;
    let tail_start = message
        .char_indices()
        .rev()
        .find(|&(_, c)| {
            used += wire(c);
            used > tail_budget
        })
        .map_or(0, |(i, c)| i + c.len_utf8())
        .max(head_end);
    let cut = tail_start - head_end;
    std::borrow::Cow::Owned(format!(
        "{}\n[... {cut} bytes of this message cut ...]\n{}",
        &message[..head_end],
        &message[tail_start..]
    ))
}
