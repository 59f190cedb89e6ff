//! Property tests for request validation and batch assembly
//! (`rustpy_core::batch`): any shape/data a client can send is either
//! accepted consistently or rejected with a message naming the input; never a
//! panic, never an accepted request whose data does not match its shape.

use proptest::collection::vec;
use proptest::prelude::*;
use rustpy_core::batch::{self, BatchOutput, OutputData};
use rustpy_core::bytes;
use rustpy_core::rules::tensor::TensorBuffer;
use rustpy_core::{DataType, InferRequest, InputTensor, ModelSpec, TensorSpec};

const DTYPES: [DataType; 5] = [
    DataType::Fp32,
    DataType::Int64,
    DataType::Uint8,
    DataType::Fp16,
    DataType::Bytes,
];

fn spec(max_batch_size: usize, dtype: DataType, dims: Vec<i64>) -> ModelSpec {
    ModelSpec {
        name: "m".into(),
        version: 1,
        max_batch_size,
        inputs: vec![TensorSpec {
            name: "X".into(),
            dtype,
            dims,
            optional: false,
        }],
        outputs: vec![TensorSpec {
            name: "Y".into(),
            dtype,
            dims: vec![-1],
            optional: false,
        }],
        decoupled: false,
        ragged: Default::default(),
    }
}

/// A dimension as a client might send it: small, zero, negative, or huge
/// (including values whose product overflows 64 bits).
fn dim() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0i64..5,
        1 => Just(-1i64),
        1 => Just(1i64 << 31),
        1 => Just(1i64 << 32),
        1 => Just((1i64 << 62) + 1),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

fn checked_count(shape: &[i64]) -> Option<usize> {
    // Any zero dim makes the count 0, however large the others.
    if shape.contains(&0) {
        return Some(0);
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn validate_never_panics_and_accepts_only_consistent_requests(
        mbs in prop_oneof![Just(0usize), 1usize..8],
        dt in 0usize..DTYPES.len(),
        dims in vec(prop_oneof![Just(-1i64), 0i64..4], 0..3),
        shape in vec(dim(), 0..4),
        data in vec(any::<u8>(), 0..64),
        split in any::<prop::sample::Index>(),
    ) {
        let dtype = DTYPES[dt];
        let spec = spec(mbs, dtype, dims);
        // The data may arrive in one or two chunks.
        let at = split.index(data.len() + 1);
        let chunks: Vec<&[u8]> = if at == 0 { vec![&data[..]] } else { vec![&data[..at], &data[at..]] };
        let req = InferRequest {
            inputs: vec![InputTensor { name: "X".into(), dtype, shape: shape.clone(), buffers: chunks.into_iter().map(TensorBuffer::borrowed).collect() }],
            ..Default::default()
        };
        match batch::validate_request(&spec, &req) {
            Err(e) => prop_assert!(e.message.contains("'X'"), "error does not name the input: {}", e.message),
            Ok(rows) => {
                let count = checked_count(&shape);
                prop_assert!(count.is_some(), "accepted shape {:?} whose element count overflows", shape);
                let count = count.unwrap();
                match dtype.element_size() {
                    Some(size) => prop_assert_eq!(Some(data.len()), count.checked_mul(size),
                        "accepted {} bytes for shape {:?}", data.len(), shape),
                    None => prop_assert!(bytes::decode(&data, count).is_ok()),
                }
                if mbs > 0 {
                    prop_assert!(rows >= 1 && rows <= mbs);
                    prop_assert_eq!(rows as i64, shape[0]);
                } else {
                    prop_assert_eq!(rows, 1);
                }
            }
        }
    }

    /// Slicing a batch output back into the requests' rows and concatenating
    /// the slices gives back the whole output, for fixed and BYTES data.
    #[test]
    fn scatter_slices_partition_the_batch(
        rows in vec(1usize..4, 1..6),
        per_row in 0usize..4,
        elems in vec(vec(any::<u8>(), 0..5), 0..64),
    ) {
        let total: usize = rows.iter().sum();
        let n = total * per_row;
        let fixed: Vec<u8> = (0..n * 2).map(|i| i as u8).collect();
        let out = BatchOutput { name: "Y".into(), dtype: DataType::Int16,
            shape: vec![total as i64, per_row as i64], data: OutputData::Fixed(&fixed) };
        let mut joined = Vec::new();
        for r in batch::row_ranges(&rows) {
            let len = r.len();
            let (shape, bytes) = out.slice_rows(r);
            prop_assert_eq!(shape, vec![len as i64, per_row as i64]);
            joined.extend_from_slice(bytes);
        }
        prop_assert_eq!(&joined, &fixed);

        let strs: Vec<Vec<u8>> = (0..n).map(|i| elems.get(i).cloned().unwrap_or_default()).collect();
        let mut buf = Vec::new();
        let mut offs = vec![0];
        for s in &strs {
            bytes::encode_into(&mut buf, s).unwrap();
            offs.push(buf.len());
        }
        let out = BatchOutput { name: "S".into(), dtype: DataType::Bytes,
            shape: vec![total as i64, per_row as i64], data: OutputData::Bytes { buf: &buf, elem_offsets: &offs } };
        let mut back: Vec<Vec<u8>> = Vec::new();
        for r in batch::row_ranges(&rows) {
            let len = r.len();
            let (_, bytes) = out.slice_rows(r);
            back.extend(bytes::decode(bytes, len * per_row).unwrap().into_iter().map(|e| e.to_vec()));
        }
        prop_assert_eq!(back, strs);
    }

    /// plan_groups puts every request in exactly one group, keeps arrival
    /// order within a group, and only groups requests of equal item shape.
    #[test]
    fn plan_groups_is_a_partition(widths in vec(1i64..4, 1..12), split in any::<bool>()) {
        let spec = spec(8, DataType::Fp32, vec![-1]);
        let data = [0u8; 64];
        let reqs: Vec<InferRequest<'_>> = widths.iter().map(|&w| InferRequest {
            inputs: vec![InputTensor { name: "X".into(), dtype: DataType::Fp32, shape: vec![1, w],
                buffers: vec![TensorBuffer::borrowed(&data[..4 * w as usize])] }],
            ..Default::default()
        }).collect();
        let indexed: Vec<(usize, &InferRequest<'_>)> = reqs.iter().enumerate().collect();
        let groups = batch::plan_groups(&spec, &indexed, split);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        for g in &groups {
            prop_assert!(g.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(g.iter().all(|&i| widths[i] == widths[g[0]]));
        }
        seen.sort();
        prop_assert_eq!(seen, (0..widths.len()).collect::<Vec<_>>());
    }
}

/// Regression (found end to end by tests/e2e/test_bad_input.py and here by
/// `validate_never_panics_and_accepts_only_consistent_requests`): the element
/// count of [1, 2^62+1] times 4 bytes wraps to 4 in 64 bits, so a 4-byte
/// payload passed the byte-size check (Triton's own check wraps the same way)
/// and only numpy's allocation stopped it, with a message that did not name
/// the input.
#[test]
fn overflowing_shape_is_rejected_by_name() {
    let spec = spec(4, DataType::Fp32, vec![-1]);
    let data = [0u8; 4];
    for shape in [
        vec![1, (1i64 << 62) + 1],
        vec![1 << 32, 1 << 32],
        vec![1, i64::MAX],
    ] {
        let s = spec.clone();
        let req = InferRequest {
            inputs: vec![InputTensor {
                name: "X".into(),
                dtype: DataType::Fp32,
                shape: shape.clone(),
                buffers: vec![TensorBuffer::borrowed(&data)],
            }],
            ..Default::default()
        };
        let e = batch::validate_request(&s, &req).unwrap_err();
        assert!(e.message.contains("'X'"), "{shape:?}: {e}");
    }
    // The same for BYTES: 2^32 x 2^32 elements is 0 mod 2^64.
    let spec = ModelSpec {
        max_batch_size: 0,
        ..self::spec(0, DataType::Bytes, vec![-1, -1])
    };
    let req = InferRequest {
        inputs: vec![InputTensor {
            name: "X".into(),
            dtype: DataType::Bytes,
            shape: vec![1 << 32, 1 << 32],
            buffers: vec![],
        }],
        ..Default::default()
    };
    let e = batch::validate_request(&spec, &req).unwrap_err();
    assert!(e.message.contains("'X'"), "{e}");
}
