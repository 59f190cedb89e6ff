//! The contract between the execution core and whoever delivers responses
//! (Triton in the backend, the terminal in `rustpy run`): a [`Responder`]
//! per request (for the backend and the local runner a [`ResponseStream`],
//! the one state machine of a request's responses, over a [`ResponseSink`]),
//! and the [`ExecReport`] of an execution.

use std::time::Instant;

use crate::error::Error;
use crate::rules::dtype::DataType;
use crate::rules::request::ParamValue;
use crate::rules::tensor::TensorBuffer;

/// Response parameters (`pb_utils.InferenceResponse(parameters=...)`), in
/// the order the model gave them.
pub type ResponseParameters = [(String, ParamValue)];

/// A send with `parameters` to a destination that cannot carry them: a
/// plain `send` when there are none, else refused (never dropped silently).
fn without_parameters(
    parameters: &ResponseParameters,
    send: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    if parameters.is_empty() {
        return send();
    }
    Err(Error::unsupported(
        "response parameters cannot be delivered by this responder",
    ))
}

/// One output tensor of one response, borrowed for the duration of a send;
/// its data carries the memory it lives in (host memory today: what user
/// code returned, or a slice of a worker's region).
#[derive(Debug)]
pub struct OutputSlice<'a> {
    pub name: &'a str,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorBuffer<'a>,
}

impl<'a> OutputSlice<'a> {
    /// An output whose bytes are host memory lent for the send.
    pub fn host(name: &'a str, dtype: DataType, shape: Vec<i64>, data: &'a [u8]) -> Self {
        OutputSlice {
            name,
            dtype,
            shape,
            data: TensorBuffer::borrowed(data),
        }
    }
}

/// Delivers the responses of one request. Called without the GIL.
pub trait Responder: Send {
    /// Sends one response carrying `outputs`; `is_final` marks the request's
    /// last response.
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error>;
    /// Like [`Responder::send`], with response parameters on the response.
    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<(), Error> {
        without_parameters(parameters, || self.send(outputs, is_final))
    }
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
    /// Whether the request may still be answered (no final response, error,
    /// `finish` or `detach` yet).
    fn is_open(&self) -> bool;
}

/// Where one request's responses physically go: Triton's response factory
/// in the backend, a channel in the local runner. A sink only delivers
/// (and logs what it cannot); whether the request is still open is tracked
/// once, by the [`ResponseStream`] around it.
pub trait ResponseSink: Send {
    /// One response carrying `outputs`; `is_final` also ends the request.
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error>;
    /// One response with response parameters. A sink that cannot carry
    /// them refuses (rather than dropping them silently).
    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<(), Error> {
        without_parameters(parameters, || self.send(outputs, is_final))
    }
    /// An error response; `is_final` also ends the request.
    fn send_error(&mut self, error: &Error, is_final: bool);
    /// The FINAL flag alone (a stream that ends without a last response).
    fn send_final(&mut self);
    /// Whether the client gave up on this request.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// One request's response stream over a sink: open until its final
/// response, an error, `finish` or `detach` (rescheduled); nothing goes out
/// after that. Dropped while still open (a bug, a panic), it fails the
/// request, so no request ends without an answer.
pub struct ResponseStream<S: ResponseSink> {
    sink: S,
    open: bool,
}

impl<S: ResponseSink> ResponseStream<S> {
    pub fn new(sink: S) -> Self {
        ResponseStream { sink, open: true }
    }
}

impl<S: ResponseSink> Responder for ResponseStream<S> {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error> {
        // Every sink sends a response without parameters as its plain send.
        self.send_with_parameters(outputs, &[], is_final)
    }

    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<(), Error> {
        if !self.open {
            return Err(Error::internal("response sent after the final one"));
        }
        self.sink
            .send_with_parameters(outputs, parameters, is_final)?;
        self.open = !is_final;
        Ok(())
    }

    fn send_error(&mut self, error: &Error) {
        if self.open {
            self.open = false;
            self.sink.send_error(error, true);
        }
    }

    fn send_error_nonfinal(&mut self, error: &Error) -> bool {
        if self.open {
            self.sink.send_error(error, false);
        }
        self.open
    }

    fn finish(&mut self) {
        if self.open {
            self.open = false;
            self.sink.send_final();
        }
    }

    fn is_cancelled(&self) -> bool {
        self.sink.is_cancelled()
    }

    fn detach(&mut self) {
        self.open = false;
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

impl<S: ResponseSink> Drop for ResponseStream<S> {
    fn drop(&mut self) {
        self.send_error(&Error::internal(
            "rustpy: the request ended without a response (internal error)",
        ));
    }
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
    /// What the executor counted for rustpy's metrics (`crate::metrics`).
    pub stats: crate::metrics::ExecStats,
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

/// A sink that records what reached it, one line per delivery, for the
/// tests of what sits on a [`ResponseStream`].
#[cfg(test)]
pub(crate) mod recording {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    pub(crate) struct Log(Arc<Mutex<Vec<String>>>);

    impl ResponseSink for Log {
        fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error> {
            let line = format!("send {} final={is_final}", outputs.len());
            self.0.lock().unwrap().push(line);
            Ok(())
        }
        fn send_error(&mut self, error: &Error, is_final: bool) {
            let line = format!("error {} final={is_final}", error.message);
            self.0.lock().unwrap().push(line);
        }
        fn send_final(&mut self) {
            self.0.lock().unwrap().push("final".into());
        }
    }

    /// What reached the sink so far.
    pub(crate) fn lines(log: &Log) -> Vec<String> {
        log.0.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::recording::{lines, Log};
    use super::*;

    #[test]
    fn nothing_goes_out_after_the_final_response() {
        let log = Log::default();
        let mut stream = ResponseStream::new(log.clone());
        assert!(stream.send(&[], false).is_ok());
        assert!(stream.send_error_nonfinal(&Error::internal("soft")));
        assert!(stream.is_open());
        stream.send(&[], true).unwrap();
        assert!(!stream.is_open());
        assert!(stream.send(&[], true).is_err());
        stream.send_error(&Error::internal("late"));
        stream.finish();
        assert!(!stream.send_error_nonfinal(&Error::internal("late")));
        drop(stream);
        assert_eq!(
            lines(&log),
            [
                "send 0 final=false",
                "error soft final=false",
                "send 0 final=true"
            ]
        );
    }

    #[test]
    fn a_stream_dropped_open_fails_its_request_and_a_detached_one_stays_silent() {
        let log = Log::default();
        drop(ResponseStream::new(log.clone()));
        let mut detached = ResponseStream::new(log.clone());
        detached.detach();
        drop(detached);
        let mut finished = ResponseStream::new(log.clone());
        finished.finish();
        drop(finished);
        assert_eq!(
            lines(&log),
            [
                "error rustpy: the request ended without a response (internal error) final=true",
                "final"
            ]
        );
    }
}
