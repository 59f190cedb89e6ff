//! The batched API's strategy (`class Model` with `predict(inputs,
//! requests)`): requests that can share a call are concatenated into one
//! array per input (the groups and validation are `batch`'s), predict runs
//! once per group, and what it returns (a dict for the whole batch, a list of
//! one dict per request, or a generator of either when streaming) is checked
//! and cut back to each request.

use std::borrow::Cow;
use std::time::Instant;

use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use super::convert::{correlation_to_py, params_dict};
use super::error::py_error;
use super::numpy_io::{
    array_from_bytes, array_from_plan, extract_output, extract_tensor, set_readonly,
    ExtractedOutput,
};
use super::runtime::runtime;
use crate::admission::cancelled;
use crate::engine::{ExecReport, Outcome, OutputSlice, Responder};
use crate::error::{Error, Result};
use crate::rules::batch::{self, BatchOutput};
use crate::rules::ragged;
use crate::rules::request::{element_count, InferRequest};
use crate::rules::spec::ModelSpec;

/// One instance's batched strategy: what it needs of the model, and the
/// user's `predict`.
pub(crate) struct Batched {
    pub(crate) spec: ModelSpec,
    /// `request_parameters.json`: checked on every request.
    pub(crate) request_params: Option<rustpy_config::params::Declaration>,
    /// The user's bound `predict` method.
    pub(crate) predict: Py<PyAny>,
    /// Whether predict takes the `requests` argument.
    pub(crate) pass_requests: bool,
    /// The class asks for requests with different parameters in separate calls.
    pub(crate) split_by_parameters: bool,
}

impl Batched {
    /// Runs the admitted `requests` (one responder each): requests whose
    /// parameters the declaration refuses are answered here; the others are
    /// grouped and each group goes to one predict call. The report is over
    /// `requests`.
    pub(crate) fn execute<R: Responder>(
        &self,
        requests: &[&InferRequest<'_>],
        mut responders: Vec<R>,
    ) -> ExecReport {
        let spec = &self.spec;
        let mut report = ExecReport::new(requests.len());
        // Per request: the request as predict sees it (typed parameters
        // applied), or None once it has been answered here.
        let typed: Vec<Option<Cow<'_, InferRequest<'_>>>> = requests
            .iter()
            .zip(responders.iter_mut())
            .map(|(req, responder)| self.with_typed_parameters(req, responder))
            .collect();
        let valid: Vec<(usize, &InferRequest<'_>)> = typed
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_deref()?)))
            .collect();
        if valid.is_empty() {
            return report;
        }
        let groups = batch::plan_groups(spec, &valid, self.split_by_parameters);
        Python::attach(|py| {
            for group in &groups {
                let members: Vec<(usize, &InferRequest<'_>)> = group
                    .iter()
                    .filter_map(|&i| Some((i, typed[i].as_deref()?)))
                    .collect();
                self.run_group(py, &members, &mut responders, &mut report);
            }
        });
        report
    }

    /// `req` with its parameters typed by `request_parameters.json`, if the
    /// model has one; None when they are refused (answered here, with the
    /// reason, or as cancelled if the client gave up meanwhile).
    fn with_typed_parameters<'r, 'a, R: Responder>(
        &self,
        req: &'r InferRequest<'a>,
        responder: &mut R,
    ) -> Option<Cow<'r, InferRequest<'a>>> {
        let Some(decl) = &self.request_params else {
            return Some(Cow::Borrowed(req));
        };
        match crate::rules::params::apply(&self.spec.name, decl, &req.parameters) {
            Ok(params) => {
                let mut req = req.clone();
                req.parameters = params;
                Some(Cow::Owned(req))
            }
            Err(_) if responder.is_cancelled() => {
                responder.send_error(&cancelled(&self.spec));
                None
            }
            Err(e) => {
                responder.send_error(&e);
                None
            }
        }
    }

    /// One predict call for `members` (index in the batch, request).
    fn run_group<R: Responder>(
        &self,
        py: Python<'_>,
        members: &[(usize, &InferRequest<'_>)],
        responders: &mut [R],
        report: &mut ExecReport,
    ) {
        let spec = &self.spec;
        let model = spec.name.as_str();
        let group: Vec<usize> = members.iter().map(|&(i, _)| i).collect();
        let requests: Vec<&InferRequest<'_>> = members.iter().map(|&(_, r)| r).collect();
        let rows: Vec<usize> = requests.iter().map(|r| batch::rows(spec, r)).collect();

        let (args, infos) = match self.build_args(py, &requests, &rows) {
            Ok(args) => args,
            Err(e) => return fail_group(&group, responders, &e),
        };
        report.calls += 1;
        report.compute_start.get_or_insert_with(Instant::now);
        let result = self.predict.bind(py).call1(args);
        report.compute_end = Some(Instant::now());
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let e = py_error(py, &e, &format!("model '{model}': predict raised"));
                return fail_group(&group, responders, &e);
            }
        };
        let out = GroupOut {
            requests: &requests,
            group: &group,
            rows: &rows,
        };

        // The common case, a dict, needs no Python call to rule out a stream.
        let streaming = !result.is_instance_of::<PyDict>()
            && !result.is_instance_of::<PyList>()
            && runtime(py)
                .and_then(|rt| rt.is_iterator(py, &result))
                .unwrap_or(false);
        if !streaming {
            return self.answer_once(py, &result, &out, responders, report);
        }
        if !spec.decoupled {
            let e = Error::invalid_arg(format!(
                "model '{model}': predict returned a generator but the model is not decoupled; \
                 set `model_transaction_policy {{ decoupled: true }}` in config.pbtxt or return a dict"
            ));
            let _ = result.call_method0("close");
            return fail_group(&group, responders, &e);
        }
        self.stream(py, &result, &out, infos.as_ref(), responders, report);
    }

    /// What a non-streaming predict returned, checked and sent to the
    /// group's requests (one final response each).
    fn answer_once<R: Responder>(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        out: &GroupOut<'_, '_>,
        responders: &mut [R],
        report: &mut ExecReport,
    ) {
        let spec = &self.spec;
        let delivery = match self.collect_outputs(py, result, out, false) {
            Ok(d) => d,
            Err(e) => return fail_group(out.group, responders, &e),
        };
        let sent = py.detach(|| {
            // A request the client cancelled meanwhile gets no outputs.
            let active: Vec<bool> = out
                .group
                .iter()
                .map(|&i| {
                    if responders[i].is_cancelled() {
                        responders[i].send_error(&cancelled(spec));
                        false
                    } else {
                        true
                    }
                })
                .collect();
            let last = vec![true; out.group.len()];
            deliver(spec, &delivery, out, responders, &active, &last)
        });
        for (&i, sent) in out.group.iter().zip(sent) {
            if sent == Sent::Final {
                report.outcomes[i] = Outcome::Answered;
            }
        }
    }

    /// Drives a streaming (decoupled) predict: each yielded item goes out
    /// to the requests still streaming; a request ends when predict
    /// finishes it, fails, is cancelled, or the generator ends.
    fn stream<R: Responder>(
        &self,
        py: Python<'_>,
        result: &Bound<'_, PyAny>,
        out: &GroupOut<'_, '_>,
        infos: Option<&Bound<'_, PyList>>,
        responders: &mut [R],
        report: &mut ExecReport,
    ) {
        let spec = &self.spec;
        let model = spec.name.as_str();
        let group = out.group;
        let info = |k: usize| infos.and_then(|l| l.get_item(k).ok());
        let fail_alive = |responders: &mut [R], alive: &[bool], err: &Error| {
            for (k, &i) in group.iter().enumerate() {
                if alive[k] {
                    responders[i].send_error(err);
                }
            }
        };
        // Per request: still streaming (not finished, failed or cancelled).
        let mut alive: Vec<bool> = vec![true; group.len()];
        loop {
            // Stop sending to requests the client cancelled; tell predict.
            for (k, &i) in group.iter().enumerate() {
                if alive[k] && responders[i].is_cancelled() {
                    alive[k] = false;
                    responders[i].send_error(&cancelled(spec));
                    if let Some(info) = info(k) {
                        let _ = info.setattr("cancelled", true);
                    }
                }
            }
            if !alive.iter().any(|&a| a) {
                let _ = result.call_method0("close");
                return;
            }
            let item = match result.call_method0("__next__") {
                Ok(item) => item,
                Err(e) if e.is_instance_of::<PyStopIteration>(py) => break,
                Err(e) => {
                    let err = py_error(py, &e, &format!("model '{model}': predict raised"));
                    return fail_alive(responders, &alive, &err);
                }
            };
            report.compute_end = Some(Instant::now());
            // Requests predict finished with `requests[k].finish()`: this
            // response is their last.
            let finishing: Vec<bool> = (0..group.len())
                .map(|k| {
                    info(k)
                        .and_then(|info| info.getattr("_finished").ok())
                        .and_then(|f| f.extract::<bool>().ok())
                        .unwrap_or(false)
                })
                .collect();
            let delivery = match self.collect_outputs(py, &item, out, true) {
                Ok(o) => o,
                Err(e) => {
                    let _ = result.call_method0("close");
                    return fail_alive(responders, &alive, &e);
                }
            };
            let sent = py.detach(|| deliver(spec, &delivery, out, responders, &alive, &finishing));
            for (k, s) in sent.into_iter().enumerate() {
                match s {
                    Sent::Failed => alive[k] = false,
                    Sent::Final => {
                        alive[k] = false;
                        report.outcomes[group[k]] = Outcome::Answered;
                    }
                    Sent::Open | Sent::Skipped => {}
                }
            }
        }
        py.detach(|| {
            for (k, &i) in group.iter().enumerate() {
                if alive[k] {
                    responders[i].finish();
                    report.outcomes[i] = Outcome::Answered;
                }
            }
        });
    }

    /// The arguments of one predict call: the concatenated inputs (ragged
    /// ones flat or padded, missing optional ones filled with their default,
    /// plus the config's batch_input tensors) and, if predict takes them, the
    /// per-request infos (also returned, to read `finish()` back).
    #[allow(clippy::type_complexity)]
    fn build_args<'py>(
        &self,
        py: Python<'py>,
        requests: &[&InferRequest<'_>],
        rows: &[usize],
    ) -> Result<(Bound<'py, PyTuple>, Option<Bound<'py, PyList>>)> {
        let spec = &self.spec;
        let model = spec.name.as_str();
        let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing inputs"));
        let inputs = PyDict::new(py);
        for plan in batch::plan_inputs(spec, requests, rows) {
            let default = spec.ragged.default_for(plan.name).unwrap_or_default();
            let array = array_from_plan(py, model, &plan, default)?;
            set_readonly(&array);
            inputs.set_item(plan.name, array).map_err(err)?;
        }
        for bi in &spec.ragged.batch_inputs {
            let shapes: Vec<&[i64]> = requests
                .iter()
                .filter_map(|r| r.input(&bi.source))
                .map(|t| t.shape.as_slice())
                .collect();
            let t = ragged::batch_input(bi.kind, &shapes);
            let data = t.to_bytes(bi.dtype);
            let array = array_from_bytes(py, bi.dtype, &t.shape, &data)?;
            set_readonly(&array);
            inputs.set_item(&bi.target, array).map_err(err)?;
        }
        if !self.pass_requests {
            return Ok((PyTuple::new(py, [inputs.into_any()]).map_err(err)?, None));
        }
        let rt = runtime(py).map_err(err)?;
        let info_cls = rt.request_info(py);
        let infos = PyList::empty(py);
        for (req, &n) in requests.iter().zip(rows) {
            let params = params_dict(py, &req.parameters).map_err(err)?;
            let corr = correlation_to_py(py, &req.correlation_id);
            let info = info_cls
                .call1((
                    &req.id,
                    corr,
                    req.flags,
                    params,
                    n,
                    req.requested_outputs.clone(),
                ))
                .map_err(err)?;
            infos.append(info).map_err(err)?;
        }
        Ok((
            PyTuple::new(py, [inputs.into_any(), infos.clone().into_any()]).map_err(err)?,
            Some(infos),
        ))
    }

    /// What predict returned (or yielded): one dict of output name -> array
    /// for the whole batch, or a list of one dict per request (in batch
    /// order; None: nothing for that request this time, when streaming).
    fn collect_outputs(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        out: &GroupOut<'_, '_>,
        streaming: bool,
    ) -> Result<Delivery> {
        let spec = &self.spec;
        let model = spec.name.as_str();
        if let Ok(list) = value.cast::<PyList>() {
            let n = out.group.len();
            if list.len() != n {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': predict returned a list of {} items for a call of {n} requests \
                     (return one dict per request, in batch order, or one dict for the whole batch)",
                    list.len()
                )));
            }
            let mut per_request = Vec::with_capacity(n);
            for (k, item) in list.iter().enumerate() {
                if item.is_none() {
                    per_request.push(if streaming {
                        Ok(None)
                    } else {
                        Err(Error::invalid_arg(format!(
                            "model '{model}': predict returned None for request {k} (id '{}'); \
                             only a streaming predict may skip a request",
                            out.requests[k].id
                        )))
                    });
                    continue;
                }
                if !item.is_instance_of::<PyDict>() {
                    let ty = item
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                    return Err(Error::invalid_arg(format!(
                        "model '{model}': predict must return a dict of output name -> numpy array, \
                         or a list of one such dict per request, not a mix: item {k} of the returned list \
                         is {ty}, not a dict"
                    )));
                }
                let req = out.requests[k];
                let rows = spec.batching().then_some(out.rows[k]);
                per_request.push(
                    self.extract_dict(py, &item, rows, None)
                        .and_then(|outputs| {
                            check_requested(model, &outputs, req, Some(k))?;
                            Ok(Some(outputs))
                        }),
                );
            }
            return Ok(Delivery::PerRequest(per_request));
        }
        let total: usize = out.rows.iter().sum();
        let outputs = self.extract_dict(py, value, spec.batching().then_some(total), Some(out))?;
        for req in out.requests {
            check_requested(model, &outputs, req, None)?;
        }
        Ok(Delivery::Batched(outputs))
    }

    /// Checks one returned dict of output name -> array against the
    /// configuration: names, dtypes and dims, with dim 0 = `batch_rows`;
    /// batch_output targets of a whole-batch dict (`scatter` given) must
    /// instead hold exactly the elements their source input's shapes call for.
    fn extract_dict(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        batch_rows: Option<usize>,
        scatter: Option<&GroupOut<'_, '_>>,
    ) -> Result<Vec<ExtractedOutput>> {
        let spec = &self.spec;
        let model = spec.name.as_str();
        let dict = value.cast::<PyDict>().map_err(|_| {
            let ty = value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            Error::invalid_arg(format!(
                "model '{model}': predict must return a dict of output name -> numpy array \
                 (or a list of one such dict per request), got {ty}"
            ))
        })?;
        let mut outputs = Vec::with_capacity(dict.len());
        for (key, val) in dict.iter() {
            let name: String = key.extract().map_err(|_| {
                Error::invalid_arg(format!(
                    "model '{model}': predict returned a dict with a non-string key {key}"
                ))
            })?;
            let Some(out_spec) = spec.output(&name) else {
                let known: Vec<&str> = spec.outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(Error::invalid_arg(format!(
                    "model '{model}': predict returned unknown output '{name}' (the model's outputs are: {})",
                    known.join(", ")
                )));
            };
            match (scatter, spec.ragged.batch_output(&name)) {
                (Some(out), Some(bo)) => {
                    let o = extract_tensor(py, model, &name, &val, Some(out_spec.dtype))?;
                    if o.dtype != out_spec.dtype {
                        return Err(Error::invalid_arg(format!(
                            "model '{model}': output '{name}' is {} but the model config declares {}",
                            o.dtype, out_spec.dtype
                        )));
                    }
                    let shapes = out.scatter_shapes(&out_spec.dims, &bo.source);
                    let want: usize = shapes.iter().map(|s| element_count(s)).sum();
                    let got = element_count(&o.shape);
                    if got != want {
                        return Err(Error::invalid_arg(format!(
                            "model '{model}': output '{name}' (batch_output scattered with the shape of \
                             input '{}') has {got} elements (shape {}) but the requests' shapes of '{}' \
                             call for {want} ({})",
                            bo.source,
                            crate::rules::spec::fmt_shape(&o.shape),
                            bo.source,
                            shapes
                                .iter()
                                .map(|s| crate::rules::spec::fmt_shape(s))
                                .collect::<Vec<_>>()
                                .join(" + ")
                        )));
                    }
                    outputs.push(o);
                }
                _ => outputs.push(extract_output(py, model, out_spec, &val, batch_rows)?),
            }
        }
        Ok(outputs)
    }
}

/// The requests of one predict call, for cutting outputs back: `requests`,
/// their indices in the execution (`group`) and their rows, in call order.
struct GroupOut<'r, 'a> {
    requests: &'r [&'r InferRequest<'a>],
    group: &'r [usize],
    rows: &'r [usize],
}

impl GroupOut<'_, '_> {
    /// Per request: the shape of a BATCH_SCATTER_WITH_INPUT_SHAPE output.
    fn scatter_shapes(&self, dims: &[i64], source: &str) -> Vec<Vec<i64>> {
        let shapes: Vec<&[i64]> = self
            .requests
            .iter()
            .map(|r| r.input(source).map_or(&[][..], |t| t.shape.as_slice()))
            .collect();
        ragged::scatter_shapes(dims, &shapes)
    }
}

/// Outputs of one predict call (or one yield), ready to send.
enum Delivery {
    /// One dict for the whole batch, cut back by rows (or, for batch_output
    /// targets, by the source input's shapes).
    Batched(Vec<ExtractedOutput>),
    /// One dict per request (None: nothing this time), or that request's error.
    PerRequest(Vec<Result<Option<Vec<ExtractedOutput>>>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Inactive request: nothing sent.
    Skipped,
    /// A non-final response went out; the stream goes on.
    Open,
    /// The request's final response went out.
    Final,
    /// The request was failed.
    Failed,
}

/// Every output a request asked for must be there.
fn check_requested(
    model: &str,
    outputs: &[ExtractedOutput],
    req: &InferRequest<'_>,
    index: Option<usize>,
) -> Result<()> {
    for wanted in &req.requested_outputs {
        if !outputs.iter().any(|o| &o.name == wanted) {
            return Err(Error::invalid_arg(match index {
                None => format!(
                    "model '{model}': predict did not return output '{wanted}', which a request asked for"
                ),
                Some(k) => format!(
                    "model '{model}': predict's dict for request {k} (id '{}') is missing output '{wanted}', \
                     which that request asked for",
                    req.id
                ),
            }));
        }
    }
    Ok(())
}

/// Fails every request of a group with `err`.
fn fail_group<R: Responder>(group: &[usize], responders: &mut [R], err: &Error) {
    for &i in group {
        responders[i].send_error(err);
    }
}

/// Sends `slices` as one response; a failed send fails the request.
fn send_one<R: Responder>(responder: &mut R, slices: &[OutputSlice<'_>], is_final: bool) -> Sent {
    match responder.send(slices, is_final) {
        Ok(()) if is_final => Sent::Final,
        Ok(()) => Sent::Open,
        Err(e) => {
            responder.send_error(&e);
            Sent::Failed
        }
    }
}

/// Whether `req` gets output `name` (a request that names none gets all).
fn wanted(req: &InferRequest<'_>, name: &str) -> bool {
    req.requested_outputs.is_empty() || req.wants_output(name)
}

/// Sends what one call (or yield) produced to the group's `active`
/// requests; `last[k]` makes request k's response its final one (or, with
/// nothing to send, ends its stream).
fn deliver<R: Responder>(
    spec: &ModelSpec,
    delivery: &Delivery,
    out: &GroupOut<'_, '_>,
    responders: &mut [R],
    active: &[bool],
    last: &[bool],
) -> Vec<Sent> {
    match delivery {
        Delivery::PerRequest(items) => out
            .group
            .iter()
            .zip(items)
            .enumerate()
            .map(|(k, (&i, item))| {
                if !active[k] {
                    return Sent::Skipped;
                }
                match item {
                    Err(e) => {
                        responders[i].send_error(e);
                        Sent::Failed
                    }
                    Ok(None) if last[k] => {
                        responders[i].finish();
                        Sent::Final
                    }
                    Ok(None) => Sent::Open,
                    Ok(Some(outputs)) => {
                        let slices: Vec<OutputSlice<'_>> = outputs
                            .iter()
                            .filter(|o| wanted(out.requests[k], &o.name))
                            .map(|o| o.slice())
                            .collect();
                        send_one(&mut responders[i], &slices, last[k])
                    }
                }
            })
            .collect(),
        Delivery::Batched(outputs) => deliver_cut(spec, outputs, out, responders, active, last),
    }
}

/// Sends a whole-batch dict, cut back to each active request by rows (or,
/// for batch_output targets, by the source input's shapes).
fn deliver_cut<R: Responder>(
    spec: &ModelSpec,
    outputs: &[ExtractedOutput],
    out: &GroupOut<'_, '_>,
    responders: &mut [R],
    active: &[bool],
    last: &[bool],
) -> Vec<Sent> {
    let views: Vec<BatchOutput<'_>> = outputs
        .iter()
        .map(|o| BatchOutput {
            name: o.name.clone(),
            dtype: o.dtype,
            shape: o.shape.clone(),
            data: o.view_data(),
        })
        .collect();
    // Per output, per request: its shape and range of elements.
    let cuts: Vec<Vec<(Vec<i64>, std::ops::Range<usize>)>> = views
        .iter()
        .map(|v| {
            let scattered = spec.ragged.batch_output(&v.name).and_then(|bo| {
                let dims = &spec.output(&v.name)?.dims;
                Some(out.scatter_shapes(dims, &bo.source))
            });
            batch::plan_scatter(&v.shape, out.rows, spec.batching(), scattered)
        })
        .collect();
    out.group
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            if !active[k] {
                return Sent::Skipped;
            }
            let slices: Vec<OutputSlice<'_>> = views
                .iter()
                .zip(&cuts)
                .filter(|(v, _)| wanted(out.requests[k], &v.name))
                .map(|(v, cut)| {
                    let (shape, elems) = &cut[k];
                    OutputSlice::host(
                        &v.name,
                        v.dtype,
                        shape.clone(),
                        v.slice_elements(elems.clone()),
                    )
                })
                .collect();
            send_one(&mut responders[i], &slices, last[k])
        })
        .collect()
}
