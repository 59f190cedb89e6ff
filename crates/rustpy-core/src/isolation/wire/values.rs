//! Values several messages carry: tensors (by their place in a shared
//! region, or inline), request parameters, correlation ids and errors, each
//! with its conversion both ways.

use serde::{Deserialize, Serialize};

use super::WireError;
use crate::engine::OutputSlice;
use crate::error::{Error, ErrorCode};
use crate::request::{CorrelationId, ParamValue};
use crate::server::OwnedTensor;
use crate::DataType;

/// A tensor's place in a shared-memory region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTensor {
    pub name: String,
    /// KServe name ("FP32").
    pub dtype: String,
    pub shape: Vec<i64>,
    pub offset: usize,
    pub len: usize,
}

impl WireTensor {
    /// This tensor's bytes in `region` (`what` names the region in errors).
    pub fn bytes_in<'a>(
        &self,
        region: &'a [u8],
        what: &'static str,
    ) -> Result<&'a [u8], WireError> {
        self.offset
            .checked_add(self.len)
            .and_then(|end| region.get(self.offset..end))
            .ok_or(WireError::OutOfRange {
                region: what,
                offset: self.offset,
                len: self.len,
                size: region.len(),
            })
    }

    pub fn data_type(&self) -> Result<DataType, WireError> {
        data_type(&self.dtype)
    }

    /// One past this tensor's last byte (saturating: the range is checked
    /// where it is read).
    pub fn end(&self) -> usize {
        self.offset.saturating_add(self.len)
    }
}

pub fn data_type(name: &str) -> Result<DataType, WireError> {
    DataType::from_name(name).ok_or_else(|| WireError::UnknownDtype(name.to_string()))
}

/// Checks that `data` holds exactly the elements `shape` says, as numpy
/// made them: a tensor a worker sends goes to Triton, whose frontends read
/// its bytes by its shape (a BYTES tensor by the lengths before its
/// elements). Pure; walks `data` once for BYTES, does nothing else that
/// grows with the numbers claimed.
pub fn check_tensor(
    name: &str,
    dtype: DataType,
    shape: &[i64],
    data: &[u8],
) -> Result<(), WireError> {
    let bad = |why: String| WireError::BadTensor {
        name: name.to_string(),
        why,
    };
    let mut count: usize = 1;
    for &d in shape {
        let d =
            usize::try_from(d).map_err(|_| bad(format!("a negative dimension in {shape:?}")))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad(format!("the shape {shape:?} overflows")))?;
    }
    match dtype.element_size() {
        Some(size) => {
            if count.checked_mul(size) != Some(data.len()) {
                return Err(bad(format!(
                    "shape {shape:?} of {} needs {} bytes, {} were sent",
                    dtype.name(),
                    count.saturating_mul(size),
                    data.len()
                )));
            }
        }
        None => {
            // Each element: a little-endian u32 length, then that many bytes.
            let mut at = 0usize;
            for k in 0..count {
                let len = data
                    .get(at..at + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| {
                        bad(format!(
                            "shape {shape:?} of BYTES has {count} elements, {k} were sent"
                        ))
                    })?;
                at = at
                    .checked_add(4 + len)
                    .filter(|&end| end <= data.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "element {k} claims {len} bytes past the end of the tensor"
                        ))
                    })?;
            }
            if at != data.len() {
                return Err(bad(format!(
                    "{} bytes after the {count} elements of shape {shape:?}",
                    data.len() - at
                )));
            }
        }
    }
    Ok(())
}

/// A tensor with its bytes inline (small BLS tensors, responses sent after
/// their batch ended).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireOwnedTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

impl From<&OwnedTensor> for WireOwnedTensor {
    fn from(t: &OwnedTensor) -> Self {
        WireOwnedTensor {
            name: t.name.clone(),
            dtype: t.dtype.name().to_string(),
            shape: t.shape.clone(),
            data: t.data.to_vec(),
        }
    }
}

/// An output's bytes, copied into the frame; only host memory can be.
impl TryFrom<&OutputSlice<'_>> for WireOwnedTensor {
    type Error = crate::error::Error;

    fn try_from(o: &OutputSlice<'_>) -> crate::error::Result<Self> {
        Ok(WireOwnedTensor {
            name: o.name.to_string(),
            dtype: o.dtype.name().to_string(),
            shape: o.shape.clone(),
            data: o.data.host()?.to_vec(),
        })
    }
}

impl WireOwnedTensor {
    pub fn into_tensor(self) -> Result<OwnedTensor, WireError> {
        Ok(OwnedTensor {
            dtype: data_type(&self.dtype)?,
            name: self.name,
            shape: self.shape,
            data: self.data.into(),
        })
    }

    /// Borrowed as an output of a response (checked: [`check_tensor`]).
    pub fn as_output(&self) -> Result<OutputSlice<'_>, WireError> {
        let dtype = data_type(&self.dtype)?;
        check_tensor(&self.name, dtype, &self.shape, &self.data)?;
        Ok(OutputSlice::host(
            &self.name,
            dtype,
            self.shape.clone(),
            &self.data,
        ))
    }
}

/// BLS tensors in a BLS region (isolation/bls.rs): one range from `start`
/// (the reader reads the file at the tensors' offsets, so it needs no
/// length of the region).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireShared {
    pub start: usize,
    pub tensors: Vec<WireTensor>,
}

impl WireShared {
    /// Checks every tensor against a region of `size` bytes before anything
    /// is read or allocated for it, and their total: the writer places the
    /// tensors of one request side by side, so together they fit in the
    /// region too (reading them copies them: tensors claiming the same
    /// range over and over would make the reader allocate many regions).
    pub fn check(&self, size: usize, what: &'static str) -> Result<(), WireError> {
        let mut total = 0usize;
        for t in &self.tensors {
            t.data_type()?;
            if t.offset.checked_add(t.len).is_none_or(|end| end > size) {
                return Err(WireError::OutOfRange {
                    region: what,
                    offset: t.offset,
                    len: t.len,
                    size,
                });
            }
            total = total.saturating_add(t.len);
            if total > size {
                return Err(WireError::Overlap {
                    region: what,
                    total,
                    size,
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireParam {
    S(String),
    I(i64),
    B(bool),
    D(f64),
}

impl From<&ParamValue> for WireParam {
    fn from(v: &ParamValue) -> Self {
        match v {
            ParamValue::String(s) => WireParam::S(s.clone()),
            ParamValue::Int(i) => WireParam::I(*i),
            ParamValue::Bool(b) => WireParam::B(*b),
            ParamValue::Double(d) => WireParam::D(*d),
        }
    }
}

impl From<WireParam> for ParamValue {
    fn from(v: WireParam) -> Self {
        match v {
            WireParam::S(s) => ParamValue::String(s),
            WireParam::I(i) => ParamValue::Int(i),
            WireParam::B(b) => ParamValue::Bool(b),
            WireParam::D(d) => ParamValue::Double(d),
        }
    }
}

pub fn params_to_wire(params: &[(String, ParamValue)]) -> Vec<(String, WireParam)> {
    params.iter().map(|(k, v)| (k.clone(), v.into())).collect()
}

pub fn params_from_wire(params: Vec<(String, WireParam)>) -> Vec<(String, ParamValue)> {
    params.into_iter().map(|(k, v)| (k, v.into())).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireCorrelation {
    None,
    Int(u64),
    String(String),
}

impl From<&CorrelationId> for WireCorrelation {
    fn from(c: &CorrelationId) -> Self {
        match c {
            CorrelationId::None => WireCorrelation::None,
            CorrelationId::Int(i) => WireCorrelation::Int(*i),
            CorrelationId::String(s) => WireCorrelation::String(s.clone()),
        }
    }
}

impl From<WireCorrelation> for CorrelationId {
    fn from(c: WireCorrelation) -> Self {
        match c {
            WireCorrelation::None => CorrelationId::None,
            WireCorrelation::Int(i) => CorrelationId::Int(i),
            WireCorrelation::String(s) => CorrelationId::String(s),
        }
    }
}

/// An error on the wire: its code (`ErrorCode as u32`) and message.
pub type WireErrorValue = (u32, String);

pub fn error_to_wire(e: &Error) -> WireErrorValue {
    (e.code as u32, e.message.clone())
}

/// An unknown code becomes what `ErrorCode::from_code` makes of it.
pub fn error_from_wire((code, message): WireErrorValue) -> Error {
    Error::new(ErrorCode::from_code(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tensor_outside_its_region_is_an_error_whatever_its_numbers() {
        let region = [7u8; 100];
        let t = |offset, len| WireTensor {
            name: "X".into(),
            dtype: "UINT8".into(),
            shape: vec![],
            offset,
            len,
        };
        assert_eq!(t(90, 10).bytes_in(&region, "r").unwrap(), &[7u8; 10]);
        assert_eq!(t(100, 0).bytes_in(&region, "r").unwrap(), &[] as &[u8]);
        for (offset, len) in [(91, 10), (101, 0), (usize::MAX, 2), (1, usize::MAX)] {
            assert!(
                matches!(
                    t(offset, len).bytes_in(&region, "r"),
                    Err(WireError::OutOfRange { .. })
                ),
                "{offset}+{len}"
            );
        }
        let shared = WireShared {
            start: 0,
            tensors: vec![t(usize::MAX, 1)],
        };
        assert!(shared.check(usize::MAX, "r").is_err());
        let unknown = WireShared {
            start: 0,
            tensors: vec![WireTensor {
                dtype: "FP128".into(),
                ..t(0, 1)
            }],
        };
        assert!(matches!(
            unknown.check(10, "r"),
            Err(WireError::UnknownDtype(_))
        ));
    }

    #[test]
    fn values_round_trip() {
        for v in [
            ParamValue::String("s".into()),
            ParamValue::Int(-3),
            ParamValue::Bool(true),
            ParamValue::Double(0.5),
        ] {
            assert_eq!(ParamValue::from(WireParam::from(&v)), v);
        }
        for c in [
            CorrelationId::None,
            CorrelationId::Int(9),
            CorrelationId::String("seq".into()),
        ] {
            assert_eq!(CorrelationId::from(WireCorrelation::from(&c)), c);
        }
        let e = Error::invalid_arg("bad");
        let back = error_from_wire(error_to_wire(&e));
        assert_eq!((back.code, back.message), (e.code, e.message));
        let t = OwnedTensor {
            name: "T".into(),
            dtype: DataType::Fp32,
            shape: vec![1],
            data: vec![0, 0, 128, 63].into(),
        };
        let back = WireOwnedTensor::from(&t).into_tensor().unwrap();
        assert_eq!(
            (back.name, back.dtype, back.shape, back.data),
            (t.name, t.dtype, t.shape, t.data)
        );
        let bad = WireOwnedTensor {
            dtype: "NOPE".into(),
            ..WireOwnedTensor::from(&OwnedTensor {
                name: "T".into(),
                dtype: DataType::Uint8,
                shape: vec![0],
                data: vec![].into(),
            })
        };
        assert!(bad.as_output().is_err());
    }
}
