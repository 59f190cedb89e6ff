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
            data: t.data.clone(),
        }
    }
}

impl From<&OutputSlice<'_>> for WireOwnedTensor {
    fn from(o: &OutputSlice<'_>) -> Self {
        WireOwnedTensor {
            name: o.name.to_string(),
            dtype: o.dtype.name().to_string(),
            shape: o.shape.clone(),
            data: o.data.to_vec(),
        }
    }
}

impl WireOwnedTensor {
    pub fn into_tensor(self) -> Result<OwnedTensor, WireError> {
        Ok(OwnedTensor {
            dtype: data_type(&self.dtype)?,
            name: self.name,
            shape: self.shape,
            data: self.data,
        })
    }

    /// Borrowed as an output of a response.
    pub fn as_output(&self) -> Result<OutputSlice<'_>, WireError> {
        Ok(OutputSlice {
            name: &self.name,
            dtype: data_type(&self.dtype)?,
            shape: self.shape.clone(),
            data: &self.data,
        })
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
    /// is read or allocated for it.
    pub fn check(&self, size: usize, what: &'static str) -> Result<(), WireError> {
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
            data: vec![0, 0, 128, 63],
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
                data: vec![],
            })
        };
        assert!(bad.as_output().is_err());
    }
}
