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

mod scatter;
mod validate;

use std::borrow::Cow;
use std::collections::HashMap;

use crate::error::Result;
use crate::rules::bytes;
use crate::rules::dtype::DataType;
use crate::rules::ragged::{PadPlan, RaggedLayout};
use crate::rules::request::{element_count, InferRequest, InputTensor};
use crate::rules::spec::ModelSpec;

pub use scatter::{plan_scatter, BatchOutput, OutputData};
pub use validate::{rows, validate_request};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::request::ParamValue;
    use crate::rules::spec::TensorSpec;
    use crate::rules::tensor::TensorBuffer;

    pub(super) fn spec(mbs: usize) -> ModelSpec {
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

    pub(super) fn tensor<'a>(name: &str, shape: Vec<i64>, data: &'a [u8]) -> InputTensor<'a> {
        InputTensor {
            name: name.into(),
            dtype: DataType::Uint8,
            shape,
            buffers: vec![TensorBuffer::borrowed(data)],
        }
    }

    pub(super) fn req<'a>(shape: Vec<i64>, data: &'a [u8]) -> InferRequest<'a> {
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
}
