//! Batch assembly: which requests may share one Python call, and how their
//! rows map into the concatenated tensors and back.
//!
//! The rule (documented in the README): requests are concatenated along dim 0
//! only when they carry the same set of inputs with the same dtypes and the
//! same non-batch dims (and, for models that ask for it, equal parameters).
//! Anything else is split into separate calls, never failed. A request that
//! does not fit the model's configuration fails alone.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::bytes;
use crate::dtype::DataType;
use crate::error::{Error, Result};
use crate::request::{element_count, InferRequest, InputTensor};
use crate::spec::{dims_match, fmt_shape, ModelSpec};

/// Checks a request against the model configuration and returns the number of
/// batch rows it contributes (1 for models without batching).
pub fn validate_request(spec: &ModelSpec, req: &InferRequest<'_>) -> Result<usize> {
    let model = &spec.name;
    let mut rows: Option<(usize, &str)> = None;
    for input in &req.inputs {
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
            bytes::decode(&input.contiguous(), count)
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
/// borrow the request's buffer unless it arrived in several chunks.
pub fn gather_bytes<'a>(tensors: &[&'a InputTensor<'_>]) -> Result<Vec<Cow<'a, [u8]>>> {
    let mut out = Vec::new();
    for t in tensors {
        let n = t.element_count();
        match t.chunks.as_slice() {
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
    use crate::request::ParamValue;
    use crate::spec::TensorSpec;

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

    fn req<'a>(shape: Vec<i64>, data: &'a [u8]) -> InferRequest<'a> {
        InferRequest {
            inputs: vec![InputTensor {
                name: "A".into(),
                dtype: DataType::Fp32,
                shape,
                chunks: vec![data],
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
            chunks: vec![b"\x05\x00"],
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
            chunks: vec![b"\x05\x00"],
        });
        let e = validate_request(&spec(8), &r).unwrap_err();
        assert!(
            e.message.contains("input 'B'") && e.message.contains("truncated"),
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
            chunks: vec![b"ab", b"c"],
        };
        let b = InputTensor {
            name: "A".into(),
            dtype: DataType::Uint8,
            shape: vec![2, 3],
            chunks: vec![b"defghi"],
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
            chunks: vec![&one[..3], &one[3..]],
        };
        let b = InputTensor {
            name: "B".into(),
            dtype: DataType::Bytes,
            shape: vec![1, 1],
            chunks: vec![&two],
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
