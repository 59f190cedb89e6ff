//! `rustpy-worker`: started by libtriton_rustpy.so for each instance of a
//! model with `rustpy.isolation: "process"`; not meant to be run by hand.
//! Arguments: --socket-fd N --input-fd N --output-fd N [--bls-in-fd N
//! --bls-out-fd N] [--model NAME]
//! [--memory-limit-mb N] [--site-packages DIR] [--env-site-packages DIR]
//! (the model name only labels the process in `ps`; the others are the
//! model's memory limit and environment, applied before Python starts).

#![forbid(unsafe_code)]

mod batch;
mod intake;
mod serve;

use std::path::Path;

use rustpy_core::isolation::{env, limit_data};
use serve::WorkerFds;

fn main() {
    // Before anything else: the backend preloaded libpython for us only.
    env::restore_in_worker();
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| -> Option<&str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(String::as_str)
    };
    let fd = |flag: &str| -> Option<i32> { value(flag)?.parse().ok() };
    let (Some(socket), Some(input), Some(output)) =
        (fd("--socket-fd"), fd("--input-fd"), fd("--output-fd"))
    else {
        eprintln!(
            "rustpy-worker: started by the rustpy backend for process-isolated models; \
             usage: rustpy-worker --socket-fd N --input-fd N --output-fd N"
        );
        std::process::exit(2);
    };
    // Before anything allocates much (the interpreter, the model's imports).
    if let Some(mb) = value("--memory-limit-mb").and_then(|v| v.parse::<u64>().ok()) {
        if let Err(e) = limit_data(mb.saturating_mul(1 << 20)) {
            eprintln!("rustpy-worker: cannot set the memory limit of {mb} MiB: {e}");
            std::process::exit(3);
        }
    }
    if let Err(e) = env::apply_in_worker(
        value("--site-packages").map(Path::new),
        value("--env-site-packages").map(Path::new),
    ) {
        eprintln!("rustpy-worker: {}", e.message);
        std::process::exit(3);
    }
    std::process::exit(serve::run(WorkerFds {
        socket,
        input,
        output,
        bls: fd("--bls-in-fd").zip(fd("--bls-out-fd")),
    }));
}
