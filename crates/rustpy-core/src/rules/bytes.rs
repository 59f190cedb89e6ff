//! Triton's BYTES tensor encoding: each element is a little-endian u32
//! length followed by that many bytes, elements back to back.

use crate::error::{Error, Result};

/// Splits a serialized BYTES buffer into its elements, checking that exactly
/// `expected` elements fill it (a truncated prefix or trailing garbage is an
/// error, never a panic).
pub fn decode(buf: &[u8], expected: usize) -> Result<Vec<&[u8]>> {
    // The count comes from a client's shape: never size an allocation by it
    // (each element takes at least its 4-byte prefix).
    let mut out = Vec::with_capacity(expected.min(buf.len() / 4));
    let mut rest = buf;
    while !rest.is_empty() {
        if out.len() == expected {
            return Err(Error::invalid_arg(format!(
                "BYTES data holds more than the {expected} elements its shape declares ({} trailing bytes)",
                rest.len()
            )));
        }
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(Error::invalid_arg(format!(
                "BYTES element {} has a truncated length prefix ({} of 4 bytes)",
                out.len(),
                rest.len()
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(Error::invalid_arg(format!(
                "BYTES element {} declares {len} bytes but only {} remain",
                out.len(),
                tail.len()
            )));
        }
        let (elem, tail) = tail.split_at(len);
        out.push(elem);
        rest = tail;
    }
    if out.len() != expected {
        return Err(Error::invalid_arg(format!(
            "BYTES data holds {} elements but its shape declares {expected}",
            out.len()
        )));
    }
    Ok(out)
}

/// Appends one element in the wire encoding.
pub fn encode_into(out: &mut Vec<u8>, elem: &[u8]) -> Result<()> {
    let len = u32::try_from(elem.len())
        .map_err(|_| Error::invalid_arg("a BYTES element is larger than 4 GiB"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(elem);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(elems: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for e in elems {
            encode_into(&mut v, e).unwrap();
        }
        v
    }

    #[test]
    fn round_trips_including_empty_and_non_ascii() {
        let elems: [&[u8]; 3] = [b"", "héllo".as_bytes(), b"\x00\xff"];
        let buf = encode(&elems);
        assert_eq!(buf.len(), 3 * 4 + 6 + 2); // three prefixes, "héllo" is 6 bytes
        assert_eq!(decode(&buf, 3).unwrap(), elems.to_vec());
        assert_eq!(decode(&[], 0).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn rejects_truncated_prefix_and_body() {
        let buf = encode(&[b"abc"]);
        let e = decode(&buf[..2], 1).unwrap_err();
        assert!(e.message.contains("truncated length prefix"), "{e}");
        let e = decode(&buf[..5], 1).unwrap_err();
        assert!(
            e.message.contains("declares 3 bytes but only 1 remain"),
            "{e}"
        );
    }

    #[test]
    fn rejects_element_count_mismatch() {
        let buf = encode(&[b"a", b"b"]);
        assert!(decode(&buf, 3)
            .unwrap_err()
            .message
            .contains("holds 2 elements"));
        assert!(decode(&buf, 1)
            .unwrap_err()
            .message
            .contains("more than the 1"));
    }
}
