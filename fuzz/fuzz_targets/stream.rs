//! The reader thread's framing and everything after it: bytes a worker
//! writes to its control socket, arriving in reads of any size with read
//! timeouts anywhere (`data[0] % 32` schedule bytes first: see
//! `rustpy_core::isolation::fuzzing::Backend::feed_stream`). Half frames,
//! huge length fields, garbage, valid frames in any order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustpy_core::isolation::fuzzing::Backend;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (schedule, stream) = rest.split_at((usize::from(n) % 32).min(rest.len()));
    let mut backend = Backend::new().expect("the harness's regions and socket");
    let _ = backend.feed_stream(schedule, stream);
});
