//! Rebuilds when the built-in model changes.

fn main() {
    println!("cargo:rerun-if-changed=models/default.safetensors");
    println!("cargo:rerun-if-changed=build.rs");
}
