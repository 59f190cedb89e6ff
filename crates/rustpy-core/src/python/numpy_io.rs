//! numpy arrays in and out: the only place that touches numpy's C API, and
//! the only module of this crate allowed `unsafe`.

#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::borrow::Cow;
use std::os::raw::c_int;
use std::ptr;

use numpy::npyffi::{
    get_type_object, npy_intp, NpyTypes, PyArrayObject, NPY_ARRAY_WRITEABLE, NPY_TYPES,
    PY_ARRAY_API,
};
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use super::error::py_error;
use crate::error::{Error, Result};
use crate::rules::batch::{self, InputPlan, Layout, Source};
use crate::rules::bytes;
use crate::rules::dtype::DataType;
use crate::rules::request::InputTensor;
use crate::rules::shared::SharedRegion;
use crate::rules::spec::{dims_match, fmt_shape, TensorSpec};
use crate::rules::tensor::{plan_gather, Gather, TensorBuffer};
use crate::server::PlacedBytes;

fn npy_type(dtype: DataType) -> NPY_TYPES {
    match dtype {
        DataType::Bool => NPY_TYPES::NPY_BOOL,
        DataType::Uint8 => NPY_TYPES::NPY_UBYTE,
        DataType::Uint16 | DataType::Bf16 => NPY_TYPES::NPY_USHORT,
        DataType::Uint32 => NPY_TYPES::NPY_UINT,
        DataType::Uint64 => NPY_TYPES::NPY_ULONG,
        DataType::Int8 => NPY_TYPES::NPY_BYTE,
        DataType::Int16 => NPY_TYPES::NPY_SHORT,
        DataType::Int32 => NPY_TYPES::NPY_INT,
        DataType::Int64 => NPY_TYPES::NPY_LONG,
        DataType::Fp16 => NPY_TYPES::NPY_HALF,
        DataType::Fp32 => NPY_TYPES::NPY_FLOAT,
        DataType::Fp64 => NPY_TYPES::NPY_DOUBLE,
        DataType::Bytes => NPY_TYPES::NPY_OBJECT,
    }
}

/// `PyArray_NewFromDescr` for a C-contiguous array of `dtype` and `shape`:
/// numpy allocates when `data` is null, else the array refers to `data`.
///
/// # Safety
/// The GIL must be held; a non-null `data` must hold the array's bytes and
/// outlive it (give the array a base object that keeps it alive).
unsafe fn new_from_descr<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    data: *mut u8,
    flags: c_int,
) -> PyResult<(Bound<'py, PyAny>, *mut u8)> {
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    // SAFETY: numpy's C API is imported by PY_ARRAY_API on first use and the
    // caller holds the GIL. DescrFromType returns a new reference that
    // NewFromDescr steals; dims outlives the call.
    unsafe {
        let descr = PY_ARRAY_API.PyArray_DescrFromType(py, npy_type(dtype) as c_int);
        let obj = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            get_type_object(py, NpyTypes::PyArray_Type),
            descr,
            dims.len() as c_int,
            dims.as_mut_ptr(),
            ptr::null_mut(),
            data as *mut std::os::raw::c_void,
            flags,
            ptr::null_mut(),
        );
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let data = (*(obj as *mut PyArrayObject)).fields.data as *mut u8;
        Ok((Bound::from_owned_ptr(py, obj), data))
    }
}

/// A new C-contiguous array owned by numpy and a pointer to its data, which
/// the caller must fill completely before Python sees the array.
fn new_array<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
) -> PyResult<(Bound<'py, PyAny>, *mut u8)> {
    // SAFETY: we hold the GIL (py); numpy allocates the memory.
    unsafe { new_from_descr(py, dtype, shape, ptr::null_mut(), 0) }
}

/// One numpy array of `dtype` and `shape` assembled from `buffers` (in
/// order), as `tensor::plan_gather` plans it: a view when the buffers lie
/// back to back in a worker's shared input region (the view's base object
/// keeps the region mapped), else one copy into memory numpy owns. Fails
/// unless `shape` describes exactly the buffers' total size.
///
/// Memory lent for the call (Triton's request buffers above all) always
/// reaches Python as a copy: those buffers belong to Triton's frontends
/// (gRPC reuses its message buffers, HTTP frees the body, a client's
/// shared-memory region is unmapped when it unregisters it), so no lifetime
/// a view could rely on exists (docs/python-api.md, "Inputs are copies").
pub fn array_from_buffers<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    buffers: &[&TensorBuffer<'_>],
) -> Result<Bound<'py, PyAny>> {
    let pyerr = |e: PyErr| py_error(py, &e, "assembling an array");
    let total: usize = buffers.iter().map(|b| b.len()).sum();
    let expected = expected_byte_size(dtype, shape);
    if expected != Some(total) {
        return Err(Error::internal(format!(
            "{total} bytes of data do not match shape {} of {dtype} ({})",
            fmt_shape(shape),
            match expected {
                Some(n) => format!("{n} bytes"),
                None => "not a fixed-size type or an invalid shape".to_string(),
            }
        )));
    }
    let runs = match plan_gather(buffers, dtype.element_size().unwrap_or(1))? {
        Gather::InPlace { region, bytes } => return view_of(py, dtype, shape, region, bytes),
        Gather::Copy(runs) => runs,
    };
    let (array, data) = new_array(py, dtype, shape).map_err(pyerr)?;
    let copy = |dst: usize| {
        let mut offset = 0usize;
        for run in &runs {
            // SAFETY: the array was allocated for exactly the elements of
            // `shape`, whose byte size was checked above to equal the sum of
            // the runs' sizes; nothing else knows the array yet.
            unsafe {
                ptr::copy_nonoverlapping(run.as_ptr(), (dst as *mut u8).add(offset), run.len())
            };
            offset += run.len();
        }
    };
    let dst = data as usize;
    if total >= GIL_FREE_COPY_BYTES {
        // Large copies run without the GIL so other instances' Python runs
        // meanwhile (the array is not yet visible to any Python code).
        py.detach(|| copy(dst));
    } else {
        copy(dst);
    }
    Ok(array)
}

/// One array from one buffer of host memory (lent or owned): a copy.
pub fn array_from_bytes<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    bytes: &[u8],
) -> Result<Bound<'py, PyAny>> {
    array_from_buffers(py, dtype, shape, &[&TensorBuffer::owned(bytes)])
}

/// One input of a predict call as an array, allocated and filled as `plan`
/// (from `batch::plan_inputs`) says; `default` is the input's configured
/// default element, for the rows of requests that omit it. The one copy of
/// the requests' data (or, in a worker, a view: see [`array_from_buffers`]).
pub fn array_from_plan<'py>(
    py: Python<'py>,
    model: &str,
    plan: &InputPlan<'_, '_>,
    default: &[u8],
) -> Result<Bound<'py, PyAny>> {
    let err = |e: PyErr| py_error(py, &e, &format!("model '{model}': preparing inputs"));
    let context = |e: Error| e.context(format!("model '{model}': input '{}'", plan.name));
    let has_defaults = plan
        .sources
        .iter()
        .any(|s| matches!(s, Source::Default { .. }));
    if plan.dtype == DataType::Bytes {
        let mut elems: Vec<Cow<'_, [u8]>> = if has_defaults {
            let mut elems = Vec::new();
            for source in &plan.sources {
                match source {
                    Source::Tensor(t) => elems.extend(batch::gather_bytes(&[*t]).map_err(context)?),
                    Source::Default { elements } => {
                        elems.extend(std::iter::repeat_n(Cow::Borrowed(default), *elements))
                    }
                }
            }
            elems
        } else {
            let tensors: Vec<&InputTensor<'_>> = plan
                .sources
                .iter()
                .filter_map(|s| match s {
                    Source::Tensor(t) => Some(*t),
                    Source::Default { .. } => None,
                })
                .collect();
            batch::gather_bytes(&tensors).map_err(context)?
        };
        if let Layout::Padded(pad) = &plan.layout {
            let mut padded: Vec<Cow<'_, [u8]>> = vec![Cow::Borrowed(&b""[..]); pad.element_count()];
            for &(src, dst, n) in &pad.runs {
                padded[dst..dst + n].clone_from_slice(&elems[src..src + n]);
            }
            elems = padded;
        }
        // bytes_array fills one slot per element of the shape.
        if elems.len() != crate::rules::request::element_count(&plan.shape) {
            return Err(context(Error::internal(format!(
                "{} elements do not fill shape {}",
                elems.len(),
                fmt_shape(&plan.shape)
            ))));
        }
        return bytes_array(py, &plan.shape, &elems).map_err(err);
    }
    let fills: Vec<Vec<u8>> = plan
        .sources
        .iter()
        .map(|s| match s {
            Source::Default { elements } => default.repeat(*elements),
            Source::Tensor(_) => Vec::new(),
        })
        .collect();
    let filled: Vec<TensorBuffer<'_>> = fills.iter().map(|f| TensorBuffer::owned(f)).collect();
    let mut buffers: Vec<&TensorBuffer<'_>> = Vec::with_capacity(plan.sources.len());
    for (k, source) in plan.sources.iter().enumerate() {
        match source {
            Source::Tensor(t) => buffers.extend(t.buffers.iter()),
            Source::Default { .. } => buffers.push(&filled[k]),
        }
    }
    match &plan.layout {
        Layout::Concat => {
            array_from_buffers(py, plan.dtype, &plan.shape, &buffers).map_err(context)
        }
        Layout::Padded(pad) => {
            // One pass straight from the requests' buffers (PadPlan::gather).
            let chunks: Vec<&[u8]> = buffers
                .iter()
                .map(|b| b.host())
                .collect::<Result<_>>()
                .map_err(context)?;
            let padded = pad.gather(&chunks, plan.dtype.element_size().unwrap_or(1));
            array_from_bytes(py, plan.dtype, &pad.shape, &padded).map_err(context)
        }
    }
}

/// The base object of every view of a shared region: it holds the region
/// (its memory, so a view never outlives its bytes, and its owner, whose
/// reference count tells the worker whether views were kept).
#[pyclass(module = "_rustpy_worker", frozen)]
struct ViewBase {
    _region: SharedRegion,
}

/// The base object of an array over bytes it took from Rust (a BLS
/// response's output buffer): the bytes live as long as the array, then
/// go back to `crate::buffers` for reuse.
#[pyclass(module = "_rustpy_native", frozen)]
struct OwnedBase {
    bytes: Vec<u8>,
}

impl Drop for OwnedBase {
    fn drop(&mut self) {
        crate::buffers::give(std::mem::take(&mut self.bytes));
    }
}

/// A writable C-contiguous array of `dtype` and `shape` over `bytes`,
/// without copying them (the array owns them through its base object).
/// `bytes` must be exactly the shape's size; bytes that are not aligned for
/// `dtype` are copied instead, as numpy computes faster on aligned data.
pub fn array_owning<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    bytes: Vec<u8>,
) -> Result<Bound<'py, PyAny>> {
    let pyerr = |e: PyErr| py_error(py, &e, "wrapping an array");
    if expected_byte_size(dtype, shape) != Some(bytes.len()) {
        return Err(Error::internal(format!(
            "{} bytes of data do not match shape {} of {dtype}",
            bytes.len(),
            fmt_shape(shape)
        )));
    }
    let align = dtype.element_size().unwrap_or(1).max(1);
    if bytes.is_empty() || !(bytes.as_ptr() as usize).is_multiple_of(align) {
        return array_from_bytes(py, dtype, shape, &bytes);
    }
    let data = bytes.as_ptr() as *mut u8;
    let base = Py::new(py, OwnedBase { bytes }).map_err(pyerr)?;
    // The Vec was given to us: nothing else reads or writes those bytes.
    // SAFETY: `data` is the Vec's heap bytes (unmoved by moving the Vec into
    // the base), exactly the shape's size (checked above), kept by the base.
    unsafe { array_with_base(py, dtype, shape, data, true, base.into_any()) }.map_err(pyerr)
}

/// A C-contiguous array of `dtype` and `shape` over `data`, whose base
/// object (which keeps `data` alive) becomes `base` before Python sees it.
///
/// # Safety
/// `data` holds the shape's bytes, stays valid (and writable, with
/// `writable`) while `base` lives, and the GIL is held (`py`).
unsafe fn array_with_base<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    data: *mut u8,
    writable: bool,
    base: Py<PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = match writable {
        true => numpy::npyffi::NPY_ARRAY_CARRAY | NPY_ARRAY_WRITEABLE,
        false => numpy::npyffi::NPY_ARRAY_CARRAY,
    };
    // SAFETY: the caller's contract; SetBaseObject steals the reference to
    // `base`, which then lives as long as the array.
    unsafe {
        let (array, _) = new_from_descr(py, dtype, shape, data, flags)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast(), base.into_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

/// The base object of an array over a placed range of shared memory
/// (`ctx.empty` in a worker: the output region): the range stays held, and
/// mapped, while the array lives.
#[pyclass(module = "_rustpy_native", frozen)]
struct PlacedBase {
    placed: PlacedBytes,
}

/// A writable C-contiguous array of `dtype` and `shape` over `placed`
/// (exactly the shape's size), without copying; the array's base holds it.
pub fn array_over_placed<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    placed: PlacedBytes,
) -> Result<Bound<'py, PyAny>> {
    let pyerr = |e: PyErr| py_error(py, &e, "an array in shared memory");
    if expected_byte_size(dtype, shape) != Some(placed.bytes().len()) || placed.bytes().is_empty() {
        return Err(Error::internal(format!(
            "{} bytes of shared memory do not match shape {} of {dtype}",
            placed.bytes().len(),
            fmt_shape(shape)
        )));
    }
    let base = Py::new(py, PlacedBase { placed }).map_err(pyerr)?;
    let data = base.get().placed.bytes().as_ptr() as *mut u8;
    // The range is this array's alone until the base dies (its placer hands
    // it out once).
    // SAFETY: `data` is the shape's bytes (checked above), mapped and
    // writable while the base's PlacedBytes lives (SharedMemory's contract).
    unsafe { array_with_base(py, dtype, shape, data, true, base.into_any()) }.map_err(pyerr)
}

/// How many references `obj` has (pyo3 0.30 deprecated `Py::get_refcnt` for
/// the raw call): the worker's test of whether Python kept a batch's views.
pub fn ref_count(obj: &Bound<'_, PyAny>) -> isize {
    // SAFETY: `obj` is a live object borrowed under the GIL (the Bound proves
    // both), which is all Py_REFCNT reads.
    unsafe { pyo3::ffi::Py_REFCNT(obj.as_ptr()) }
}

/// A numpy view of `bytes`, which lie inside `region`; the view's base
/// object holds the region, so the bytes stay mapped while the view lives.
fn view_of<'py>(
    py: Python<'py>,
    dtype: DataType,
    shape: &[i64],
    region: &SharedRegion,
    bytes: &[u8],
) -> Result<Bound<'py, PyAny>> {
    let pyerr = |e: PyErr| py_error(py, &e, "viewing shared memory");
    let base = Py::new(
        py,
        ViewBase {
            _region: region.clone(),
        },
    )
    .map_err(pyerr)?;
    let data = bytes.as_ptr() as *mut u8;
    // SAFETY: `bytes` (the caller's shape) lie inside the region, which (by
    // SharedMemory's contract) keeps them mapped while the base holding it lives.
    unsafe { array_with_base(py, dtype, shape, data, false, base.into_any()) }.map_err(pyerr)
}

/// The byte size of a C-contiguous `dtype` array of `shape` (None for BYTES,
/// a negative dim or an overflow).
pub(crate) fn expected_byte_size(dtype: DataType, shape: &[i64]) -> Option<usize> {
    let mut n = dtype.element_size()?;
    for &d in shape {
        n = n.checked_mul(usize::try_from(d).ok()?)?;
    }
    Some(n)
}

/// Copies at least this large release the GIL (below it, the hand-off costs
/// more than the copy).
const GIL_FREE_COPY_BYTES: usize = 256 * 1024;

/// Makes an array read-only (inputs are read-only, as upstream's are).
pub fn set_readonly(array: &Bound<'_, PyAny>) {
    if let Ok(a) = array.cast::<PyUntypedArray>() {
        // SAFETY: we hold the GIL and only clear a flag on a live array.
        unsafe { (*a.as_array_ptr()).fields.flags &= !NPY_ARRAY_WRITEABLE };
    }
}

/// A numpy object array of `bytes` with the given shape.
pub fn bytes_array<'py>(
    py: Python<'py>,
    shape: &[i64],
    elems: &[Cow<'_, [u8]>],
) -> PyResult<Bound<'py, PyAny>> {
    let (array, data) = new_array(py, DataType::Bytes, shape)?;
    let slots = data as *mut *mut pyo3::ffi::PyObject;
    for (i, elem) in elems.iter().enumerate() {
        let item = PyBytes::new(py, elem).into_ptr();
        // SAFETY: an object array of `shape` has one pointer slot per element,
        // and elems.len() equals its element count (checked by the caller).
        // numpy zero-fills object arrays, so there is no old reference to drop;
        // the slot takes our new reference.
        unsafe { *slots.add(i) = item };
    }
    Ok(array)
}

/// An output array checked against the model configuration, kept alive so
/// its memory can be read after the GIL is released.
pub struct ExtractedOutput {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
    pub data: ExtractedData,
    _keepalive: Option<Py<PyAny>>,
}

pub enum ExtractedData {
    /// Points into the numpy array held by `_keepalive`.
    Fixed { ptr: *const u8, len: usize },
    Bytes {
        buf: Vec<u8>,
        elem_offsets: Vec<usize>,
    },
}

// SAFETY: the pointer refers to the data of a numpy array we hold a strong
// reference to; reading it from another thread without the GIL is sound as
// long as user code does not resize the array concurrently, which numpy
// forbids while other references exist.
unsafe impl Send for ExtractedData {}
// SAFETY: shared access only reads the array memory; see Send above.
unsafe impl Sync for ExtractedData {}

impl ExtractedOutput {
    /// The data on the wire: the array's bytes, or the serialized BYTES.
    pub fn wire_bytes(&self) -> &[u8] {
        match &self.data {
            // SAFETY: see the Send impl; the array (kept in `_keepalive`)
            // outlives `self`.
            ExtractedData::Fixed { ptr, len } if *len > 0 => unsafe {
                std::slice::from_raw_parts(*ptr, *len)
            },
            ExtractedData::Fixed { .. } => &[],
            ExtractedData::Bytes { buf, .. } => buf,
        }
    }

    /// The whole output as one response's tensor.
    pub fn slice(&self) -> crate::engine::OutputSlice<'_> {
        crate::engine::OutputSlice::host(
            &self.name,
            self.dtype,
            self.shape.clone(),
            self.wire_bytes(),
        )
    }

    /// The data as a batch view that can be cut into rows.
    pub fn view_data(&self) -> crate::rules::batch::OutputData<'_> {
        match &self.data {
            ExtractedData::Bytes { buf, elem_offsets } => {
                crate::rules::batch::OutputData::Bytes { buf, elem_offsets }
            }
            ExtractedData::Fixed { .. } => {
                crate::rules::batch::OutputData::Fixed(self.wire_bytes())
            }
        }
    }
}

/// Converts what user code returned for output `spec` into wire data,
/// checking dtype and shape. `batch_rows` is the expected dim 0 when the
/// model batches.
pub fn extract_output(
    py: Python<'_>,
    model: &str,
    spec: &TensorSpec,
    value: &Bound<'_, PyAny>,
    batch_rows: Option<usize>,
) -> Result<ExtractedOutput> {
    let name = &spec.name;
    let view = ArrayView::new(py, model, name, value)?;
    if !spec.dtype.accepts_numpy(view.kind, view.itemsize) {
        return Err(Error::invalid_arg(format!(
            "model '{model}': output '{name}' is a numpy {} array but the model config declares {} (expected numpy {})",
            view.dtype_str(),
            spec.dtype,
            spec.dtype.numpy_name()
        )));
    }
    check_output_shape(model, spec, &view.shape, batch_rows)?;
    view.into_wire(py, model, name, spec.dtype)
}

/// Converts a tensor user code built itself (pb_utils.Tensor) into wire data;
/// its type comes from the array (or `dtype` when given, e.g. for BF16).
pub fn extract_tensor(
    py: Python<'_>,
    model: &str,
    name: &str,
    value: &Bound<'_, PyAny>,
    dtype: Option<DataType>,
) -> Result<ExtractedOutput> {
    let view = ArrayView::new(py, model, name, value)?;
    let dtype = match dtype {
        Some(d) if d.accepts_numpy(view.kind, view.itemsize) => d,
        _ => DataType::from_numpy(view.kind, view.itemsize).ok_or_else(|| {
            Error::invalid_arg(format!(
                "model '{model}': tensor '{name}' has numpy dtype {}, which has no Triton data type",
                view.dtype_str()
            ))
        })?,
    };
    view.into_wire(py, model, name, dtype)
}

/// A numpy array (or anything numpy.asarray accepts) and its type facts.
struct ArrayView<'py> {
    array: Bound<'py, PyAny>,
    kind: char,
    itemsize: usize,
    native: bool,
    shape: Vec<i64>,
}

impl<'py> ArrayView<'py> {
    /// numpy's name of the dtype, for error messages only (str() is a Python call).
    fn dtype_str(&self) -> String {
        self.array
            .getattr("dtype")
            .map(|d| d.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn new(py: Python<'py>, model: &str, name: &str, value: &Bound<'py, PyAny>) -> Result<Self> {
        let pyerr = |e: PyErr| py_error(py, &e, &format!("model '{model}': output '{name}'"));
        let array: Bound<'py, PyAny> = match value.cast::<PyUntypedArray>() {
            Ok(a) => a.clone().into_any(),
            Err(_) => py
                .import("numpy")
                .and_then(|np| np.call_method1("asarray", (value,)))
                .map_err(pyerr)?,
        };
        let a = array
            .cast::<PyUntypedArray>()
            .map_err(|e| pyerr(e.into()))?;
        let d = a.dtype();
        let (kind, itemsize, native) = (d.kind() as char, d.itemsize(), d.byteorder() != b'>');
        let shape = a.shape().iter().map(|&d| d as i64).collect();
        Ok(ArrayView {
            array,
            kind,
            itemsize,
            native,
            shape,
        })
    }

    fn into_wire(
        self,
        py: Python<'py>,
        model: &str,
        name: &str,
        dtype: DataType,
    ) -> Result<ExtractedOutput> {
        let pyerr = |e: PyErr| py_error(py, &e, &format!("model '{model}': output '{name}'"));
        let ArrayView {
            mut array,
            itemsize,
            native,
            shape,
            ..
        } = self;
        if dtype == DataType::Bytes {
            let flat = array
                .call_method1("ravel", ("C",))
                .and_then(|f| f.call_method0("tolist"))
                .map_err(pyerr)?;
            let mut buf = Vec::new();
            let mut elem_offsets = vec![0];
            for item in flat.try_iter().map_err(pyerr)? {
                let item = item.map_err(pyerr)?;
                if let Ok(b) = item.cast::<PyBytes>() {
                    bytes::encode_into(&mut buf, b.as_bytes())?;
                } else if let Ok(s) = item.cast::<PyString>() {
                    bytes::encode_into(&mut buf, s.to_str().map_err(pyerr)?.as_bytes())?;
                } else {
                    let s = item.str().map_err(pyerr)?;
                    bytes::encode_into(&mut buf, s.to_str().map_err(pyerr)?.as_bytes())?;
                }
                elem_offsets.push(buf.len());
            }
            return Ok(ExtractedOutput {
                name: name.to_string(),
                dtype,
                shape,
                data: ExtractedData::Bytes { buf, elem_offsets },
                _keepalive: None,
            });
        }
        let contiguous = array
            .cast::<PyUntypedArray>()
            .map_err(|e| pyerr(e.into()))?
            .is_c_contiguous();
        if !contiguous || !native {
            let np = py.import("numpy").map_err(pyerr)?;
            let native_dtype = array
                .getattr("dtype")
                .and_then(|d| d.call_method1("newbyteorder", ("=",)))
                .map_err(pyerr)?;
            array = np
                .call_method1("ascontiguousarray", (array, native_dtype))
                .map_err(pyerr)?;
        }
        let a = array
            .cast::<PyUntypedArray>()
            .map_err(|e| pyerr(e.into()))?;
        let len = a.len() * itemsize;
        // SAFETY: `a` is a live C-contiguous ndarray; its data pointer is valid
        // for len() * itemsize bytes while the array lives (kept in _keepalive).
        let ptr = unsafe { (*a.as_array_ptr()).fields.data as *const u8 };
        Ok(ExtractedOutput {
            name: name.to_string(),
            dtype,
            shape,
            data: ExtractedData::Fixed { ptr, len },
            _keepalive: Some(array.unbind()),
        })
    }
}

fn check_output_shape(
    model: &str,
    spec: &TensorSpec,
    shape: &[i64],
    batch_rows: Option<usize>,
) -> Result<()> {
    let name = &spec.name;
    let item = match batch_rows {
        Some(rows) => {
            let Some((&lead, item)) = shape.split_first() else {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': output '{name}' is a 0-d array but the model batches: its dim 0 must be the batch size {rows}"
                )));
            };
            if lead as usize != rows {
                return Err(Error::invalid_arg(format!(
                    "model '{model}': output '{name}' has leading dim {lead} but the batch has {rows} rows (shape {}); predict must return one row per input row",
                    fmt_shape(shape)
                )));
            }
            item
        }
        None => shape,
    };
    if !dims_match(&spec.dims, item) {
        let expected = if batch_rows.is_some() {
            format!("[batch]+{}", fmt_shape(&spec.dims))
        } else {
            fmt_shape(&spec.dims)
        };
        return Err(Error::invalid_arg(format!(
            "model '{model}': output '{name}' has shape {} but the model config declares {expected}",
            fmt_shape(shape)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shared::tests::region_of;
    use std::sync::Arc;

    fn data_ptr(array: &Bound<'_, PyAny>) -> usize {
        let a = array.cast::<PyUntypedArray>().unwrap();
        // SAFETY: a live array borrowed under the GIL; only its field is read.
        unsafe { (*a.as_array_ptr()).fields.data as usize }
    }

    #[test]
    fn lent_memory_is_copied_and_a_shared_region_is_viewed_in_place() {
        crate::python::initialize().unwrap();
        Python::attach(|py| {
            let lent = [1u8, 2, 3, 4, 5, 6, 7, 8];
            let copy =
                array_from_buffers(py, DataType::Uint8, &[8], &[&TensorBuffer::borrowed(&lent)])
                    .unwrap();
            assert_ne!(data_ptr(&copy), lent.as_ptr() as usize);
            assert_eq!(
                copy.call_method0("tolist").unwrap().to_string(),
                "[1, 2, 3, 4, 5, 6, 7, 8]"
            );

            let region = region_of((0u8..64).collect());
            let bytes = region.bytes();
            let a = TensorBuffer::shared(&bytes[8..12], region.clone());
            let b = TensorBuffer::shared(&bytes[12..16], region.clone());
            let owners = Arc::strong_count(region.owner());
            let view = array_from_buffers(py, DataType::Uint8, &[2, 4], &[&a, &b]).unwrap();
            assert_eq!(data_ptr(&view), bytes[8..].as_ptr() as usize);
            assert_eq!(
                view.call_method0("tolist").unwrap().to_string(),
                "[[8, 9, 10, 11], [12, 13, 14, 15]]"
            );
            // The view's base holds the region (and so its owner) while it lives.
            assert_eq!(Arc::strong_count(region.owner()), owners + 1);
            drop(view);
            assert_eq!(Arc::strong_count(region.owner()), owners);
            // Not back to back: copied.
            let c = TensorBuffer::shared(&bytes[32..36], region.clone());
            let owners = Arc::strong_count(region.owner());
            let copied = array_from_buffers(py, DataType::Uint8, &[8], &[&a, &c]).unwrap();
            assert_ne!(data_ptr(&copied), bytes[8..].as_ptr() as usize);
            // A copy holds nothing of the region.
            assert_eq!(Arc::strong_count(region.owner()), owners);
            // A size that does not match the shape is refused.
            assert!(array_from_buffers(py, DataType::Uint8, &[3], &[&a]).is_err());
        });
    }
}
