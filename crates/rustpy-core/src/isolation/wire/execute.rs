//! A batch: the backend lays every request's inputs out in the input region
//! and sends [`Execute`] with their offsets; the worker reads them back as
//! [`InferRequest`]s viewing that region, runs the batch and answers with
//! [`Done`]. Request ids on the wire name a request of a batch.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::values::{params_from_wire, params_to_wire, WireCorrelation, WireParam, WireTensor};
use super::WireError;
use crate::engine::{ExecReport, Outcome};
use crate::request::{InferRequest, InputTensor};

/// A request's id on the wire: its batch number above these bits, its index
/// in the batch below, so a response that comes after its batch's Done
/// still finds its request.
pub const REQUEST_BITS: u32 = 24;

pub fn request_id(batch: u64, index: usize) -> usize {
    ((batch as usize) << REQUEST_BITS) | index
}

/// The index in its batch of the request with wire id `id`.
pub fn request_index(id: usize) -> usize {
    id & ((1 << REQUEST_BITS) - 1)
}

/// Inputs are placed at multiples of this in the input region.
const ALIGN: usize = 64;

/// One batch: every request's inputs are in the input region, which is at
/// least `input_len` bytes long now.
#[derive(Debug, Serialize, Deserialize)]
pub struct Execute {
    pub input_len: usize,
    pub requests: Vec<WireRequest>,
    /// This batch's number; [`Done`] pins and releases batches by it.
    #[serde(default)]
    pub batch: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRequest {
    pub id: String,
    pub correlation_id: WireCorrelation,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<WireTensor>,
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, WireParam)>,
}

/// How a batch's inputs lie in the input region: input by input, every
/// request's tensor of one input back to back in batch order, so the
/// worker's gather of an input is a view of one range (no copy). Each
/// input's run starts aligned.
pub struct InputLayout<'r> {
    /// Input names in order of first appearance.
    names: Vec<&'r str>,
    /// Bytes the batch needs from its start.
    pub size: usize,
}

impl<'r> InputLayout<'r> {
    pub fn of(requests: &[&'r InferRequest<'_>]) -> InputLayout<'r> {
        let mut names: Vec<&str> = Vec::new();
        for r in requests {
            for t in &r.inputs {
                if !names.contains(&t.name.as_str()) {
                    names.push(&t.name);
                }
            }
        }
        let mut size = 0usize;
        for name in &names {
            size = size.next_multiple_of(ALIGN);
            for r in requests {
                size += r
                    .inputs
                    .iter()
                    .filter(|t| t.name == *name)
                    .map(|t| t.byte_size())
                    .sum::<usize>();
            }
        }
        InputLayout { names, size }
    }

    /// Backend: writes the batch's bytes from `base` through `write(offset,
    /// bytes)` (at most `base + size` bytes in all) and returns the
    /// requests as they go on the wire.
    pub fn write(
        &self,
        requests: &[&InferRequest<'_>],
        base: usize,
        mut write: impl FnMut(usize, &[u8]),
    ) -> Vec<WireRequest> {
        let mut placed: Vec<Vec<Option<WireTensor>>> = requests
            .iter()
            .map(|r| vec![None; r.inputs.len()])
            .collect();
        let mut offset = base;
        for name in &self.names {
            offset = offset.next_multiple_of(ALIGN);
            for (r, slots) in requests.iter().zip(placed.iter_mut()) {
                for (t, slot) in r.inputs.iter().zip(slots.iter_mut()) {
                    // A second tensor of one name in one request goes later
                    // (its own slot), as before.
                    if t.name != *name || slot.is_some() {
                        continue;
                    }
                    let start = offset;
                    for chunk in &t.chunks {
                        write(offset, chunk);
                        offset += chunk.len();
                    }
                    *slot = Some(WireTensor {
                        name: t.name.clone(),
                        dtype: t.dtype.name().to_string(),
                        shape: t.shape.clone(),
                        offset: start,
                        len: offset - start,
                    });
                }
            }
        }
        requests
            .iter()
            .zip(placed)
            .map(|(r, slots)| WireRequest {
                id: r.id.clone(),
                correlation_id: (&r.correlation_id).into(),
                flags: r.flags,
                timeout_us: r.timeout_us,
                inputs: slots.into_iter().flatten().collect(),
                requested_outputs: r.requested_outputs.clone(),
                parameters: params_to_wire(&r.parameters),
            })
            .collect()
    }
}

impl WireRequest {
    /// Worker: the request, its inputs viewing `region` (the input region
    /// as mapped). Pure: an input outside the region or of an unknown type
    /// is an error.
    pub fn to_request(self, region: &[u8]) -> Result<InferRequest<'_>, WireError> {
        let inputs = self
            .inputs
            .into_iter()
            .map(|t| {
                Ok(InputTensor {
                    dtype: t.data_type()?,
                    chunks: vec![t.bytes_in(region, "input region")?],
                    name: t.name,
                    shape: t.shape,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        Ok(InferRequest {
            id: self.id,
            correlation_id: self.correlation_id.into(),
            flags: self.flags,
            timeout_us: self.timeout_us,
            inputs,
            requested_outputs: self.requested_outputs,
            parameters: params_from_wire(self.parameters),
        })
    }
}

/// `execute` returned (user threads may still answer decoupled requests).
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub ok: Vec<bool>,
    pub rows: Vec<usize>,
    pub calls: usize,
    /// Nanoseconds since the worker received the batch.
    pub compute_ns: Option<(u64, u64)>,
    /// Python still holds views of this batch's inputs: the backend must
    /// not write into its range until the worker releases it.
    #[serde(default)]
    pub pinned: bool,
    /// Earlier pinned batches whose views Python has freed since.
    #[serde(default)]
    pub released: Vec<u64>,
    /// Requests (indices in the batch) the model asked to reschedule
    /// (`set_release_flags(RESCHEDULE)`): unanswered, released with
    /// Triton's RESCHEDULE flag.
    #[serde(default)]
    pub rescheduled: Vec<usize>,
}

impl Done {
    /// Worker: the Done of a batch that ran, received at `start`.
    pub fn after(report: ExecReport, start: Instant, pinned: bool, released: Vec<u64>) -> Done {
        let ns =
            |t: Option<Instant>| t.map(|t| t.saturating_duration_since(start).as_nanos() as u64);
        Done {
            ok: report.outcomes.iter().map(|o| o.succeeded()).collect(),
            compute_ns: ns(report.compute_start).zip(ns(report.compute_end)),
            rescheduled: report
                .outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| **o == Outcome::Rescheduled)
                .map(|(i, _)| i)
                .collect(),
            rows: report.rows,
            calls: report.calls,
            pinned,
            released,
        }
    }

    /// Worker: the Done of a batch of `n` requests that all failed before
    /// user code ran.
    pub fn failed(n: usize, released: Vec<u64>) -> Done {
        Done {
            ok: vec![false; n],
            rows: vec![0; n],
            calls: 0,
            compute_ns: None,
            pinned: false,
            released,
            rescheduled: Vec::new(),
        }
    }

    /// Backend: the outcomes, rows and calls into `report` (of the batch's
    /// size); a list of another length is ignored, leaving the report's.
    pub fn fill(&self, report: &mut ExecReport) {
        let n = report.outcomes.len();
        if self.ok.len() == n {
            report.outcomes = self
                .ok
                .iter()
                .map(|&ok| {
                    if ok {
                        Outcome::Answered
                    } else {
                        Outcome::Failed
                    }
                })
                .collect();
        }
        if self.rows.len() == n {
            report.rows.clone_from(&self.rows);
        }
        report.calls = self.calls;
    }

    /// Backend: the rescheduled requests that exist in a batch of `n`.
    pub fn rescheduled_in(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.rescheduled.iter().copied().filter(move |&i| i < n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_to_worker, encode_frame, ToWorker};
    use super::*;
    use crate::request::{CorrelationId, ParamValue};
    use crate::DataType;

    fn input<'a>(name: &str, chunks: Vec<&'a [u8]>) -> InputTensor<'a> {
        let len: usize = chunks.iter().map(|c| c.len()).sum();
        InputTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape: vec![1, len as i64],
            chunks,
        }
    }

    #[test]
    fn a_batch_laid_out_and_sent_reads_back_as_the_same_requests() {
        let (a, b, c) = ([1u8; 10], [2u8; 3], [3u8; 5]);
        let first = InferRequest {
            id: "r0".into(),
            correlation_id: CorrelationId::Int(4),
            flags: 1,
            timeout_us: 9,
            inputs: vec![input("X", vec![&a[..4], &a[4..]]), input("Y", vec![&b])],
            requested_outputs: vec!["OUT".into()],
            parameters: vec![("p".into(), ParamValue::Double(1.5))],
        };
        let second = InferRequest {
            id: "r1".into(),
            inputs: vec![input("X", vec![&c])],
            ..Default::default()
        };
        let requests = [&first, &second];
        let layout = InputLayout::of(&requests);
        let base = 4096;
        let mut region = vec![0u8; base + layout.size];
        let wire = layout.write(&requests, base, |at, bytes| {
            region[at..at + bytes.len()].copy_from_slice(bytes)
        });
        // X of both requests back to back, then Y aligned.
        assert_eq!(wire[0].inputs[0].offset, base);
        assert_eq!(wire[1].inputs[0].offset, base + 10);
        assert_eq!(wire[0].inputs[1].offset, base + 64);
        let frame = encode_frame(&ToWorker::Execute(Execute {
            input_len: region.len(),
            requests: wire,
            batch: 3,
        }))
        .unwrap();
        let ToWorker::Execute(exec) = decode_to_worker(&frame).unwrap() else {
            panic!("not an Execute");
        };
        assert_eq!(exec.batch, 3);
        let got: Vec<InferRequest> = exec
            .requests
            .into_iter()
            .map(|r| r.to_request(&region).unwrap())
            .collect();
        for (got, sent) in got.iter().zip(requests) {
            assert_eq!(got.id, sent.id);
            assert_eq!(got.correlation_id, sent.correlation_id);
            assert_eq!((got.flags, got.timeout_us), (sent.flags, sent.timeout_us));
            assert_eq!(got.requested_outputs, sent.requested_outputs);
            assert_eq!(got.parameters, sent.parameters);
            assert_eq!(got.inputs.len(), sent.inputs.len());
            for (g, s) in got.inputs.iter().zip(&sent.inputs) {
                assert_eq!((&g.name, g.dtype, &g.shape), (&s.name, s.dtype, &s.shape));
                assert_eq!(g.contiguous(), s.contiguous());
            }
        }
    }

    #[test]
    fn an_input_outside_the_region_or_of_an_unknown_type_is_an_error() {
        let request = |offset, len, dtype: &str| WireRequest {
            id: String::new(),
            correlation_id: WireCorrelation::None,
            flags: 0,
            timeout_us: 0,
            inputs: vec![WireTensor {
                name: "X".into(),
                dtype: dtype.into(),
                shape: vec![len as i64],
                offset,
                len,
            }],
            requested_outputs: vec![],
            parameters: vec![],
        };
        let region = [0u8; 128];
        assert!(request(64, 64, "UINT8").to_request(&region).is_ok());
        for (offset, len) in [(65, 64), (usize::MAX, 1), (0, usize::MAX)] {
            assert!(matches!(
                request(offset, len, "UINT8").to_request(&region),
                Err(WireError::OutOfRange { .. })
            ));
        }
        assert!(matches!(
            request(0, 1, "COMPLEX").to_request(&region),
            Err(WireError::UnknownDtype(_))
        ));
    }

    #[test]
    fn done_round_trips_and_only_fits_a_batch_of_its_size() {
        let mut report = ExecReport::new(3);
        report.outcomes = vec![Outcome::Answered, Outcome::Failed, Outcome::Rescheduled];
        report.rows = vec![2, 0, 1];
        report.calls = 1;
        let done = Done::after(report, Instant::now(), true, vec![5]);
        let frame = encode_frame(&super::super::FromWorker::Done(done)).unwrap();
        let super::super::FromWorker::Done(done) =
            super::super::decode_from_worker(&frame).unwrap()
        else {
            panic!("not a Done");
        };
        assert_eq!((done.pinned, &done.released), (true, &vec![5]));
        let mut back = ExecReport::new(3);
        done.fill(&mut back);
        // A rescheduled request succeeded; the backend marks it from the list.
        assert_eq!(
            back.outcomes,
            [Outcome::Answered, Outcome::Failed, Outcome::Answered]
        );
        assert_eq!((back.rows, back.calls), (vec![2, 0, 1], 1));
        assert_eq!(done.rescheduled_in(3).collect::<Vec<_>>(), [2]);
        // A worker claiming other sizes or indices changes nothing it should not.
        let mut short = ExecReport::new(2);
        done.fill(&mut short);
        assert_eq!(short.outcomes, [Outcome::Failed, Outcome::Failed]);
        assert_eq!(done.rescheduled_in(2).count(), 0);
        let failed = Done::failed(2, vec![]);
        assert_eq!((failed.ok, failed.rows), (vec![false; 2], vec![0; 2]));
    }

    #[test]
    fn request_ids_carry_batch_and_index() {
        let id = request_id(7, 12);
        assert_eq!(request_index(id), 12);
        assert_eq!(id >> REQUEST_BITS, 7);
    }
}
