//! Ragged batches, Triton's way: inputs with `allow_ragged_batch: true` are
//! batched whatever their shapes and reach user code concatenated flat (or,
//! on request, padded to the longest), together with the config's
//! `batch_input` tensors; `batch_output` BATCH_SCATTER_WITH_INPUT_SHAPE
//! outputs are cut back by the source input's shape. Also the fill values of
//! optional inputs that requests may omit and still share a call.
//!
//! Everything here is plain data and arithmetic (no Python), so every
//! batch_input kind is unit-tested against hand-computed values.

use rustpy_config::proto;

use crate::error::{Error, Result};
use crate::rules::dtype::DataType;
use crate::rules::request::element_count;

/// The config parameter choosing how ragged inputs reach `predict`.
pub const RAGGED_PARAMETER: &str = "rustpy.ragged";
/// Prefix of the config parameters giving an optional input's fill value.
pub const DEFAULT_PARAMETER_PREFIX: &str = "rustpy.default.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RaggedLayout {
    /// Triton's convention: a 1-D concatenation of every request's elements.
    #[default]
    Concat,
    /// A dense `[rows, max item dims...]` array, zero-padded (b"" for BYTES).
    Pad,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchInputKind {
    ElementCount,
    AccumulatedElementCount,
    AccumulatedElementCountWithZero,
    MaxElementCountAsShape,
    ItemShape,
    ItemShapeFlatten,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchInputSpec {
    pub kind: BatchInputKind,
    pub target: String,
    pub dtype: DataType,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutputSpec {
    pub target: String,
    pub source: String,
}

/// What a model's config says about ragged batches and input defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RaggedSpec {
    pub ragged_inputs: Vec<String>,
    pub layout: RaggedLayout,
    pub batch_inputs: Vec<BatchInputSpec>,
    pub batch_outputs: Vec<BatchOutputSpec>,
    /// Optional input name -> one element's wire bytes (for BYTES: the raw value).
    pub defaults: Vec<(String, Vec<u8>)>,
}

impl RaggedSpec {
    pub fn is_ragged(&self, input: &str) -> bool {
        self.ragged_inputs.iter().any(|n| n == input)
    }
    pub fn batch_output(&self, output: &str) -> Option<&BatchOutputSpec> {
        self.batch_outputs.iter().find(|b| b.target == output)
    }
    pub fn default_for(&self, input: &str) -> Option<&[u8]> {
        self.defaults
            .iter()
            .find(|(n, _)| n == input)
            .map(|(_, v)| v.as_slice())
    }

    /// Reads the ragged/batch_input/batch_output/default settings of `cfg`
    /// (the rules `rustpy check` reports with file:line are enforced here
    /// too, so a bad config fails the load with a clear message).
    pub fn from_config(cfg: &proto::ModelConfig) -> Result<Self> {
        let bad = |msg: String| bad(cfg, msg);
        let mut spec = RaggedSpec {
            ragged_inputs: cfg
                .input
                .iter()
                .filter(|i| i.allow_ragged_batch)
                .map(|i| i.name.clone())
                .collect(),
            ..Default::default()
        };
        if !spec.ragged_inputs.is_empty() && cfg.max_batch_size <= 0 {
            return Err(bad(format!(
                "input '{}' sets allow_ragged_batch but max_batch_size is 0 (ragged batching needs batching)",
                spec.ragged_inputs[0]
            )));
        }
        if let Some(layout) = rustpy_config::parameter(cfg, RAGGED_PARAMETER) {
            spec.layout = match layout {
                "concat" => RaggedLayout::Concat,
                "pad" => RaggedLayout::Pad,
                other => {
                    return Err(bad(format!(
                        "parameter {RAGGED_PARAMETER} must be \"concat\" or \"pad\", got {other:?}"
                    )))
                }
            };
        }
        for bi in &cfg.batch_input {
            spec.batch_inputs.push(batch_input_spec(cfg, bi)?);
        }
        for bo in &cfg.batch_output {
            let outputs = batch_output_specs(cfg, bo, &spec)?;
            spec.batch_outputs.extend(outputs);
        }
        spec.defaults = defaults(cfg)?;
        Ok(spec)
    }
}

/// A configuration error of model `cfg`.
fn bad(cfg: &proto::ModelConfig, msg: String) -> Error {
    Error::invalid_arg(format!("model '{}': {msg}", cfg.name))
}

/// One `batch_input` of the configuration, checked.
fn batch_input_spec(cfg: &proto::ModelConfig, bi: &proto::BatchInput) -> Result<BatchInputSpec> {
    use proto::batch_input::Kind;
    let bad = |msg: String| bad(cfg, msg);
    let kind = match Kind::try_from(bi.kind) {
        Ok(Kind::BatchElementCount) => BatchInputKind::ElementCount,
        Ok(Kind::BatchAccumulatedElementCount) => BatchInputKind::AccumulatedElementCount,
        Ok(Kind::BatchAccumulatedElementCountWithZero) => {
            BatchInputKind::AccumulatedElementCountWithZero
        }
        Ok(Kind::BatchMaxElementCountAsShape) => BatchInputKind::MaxElementCountAsShape,
        Ok(Kind::BatchItemShape) => BatchInputKind::ItemShape,
        Ok(Kind::BatchItemShapeFlatten) => BatchInputKind::ItemShapeFlatten,
        Err(_) => return Err(bad(format!("batch_input has unknown kind {}", bi.kind))),
    };
    let [target] = bi.target_name.as_slice() else {
        return Err(bad("a batch_input needs exactly one target_name".into()));
    };
    let [source] = bi.source_input.as_slice() else {
        return Err(bad(format!(
            "batch_input '{target}' needs exactly one source_input"
        )));
    };
    if !cfg.input.iter().any(|i| &i.name == source) {
        return Err(bad(format!(
            "batch_input '{target}' names source_input '{source}', which is not an input"
        )));
    }
    if cfg.input.iter().any(|i| &i.name == target) {
        return Err(bad(format!(
            "batch_input target '{target}' has the name of an input"
        )));
    }
    let dtype = match proto::DataType::try_from(bi.data_type) {
        Ok(proto::DataType::TypeInt32) => DataType::Int32,
        Ok(proto::DataType::TypeFp32) => DataType::Fp32,
        _ => {
            return Err(bad(format!(
                "batch_input '{target}' must have data_type TYPE_INT32 or TYPE_FP32"
            )))
        }
    };
    Ok(BatchInputSpec {
        kind,
        target: target.clone(),
        dtype,
        source: source.clone(),
    })
}

/// The targets of one `batch_output`, checked against the ragged inputs
/// of `spec`.
fn batch_output_specs(
    cfg: &proto::ModelConfig,
    bo: &proto::BatchOutput,
    spec: &RaggedSpec,
) -> Result<Vec<BatchOutputSpec>> {
    let bad = |msg: String| bad(cfg, msg);
    let [source] = bo.source_input.as_slice() else {
        return Err(bad("a batch_output needs exactly one source_input".into()));
    };
    if !spec.is_ragged(source) {
        return Err(bad(format!(
            "batch_output source_input '{source}' is not an input with allow_ragged_batch: true"
        )));
    }
    let mut outputs = Vec::with_capacity(bo.target_name.len());
    for target in &bo.target_name {
        let Some(out) = cfg.output.iter().find(|o| &o.name == target) else {
            return Err(bad(format!(
                "batch_output target '{target}' is not an output"
            )));
        };
        let src = cfg.input.iter().find(|i| &i.name == source);
        let src_rank = src.map_or(0, |i| i.dims.len());
        if out.dims.len() > src_rank {
            return Err(bad(format!(
                "batch_output '{target}' has {} dims but its source input '{source}' has {src_rank}",
                out.dims.len()
            )));
        }
        outputs.push(BatchOutputSpec {
            target: target.clone(),
            source: source.clone(),
        });
    }
    Ok(outputs)
}

/// The fill values of optional inputs (`rustpy.default.<input>`), in the
/// order of their parameter names.
fn defaults(cfg: &proto::ModelConfig) -> Result<Vec<(String, Vec<u8>)>> {
    let bad = |msg: String| bad(cfg, msg);
    let mut keys: Vec<&String> = cfg.parameters.keys().collect();
    keys.sort();
    let mut defaults = Vec::new();
    for key in keys {
        let Some(input) = key.strip_prefix(DEFAULT_PARAMETER_PREFIX) else {
            continue;
        };
        let value = &cfg.parameters[key].string_value;
        let Some(inp) = cfg.input.iter().find(|i| i.name == input) else {
            return Err(bad(format!("parameter {key}: there is no input '{input}'")));
        };
        if !inp.optional {
            return Err(bad(format!(
                "parameter {key}: input '{input}' is not optional (set optional: true)"
            )));
        }
        if inp.dims.iter().any(|&d| d < 0) || inp.allow_ragged_batch {
            return Err(bad(format!(
                "parameter {key}: input '{input}' needs fixed dims to be filled with a default"
            )));
        }
        let dtype = proto::DataType::try_from(inp.data_type)
            .ok()
            .and_then(|d| DataType::from_name(d.as_str_name()))
            .ok_or_else(|| bad(format!("input '{input}' has no valid data_type")))?;
        let bytes =
            parse_default(dtype, value).map_err(|why| bad(format!("parameter {key}: {why}")))?;
        defaults.push((input.to_string(), bytes));
    }
    Ok(defaults)
}

/// One element of `dtype` parsed from text, as wire bytes (little endian).
pub fn parse_default(dtype: DataType, text: &str) -> std::result::Result<Vec<u8>, String> {
    let t = text.trim();
    let not = |what: &str| format!("{text:?} is not {what} (input is {dtype})");
    macro_rules! num {
        ($ty:ty, $what:expr) => {
            t.parse::<$ty>()
                .map(|v| v.to_le_bytes().to_vec())
                .map_err(|_| not($what))
        };
    }
    match dtype {
        DataType::Bool => match t {
            "true" | "1" => Ok(vec![1]),
            "false" | "0" => Ok(vec![0]),
            _ => Err(not("a bool (true/false)")),
        },
        DataType::Uint8 => num!(u8, "a UINT8"),
        DataType::Uint16 => num!(u16, "a UINT16"),
        DataType::Uint32 => num!(u32, "a UINT32"),
        DataType::Uint64 => num!(u64, "a UINT64"),
        DataType::Int8 => num!(i8, "an INT8"),
        DataType::Int16 => num!(i16, "an INT16"),
        DataType::Int32 => num!(i32, "an INT32"),
        DataType::Int64 => num!(i64, "an INT64"),
        DataType::Fp32 => num!(f32, "a number"),
        DataType::Fp64 => num!(f64, "a number"),
        DataType::Fp16 => t
            .parse::<f32>()
            .map(|v| half_bits(v).to_le_bytes().to_vec())
            .map_err(|_| not("a number")),
        DataType::Bytes => Ok(text.as_bytes().to_vec()),
        other => Err(format!("inputs of type {other} cannot have a default")),
    }
}

/// f32 -> IEEE half (round to nearest even), enough for default values.
fn half_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (man | 0x80_0000) >> (1 - e);
        let round = (m >> 12) & 1;
        return sign | ((m >> 13) + round) as u16;
    }
    let mut h = (sign as u32) | ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
        h += 1;
    }
    h as u16
}

/// A computed batch_input tensor: shape and values (converted to the
/// configured dtype when sent to Python).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInputTensor {
    pub shape: Vec<i64>,
    pub values: Vec<i64>,
}

impl BatchInputTensor {
    /// The values as wire bytes of `dtype` (INT32 or FP32).
    pub fn to_bytes(&self, dtype: DataType) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.values.len() * 4);
        for &v in &self.values {
            if dtype == DataType::Fp32 {
                out.extend_from_slice(&(v as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&(v as i32).to_le_bytes());
            }
        }
        out
    }
}

/// Triton's batch_input tensor of `kind`, from the source input's shape in
/// each request of the batch (shapes include the batch dim), exactly as
/// Triton's backends compute it: element counts are per request (the whole
/// tensor, batch dim included); item shapes are per batch row.
pub fn batch_input(kind: BatchInputKind, shapes: &[&[i64]]) -> BatchInputTensor {
    let counts: Vec<i64> = shapes.iter().map(|s| element_count(s) as i64).collect();
    let accumulated = || {
        let mut acc = 0;
        counts
            .iter()
            .map(|c| {
                acc += c;
                acc
            })
            .collect::<Vec<i64>>()
    };
    let n = shapes.len() as i64;
    match kind {
        BatchInputKind::ElementCount => BatchInputTensor {
            shape: vec![n],
            values: counts,
        },
        BatchInputKind::AccumulatedElementCount => BatchInputTensor {
            shape: vec![n],
            values: accumulated(),
        },
        BatchInputKind::AccumulatedElementCountWithZero => {
            let mut values = vec![0];
            values.extend(accumulated());
            BatchInputTensor {
                shape: vec![n + 1],
                values,
            }
        }
        BatchInputKind::MaxElementCountAsShape => {
            // Only the shape carries information (Triton leaves the data
            // uninitialised; here it is zeros).
            let max = counts.iter().copied().max().unwrap_or(0);
            BatchInputTensor {
                shape: vec![max],
                values: vec![0; max as usize],
            }
        }
        BatchInputKind::ItemShape | BatchInputKind::ItemShapeFlatten => {
            let rank = shapes.first().map_or(0, |s| s.len().saturating_sub(1));
            let mut rows = 0;
            let mut values = Vec::new();
            for s in shapes {
                let batch = s.first().copied().unwrap_or(0).max(0);
                for _ in 0..batch {
                    values.extend_from_slice(&s[1.min(s.len())..]);
                }
                rows += batch;
            }
            let shape = if kind == BatchInputKind::ItemShape {
                vec![rows, rank as i64]
            } else {
                vec![rows * rank as i64]
            };
            BatchInputTensor { shape, values }
        }
    }
}

/// How to lay out ragged requests as one dense array padded to the longest:
/// the padded shape `[rows, max dims...]` and the copies to make, as
/// (source element offset, destination element offset, element count) runs
/// along the last dim. Source offsets index the requests' elements
/// concatenated in order.
#[derive(Debug, Clone, PartialEq)]
pub struct PadPlan {
    pub shape: Vec<i64>,
    pub runs: Vec<(usize, usize, usize)>,
}

impl PadPlan {
    pub fn new(shapes: &[&[i64]]) -> PadPlan {
        let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
        let mut max_item = vec![0i64; rank - 1];
        let mut rows = 0i64;
        for s in shapes {
            rows += s.first().copied().unwrap_or(0);
            for (m, &d) in max_item.iter_mut().zip(s.iter().skip(1)) {
                *m = (*m).max(d);
            }
        }
        let mut shape = vec![rows];
        shape.extend_from_slice(&max_item);
        let dst_item = element_count(&max_item);
        let mut runs = Vec::new();
        let mut src = 0usize;
        let mut row = 0usize;
        for s in shapes {
            let item: Vec<usize> = s[1..].iter().map(|&d| d.max(0) as usize).collect();
            let item_count = element_count(&s[1..]);
            let batch = s.first().copied().unwrap_or(0).max(0) as usize;
            for _ in 0..batch {
                if item.is_empty() {
                    runs.push((src, row * dst_item, 1));
                    src += 1;
                } else if item_count > 0 {
                    let last = item[item.len() - 1];
                    let lead = &item[..item.len() - 1];
                    let lead_count: usize = lead.iter().product();
                    // Every index of the item's leading dims, in C order.
                    for flat in 0..lead_count {
                        let mut rem = flat;
                        let mut dst = 0usize;
                        let mut stride = max_item[item.len() - 1] as usize;
                        for k in (0..lead.len()).rev() {
                            dst += (rem % lead[k]) * stride;
                            rem /= lead[k];
                            stride *= max_item[k] as usize;
                        }
                        runs.push((src, row * dst_item + dst, last));
                        src += last;
                    }
                }
                row += 1;
            }
        }
        PadPlan { shape, runs }
    }

    pub fn element_count(&self) -> usize {
        element_count(&self.shape)
    }

    /// The padded tensor's bytes (elements of `elem_size` bytes, zeros where
    /// nothing is copied), read straight from the requests' data `chunks`
    /// (their elements concatenated in order, split anywhere): one pass, no
    /// intermediate concatenation.
    pub fn gather(&self, chunks: &[&[u8]], elem_size: usize) -> Vec<u8> {
        let mut out = vec![0u8; self.element_count() * elem_size];
        // Cursor into the chunks: chunk index, byte offset in it, and the
        // absolute byte position it stands for.
        let (mut ci, mut off, mut pos) = (0usize, 0usize, 0usize);
        for &(src, dst, n) in &self.runs {
            let (mut from, mut left) = (src * elem_size, n * elem_size);
            let mut to = dst * elem_size;
            if from < pos {
                // Runs come in source order; restart for any other plan.
                (ci, off, pos) = (0, 0, 0);
            }
            while left > 0 {
                let Some(chunk) = chunks.get(ci) else {
                    return out; // fewer bytes than the shapes say: the rest stays zero
                };
                if off == chunk.len() {
                    (ci, off) = (ci + 1, 0);
                    continue;
                }
                if pos < from {
                    let skip = (from - pos).min(chunk.len() - off);
                    (off, pos) = (off + skip, pos + skip);
                    continue;
                }
                let take = left.min(chunk.len() - off);
                out[to..to + take].copy_from_slice(&chunk[off..off + take]);
                (off, pos, from, to, left) =
                    (off + take, pos + take, from + take, to + take, left - take);
            }
        }
        out
    }
}

/// The shape each request gets of a BATCH_SCATTER_WITH_INPUT_SHAPE output:
/// the output's `[-1] + dims` with every -1 taken from the same dim of that
/// request's source input shape.
pub fn scatter_shapes(output_dims: &[i64], source_shapes: &[&[i64]]) -> Vec<Vec<i64>> {
    source_shapes
        .iter()
        .map(|src| {
            std::iter::once(-1)
                .chain(output_dims.iter().copied())
                .enumerate()
                .map(|(k, d)| {
                    if d == -1 {
                        src.get(k).copied().unwrap_or(0)
                    } else {
                        d
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three requests as in Triton's ragged_batching.md: [1,3], [1,4], [1,5].
    const DOC: [&[i64]; 3] = [&[1, 3], &[1, 4], &[1, 5]];

    #[test]
    fn element_counts_match_tritons_example() {
        let t = batch_input(BatchInputKind::ElementCount, &DOC);
        assert_eq!((t.shape, t.values), (vec![3], vec![3, 4, 5]));
        let t = batch_input(BatchInputKind::AccumulatedElementCount, &DOC);
        // "the batch input tensor of shape [3] with value [3, 7, 12]"
        assert_eq!((t.shape, t.values), (vec![3], vec![3, 7, 12]));
        let t = batch_input(BatchInputKind::AccumulatedElementCountWithZero, &DOC);
        assert_eq!((t.shape, t.values), (vec![4], vec![0, 3, 7, 12]));
        let t = batch_input(BatchInputKind::MaxElementCountAsShape, &DOC);
        assert_eq!(t.shape, vec![5]);
        assert_eq!(t.values.len(), 5);
    }

    #[test]
    fn element_counts_include_the_batch_dim() {
        // A batch-2 request of [2,3] counts 6 elements, as Triton's
        // GetElementCount over the whole request shape does.
        let shapes: [&[i64]; 2] = [&[2, 3], &[1, 2]];
        let t = batch_input(BatchInputKind::ElementCount, &shapes);
        assert_eq!(t.values, vec![6, 2]);
        let t = batch_input(BatchInputKind::AccumulatedElementCount, &shapes);
        assert_eq!(t.values, vec![6, 8]);
        assert_eq!(
            t.to_bytes(DataType::Int32),
            [6i32, 8]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        );
        assert_eq!(
            t.to_bytes(DataType::Fp32),
            [6f32, 8.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
        );
    }

    #[test]
    fn item_shapes_match_the_proto_example() {
        // model_config.proto: "one batch-2 input with shape [3, 1] and
        // batch-1 input with shape [2, 2]" -> [[3,1],[3,1],[2,2]] / [3,1,3,1,2,2].
        // (Request shapes carry the batch dim in front.)
        let shapes: [&[i64]; 2] = [&[2, 3, 1], &[1, 2, 2]];
        let t = batch_input(BatchInputKind::ItemShape, &shapes);
        assert_eq!((t.shape, t.values), (vec![3, 2], vec![3, 1, 3, 1, 2, 2]));
        let t = batch_input(BatchInputKind::ItemShapeFlatten, &shapes);
        assert_eq!((t.shape, t.values), (vec![6], vec![3, 1, 3, 1, 2, 2]));
    }

    #[test]
    fn pad_plan_one_variable_dim() {
        let p = PadPlan::new(&DOC);
        assert_eq!(p.shape, vec![3, 5]);
        assert_eq!(p.runs, vec![(0, 0, 3), (3, 5, 4), (7, 10, 5)]);
        // A batch-2 request contributes two rows.
        let shapes: [&[i64]; 2] = [&[2, 2], &[1, 3]];
        let p = PadPlan::new(&shapes);
        assert_eq!(p.shape, vec![3, 3]);
        assert_eq!(p.runs, vec![(0, 0, 2), (2, 3, 2), (4, 6, 3)]);
    }

    #[test]
    fn pad_plan_two_variable_dims() {
        // [1,2,3] and [1,3,1] -> padded items of [3,3].
        let shapes: [&[i64]; 2] = [&[1, 2, 3], &[1, 3, 1]];
        let p = PadPlan::new(&shapes);
        assert_eq!(p.shape, vec![2, 3, 3]);
        assert_eq!(
            p.runs,
            vec![(0, 0, 3), (3, 3, 3), (6, 9, 1), (7, 12, 1), (8, 15, 1)]
        );
    }

    #[test]
    fn pad_gather_copies_runs_across_chunk_boundaries() {
        // DOC's requests as INT16 values 1..=12, split into uneven chunks.
        let p = PadPlan::new(&DOC);
        let data: Vec<u8> = (1..=12u16).flat_map(|v| v.to_le_bytes()).collect();
        let want: Vec<u16> = vec![1, 2, 3, 0, 0, 4, 5, 6, 7, 0, 8, 9, 10, 11, 12];
        for cuts in [vec![24], vec![5, 19], vec![1, 1, 7, 6, 9], vec![6, 8, 10]] {
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..at + c]);
                at += c;
            }
            let got = p.gather(&chunks, 2);
            let got: Vec<u16> = got
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            assert_eq!(
                got,
                want,
                "chunks {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
        }
        // Two variable dims: [1,2,3] and [1,3,1] padded to [3,3] items.
        let shapes: [&[i64]; 2] = [&[1, 2, 3], &[1, 3, 1]];
        let p = PadPlan::new(&shapes);
        let data: Vec<u8> = (1..=9u8).collect();
        assert_eq!(
            p.gather(&[&data[..4], &data[4..]], 1),
            vec![1, 2, 3, 4, 5, 6, 0, 0, 0, 7, 0, 0, 8, 0, 0, 9, 0, 0]
        );
    }

    #[test]
    fn scatter_shapes_take_dynamic_dims_from_the_input() {
        let shapes: [&[i64]; 2] = [&[1, 3], &[2, 5]];
        assert_eq!(scatter_shapes(&[-1], &shapes), vec![vec![1, 3], vec![2, 5]]);
        assert_eq!(
            scatter_shapes(&[-1, 2], &shapes),
            vec![vec![1, 3, 2], vec![2, 5, 2]]
        );
    }

    #[test]
    fn defaults_parse_per_dtype() {
        assert_eq!(
            parse_default(DataType::Fp32, "1.5").unwrap(),
            1.5f32.to_le_bytes()
        );
        assert_eq!(
            parse_default(DataType::Int64, "-2").unwrap(),
            (-2i64).to_le_bytes()
        );
        assert_eq!(parse_default(DataType::Bool, "true").unwrap(), vec![1]);
        assert_eq!(
            parse_default(DataType::Fp16, "1").unwrap(),
            0x3c00u16.to_le_bytes()
        );
        assert_eq!(parse_default(DataType::Bytes, "hi").unwrap(), b"hi");
        assert!(parse_default(DataType::Int32, "x")
            .unwrap_err()
            .contains("not an INT32"));
    }
}
