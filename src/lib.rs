//! gemma-cyber classifies text embeddings as cyber-related or not with the gemma_cyber MLP
//! (LayerNorm → Linear+BatchNorm+ReLU blocks → Linear → sigmoid), on a backend chosen at run time.
//!
//! The C ABI lives in [`ffi`] (header: `include/gemma_cyber.h`); Rust callers use [`Classifier`].

pub mod backend;
mod classifier;
// Rust-only: none of the converter's constants or types belong in the C header.
/// cbindgen:ignore
#[cfg(feature = "convert")]
// `pickle::Machine::run` (one match over the pickle opcodes) is the one function over the length
// limit; it becomes an opcode enum with short handlers, and this `allow` goes with it.
#[allow(clippy::too_many_lines)]
pub mod convert;
pub mod error;
pub mod ffi;
pub mod fs;
pub mod log;
pub mod metrics;
pub mod model;
#[cfg(test)]
mod test_support;
pub mod text;
mod thread_flag;

pub use backend::BackendKind;
pub use classifier::{Classifier, ModelSource, Options, Skipped, AUTO_PLUGINS, MAX_THREADS};
pub use error::{Error, Result, Status};
pub use model::Model;
