//! Conversions between the core's values and Python objects: tensors
//! (numpy arrays through `numpy_io`), request parameters, correlation ids.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};

use super::error::py_error;
use super::numpy_io;
use crate::error::{Error, Result};
use crate::rules::request::{CorrelationId, ParamValue};
use crate::server::{OutputArena, OwnedTensor, TensorData};
use crate::DataType;

/// A Python value (a numpy array or anything `numpy.asarray` accepts) as an
/// owned tensor, typed like pb_utils.Tensor does it; `model` names the
/// context in error messages.
pub fn tensor_from_py(
    py: Python<'_>,
    model: &str,
    name: &str,
    value: &Bound<'_, PyAny>,
    dtype: Option<DataType>,
) -> Result<OwnedTensor> {
    tensor_from_py_into(py, model, name, value, dtype, None)
}

/// [`tensor_from_py`], its bytes copied into a range of `arena` when it
/// gives one (a BLS input in a worker: straight into the BLS input region).
pub fn tensor_from_py_into(
    py: Python<'_>,
    model: &str,
    name: &str,
    value: &Bound<'_, PyAny>,
    dtype: Option<DataType>,
    arena: Option<&dyn OutputArena>,
) -> Result<OwnedTensor> {
    let t = numpy_io::extract_tensor(py, model, name, value, dtype)?;
    let bytes = t.wire_bytes();
    let placed = arena
        .and_then(|a| a.place(bytes.len()))
        .filter(|p| p.write(bytes));
    Ok(OwnedTensor {
        name: name.to_string(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        data: match placed {
            Some(p) => TensorData::Placed(p),
            None => crate::buffers::copy_of(bytes).into(),
        },
    })
}

/// A request parameter as a Python value.
pub(crate) fn param_to_py(py: Python<'_>, value: &ParamValue) -> Py<PyAny> {
    match value {
        ParamValue::String(s) => PyString::new(py, s).into_any().unbind(),
        ParamValue::Int(i) => PyInt::new(py, *i).into_any().unbind(),
        ParamValue::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        ParamValue::Double(d) => PyFloat::new(py, *d).into_any().unbind(),
    }
}

/// Request (or response) parameters as a Python dict.
pub(crate) fn params_dict<'py>(
    py: Python<'py>,
    parameters: &[(String, ParamValue)],
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in parameters {
        dict.set_item(k, param_to_py(py, v))?;
    }
    Ok(dict)
}

/// A correlation id as Python sees it (0 when the request has none).
pub(crate) fn correlation_to_py(py: Python<'_>, id: &CorrelationId) -> Py<PyAny> {
    match id {
        CorrelationId::None => PyInt::new(py, 0u64).into_any().unbind(),
        CorrelationId::Int(x) => PyInt::new(py, *x).into_any().unbind(),
        CorrelationId::String(s) => PyString::new(py, s).into_any().unbind(),
    }
}

/// An owned tensor as a numpy array (BYTES as an object array of bytes),
/// copied from the tensor.
pub fn tensor_to_py<'py>(py: Python<'py>, tensor: &OwnedTensor) -> Result<Bound<'py, PyAny>> {
    let err = |e: PyErr| py_error(py, &e, &format!("tensor '{}'", tensor.name));
    check_size(tensor)?;
    if tensor.dtype == DataType::Bytes {
        let n = crate::rules::request::element_count(&tensor.shape);
        let elems = crate::rules::bytes::decode(&tensor.data, n)?;
        let elems: Vec<std::borrow::Cow<'_, [u8]>> =
            elems.into_iter().map(std::borrow::Cow::Borrowed).collect();
        numpy_io::bytes_array(py, &tensor.shape, &elems).map_err(err)
    } else {
        numpy_io::array_from_bytes(py, tensor.dtype, &tensor.shape, &tensor.data)
    }
}

/// An owned tensor as a numpy array that takes over its bytes (no copy;
/// BYTES are decoded into an object array as by [`tensor_to_py`]).
pub fn tensor_into_py(py: Python<'_>, tensor: OwnedTensor) -> Result<Bound<'_, PyAny>> {
    if tensor.dtype == DataType::Bytes {
        return tensor_to_py(py, &tensor);
    }
    check_size(&tensor)?;
    numpy_io::array_owning(py, tensor.dtype, &tensor.shape, tensor.data.into_vec())
}

/// A peer's response may carry any byte count: checked against the shape
/// before an array is made of it (more bytes would overflow the array).
fn check_size(tensor: &OwnedTensor) -> Result<()> {
    if tensor.dtype == DataType::Bytes {
        return Ok(());
    }
    let expected = numpy_io::expected_byte_size(tensor.dtype, &tensor.shape);
    if expected == Some(tensor.data.len()) {
        return Ok(());
    }
    Err(Error::internal(format!(
        "tensor '{}' has {} bytes of data but its shape {} of {} needs {}",
        tensor.name,
        tensor.data.len(),
        crate::rules::spec::fmt_shape(&tensor.shape),
        tensor.dtype,
        expected.map_or_else(
            || "a non-negative shape".to_string(),
            |n| format!("{n} bytes")
        ),
    )))
}
