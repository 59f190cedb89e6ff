//! A request's responses, worker → backend. While the request's batch runs
//! a [`Response`] carries its outputs' places in the output region (or, for
//! a view of the batch's inputs, in the input region); after its batch's
//! Done an [`InlineResponse`] carries the bytes. Errors and the end of a
//! stream are `FromWorker::Error` / `FromWorker::Finish`; the backend's
//! `ToWorker::Taken` acknowledges a response whose sender waits.

use serde::{Deserialize, Serialize};

use super::values::{params_from_wire, params_to_wire, WireOwnedTensor, WireParam, WireTensor};
use super::WireError;
use crate::engine::OutputSlice;
use crate::request::ParamValue;

/// Output tensors are placed at multiples of this in the output region.
const ALIGN: usize = 64;
/// The outputs of one response that are views of the inputs hold at most
/// this many times the input region's bytes in all (they may overlap: an
/// input returned as two outputs). The backend copies each into Triton's
/// response, so this bounds what one response makes the server allocate.
pub const ALIASED_PER_INPUT: usize = 4;

/// One response of request `request` (a wire request id); outputs are in
/// the output region, which is at least `output_len` bytes long now. Only
/// while the request's batch runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub request: usize,
    pub outputs: Vec<WireTensor>,
    pub output_len: usize,
    pub is_final: bool,
    /// Outputs (indices into `outputs`) that are views of this batch's
    /// inputs: their offset is in the input region, nothing was copied.
    /// The backend copies them from there before it reads this batch's
    /// Done, so the range stays untouched until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_input: Vec<usize>,
    /// Set: the sender waits for `ToWorker::Taken` with this token before
    /// user code may change those bytes (pb_utils inputs are writable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<u64>,
    /// The response's parameters (`InferenceResponse(parameters=...)`,
    /// python_backend r25.02).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<(String, WireParam)>,
}

/// Where a response's outputs go (worker side), before any byte is copied.
#[derive(Debug)]
pub struct OutputPlacement {
    /// Every output's place: in the output region, or (listed in
    /// `from_input`) in the input region.
    pub tensors: Vec<WireTensor>,
    pub from_input: Vec<usize>,
    /// Outputs already in the output region, where the model wrote them
    /// (arrays from `ctx.empty`): sent by their offset, not copied.
    pub written: Vec<usize>,
    /// One past the last byte used in the output region.
    pub end: usize,
}

/// Where the model may already have written outputs in the output region:
/// the address of a mapping of it, and how many bytes from its start the
/// running batch has handed out (`ctx.empty`) or pinned.
#[derive(Debug, Clone, Copy)]
pub struct WrittenOutputs {
    pub at: usize,
    pub used: usize,
}

impl OutputPlacement {
    /// Places `outputs` in the output region from `used` on. An output of at
    /// least `alias_min` bytes lying inside `input_view` (the address and
    /// length of the running batch's input mapping) is a view of the inputs
    /// (identity, a slice, a reshape): it is sent by its offset there, not
    /// copied. An output lying inside `written` is already in the output
    /// region: sent by its offset there.
    pub fn plan(
        outputs: &[OutputSlice<'_>],
        used: usize,
        input_view: Option<(usize, usize)>,
        alias_min: usize,
        written: Option<WrittenOutputs>,
    ) -> crate::error::Result<OutputPlacement> {
        let (view_at, view_len) = input_view.unwrap_or((0, 0));
        let written = written.unwrap_or(WrittenOutputs { at: 0, used: 0 });
        let mut offset = used;
        let mut tensors = Vec::with_capacity(outputs.len());
        let mut from_input = Vec::new();
        let mut in_output = Vec::new();
        // Bytes sent in place so far: views of the inputs may overlap (an
        // input returned twice, and a slice of it), but past
        // ALIASED_PER_INPUT times the mapping they are copied, so the
        // backend can hold every response to that bound.
        let mut aliased_bytes = 0usize;
        for (k, o) in outputs.iter().enumerate() {
            // Python's outputs are host memory; anything else is refused.
            let data = o.data.host()?;
            let at = data.as_ptr() as usize;
            let aliased = data.len() >= alias_min.max(1)
                && at >= view_at
                && at + data.len() <= view_at + view_len
                && aliased_bytes + data.len() <= ALIASED_PER_INPUT * view_len;
            if aliased {
                aliased_bytes += data.len();
            }
            let in_place = !data.is_empty()
                && at >= written.at
                && at + data.len() <= written.at + written.used;
            let place = if in_place {
                in_output.push(k);
                at - written.at
            } else if aliased {
                from_input.push(k);
                at - view_at
            } else {
                offset = offset.next_multiple_of(ALIGN);
                let place = offset;
                offset += data.len();
                place
            };
            tensors.push(WireTensor {
                name: o.name.to_string(),
                dtype: o.dtype.name().to_string(),
                shape: o.shape.clone(),
                offset: place,
                len: data.len(),
            });
        }
        Ok(OutputPlacement {
            tensors,
            from_input,
            written: in_output,
            end: offset,
        })
    }

    /// The outputs to copy into the output region: (offset, bytes).
    pub fn copies<'o>(
        &'o self,
        outputs: &'o [OutputSlice<'o>],
    ) -> impl Iterator<Item = (usize, &'o [u8])> + 'o {
        outputs
            .iter()
            .zip(&self.tensors)
            .enumerate()
            .filter(|(k, _)| !self.from_input.contains(k) && !self.written.contains(k))
            // `plan` refused outputs that are not host memory.
            .filter_map(|(_, (o, t))| o.data.host().ok().map(|d| (t.offset, d)))
    }
}

impl Response {
    /// Backend: the response's parameters.
    pub fn parameters(&self) -> Vec<(String, ParamValue)> {
        params_from_wire(self.parameters.clone())
    }

    /// One past the last input-region byte its outputs read.
    pub fn input_end(&self) -> usize {
        self.from_input
            .iter()
            .filter_map(|&k| self.outputs.get(k))
            .map(WireTensor::end)
            .max()
            .unwrap_or(0)
    }

    /// Backend: the outputs as slices of the regions as mapped. Pure, and
    /// linear in the frame's size. Errors: an output outside its region, of
    /// an unknown type or whose bytes do not fit its shape
    /// ([`super::check_tensor`]); a `from_input` index that names no output
    /// or one twice; outputs claiming more bytes in all than the output
    /// region holds (the worker places them side by side) or than
    /// [`ALIASED_PER_INPUT`] times the input region (views): each output
    /// is copied into Triton's response, so claims of one range over and
    /// over would multiply what the server allocates.
    pub fn resolve<'a>(
        &'a self,
        output: &'a [u8],
        input: &'a [u8],
    ) -> Result<Vec<OutputSlice<'a>>, WireError> {
        let mut in_input = vec![false; self.outputs.len()];
        for &k in &self.from_input {
            match in_input.get_mut(k) {
                Some(seen @ false) => *seen = true,
                _ => {
                    return Err(WireError::Malformed(format!(
                        "from_input names output {k} of {} (or twice)",
                        self.outputs.len()
                    )))
                }
            }
        }
        let (mut from_output, mut from_input) = (0usize, 0usize);
        self.outputs
            .iter()
            .zip(in_input)
            .map(|(t, aliased)| {
                let (region, what, total, most) = match aliased {
                    true => (
                        input,
                        "input region",
                        &mut from_input,
                        ALIASED_PER_INPUT.saturating_mul(input.len()),
                    ),
                    false => (output, "output region", &mut from_output, output.len()),
                };
                let data = t.bytes_in(region, what)?;
                *total += data.len();
                if *total > most {
                    return Err(WireError::Overlap {
                        region: what,
                        total: *total,
                        size: most,
                    });
                }
                let dtype = t.data_type()?;
                super::check_tensor(&t.name, dtype, &t.shape, data)?;
                Ok(OutputSlice::host(&t.name, dtype, t.shape.clone(), data))
            })
            .collect()
    }
}

/// A response sent after its batch's Done (a decoupled request a user
/// thread answers later): the outputs travel inline, since the output
/// region belongs to the batch running now.
#[derive(Debug, Serialize, Deserialize)]
pub struct InlineResponse {
    pub request: usize,
    pub outputs: Vec<WireOwnedTensor>,
    pub is_final: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<(String, WireParam)>,
}

impl InlineResponse {
    pub fn new(
        request: usize,
        outputs: &[OutputSlice<'_>],
        parameters: &[(String, ParamValue)],
        is_final: bool,
    ) -> crate::error::Result<InlineResponse> {
        Ok(InlineResponse {
            request,
            outputs: outputs
                .iter()
                .map(WireOwnedTensor::try_from)
                .collect::<crate::error::Result<_>>()?,
            is_final,
            parameters: params_to_wire(parameters),
        })
    }

    /// Backend: the response's parameters.
    pub fn parameters(&self) -> Vec<(String, ParamValue)> {
        params_from_wire(self.parameters.clone())
    }

    /// Backend: the outputs, borrowed from the frame.
    pub fn resolve(&self) -> Result<Vec<OutputSlice<'_>>, WireError> {
        self.outputs
            .iter()
            .map(WireOwnedTensor::as_output)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_from_worker, encode_frame, FromWorker};
    use super::*;
    use crate::DataType;

    fn out<'a>(name: &'a str, data: &'a [u8]) -> OutputSlice<'a> {
        OutputSlice::host(name, DataType::Uint8, vec![data.len() as i64], data)
    }

    /// Response parameters of every type (python_backend r25.02).
    fn params() -> Vec<(String, ParamValue)> {
        vec![
            ("s".into(), ParamValue::String("text".into())),
            ("i".into(), ParamValue::Int(-7)),
            ("b".into(), ParamValue::Bool(true)),
            ("d".into(), ParamValue::Double(0.5)),
        ]
    }

    fn sent(frame: FromWorker) -> FromWorker {
        decode_from_worker(&encode_frame(&frame).unwrap()).unwrap()
    }

    #[test]
    fn a_response_placed_and_sent_resolves_to_the_same_outputs() {
        let input = vec![9u8; 256];
        let (fresh, other) = ([1u8; 100], [2u8; 7]);
        // OUT1 is a view of bytes 128..192 of the batch's inputs.
        let outputs = [
            out("OUT0", &fresh),
            out("OUT1", &input[128..192]),
            out("OUT2", &other),
        ];
        let view = Some((input.as_ptr() as usize, input.len()));
        let plan = OutputPlacement::plan(&outputs, 10, view, 1, None).unwrap();
        assert_eq!(plan.from_input, [1]);
        assert_eq!(plan.tensors[1].offset, 128);
        assert_eq!(
            plan.tensors[0].offset, 64,
            "aligned after the 10 bytes used"
        );
        let mut region = vec![0u8; plan.end];
        for (at, bytes) in plan.copies(&outputs) {
            region[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let FromWorker::Response(response) = sent(FromWorker::Response(Response {
            request: 5,
            outputs: plan.tensors,
            output_len: region.len(),
            is_final: true,
            from_input: plan.from_input,
            taken: Some(2),
            parameters: params_to_wire(&params()),
        })) else {
            panic!("not a Response");
        };
        assert_eq!((response.request, response.taken), (5, Some(2)));
        assert_eq!(response.parameters(), params());
        assert_eq!(response.input_end(), 192);
        let got = response.resolve(&region, &input).unwrap();
        for (g, o) in got.iter().zip(&outputs) {
            assert_eq!(
                (g.name, g.dtype, &g.shape, g.data.host().unwrap()),
                (o.name, o.dtype, &o.shape, o.data.host().unwrap())
            );
        }
    }

    #[test]
    fn outputs_already_in_the_output_region_are_sent_where_they_are() {
        // A stand-in for the output region: the model wrote OUT0 into the
        // 100 bytes handed out at its start (ctx.empty); OUT1 is elsewhere.
        let mut region = vec![0u8; 4096];
        region[..100].fill(7);
        let other = vec![3u8; 50];
        let written = WrittenOutputs {
            at: region.as_ptr() as usize,
            used: 100,
        };
        let (first, _) = region.split_at(100);
        let outputs = [out("OUT0", &first[20..100]), out("OUT1", &other)];
        let plan = OutputPlacement::plan(&outputs, 100, None, 1, Some(written)).unwrap();
        assert_eq!(plan.written, [0]);
        assert_eq!(plan.tensors[0].offset, 20, "where it lies, not copied");
        assert_eq!(plan.tensors[1].offset, 128, "copied after what is in use");
        let copies: Vec<_> = plan.copies(&outputs).map(|(at, b)| (at, b.len())).collect();
        assert_eq!(copies, [(128, 50)]);
        // Beyond what the batch handed out: copied like any array.
        let beyond = [out("OUT", &region[90..200])];
        let plan = OutputPlacement::plan(&beyond, 100, None, 1, Some(written)).unwrap();
        assert!(plan.written.is_empty());
    }

    #[test]
    fn small_views_of_the_inputs_are_copied_below_the_alias_minimum() {
        let input = vec![9u8; 256];
        let outputs = [out("OUT", &input[..16])];
        let view = Some((input.as_ptr() as usize, input.len()));
        let plan = |view, min| OutputPlacement::plan(&outputs, 0, view, min, None).unwrap();
        assert!(plan(view, 64).from_input.is_empty());
        assert_eq!(plan(view, 16).from_input, [0]);
        assert!(plan(None, 1).from_input.is_empty());
    }

    #[test]
    fn a_response_claiming_bytes_outside_its_regions_is_an_error() {
        let response = |offset, len: usize, from_input: Vec<usize>, dtype: &str| Response {
            request: 0,
            outputs: vec![WireTensor {
                name: "OUT".into(),
                dtype: dtype.into(),
                shape: vec![len as i64],
                offset,
                len,
            }],
            output_len: 0,
            is_final: true,
            from_input,
            taken: None,
            parameters: Vec::new(),
        };
        let (output, input) = ([0u8; 64], [0u8; 32]);
        assert!(response(0, 64, vec![], "UINT8")
            .resolve(&output, &input)
            .is_ok());
        for r in [
            response(0, 65, vec![], "UINT8"),
            response(0, 64, vec![0], "UINT8"),
            response(usize::MAX, 1, vec![], "UINT8"),
            response(1, usize::MAX, vec![0], "UINT8"),
        ] {
            assert!(matches!(
                r.resolve(&output, &input),
                Err(WireError::OutOfRange { .. })
            ));
        }
        assert!(matches!(
            response(0, 1, vec![], "NOPE").resolve(&output, &input),
            Err(WireError::UnknownDtype(_))
        ));
        // An index past the outputs names nothing; the end saturates.
        assert_eq!(
            response(usize::MAX, 9, vec![0, 7], "UINT8").input_end(),
            usize::MAX
        );
        // ... and resolving it is an error, as is an output named twice.
        for from_input in [vec![7], vec![0, 0]] {
            assert!(matches!(
                response(0, 8, from_input, "UINT8").resolve(&output, &input),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn outputs_must_fit_their_shapes_and_claim_no_more_than_their_regions_hold() {
        let tensor = |shape: Vec<i64>, dtype: &str, offset, len| WireTensor {
            name: "O".into(),
            dtype: dtype.into(),
            shape,
            offset,
            len,
        };
        let response = |outputs, from_input| Response {
            request: 0,
            outputs,
            output_len: 0,
            is_final: true,
            from_input,
            taken: None,
            parameters: vec![],
        };
        let (output, mut input) = ([0u8; 64], [0u8; 32]);
        // Shapes: the bytes must be exactly what the shape says.
        for (shape, dtype, len, ok) in [
            (vec![2, 2], "FP32", 16, true),
            (vec![3], "FP32", 16, false),
            (vec![-1], "UINT8", 1, false),
            (vec![i64::MAX, i64::MAX], "UINT8", 1, false),
            (vec![], "INT64", 8, true),
            (vec![0, 5], "FP64", 0, true),
        ] {
            let r = response(vec![tensor(shape.clone(), dtype, 0, len)], vec![]);
            assert_eq!(
                r.resolve(&output, &input).is_ok(),
                ok,
                "{shape:?} {dtype} {len}"
            );
        }
        // BYTES: the element lengths must walk the bytes exactly.
        input[..4].copy_from_slice(&3u32.to_le_bytes());
        input[4..7].copy_from_slice(b"abc");
        input[7..11].copy_from_slice(&0u32.to_le_bytes());
        for (shape, len, ok) in [
            (vec![2], 11, true),
            (vec![1], 11, false),
            (vec![3], 11, false),
            (vec![2], 12, false),
            (vec![1], 6, false),
        ] {
            let r = response(vec![tensor(shape.clone(), "BYTES", 0, len)], vec![0]);
            assert_eq!(r.resolve(&output, &input).is_ok(), ok, "{shape:?} {len}");
        }
        // The same output range claimed twice: more than the region holds.
        let twice = response(
            vec![
                tensor(vec![40], "UINT8", 0, 40),
                tensor(vec![40], "UINT8", 0, 40),
            ],
            vec![],
        );
        assert!(matches!(
            twice.resolve(&output, &input),
            Err(WireError::Overlap { .. })
        ));
        // Views of the inputs may overlap, up to 4 times the region.
        let views = |n| response(vec![tensor(vec![32], "UINT8", 0, 32); n], (0..n).collect());
        assert!(views(4).resolve(&output, &input).is_ok());
        assert!(matches!(
            views(5).resolve(&output, &input),
            Err(WireError::Overlap { .. })
        ));
    }

    #[test]
    fn views_of_the_inputs_go_in_place_up_to_their_bound_and_are_copied_past_it() {
        let input = vec![9u8; 256];
        let outputs = [
            out("A", &input[..]),
            out("B", &input[..]),
            out("C", &input[64..192]),
            out("D", &input[..]),
            out("E", &input[..]),
            out("F", &input[128..]),
        ];
        let view = Some((input.as_ptr() as usize, input.len()));
        let plan = OutputPlacement::plan(&outputs, 0, view, 1, None).unwrap();
        // 256 + 256 + 128 + 256 = 896; E (256 more) would pass 4 x 256,
        // F (128) still fits.
        assert_eq!(plan.from_input, [0, 1, 2, 3, 5]);
        let mut region = vec![0u8; plan.end];
        for (at, bytes) in plan.copies(&outputs) {
            region[at..at + bytes.len()].copy_from_slice(bytes);
        }
        let response = Response {
            request: 0,
            outputs: plan.tensors,
            output_len: region.len(),
            is_final: true,
            from_input: plan.from_input,
            taken: None,
            parameters: vec![],
        };
        let got = response.resolve(&region, &input).unwrap();
        for (g, o) in got.iter().zip(&outputs) {
            assert_eq!(
                (g.name, g.data.host().unwrap()),
                (o.name, o.data.host().unwrap())
            );
        }
    }

    #[test]
    fn an_inline_response_round_trips() {
        let bytes = [4u8; 12];
        let outputs = [out("A", &bytes)];
        let FromWorker::InlineResponse(inline) = sent(FromWorker::InlineResponse(
            InlineResponse::new(3, &outputs, &params(), false).unwrap(),
        )) else {
            panic!("not an InlineResponse");
        };
        assert_eq!((inline.request, inline.is_final), (3, false));
        assert_eq!(inline.parameters(), params());
        let FromWorker::InlineResponse(bare) = sent(FromWorker::InlineResponse(
            InlineResponse::new(3, &outputs, &[], true).unwrap(),
        )) else {
            panic!("not an InlineResponse");
        };
        assert!(bare.parameters().is_empty());
        let got = inline.resolve().unwrap();
        assert_eq!(
            (got[0].name, got[0].data.host().unwrap()),
            ("A", &bytes[..])
        );
        let mut bad = inline;
        bad.outputs[0].dtype = "NOPE".into();
        assert!(bad.resolve().is_err());
    }
}
