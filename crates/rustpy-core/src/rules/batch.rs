//! Batch assembly, without Python: request validation, which requests may
//! share one call ([`plan_groups`]), how each input of a call is assembled
//! ([`plan_inputs`]) and how each output is cut back to its requests
//! ([`plan_scatter`]). The Python side only allocates and copies following
//! these plans.
//!
//! The rule (documented in the README): requests are concatenated along dim 0
//! only when they carry the same set of inputs with the same dtypes and the
//! same non-batch dims (and, for models that ask for it, equal parameters).
//! Anything else is split into separate calls, never failed. A request that
//! does not fit the model's configuration fails alone.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::rules::bytes;
use crate::rules::dtype::DataType;
use crate::rules::ragged::{PadPlan, RaggedLayout};
use crate::rules::request::{element_count, InferRequest, InputTensor};
use crate::rules::spec::{dims_match, fmt_shape, ModelSpec};

/// Checks a request against the model configuration and returns the number of
/// batch rows it contributes (1 for models without batching).
pub fn validate_request(spec: &ModelSpec, req: &InferRequest<'_>) -> Result<usize> {
    let model = &spec.name;
    let mut rows: Option<(usize, &str)> = None;
    for input in &req.inputs {
        // Device memory is refused before anything reads it.
        for buffer in &input.buffers {
            buffer
                .kind()
                .require_host()
                .map_err(|e| e.context(format!("model '{model}': input '{}'", input.name)))?;
        }
        let Some(ts) = spec.input(&input.name) else {
            let known: Vec<&str> = spec.inputs.iter().map(|t| t.name.as_str()).collect();
            return Err(Error::invalid_arg(format!(
                "model '{model}': unknown input '{}' (the model's inputs are: {})",
                input.name,
                known.join(", ")
            )));
        };
        if input.dtype != ts.dtype {
            return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' has data type {} but the model expects {}",
                input.name, input.dtype, ts.dtype
            )));
        }
        let item_shape = if spec.batching() {
            let Some((&batch, item)) = input.shape.split_first() else {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': input '{}' has shape [] but the model batches (expected [batch]+{})",
                    input.name,
                    fmt_shape(&ts.dims)
                )));
            };
            let batch = usize::try_from(batch).unwrap_or(0);
            if batch == 0 || batch > spec.max_batch_size {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': input '{}' has batch size {batch}, outside 1..={}",
                    input.name, spec.max_batch_size
                )));
            }
            match rows {
                Some((r, other)) if r != batch => {
                    return Err(Error::invalid_arg(format!(
                        "model '{model}': input '{}' has batch size {batch} but input '{other}' has {r}",
                        input.name
                    )))
                }
                _ => rows = Some((batch, &input.name)),
            }
            item
        } else {
            &input.shape[..]
        };
        if !dims_match(&ts.dims, item_shape) {
            let expected = if spec.batching() {
                format!("[batch]+{}", fmt_shape(&ts.dims))
            } else {
                fmt_shape(&ts.dims)
            };
            return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' has shape {} but the model expects {expected}",
                input.name,
                fmt_shape(&input.shape)
            )));
        }
        if input.shape.iter().any(|&d| d < 0) {
            return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' has a negative dimension in shape {}",
                input.name,
                fmt_shape(&input.shape)
            )));
        }
        // The shape is the client's claim: its size may overflow (in 64 bits
        // [1, 2^62+1] floats "need" 4 bytes), so count with checked arithmetic.
        let count = checked_element_count(&input.shape);
        let bytes_needed =
            count.and_then(|n| n.checked_mul(input.dtype.element_size().unwrap_or(1)));
        let (Some(count), Some(bytes_needed)) = (count, bytes_needed) else {
            return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' has shape {}, whose size overflows",
                input.name,
                fmt_shape(&input.shape)
            )));
        };
        if input.dtype.element_size().is_some() {
            let want = bytes_needed;
            if input.byte_size() != want {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': input '{}' carries {} bytes but shape {} of {} needs {want}",
                    input.name,
                    input.byte_size(),
                    fmt_shape(&input.shape),
                    input.dtype
                )));
            }
        } else {
            bytes::decode(&input.contiguous()?, count)
                .map_err(|e| e.context(format!("model '{model}': input '{}'", input.name)))?;
        }
    }
    for ts in spec.inputs.iter().filter(|t| !t.optional) {
        if req.input(&ts.name).is_none() {
            return Err(Error::invalid_arg(format!(
                "model '{model}': missing required input '{}'",
                ts.name
            )));
        }
    }
    for name in &req.requested_outputs {
        if spec.output(name).is_none() {
            return Err(Error::invalid_arg(format!(
                "model '{model}': unknown output '{name}' requested"
            )));
        }
    }
    Ok(rows.map_or(1, |(r, _)| r))
}

/// The batch rows an admitted request contributes: dim 0 of its inputs when
/// the model batches (admission checked that they agree), else 1.
pub fn rows(spec: &ModelSpec, req: &InferRequest<'_>) -> usize {
    if !spec.batching() {
        return 1;
    }
    req.inputs
        .first()
        .and_then(|t| t.shape.first())
        .and_then(|&d| usize::try_from(d).ok())
        .unwrap_or(1)
}

/// The number of elements of a shape without negative dims, or None if it
/// does not fit in a usize (any zero dim makes it 0).
fn checked_element_count(shape: &[i64]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// Splits requests (indices into `reqs`) into groups that can be concatenated.
/// Groups keep the order in which their first request arrived, and requests
/// keep their order within a group.
pub fn plan_groups(
    spec: &ModelSpec,
    reqs: &[(usize, &InferRequest<'_>)],
    split_by_parameters: bool,
) -> Vec<Vec<usize>> {
    if !spec.batching() {
        return reqs.iter().map(|(i, _)| vec![*i]).collect();
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (idx, req) in reqs {
        let key = group_key(spec, req, split_by_parameters);
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(*idx);
    }
    order
        .into_iter()
        .map(|k| groups.remove(&k).unwrap_or_default())
        .collect()
}

fn group_key(spec: &ModelSpec, req: &InferRequest<'_>, split_by_parameters: bool) -> String {
    let mut parts: Vec<String> = req
        .inputs
        .iter()
        // An optional input with a default is filled for the requests that
        // omit it (its dims are fixed), so its presence does not split.
        .filter(|i| spec.ragged.default_for(&i.name).is_none())
        .map(|i| {
            if spec.ragged.is_ragged(&i.name) {
                // Ragged inputs batch whatever their shapes (same rank).
                format!("{}:{}:rank{}", i.name, i.dtype, i.shape.len())
            } else {
                format!(
                    "{}:{}:{:?}",
                    i.name,
                    i.dtype,
                    &i.shape[1.min(i.shape.len())..]
                )
            }
        })
        .collect();
    parts.sort();
    if split_by_parameters {
        let mut params: Vec<String> = req
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={}", v.key()))
            .collect();
        params.sort();
        parts.push(format!("params[{}]", params.join(",")));
    }
    parts.join("|")
}

/// The BYTES elements of several requests' tensors, in batch order. Elements
/// borrow the request's buffer unless it arrived in several buffers.
pub fn gather_bytes<'a>(tensors: &[&InputTensor<'a>]) -> Result<Vec<Cow<'a, [u8]>>> {
    let mut out = Vec::new();
    for t in tensors {
        let n = t.element_count();
        match t.host_chunks()?.as_slice() {
            [one] => out.extend(bytes::decode(one, n)?.into_iter().map(Cow::Borrowed)),
            many => {
                let joined = many.concat();
                out.extend(
                    bytes::decode(&joined, n)?
                        .into_iter()
                        .map(|e| Cow::Owned(e.to_vec())),
                );
            }
        }
    }
    Ok(out)
}

/// Row ranges of each request in the concatenated batch.
pub fn row_ranges(batch_sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    batch_sizes
        .iter()
        .map(|&n| {
            let r = start..start + n;
            start += n;
            r
        })
        .collect()
}

/// Shape of the concatenation of tensors whose shapes differ only in dim 0.
pub fn concat_shape(shapes: &[&[i64]]) -> Vec<i64> {
    let mut shape = shapes.first().map(|s| s.to_vec()).unwrap_or_default();
    if let Some(first) = shape.first_mut() {
        *first = shapes.iter().map(|s| s.first().copied().unwrap_or(0)).sum();
    }
    shape
}

/// Where one request's part of a call's input comes from.
#[derive(Debug)]
pub enum Source<'r, 'a> {
    /// The request's own tensor.
    Tensor(&'r InputTensor<'a>),
    /// The request omits this optional input: `elements` elements of the
    /// input's configured default value.
    Default { elements: usize },
}

/// How the elements of a call's input are laid out in its array.
#[derive(Debug)]
pub enum Layout {
    /// The sources' elements one after the other.
    Concat,
    /// A ragged input padded to its longest item (zeros, or empty BYTES).
    Padded(PadPlan),
}

/// How one input of a predict call is assembled from its requests, in call
/// order: the array's shape and what goes into it. `python::numpy_io` only
/// allocates the array and copies following this.
#[derive(Debug)]
pub struct InputPlan<'r, 'a> {
    pub name: &'r str,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub layout: Layout,
    pub sources: Vec<Source<'r, 'a>>,
}

/// The plans of every input a call passes to predict, in the config's
/// order. `requests` are the call's requests (one group of
/// [`plan_groups`]) and `rows` their batch rows. An input no request
/// carries (and without a default) is left out; requests of one group carry
/// the same inputs except optional ones with a default, whose missing rows
/// are filled.
pub fn plan_inputs<'r, 'a>(
    spec: &'r ModelSpec,
    requests: &[&'r InferRequest<'a>],
    rows: &[usize],
) -> Vec<InputPlan<'r, 'a>> {
    let mut plans = Vec::with_capacity(spec.inputs.len());
    for ts in &spec.inputs {
        let name = ts.name.as_str();
        let present: Vec<Option<&'r InputTensor<'a>>> =
            requests.iter().map(|r| r.input(name)).collect();
        let count = present.iter().flatten().count();
        let default = spec.ragged.default_for(name);
        if count < requests.len() {
            let Some(_) = default else { continue };
            // Missing rows hold the default: the input's dims are fixed.
            let item = element_count(&ts.dims);
            let total: usize = rows.iter().sum();
            let mut shape = if spec.batching() {
                vec![total as i64]
            } else {
                Vec::new()
            };
            shape.extend_from_slice(&ts.dims);
            let sources = present
                .iter()
                .zip(rows)
                .map(|(p, &n)| match p {
                    Some(t) => Source::Tensor(t),
                    None => Source::Default { elements: n * item },
                })
                .collect();
            plans.push(InputPlan {
                name,
                dtype: ts.dtype,
                shape,
                layout: Layout::Concat,
                sources,
            });
            continue;
        }
        let tensors: Vec<&'r InputTensor<'a>> = present.into_iter().flatten().collect();
        let shapes: Vec<&[i64]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
        let (shape, layout) = if spec.batching() && spec.ragged.is_ragged(name) {
            match spec.ragged.layout {
                RaggedLayout::Concat => {
                    let total: usize = shapes.iter().map(|s| element_count(s)).sum();
                    (vec![total as i64], Layout::Concat)
                }
                RaggedLayout::Pad => {
                    let pad = PadPlan::new(&shapes);
                    (pad.shape.clone(), Layout::Padded(pad))
                }
            }
        } else if spec.batching() {
            (concat_shape(&shapes), Layout::Concat)
        } else {
            (
                shapes.first().map(|s| s.to_vec()).unwrap_or_default(),
                Layout::Concat,
            )
        };
        plans.push(InputPlan {
            name,
            dtype: ts.dtype,
            shape,
            layout,
            sources: tensors.into_iter().map(Source::Tensor).collect(),
        });
    }
    plans
}

/// How one output of a whole-batch dict is cut back to a call's requests:
/// per request, its shape and its range of elements (C order). Rows by the
/// requests' batch rows; a `batch_output` target (`scattered`: each
/// request's shape, from its source input) by those shapes; without
/// batching, the one request gets it whole.
pub fn plan_scatter(
    output_shape: &[i64],
    rows: &[usize],
    batching: bool,
    scattered: Option<Vec<Vec<i64>>>,
) -> Vec<(Vec<i64>, std::ops::Range<usize>)> {
    if let Some(shapes) = scattered {
        let counts: Vec<usize> = shapes.iter().map(|s| element_count(s)).collect();
        return shapes.into_iter().zip(row_ranges(&counts)).collect();
    }
    if !batching || output_shape.is_empty() {
        let n = element_count(output_shape);
        return rows.iter().map(|_| (output_shape.to_vec(), 0..n)).collect();
    }
    let per_row = element_count(&output_shape[1..]);
    row_ranges(rows)
        .into_iter()
        .map(|r| {
            let mut shape = output_shape.to_vec();
            shape[0] = r.len() as i64;
            (shape, r.start * per_row..r.end * per_row)
        })
        .collect()
}

/// A tensor produced by user code, ready to be cut into per-request slices.
#[derive(Debug)]
pub struct BatchOutput<'a> {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: OutputData<'a>,
}

#[derive(Debug)]
pub enum OutputData<'a> {
    /// Fixed-size elements, C-contiguous.
    Fixed(&'a [u8]),
    /// Serialized BYTES with the byte offset where each element starts (plus
    /// the end), so rows can be sliced without re-encoding.
    Bytes {
        buf: &'a [u8],
        elem_offsets: &'a [usize],
    },
}

impl BatchOutput<'_> {
    /// Rows `rows` of this output as (shape, bytes).
    pub fn slice_rows(&self, rows: std::ops::Range<usize>) -> (Vec<i64>, &[u8]) {
        let mut shape = self.shape.clone();
        if shape.is_empty() {
            return (shape, self.bytes_all());
        }
        shape[0] = rows.len() as i64;
        let per_row = element_count(&self.shape[1..]);
        let (a, b) = (rows.start * per_row, rows.end * per_row);
        match &self.data {
            OutputData::Fixed(buf) => {
                let size = self.dtype.element_size().unwrap_or(1);
                (shape, &buf[a * size..b * size])
            }
            OutputData::Bytes { buf, elem_offsets } => {
                (shape, &buf[elem_offsets[a]..elem_offsets[b]])
            }
        }
    }

    /// Elements `elems` (in C order) of this output, as bytes: the cut of a
    /// batch_output scattered by its source input's shapes.
    pub fn slice_elements(&self, elems: std::ops::Range<usize>) -> &[u8] {
        match &self.data {
            OutputData::Fixed(buf) => {
                let size = self.dtype.element_size().unwrap_or(1);
                &buf[elems.start * size..elems.end * size]
            }
            OutputData::Bytes { buf, elem_offsets } => {
                &buf[elem_offsets[elems.start]..elem_offsets[elems.end]]
            }
        }
    }

    pub fn bytes_all(&self) -> &[u8] {
        match &self.data {
            OutputData::Fixed(b) => b,
            OutputData::Bytes { buf, .. } => buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::request::ParamValue;
    use crate::rules::spec::TensorSpec;
    use crate::rules::tensor::TensorBuffer;

    fn spec(mbs: usize) -> ModelSpec {
        ModelSpec {
            name: "m".into(),
            version: 1,
            max_batch_size: mbs,
            inputs: vec![
                TensorSpec {
                    name: "A".into(),
                    dtype: DataType::Fp32,
                    dims: vec![-1],
                    optional: false,
                },
                TensorSpec {
                    name: "B".into(),
                    dtype: DataType::Bytes,
                    dims: vec![1],
                    optional: true,
                },
            ],
            outputs: vec![TensorSpec {
                name: "Y".into(),
                dtype: DataType::Fp32,
                dims: vec![-1],
                optional: false,
            }],
            decoupled: false,
            ragged: Default::default(),
        }
    }

    fn tensor<'a>(name: &str, shape: Vec<i64>, data: &'a [u8]) -> InputTensor<'a> {
        InputTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape,
            buffers: vec![TensorBuffer::borrowed(data)],
        }
    }

    #[test]
    fn plan_inputs_concatenates_rows_and_fills_defaults() {
        let mut s = spec(8);
        s.ragged.defaults.push(("B".to_string(), vec![7u8]));
        let a0 = tensor("A", vec![1, 2], b"ab");
        let a1 = tensor("A", vec![2, 2], b"cdef");
        let b0 = tensor("B", vec![1, 1], b"x");
        let r0 = InferRequest {
            inputs: vec![a0, b0],
            ..Default::default()
        };
        let r1 = InferRequest {
            inputs: vec![a1],
            ..Default::default()
        };
        let plans = plan_inputs(&s, &[&r0, &r1], &[1, 2]);
        assert_eq!(plans.len(), 2);
        assert_eq!((plans[0].name, plans[0].shape.clone()), ("A", vec![3, 2]));
        assert!(matches!(plans[0].layout, Layout::Concat));
        assert_eq!(plans[1].shape, vec![3, 1]);
        assert!(matches!(plans[1].sources[0], Source::Tensor(t) if t.name == "B"));
        assert!(matches!(
            plans[1].sources[1],
            Source::Default { elements: 2 }
        ));
        // Ragged: flat, whatever the lengths.
        s.ragged.ragged_inputs.push("A".to_string());
        let r2 = InferRequest {
            inputs: vec![tensor("A", vec![1, 3], b"ghi")],
            ..Default::default()
        };
        let plans = plan_inputs(&s, &[&r1, &r2], &[2, 1]);
        assert_eq!(plans[0].shape, vec![7]);
    }

    #[test]
    fn plan_inputs_skips_inputs_nobody_sent_and_takes_unbatched_shapes_as_is() {
        let s = spec(0);
        let a = tensor("A", vec![3, 2], b"abcdef");
        let r = InferRequest {
            inputs: vec![a],
            ..Default::default()
        };
        let plans = plan_inputs(&s, &[&r], &[1]);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].shape, vec![3, 2]);
    }

    #[test]
    fn plan_scatter_cuts_rows_elements_and_scattered_shapes() {
        let cuts = plan_scatter(&[3, 2], &[1, 2], true, None);
        assert_eq!(cuts, vec![(vec![1, 2], 0..2), (vec![2, 2], 2..6)]);
        let whole = plan_scatter(&[4], &[1], false, None);
        assert_eq!(whole, vec![(vec![4], 0..4)]);
        let by_input = plan_scatter(&[7], &[1, 1], true, Some(vec![vec![3], vec![4]]));
        assert_eq!(by_input, vec![(vec![3], 0..3), (vec![4], 3..7)]);
    }

    fn req<'a>(shape: Vec<i64>, data: &'a [u8]) -> InferRequest<'a> {
        InferRequest {
            inputs: vec![InputTensor {
                name: "A".into(),
                dtype: DataType::Fp32,
                shape,
                buffers: vec![TensorBuffer::borrowed(data)],
            }],
            requested_outputs: vec!["Y".into()],
            ..Default::default()
        }
    }

    #[test]
    fn validate_accepts_and_counts_rows() {
        let data = [0u8; 24];
        assert_eq!(
            validate_request(&spec(8), &req(vec![2, 3], &data)).unwrap(),
            2
        );
        assert_eq!(validate_request(&spec(0), &req(vec![6], &data)).unwrap(), 1);
    }

    #[test]
    fn validate_names_input_and_reason() {
        let data = [0u8; 24];
        let e = validate_request(&spec(8), &req(vec![3, 3], &data)).unwrap_err();
        assert!(
            e.message.contains("'A'") && e.message.contains("carries 24 bytes"),
            "{e}"
        );
        let e = validate_request(&spec(2), &req(vec![3, 2], &data)).unwrap_err();
        assert!(e.message.contains("batch size 3, outside 1..=2"), "{e}");
        let e = validate_request(&spec(8), &req(vec![6], &data)).unwrap_err();
        assert!(
            e.message.contains("shape [6]") && e.message.contains("[batch]+[-1]"),
            "{e}"
        );

        let mut r = req(vec![1, 6], &data);
        r.inputs[0].dtype = DataType::Int32;
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(
            e.message
                .contains("data type INT32 but the model expects FP32"),
            "{e}"
        );

        let mut r = req(vec![1, 6], &data);
        r.inputs[0].name = "Z".into();
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(e.message.contains("unknown input 'Z'"), "{e}");

        let mut r = req(vec![1, 6], &data);
        r.inputs.clear();
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(e.message.contains("missing required input 'A'"), "{e}");

        let mut r = req(vec![1, 6], &data);
        r.requested_outputs = vec!["NOPE".into()];
        assert!(validate_request(&spec(8), &r)
            .unwrap_err()
            .message
            .contains("unknown output 'NOPE'"));
    }

    #[test]
    fn validate_rejects_inconsistent_batch_and_bad_bytes() {
        let data = [0u8; 8];
        let mut r = req(vec![2, 1], &data);
        r.inputs.push(InputTensor {
            name: "B".into(),
            dtype: DataType::Bytes,
            shape: vec![1, 1],
            buffers: vec![TensorBuffer::borrowed(b"\x05\x00")],
        });
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(
            e.message.contains("batch size 1 but input 'A' has 2"),
            "{e}"
        );
        let mut r = req(vec![2, 1], &data);
        r.inputs.push(InputTensor {
            name: "B".into(),
            dtype: DataType::Bytes,
            shape: vec![2, 1],
            buffers: vec![TensorBuffer::borrowed(b"\x05\x00")],
        });
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(
            e.message.contains("input 'B'") && e.message.contains("truncated"),
            "{e}"
        );
    }

    #[test]
    fn an_input_in_device_memory_fails_its_request_before_anything_reads_it() {
        let mut r = req(vec![2, 1], &[]);
        r.inputs[0].buffers = vec![TensorBuffer::device(0, 8)];
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::Unsupported);
        assert!(
            e.message
                .starts_with("model 'm': input 'A': the tensor is in GPU memory (device 0)"),
            "{e}"
        );
    }

    #[test]
    fn groups_split_on_item_shape_and_parameters() {
        let d = [0u8; 64];
        let r0 = req(vec![1, 2], &d[..8]);
        let r1 = req(vec![1, 3], &d[..12]);
        let mut r2 = req(vec![2, 2], &d[..16]);
        r2.parameters = vec![("t".into(), ParamValue::Double(0.5))];
        let r3 = req(vec![1, 3], &d[..12]);
        let all = [(0, &r0), (1, &r1), (2, &r2), (3, &r3)];
        assert_eq!(
            plan_groups(&spec(8), &all, false),
            vec![vec![0, 2], vec![1, 3]]
        );
        assert_eq!(
            plan_groups(&spec(8), &all, true),
            vec![vec![0], vec![1, 3], vec![2]]
        );
        assert_eq!(
            plan_groups(&spec(0), &all, false),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
    }

    #[test]
    fn concat_shape_and_row_ranges() {
        let a = InputTensor {
            name: "A".into(),
            dtype: DataType::Uint8,
            shape: vec![1, 3],
            buffers: vec![TensorBuffer::borrowed(b"ab"), TensorBuffer::borrowed(b"c")],
        };
        let b = InputTensor {
            name: "A".into(),
            dtype: DataType::Uint8,
            shape: vec![2, 3],
            buffers: vec![TensorBuffer::borrowed(b"defghi")],
        };
        assert_eq!(concat_shape(&[&a.shape, &b.shape]), vec![3, 3]);
        assert_eq!(row_ranges(&[1, 2, 3]), vec![0..1, 1..3, 3..6]);
    }

    #[test]
    fn gather_bytes_keeps_element_order_across_chunks() {
        let mut one = Vec::new();
        bytes::encode_into(&mut one, b"x").unwrap();
        bytes::encode_into(&mut one, b"").unwrap();
        let mut two = Vec::new();
        bytes::encode_into(&mut two, "é".as_bytes()).unwrap();
        let a = InputTensor {
            name: "B".into(),
            dtype: DataType::Bytes,
            shape: vec![2, 1],
            buffers: vec![
                TensorBuffer::borrowed(&one[..3]),
                TensorBuffer::borrowed(&one[3..]),
            ],
        };
        let b = InputTensor {
            name: "B".into(),
            dtype: DataType::Bytes,
            shape: vec![1, 1],
            buffers: vec![TensorBuffer::borrowed(&two)],
        };
        let got = gather_bytes(&[&a, &b]).unwrap();
        let got: Vec<&[u8]> = got.iter().map(|c| c.as_ref()).collect();
        assert_eq!(got, vec![&b"x"[..], b"", "é".as_bytes()]);
    }

    #[test]
    fn slice_rows_fixed_and_bytes() {
        let data: Vec<u8> = (0..24).collect();
        let out = BatchOutput {
            name: "Y".into(),
            dtype: DataType::Int16,
            shape: vec![3, 4],
            data: OutputData::Fixed(&data),
        };
        let (shape, bytes) = out.slice_rows(1..3);
        assert_eq!(shape, vec![2, 4]);
        assert_eq!(bytes, &data[8..24]);

        let mut buf = Vec::new();
        let mut offs = vec![0];
        for e in [&b"a"[..], b"bb", b"", b"dddd"] {
            bytes::encode_into(&mut buf, e).unwrap();
            offs.push(buf.len());
        }
        let out = BatchOutput {
            name: "S".into(),
            dtype: DataType::Bytes,
            shape: vec![2, 2],
            data: OutputData::Bytes {
                buf: &buf,
                elem_offsets: &offs,
            },
        };
        let (shape, bytes) = out.slice_rows(1..2);
        assert_eq!(shape, vec![1, 2]);
        assert_eq!(bytes::decode(bytes, 2).unwrap(), vec![&b""[..], b"dddd"]);
    }
}
