//! Generates the raw Triton bindings from our header and sets the link options
//! the backend library needs inside tritonserver.
use std::{env, path::PathBuf};

fn main() {
    let header = "include/rustpy_triton.h";
    println!("cargo:rerun-if-changed={header}");
    println!("cargo:rerun-if-changed=src/exports.map");

    let bindings = bindgen::Builder::default()
        .header(header)
        .allowlist_function("TRITON.*")
        .allowlist_type("TRITON.*")
        .allowlist_var("RUSTPY_.*")
        // Keep enums as plain integer constants: a value the server adds in a
        // later minor version must never be undefined behaviour on our side.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on include/rustpy_triton.h (is libclang-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("triton_bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");

    // Export only the TRITONBACKEND_* entry points (and keep Rust/pyo3 symbols
    // private so two backends in one server never clash).
    let map = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("src/exports.map");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        map.display()
    );
    // Never unmap this library: Python threads started by user code (and the
    // interpreter itself, which cannot be finalised) may outlive an unload.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
