//! `rustpy-worker`: started by libtriton_rustpy.so for each instance of a
//! model with `rustpy.isolation: "process"`; not meant to be run by hand.
//! Arguments: --socket-fd N --input-fd N --output-fd N [--model NAME]
//! (the model name only labels the process in `ps`).

#![forbid(unsafe_code)]

use rustpy_core::isolation::{run_worker, WorkerFds};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fd = |flag: &str| -> Option<i32> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1)?.parse().ok()
    };
    let (Some(socket), Some(input), Some(output)) =
        (fd("--socket-fd"), fd("--input-fd"), fd("--output-fd"))
    else {
        eprintln!(
            "rustpy-worker: started by the rustpy backend for process-isolated models; \
             usage: rustpy-worker --socket-fd N --input-fd N --output-fd N"
        );
        std::process::exit(2);
    };
    std::process::exit(run_worker(WorkerFds {
        socket,
        input,
        output,
    }));
}
