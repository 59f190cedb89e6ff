//! Property tests for `rustpy_core::error::bounded_message`, which keeps every
//! error message handed to the server within what a gRPC trailer can carry.

use proptest::prelude::*;
use rustpy_core::error::{bounded_message, WIRE_MESSAGE_BUDGET};

/// Size of `s` in a grpc-message trailer (percent-encoding outside printable ASCII).
fn wire(s: &str) -> usize {
    s.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '%' {
                1
            } else {
                3 * c.len_utf8()
            }
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bounded_fits_and_keeps_both_ends(msg in "\\PC{0,3000}", budget in 200usize..5000) {
        let out = bounded_message(&msg, budget);
        prop_assert!(wire(&out) <= budget, "{} > {budget}", wire(&out));
        if wire(&msg) <= budget {
            prop_assert_eq!(out.as_ref(), msg.as_str());
        } else {
            prop_assert!(out.contains("bytes of this message cut"));
            let (head, tail) = out.split_once("\n[... ").unwrap();
            prop_assert!(msg.starts_with(head));
            let tail = tail.split_once("cut ...]\n").unwrap().1;
            prop_assert!(msg.ends_with(tail));
            // Most of the budget is used, not thrown away.
            prop_assert!(wire(&out) + 80 >= budget * 9 / 10, "{} of {budget}", wire(&out));
        }
    }
}

/// Regression (tests/e2e/test_faults.py, huge_message): a 200 kB exception
/// message made gRPC clients see "Stream removed (received metadata size
/// exceeds hard limit (value length 200232 vs. 16384))" instead of the error.
#[test]
fn huge_message_keeps_model_type_and_traceback_tail() {
    let msg = format!(
        "model 'faulty': predict raised: RuntimeError: {}\nTraceback (most recent call last):\n  File \"model.py\", line 9",
        "x".repeat(200_000)
    );
    let out = bounded_message(&msg, WIRE_MESSAGE_BUDGET);
    assert!(out.len() <= WIRE_MESSAGE_BUDGET);
    assert!(out.starts_with("model 'faulty': predict raised: RuntimeError: xxx"));
    assert!(out.ends_with("File \"model.py\", line 9"));
    assert!(out.contains("bytes of this message cut"));
    let wide = "é".repeat(10_000);
    assert!(wire(&bounded_message(&wide, WIRE_MESSAGE_BUDGET)) <= WIRE_MESSAGE_BUDGET);
}
