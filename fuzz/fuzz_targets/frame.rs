//! One frame body (the JSON of a message a worker sends), after the
//! worker's first answer: decoded, checked against the protocol, resolved
//! against the regions and delivered (responses), served (server calls) or
//! handed to the execute thread (Done). The corpus seeds are one body of
//! each message kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustpy_core::isolation::fuzzing::Backend;

fuzz_target!(|body: &[u8]| {
    let Ok(len) = u32::try_from(body.len()) else {
        return;
    };
    let mut frame = len.to_le_bytes().to_vec();
    frame.extend_from_slice(body);
    let mut backend = Backend::new().expect("the harness's regions and socket");
    let ready = backend.feed_frame(b"\x0c\x00\x00\x00{\"Ready\":{}}");
    assert!(ready.breach.is_none(), "{:?}", ready.breach);
    let _ = backend.feed_frame(&frame);
});
