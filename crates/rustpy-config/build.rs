//! Compiles proto/model_config.proto with protox (pure Rust), so building
//! needs no `protoc`. The descriptor set is also written to OUT_DIR for
//! prost-reflect, which drives the text-format and JSON codecs.

use std::{env, fs, path::PathBuf};

use prost_build::Config;
use prost_types::FileDescriptorSet;

fn main() {
    let proto = "proto/model_config.proto";
    println!("cargo:rerun-if-changed={proto}");

    let fds: FileDescriptorSet = protox::compile([proto], ["proto"])
        .unwrap_or_else(|e| panic!("failed to compile {proto}: {e:?}"));

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    fs::write(
        out_dir.join("model_config.fds"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("write descriptor set");

    Config::new()
        .compile_fds(fds)
        .expect("generate Rust code for model_config.proto");
}
