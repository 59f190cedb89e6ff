//! Property tests for the BYTES wire codec (`rustpy_core::bytes`): whatever a
//! client sends, decoding never panics, and encode -> decode round-trips.
//! Bounded to a few hundred cases so `cargo test` stays fast.

use proptest::collection::vec;
use proptest::prelude::*;
use rustpy_core::bytes::{decode, encode_into};

fn encode(elems: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elems {
        encode_into(&mut out, e).unwrap();
    }
    out
}

/// Element counts a request's shape can claim: small, near the data, or absurd.
fn claimed_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..16,
        1 => Just(usize::MAX),
        1 => Just(usize::MAX / 2),
        1 => Just(1usize << 32),
        1 => any::<usize>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes with an arbitrary claimed element count: Ok or Err, never
    /// a panic or an allocation sized by the claim.
    #[test]
    fn decode_never_panics(buf in vec(any::<u8>(), 0..256), expected in claimed_count()) {
        if let Ok(elems) = decode(&buf, expected) {
            prop_assert_eq!(elems.len(), expected);
            // Whatever decodes re-encodes to exactly the input.
            let owned: Vec<Vec<u8>> = elems.iter().map(|e| e.to_vec()).collect();
            prop_assert_eq!(encode(&owned), buf);
        }
    }

    #[test]
    fn encode_decode_round_trips(elems in vec(vec(any::<u8>(), 0..40), 0..24)) {
        let buf = encode(&elems);
        prop_assert_eq!(buf.len(), elems.iter().map(|e| 4 + e.len()).sum::<usize>());
        let back = decode(&buf, elems.len()).unwrap();
        prop_assert_eq!(back.len(), elems.len());
        for (a, b) in back.iter().zip(&elems) {
            prop_assert_eq!(*a, b.as_slice());
        }
    }

    /// A valid encoding under a wrong count, truncated anywhere, or with a
    /// byte appended is an error with a message, never a panic.
    #[test]
    fn corrupted_encodings_are_errors(
        elems in vec(vec(any::<u8>(), 0..16), 1..8),
        cut in any::<prop::sample::Index>(),
        extra in any::<u8>(),
    ) {
        let buf = encode(&elems);
        let n = elems.len();
        prop_assert!(decode(&buf, n + 1).is_err());
        prop_assert!(decode(&buf, n - 1).is_err());
        let at = cut.index(buf.len());          // strictly shorter than buf
        let e = decode(&buf[..at], n).unwrap_err();
        prop_assert!(!e.message.is_empty());
        let mut longer = buf.clone();
        longer.push(extra);
        prop_assert!(decode(&longer, n).is_err());
    }
}

/// Regression (found by `decode_never_panics`): the claimed element count
/// sized the result vector up front, so a shape claiming 2^64-1 elements
/// panicked with "capacity overflow" (and 2^32 tried to allocate 64 GiB)
/// before a single byte was read.
#[test]
fn absurd_claimed_count_does_not_allocate() {
    for expected in [usize::MAX, usize::MAX / 2, 1 << 40, 1 << 32] {
        let e = decode(&[], expected).unwrap_err();
        assert!(e.message.contains("holds 0 elements"), "{e}");
        let e = decode(b"\x01\x00\x00\x00x", expected).unwrap_err();
        assert!(e.message.contains("holds 1 elements"), "{e}");
    }
}
