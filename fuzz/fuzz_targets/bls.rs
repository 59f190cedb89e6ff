//! A BLS request as the backend reads it (the JSON of a `WireBlsRequest`):
//! inline inputs, or inputs the worker claims to have put in its BLS input
//! region (offsets, lengths, shapes, any number of tensors). Whatever it
//! claims, the backend reads only from within the region, never more bytes
//! than the region holds, and checks each tensor against its shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustpy_core::isolation::fuzzing::Backend;

fuzz_target!(|body: &[u8]| {
    let backend = Backend::new().expect("the harness's regions and socket");
    // Something to read: BYTES-like elements (a length, then bytes).
    let mut region = Vec::new();
    for k in 0..64u32 {
        region.extend_from_slice(&k.to_le_bytes());
        region.extend(std::iter::repeat_n(b'x', k as usize));
    }
    backend.write_bls_input(0, &region);
    let _ = backend.bls_request(body);
});
