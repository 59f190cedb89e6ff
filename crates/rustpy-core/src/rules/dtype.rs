//! Tensor data types as Triton puts them on the wire, and their numpy spelling.

use std::fmt;

/// A tensor element type. Discriminants are Triton's `TRITONSERVER_DataType`
/// values, so the backend converts with a plain integer cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    Bool = 1,
    Uint8 = 2,
    Uint16 = 3,
    Uint32 = 4,
    Uint64 = 5,
    Int8 = 6,
    Int16 = 7,
    Int32 = 8,
    Int64 = 9,
    Fp16 = 10,
    Fp32 = 11,
    Fp64 = 12,
    Bytes = 13,
    Bf16 = 14,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
        DataType::Bf16,
    ];

    /// From Triton's numeric code; `None` for INVALID or a code we don't know.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| *d as u32 == code)
    }

    /// KServe v2 name ("FP32").
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
            DataType::Bf16 => "BF16",
        }
    }

    /// Accepts both the KServe name ("FP32") and the config name ("TYPE_FP32";
    /// the config spells BYTES as "TYPE_STRING").
    pub fn from_name(name: &str) -> Option<Self> {
        let bare = name.strip_prefix("TYPE_").unwrap_or(name);
        if bare == "STRING" {
            return Some(DataType::Bytes);
        }
        Self::ALL.into_iter().find(|d| d.name() == bare)
    }

    /// Bytes per element; `None` for BYTES, whose elements vary in size.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }

    /// The numpy dtype that represents this type in user code. BF16 has no
    /// numpy type: its raw 16-bit patterns travel as uint16.
    pub fn numpy_name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Uint8 => "uint8",
            DataType::Uint16 | DataType::Bf16 => "uint16",
            DataType::Uint32 => "uint32",
            DataType::Uint64 => "uint64",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::Fp16 => "float16",
            DataType::Fp32 => "float32",
            DataType::Fp64 => "float64",
            DataType::Bytes => "object",
        }
    }

    /// The type a numpy array with `kind` (dtype.kind) and `itemsize` holds.
    /// BF16 is never inferred: a uint16 array is accepted for a BF16 output by
    /// [`DataType::accepts_numpy`].
    pub fn from_numpy(kind: char, itemsize: usize) -> Option<Self> {
        Some(match (kind, itemsize) {
            ('b', 1) => DataType::Bool,
            ('u', 1) => DataType::Uint8,
            ('u', 2) => DataType::Uint16,
            ('u', 4) => DataType::Uint32,
            ('u', 8) => DataType::Uint64,
            ('i', 1) => DataType::Int8,
            ('i', 2) => DataType::Int16,
            ('i', 4) => DataType::Int32,
            ('i', 8) => DataType::Int64,
            ('f', 2) => DataType::Fp16,
            ('f', 4) => DataType::Fp32,
            ('f', 8) => DataType::Fp64,
            ('O', _) | ('S', _) | ('U', _) => DataType::Bytes,
            _ => return None,
        })
    }

    /// Whether an array of numpy `kind`/`itemsize` can be sent as `self`.
    pub fn accepts_numpy(self, kind: char, itemsize: usize) -> bool {
        match self {
            DataType::Bf16 => (kind, itemsize) == ('u', 2),
            _ => DataType::from_numpy(kind, itemsize) == Some(self),
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_triton_abi() {
        assert_eq!(DataType::from_code(0), None);
        assert_eq!(DataType::from_code(1), Some(DataType::Bool));
        assert_eq!(DataType::from_code(11), Some(DataType::Fp32));
        assert_eq!(DataType::from_code(13), Some(DataType::Bytes));
        assert_eq!(DataType::from_code(14), Some(DataType::Bf16));
        assert_eq!(DataType::from_code(15), None);
        for d in DataType::ALL {
            assert_eq!(DataType::from_code(d as u32), Some(d));
        }
    }

    #[test]
    fn names_round_trip_in_both_spellings() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_name(d.name()), Some(d));
            assert_eq!(DataType::from_name(&format!("TYPE_{}", d.name())), Some(d));
        }
        assert_eq!(DataType::from_name("TYPE_STRING"), Some(DataType::Bytes));
        assert_eq!(DataType::from_name("TYPE_INVALID"), None);
        assert_eq!(DataType::from_name("FP128"), None);
    }

    #[test]
    fn numpy_mapping_is_consistent_with_element_size() {
        for d in DataType::ALL {
            match d.element_size() {
                Some(size) if d != DataType::Bf16 => {
                    let kind = match d {
                        DataType::Bool => 'b',
                        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => 'f',
                        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => 'i',
                        _ => 'u',
                    };
                    assert_eq!(DataType::from_numpy(kind, size), Some(d));
                    assert!(d.accepts_numpy(kind, size));
                }
                Some(_) => {
                    assert!(d.accepts_numpy('u', 2));
                    assert!(!d.accepts_numpy('f', 2));
                }
                None => assert!(d.accepts_numpy('O', 8)),
            }
        }
        assert!(!DataType::Fp32.accepts_numpy('f', 8));
        assert_eq!(DataType::from_numpy('c', 8), None);
    }
}
