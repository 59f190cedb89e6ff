//! One batch in the worker: map the input region, read the requests out of
//! the Execute frame as views of it, run them on the model instance, and
//! answer Done, pinning the batch's range if Python kept a view of it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pyo3::prelude::*;

use crate::intake::Intake;
use rustpy_core::error::{Error, Result};
use rustpy_core::isolation::sys::Mapping;
use rustpy_core::isolation::wire::{Done, Execute};
use rustpy_core::isolation::WorkerResponses;
use rustpy_core::python::{self, ModelInstance};
use rustpy_core::rules::shared::SharedRegion;
use rustpy_core::rules::tensor::TensorBuffer;
use rustpy_core::{ExecReport, InferRequest, Responder};

/// A mapping of the input region, owned by Python: the base of every numpy
/// view of a batch's inputs (through the inputs' SharedRegion). Python frees
/// it when the last view goes; the mapping goes with it.
#[pyclass(module = "_rustpy_worker", frozen)]
struct SharedInput {
    map: Arc<Mapping>,
    /// 0, or the batch whose views outlived its execution: the backend keeps
    /// that batch's range untouched until this object is freed.
    pinned: AtomicU64,
    released: Released,
}

/// Pinned batches whose views Python has freed, for the next Done frame.
type Released = Arc<Mutex<Vec<u64>>>;

impl Drop for SharedInput {
    fn drop(&mut self) {
        let batch = self.pinned.load(Ordering::Acquire);
        if batch != 0 {
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch);
        }
    }
}

/// The worker's mappings of the input region: the one the last batch used,
/// reused while nothing pins it and it covers the next batch, and the
/// pinned batches Python has let go of since the last Done.
pub struct InputViews {
    fd: OwnedFd,
    current: Option<Py<SharedInput>>,
    released: Released,
}

impl InputViews {
    pub fn new(fd: OwnedFd) -> InputViews {
        InputViews {
            fd,
            current: None,
            released: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The mapping for a batch whose inputs end at `input_len`: the current
    /// one if it covers them (and nothing pinned it), else a new one.
    fn mapping_for(&mut self, input_len: usize) -> Result<Py<SharedInput>> {
        let current = self.current.take();
        Python::attach(|py| {
            if let Some(c) = current {
                if c.get().map.len() >= input_len {
                    return Ok(c);
                }
            }
            let map = Mapping::new(&self.fd)
                .map_err(|e| Error::internal(format!("rustpy-worker: input memory: {e}")))?;
            if map.len() < input_len {
                return Err(Error::internal(format!(
                    "rustpy-worker: input memory holds {} bytes, {input_len} announced",
                    map.len()
                )));
            }
            Py::new(
                py,
                SharedInput {
                    map: Arc::new(map),
                    pinned: AtomicU64::new(0),
                    released: self.released.clone(),
                },
            )
            .map_err(|e| Error::internal(format!("rustpy-worker: input memory: {e}")))
        })
    }

    /// After user code ran: a view Python kept (a stored array, a request a
    /// thread still answers) pins this batch's range, so the next batch goes
    /// elsewhere and this mapping lives until Python frees it. Refcounts
    /// only change under the GIL, so the check and the mark cannot race
    /// with the last view going away. Returns whether it is pinned.
    fn keep_or_pin(&mut self, region: Py<SharedInput>, shared: SharedRegion, batch: u64) -> bool {
        Python::attach(|py| {
            // Our handle goes first (with the GIL: it may hold the last
            // reference to `region`'s owner); views keep theirs.
            drop(shared);
            if python::ref_count(region.bind(py).as_any()) > 1 {
                region.get().pinned.store(batch.max(1), Ordering::Release);
                drop(region);
                true
            } else {
                self.current = Some(region);
                false
            }
        })
    }

    fn take_released(&self) -> Vec<u64> {
        std::mem::take(&mut *self.released.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Drops the current mapping (under the GIL: Python owns it).
    pub fn close(&mut self) {
        Python::attach(|_| drop(self.current.take()));
    }
}

/// What a batch runs with.
pub struct BatchContext<'a> {
    pub instance: &'a ModelInstance,
    pub responses: &'a Arc<WorkerResponses>,
    pub intake: &'a Intake,
    /// A decoupled model's responses leave at once; others' leave with the
    /// batch's Done when the thread running the batch sends them.
    pub decoupled: bool,
    /// Lend the control socket to the intake thread for the whole batch
    /// (a model with `is_ready()`: readiness is answered during batches).
    pub read_during_batches: bool,
}

/// Runs one Execute frame and answers its Done.
pub fn run_batch(exec: Execute, cx: &BatchContext<'_>, views: &mut InputViews) {
    let Execute {
        input_len,
        requests,
        batch,
    } = exec;
    let start = Instant::now();
    cx.responses.begin_batch(batch, !cx.decoupled);
    let region = match views.mapping_for(input_len) {
        Ok(r) => r,
        Err(e) => {
            for i in 0..requests.len() {
                cx.responses.responder(batch, i).send_error(&e);
            }
            let done = Done::failed(requests.len(), views.take_released());
            let _ = cx.responses.send_done(done);
            return;
        }
    };
    let input = &region.get().map;
    cx.responses
        .set_input_view((input.as_ptr() as usize, input.len()));
    let region_bytes = input.whole();
    // Inputs are buffers of the shared region: Python gets views of them,
    // whose base keeps this mapping (and `region`) alive.
    let shared =
        Python::attach(|py| SharedRegion::new(input.clone(), Arc::new(region.clone_ref(py))));
    let requests: Vec<Result<InferRequest>> = requests
        .into_iter()
        .map(|r| {
            let mut r = r
                .to_request(region_bytes)
                .map_err(|e| Error::internal(format!("rustpy-worker: {e}")))?;
            for t in &mut r.inputs {
                for b in &mut t.buffers {
                    *b = TensorBuffer::shared(b.host()?, shared.clone());
                }
            }
            Ok(r)
        })
        .collect();
    let mut responders: Vec<_> = (0..requests.len())
        .map(|index| cx.responses.responder(batch, index))
        .collect();
    cx.intake.begin(cx.read_during_batches);
    // The backend admitted these requests (rustpy_core::admission); an input
    // it placed outside the shared memory is a protocol error that fails
    // the batch whole.
    let report = match requests
        .iter()
        .map(Result::as_ref)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(admitted) => cx.instance.run(&admitted, responders),
        Err(e) => {
            let e = e.clone();
            for r in &mut responders {
                r.send_error(&e);
            }
            ExecReport::new(requests.len())
        }
    };
    drop(requests);
    let pinned = views.keep_or_pin(region, shared, batch);
    let done = Done::after(report, start, pinned, views.take_released());
    let _ = cx.responses.send_done(done);
    cx.intake.end();
}
