//! Whether a request fits the model's configuration (admission's check),
//! and the batch rows it contributes.

use crate::error::{Error, Result};
use crate::rules::bytes;
use crate::rules::request::{InferRequest, InputTensor};
use crate::rules::spec::{dims_match, fmt_shape, ModelSpec};

/// Checks a request against the model configuration and returns the number of
/// batch rows it contributes (1 for models without batching).
pub fn validate_request(spec: &ModelSpec, req: &InferRequest<'_>) -> Result<usize> {
    let model = &spec.name;
    let mut rows: Option<(usize, &str)> = None;
    for input in &req.inputs {
        validate_input(spec, input, &mut rows)?;
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

/// One input against its configuration: memory, name, data type, shape
/// (its batch size agreeing with the inputs before it, in `rows`) and data.
fn validate_input<'r>(
    spec: &ModelSpec,
    input: &'r InputTensor<'_>,
    rows: &mut Option<(usize, &'r str)>,
) -> Result<()> {
    let model = &spec.name;
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
        match *rows {
            Some((r, other)) if r != batch => {
                return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' has batch size {batch} but input '{other}' has {r}",
                input.name
            )))
            }
            _ => *rows = Some((batch, &input.name)),
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
    validate_data(model, input)
}

/// An input's data against its shape: no negative or overflowing dims, the
/// byte size a fixed-size type needs, well-formed BYTES elements.
fn validate_data(model: &str, input: &InputTensor<'_>) -> Result<()> {
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
    let bytes_needed = count.and_then(|n| n.checked_mul(input.dtype.element_size().unwrap_or(1)));
    let (Some(count), Some(bytes_needed)) = (count, bytes_needed) else {
        return Err(Error::invalid_arg(format!(
            "model '{model}': input '{}' has shape {}, whose size overflows",
            input.name,
            fmt_shape(&input.shape)
        )));
    };
    if input.dtype.element_size().is_some() {
        if input.byte_size() != bytes_needed {
            return Err(Error::invalid_arg(format!(
                "model '{model}': input '{}' carries {} bytes but shape {} of {} needs {bytes_needed}",
                input.name,
                input.byte_size(),
                fmt_shape(&input.shape),
                input.dtype
            )));
        }
        return Ok(());
    }
    bytes::decode(&input.contiguous()?, count)
        .map(drop)
        .map_err(|e| e.context(format!("model '{model}': input '{}'", input.name)))
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

#[cfg(test)]
mod tests {
    use super::super::tests::{req, spec};
    use super::*;
    use crate::rules::dtype::DataType;
    use crate::rules::tensor::TensorBuffer;

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
}
