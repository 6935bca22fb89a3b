//! gemma-cyber classifies text embeddings as cyber-related or not with the gemma_cyber MLP
//! (LayerNorm → Linear+BatchNorm+ReLU blocks → Linear → sigmoid), on a backend chosen at run time.
//!
//! The C ABI lives in [`ffi`] (header: `include/gemma_cyber.h`); Rust callers use [`Classifier`].

pub mod backend;
mod classifier;
pub mod error;
pub mod ffi;
pub mod metrics;
pub mod model;

pub use backend::BackendKind;
pub use classifier::{Classifier, ModelSource, Options, MAX_THREADS};
pub use error::{Error, Result, Status};
pub use model::Model;
