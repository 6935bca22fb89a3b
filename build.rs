//! Rebuilds when the built-in model changes, and gives the shared library its versioned soname.

fn main() {
    println!("cargo:rerun-if-changed=models/default.safetensors");
    println!("cargo:rerun-if-changed=build.rs");
    // The soname carries the C ABI version (GEMMA_CYBER_ABI_VERSION in src/ffi/mod.rs), so programs
    // built against ABI 1 keep loading `libgemma_cyber.so.1` when a later, incompatible library is
    // installed next to it. tools/install.sh checks that the two agree.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libgemma_cyber.so.1");
    }
}
