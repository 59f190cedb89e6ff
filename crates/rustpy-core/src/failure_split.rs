//! `rustpy.isolate_failures`: one poison request must not fail the batch it
//! was gathered into. When a run leaves several requests failed, their
//! errors are held back and those requests are run again in halves; a
//! request that fails again alone (or in a group that keeps failing) gets
//! its error, the others their answers.
//!
//! Cost, paid only on failure: a single poison request among N costs
//! about 2·log2(N) extra calls. A group whose halves both fail again is
//! split once more; if all its quarters fail too, the failure is the
//! model's, not a request's, and every request of the group gets its error
//! (7 calls for a model that fails everything). Requests that succeeded are
//! never re-run; failed ones are, so user code sees them more than once.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{ExecReport, OutputSlice, Responder, ResponseParameters};
use crate::error::{Error, ErrorCode};
use crate::rules::request::InferRequest;

/// Runs `requests` through `run`, re-running the failed ones in halves
/// until each failure is pinned to its request(s) (module docs). `run` is
/// one call of the instance (in process or in its worker).
pub fn run_isolating_failures<'r, 'a, R, F>(
    requests: &[&'r InferRequest<'a>],
    responders: Vec<R>,
    run: F,
) -> ExecReport
where
    R: Responder + 'static,
    F: Fn(&[&'r InferRequest<'a>], Vec<Held<R>>) -> ExecReport,
{
    let slots: Vec<Arc<Mutex<Slot<R>>>> = responders
        .into_iter()
        .map(|inner| Arc::new(Mutex::new(Slot { inner, held: None })))
        .collect();
    let mut split = Split {
        requests,
        slots: &slots,
        run,
        report: ExecReport::new(requests.len()),
        runs: 0,
    };
    let all: Vec<usize> = (0..requests.len()).collect();
    let failed = split.run_group(&all);
    if failed.len() > 1 {
        split.bisect(failed, false);
    }
    let report = split.report;
    // Every error still held is the request's answer.
    for slot in &slots {
        slot_lock(slot).release();
    }
    report
}

/// One request's responder and the error its last run held back.
struct Slot<R> {
    inner: R,
    held: Option<Error>,
}

impl<R: Responder> Slot<R> {
    fn release(&mut self) {
        if let Some(error) = self.held.take() {
            self.inner.send_error(&error);
        }
    }
}

fn slot_lock<R>(slot: &Mutex<Slot<R>>) -> MutexGuard<'_, Slot<R>> {
    // A panic while a responder was in use leaves it usable: its state is
    // only ever the responder's own.
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The responder a run sees: everything passes through, except the final
/// error, which is held for the splitting to decide on.
pub struct Held<R> {
    slot: Arc<Mutex<Slot<R>>>,
}

impl<R: Responder> Responder for Held<R> {
    fn send(&mut self, outputs: &[OutputSlice<'_>], is_final: bool) -> Result<(), Error> {
        slot_lock(&self.slot).inner.send(outputs, is_final)
    }

    fn send_with_parameters(
        &mut self,
        outputs: &[OutputSlice<'_>],
        parameters: &ResponseParameters,
        is_final: bool,
    ) -> Result<(), Error> {
        slot_lock(&self.slot)
            .inner
            .send_with_parameters(outputs, parameters, is_final)
    }

    fn send_error(&mut self, error: &Error) {
        let mut slot = slot_lock(&self.slot);
        if slot.inner.is_open() && slot.held.is_none() {
            slot.held = Some(error.clone());
        }
    }

    fn send_error_nonfinal(&mut self, error: &Error) -> bool {
        let mut slot = slot_lock(&self.slot);
        if slot.held.is_some() {
            return false;
        }
        slot.inner.send_error_nonfinal(error)
    }

    fn finish(&mut self) {
        let mut slot = slot_lock(&self.slot);
        if slot.held.is_none() {
            slot.inner.finish();
        }
    }

    fn is_cancelled(&self) -> bool {
        slot_lock(&self.slot).inner.is_cancelled()
    }

    fn detach(&mut self) {
        let mut slot = slot_lock(&self.slot);
        if slot.held.is_none() {
            slot.inner.detach();
        }
    }

    fn is_open(&self) -> bool {
        let slot = slot_lock(&self.slot);
        slot.held.is_none() && slot.inner.is_open()
    }
}

struct Split<'s, 'r, 'a, R, F> {
    requests: &'s [&'r InferRequest<'a>],
    slots: &'s [Arc<Mutex<Slot<R>>>],
    run: F,
    /// Over every request, in order: each one's outcome in its last run.
    report: ExecReport,
    runs: usize,
}

impl<'r, 'a, R, F> Split<'_, 'r, 'a, R, F>
where
    R: Responder + 'static,
    F: Fn(&[&'r InferRequest<'a>], Vec<Held<R>>) -> ExecReport,
{
    /// Runs the requests at `group` (indices) once; returns those that
    /// failed and may be run again (an error held; not cancelled).
    fn run_group(&mut self, group: &[usize]) -> Vec<usize> {
        let requests: Vec<&'r InferRequest<'a>> = group.iter().map(|&i| self.requests[i]).collect();
        let held = group
            .iter()
            .map(|&i| {
                slot_lock(&self.slots[i]).held = None;
                Held {
                    slot: self.slots[i].clone(),
                }
            })
            .collect();
        let inner = (self.run)(&requests, held);
        self.merge(group, inner);
        group
            .iter()
            .copied()
            .filter(|&i| {
                let slot = slot_lock(&self.slots[i]);
                slot.held
                    .as_ref()
                    .is_some_and(|e| e.code != ErrorCode::Cancelled)
                    && !slot.inner.is_cancelled()
            })
            .collect()
    }

    /// `failed` all failed in their last run: run each half alone. A half
    /// that fails while the other does not holds the cause: split it on. If
    /// both fail entirely, split once more (`again`); both failing entirely
    /// again means the model fails them all, and they keep their errors.
    fn bisect(&mut self, failed: Vec<usize>, again: bool) {
        let (left, right) = failed.split_at(failed.len() / 2);
        let left_failed = self.run_group(left);
        let right_failed = self.run_group(right);
        let both_entirely = left_failed.len() == left.len() && right_failed.len() == right.len();
        if both_entirely && again {
            return;
        }
        for part in [left_failed, right_failed] {
            if part.len() > 1 {
                self.bisect(part, both_entirely);
            }
        }
    }

    /// Adds one run (over `group`) to the execution's report: each
    /// request's outcome is its last run's; calls and timings add up.
    fn merge(&mut self, group: &[usize], inner: ExecReport) {
        self.runs += 1;
        let report = &mut self.report;
        for (&i, outcome) in group.iter().zip(inner.outcomes) {
            report.outcomes[i] = outcome;
        }
        report.calls += inner.calls;
        report.compute_start = report.compute_start.or(inner.compute_start);
        report.compute_end = inner.compute_end.or(report.compute_end);
        report.stats.calls.extend(inner.stats.calls);
        for (total, n) in report.stats.splits.iter_mut().zip(inner.stats.splits) {
            *total += n;
        }
        // A refused parameter is refused again on a re-run: counted once.
        if self.runs == 1 {
            report.stats.refusals = inner.stats.refusals;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::recording::{lines, Log};
    use crate::engine::{Outcome, ResponseStream};
    use std::cell::Cell;

    /// Requests told apart by their id ("r0", "r1", ...).
    fn requests(n: usize) -> Vec<InferRequest<'static>> {
        (0..n)
            .map(|i| InferRequest {
                id: format!("r{i}"),
                ..Default::default()
            })
            .collect()
    }

    /// A model that, like a `predict` raising, fails the whole call if it
    /// holds any request for which `poison` is true; returns each client's
    /// log and how many calls were made.
    fn serve(n: usize, poison: impl Fn(usize) -> bool) -> (Vec<Vec<String>>, usize, ExecReport) {
        let reqs = requests(n);
        let refs: Vec<&InferRequest<'_>> = reqs.iter().collect();
        let clients: Vec<Log> = (0..n).map(|_| Log::default()).collect();
        let responders: Vec<_> = clients.iter().cloned().map(ResponseStream::new).collect();
        let calls = Cell::new(0);
        let report = run_isolating_failures(&refs, responders, |group, mut held| {
            calls.set(calls.get() + 1);
            let ids: Vec<usize> = group.iter().map(|r| r.id[1..].parse().unwrap()).collect();
            let mut report = ExecReport::new(group.len());
            report.calls = 1;
            match ids.iter().find(|&&i| poison(i)) {
                Some(bad) => {
                    let e = Error::internal(format!("ValueError: poison r{bad}"));
                    held.iter_mut().for_each(|r| r.send_error(&e));
                }
                None => {
                    for (r, outcome) in held.iter_mut().zip(&mut report.outcomes) {
                        r.send(&[], true).unwrap();
                        *outcome = Outcome::Answered;
                    }
                }
            }
            report
        });
        let logs = clients.iter().map(lines).collect();
        (logs, calls.get(), report)
    }

    #[test]
    fn one_poison_in_thirty_two_fails_alone_and_the_others_are_answered() {
        let (logs, calls, report) = serve(32, |i| i == 13);
        for (i, log) in logs.iter().enumerate() {
            let expected = if i == 13 {
                "error ValueError: poison r13 final=true"
            } else {
                "send 0 final=true"
            };
            assert_eq!(log, &[expected], "request {i}");
        }
        // The whole batch, then two halves per level down to one request.
        assert_eq!(calls, 1 + 2 * 5);
        assert_eq!(report.calls, calls);
        assert_eq!(report.outcomes.iter().filter(|o| o.succeeded()).count(), 31);
    }

    #[test]
    fn a_model_failing_everything_answers_each_request_once_at_a_bounded_cost() {
        let (logs, calls, report) = serve(32, |_| true);
        for log in &logs {
            assert_eq!(log.len(), 1, "{log:?}");
            assert!(log[0].starts_with("error ValueError: poison"), "{log:?}");
        }
        assert_eq!(calls, 1 + 2 + 4);
        assert!(report.outcomes.iter().all(|o| !o.succeeded()));
    }

    #[test]
    fn poisons_in_both_halves_are_each_found() {
        let (logs, _, _) = serve(32, |i| i == 3 || i == 20);
        for (i, log) in logs.iter().enumerate() {
            let failed = log[0].starts_with("error");
            assert_eq!(failed, i == 3 || i == 20, "request {i}: {log:?}");
            assert_eq!(log.len(), 1);
        }
    }

    #[test]
    fn one_request_or_a_success_costs_nothing_more() {
        assert_eq!(serve(1, |_| true).1, 1);
        assert_eq!(serve(8, |_| false).1, 1);
    }
}
