//! What the core knows of an inference request: plain data borrowed from
//! whoever owns the request (Triton's buffers in the backend, files in the
//! CLI, the shared input region in a worker), each input buffer with the
//! memory it lives in ([`TensorBuffer`]).

use std::borrow::Cow;

use crate::error::Result;
use crate::rules::dtype::DataType;
use crate::rules::tensor::TensorBuffer;

/// A request parameter value (the KServe v2 `parameters` map).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    String(String),
    Int(i64),
    Bool(bool),
    Double(f64),
}

impl ParamValue {
    /// A stable textual key, so requests can be grouped by equal parameters.
    pub fn key(&self) -> String {
        match self {
            ParamValue::String(s) => format!("s:{s}"),
            ParamValue::Int(i) => format!("i:{i}"),
            ParamValue::Bool(b) => format!("b:{b}"),
            ParamValue::Double(d) => format!("d:{}", d.to_bits()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorrelationId {
    #[default]
    None,
    Int(u64),
    String(String),
}

/// One input tensor. Its data may arrive in several buffers (Triton hands
/// an input over in as many buffers as the client sent), each carrying the
/// memory it lives in.
#[derive(Debug, Clone)]
pub struct InputTensor<'a> {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub buffers: Vec<TensorBuffer<'a>>,
}

impl<'a> InputTensor<'a> {
    /// An input whose data is one buffer of host memory lent for the call.
    pub fn borrowed(name: &str, dtype: DataType, shape: &[i64], data: &'a [u8]) -> Self {
        InputTensor {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
            buffers: vec![TensorBuffer::borrowed(data)],
        }
    }

    pub fn byte_size(&self) -> usize {
        self.buffers.iter().map(TensorBuffer::len).sum()
    }

    /// Number of elements the shape declares (0 for a negative dim).
    pub fn element_count(&self) -> usize {
        element_count(&self.shape)
    }

    /// The buffers' bytes, for reading on the host (device memory is
    /// refused, see `MemoryKind::require_host`).
    pub fn host_chunks(&self) -> Result<Vec<&'a [u8]>> {
        self.buffers.iter().map(TensorBuffer::host).collect()
    }

    /// The data as one slice, borrowing when it arrived in a single buffer.
    pub fn contiguous(&self) -> Result<Cow<'a, [u8]>> {
        Ok(match self.host_chunks()?.as_slice() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.concat()),
        })
    }
}

pub fn element_count(shape: &[i64]) -> usize {
    shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .product()
}

#[derive(Clone, Default)]
pub struct InferRequest<'a> {
    pub id: String,
    pub correlation_id: CorrelationId,
    pub flags: u32,
    pub timeout_us: u64,
    pub inputs: Vec<InputTensor<'a>>,
    /// Outputs the client asked for (Triton fills in every output when the
    /// client named none).
    pub requested_outputs: Vec<String>,
    pub parameters: Vec<(String, ParamValue)>,
}

impl std::fmt::Debug for InferRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferRequest")
            .field("id", &self.id)
            .field("inputs", &self.inputs)
            .field("requested_outputs", &self.requested_outputs)
            .field("parameters", &self.parameters)
            .finish_non_exhaustive()
    }
}

impl<'a> InferRequest<'a> {
    pub fn input(&self, name: &str) -> Option<&InputTensor<'a>> {
        self.inputs.iter().find(|i| i.name == name)
    }
    pub fn wants_output(&self, name: &str) -> bool {
        self.requested_outputs.iter().any(|o| o == name)
    }
}
