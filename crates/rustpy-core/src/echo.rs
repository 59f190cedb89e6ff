//! The native echo (`rustpy.native: "echo"`): no Python at all, output i
//! is a copy of input i. The ceiling rustpy's overhead is measured against.

use std::time::Instant;

use crate::engine::{ExecReport, Outcome, OutputSlice, Responder};
use crate::error::{Error, Result};
use crate::rules::request::InferRequest;
use crate::rules::spec::ModelSpec;

/// The config parameter that selects a native (Python-free) model.
pub const NATIVE_PARAMETER: &str = "rustpy.native";

/// One instance's echo strategy.
pub(crate) struct Echo {
    pub(crate) spec: ModelSpec,
}

impl Echo {
    /// Returns input i of each admitted request as its output i.
    pub(crate) fn execute<R: Responder>(
        &self,
        requests: &[&InferRequest<'_>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        execute_echo(&self.spec, requests, &mut responders)
    }
}

/// A native echo needs outputs that mirror its inputs one to one.
pub(crate) fn check_spec(spec: &ModelSpec) -> Result<()> {
    let ok = spec.inputs.len() == spec.outputs.len()
        && spec
            .inputs
            .iter()
            .zip(&spec.outputs)
            .all(|(i, o)| i.dtype == o.dtype && i.dims == o.dims);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_arg(format!(
            "model '{}': {NATIVE_PARAMETER}=echo needs as many outputs as inputs, pairwise of the same data type and dims",
            spec.name
        )))
    }
}

/// The native echo: returns input i as output i without touching Python
/// (the ceiling rustpy's overhead is measured against).
fn execute_echo<R: Responder>(
    spec: &ModelSpec,
    requests: &[&InferRequest<'_>],
    responders: &mut [R],
) -> ExecReport {
    let mut report = ExecReport::new(requests.len());
    report.compute_start = Some(Instant::now());
    for (i, req) in requests.iter().enumerate() {
        let data: Vec<std::borrow::Cow<'_, [u8]>> =
            match req.inputs.iter().map(|t| t.contiguous()).collect() {
                Ok(data) => data,
                Err(e) => {
                    responders[i].send_error(&e);
                    continue;
                }
            };
        let slices: Vec<OutputSlice<'_>> = spec
            .inputs
            .iter()
            .zip(&spec.outputs)
            .filter(|(_, o)| req.requested_outputs.is_empty() || req.wants_output(&o.name))
            .filter_map(|(inp, out)| {
                let k = req.inputs.iter().position(|t| t.name == inp.name)?;
                Some(OutputSlice::host(
                    &out.name,
                    out.dtype,
                    req.inputs[k].shape.clone(),
                    &data[k],
                ))
            })
            .collect();
        match responders[i].send(&slices, true) {
            Ok(()) => report.outcomes[i] = Outcome::Answered,
            Err(e) => responders[i].send_error(&e),
        }
    }
    report.calls = 1;
    report.compute_end = Some(Instant::now());
    report
}
