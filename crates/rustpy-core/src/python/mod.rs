//! The Rust↔Python boundary: one interpreter per process, model loading, and
//! numpy conversion. Nothing here knows the Triton C API.

mod interp;
mod model;
mod native;
mod numpy_io;

pub use interp::{initialize, is_initialized, py_error};
pub use model::{Api, InstanceInfo, LoadedModel, ModelInstance};
pub use native::{set_log_hook, LogHook};

use pyo3::prelude::*;

use crate::error::Result;
use crate::server::OwnedTensor;
use crate::DataType;

/// A Python value (a numpy array or anything `numpy.asarray` accepts) as an
/// owned tensor, typed like pb_utils.Tensor does it.
pub fn tensor_from_py(
    py: Python<'_>,
    name: &str,
    value: &Bound<'_, PyAny>,
    dtype: Option<DataType>,
) -> Result<OwnedTensor> {
    let t = numpy_io::extract_tensor(py, "local", name, value, dtype)?;
    let data = match t.view_data() {
        crate::batch::OutputData::Fixed(b) => b.to_vec(),
        crate::batch::OutputData::Bytes { buf, .. } => buf.to_vec(),
    };
    Ok(OwnedTensor {
        name: name.to_string(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        data,
    })
}

/// An owned tensor as a numpy array (BYTES as an object array of bytes).
pub fn tensor_to_py<'py>(py: Python<'py>, tensor: &OwnedTensor) -> Result<Bound<'py, PyAny>> {
    let err = |e: PyErr| py_error(py, &e, &format!("tensor '{}'", tensor.name));
    if tensor.dtype == DataType::Bytes {
        let n = crate::request::element_count(&tensor.shape);
        let elems = crate::bytes::decode(&tensor.data, n)?;
        let elems: Vec<std::borrow::Cow<'_, [u8]>> =
            elems.into_iter().map(std::borrow::Cow::Borrowed).collect();
        numpy_io::bytes_array(py, &tensor.shape, &elems).map_err(err)
    } else {
        numpy_io::array_from_chunks(py, tensor.dtype, &tensor.shape, &[&tensor.data]).map_err(err)
    }
}
