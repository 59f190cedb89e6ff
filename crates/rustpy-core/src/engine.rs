//! The contract between the execution core and whoever delivers responses
//! (Triton in the backend, the terminal in `rustpy run`).

use std::time::Instant;

use crate::dtype::DataType;
use crate::error::Error;

/// One output tensor of one response, borrowed for the duration of a send.
#[derive(Debug)]
pub struct OutputSlice<'a> {
    pub name: &'a str,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: &'a [u8],
}

/// Delivers the responses of one request. Called without the GIL.
pub trait Responder: Send {
    /// Sends one response carrying `outputs`; `is_final` marks the request's
    /// last response.
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error>;
    /// Fails the request (always the final response).
    fn send_error(&mut self, error: &Error);
    /// Sends an error response that does not end the request (a decoupled
    /// model may send more). Returns whether the request is still open; a
    /// responder that cannot do this ends the request with the error.
    fn send_error_nonfinal(&mut self, error: &Error) -> bool {
        self.send_error(error);
        false
    }
    /// Ends a streamed (decoupled) request with no further response.
    fn finish(&mut self);
    /// Whether the client gave up on this request.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// The request goes back to the scheduler (rescheduled): drop this
    /// responder without answering; a later execution will.
    fn detach(&mut self) {}
}

/// How one request of an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    /// It was answered with an error (or not at all: unreadable, invalid,
    /// cancelled, user code failed).
    #[default]
    Failed,
    /// Its final response went out (or, decoupled, its stream is owned by
    /// user code that may still answer it).
    Answered,
    /// User code asked to reschedule it: it goes back to the scheduler
    /// (released with RESCHEDULE instead of ALL) unanswered.
    Rescheduled,
}

impl Outcome {
    /// Whether the request counts as a success in the statistics.
    pub fn succeeded(self) -> bool {
        self != Outcome::Failed
    }
}

/// What happened during one execution, for statistics; one entry per
/// request, in the order they were handed to the executor.
#[derive(Debug, Default, Clone)]
pub struct ExecReport {
    pub outcomes: Vec<Outcome>,
    /// Rows per request (0 for a request that failed validation).
    pub rows: Vec<usize>,
    /// Number of user-code calls made.
    pub calls: usize,
    pub compute_start: Option<Instant>,
    pub compute_end: Option<Instant>,
}

impl ExecReport {
    /// A report for `n` requests, none answered yet.
    pub fn new(n: usize) -> Self {
        ExecReport {
            outcomes: vec![Outcome::Failed; n],
            rows: vec![0; n],
            ..Default::default()
        }
    }

    pub fn total_rows(&self) -> usize {
        self.rows.iter().sum()
    }
}
