//! The gemma_cyber model: its file format, its validation, and BatchNorm folding.
//!
//! Every backend runs the same folded form: a LayerNorm without affine, then a chain of dense
//! layers (`y = W x + b`, ReLU on all but the last), then a sigmoid. The LayerNorm affine and every
//! BatchNorm are folded into the adjacent dense layers at load, in float64, so backends never see
//! them.

mod fold;
mod format;
mod settings;

pub use format::{MAX_FILE_BYTES, MAX_HEADER_BYTES};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the model comes from.
#[derive(Clone, Debug, Default)]
pub enum ModelSource {
    /// The model compiled into the library.
    #[default]
    Builtin,
    /// A safetensors file on disk.
    Path(PathBuf),
    /// A whole safetensors file already in memory.
    Bytes(Vec<u8>),
}

/// Where BatchNorm sits relative to ReLU in each hidden block; the original training code is not
/// public, so the file records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormOrder {
    /// Linear → BatchNorm → ReLU (the default when the file does not say).
    LinearBnRelu,
    /// Linear → ReLU → BatchNorm.
    LinearReluBn,
}

impl NormOrder {
    /// The spelling used in the file's `norm_order` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            NormOrder::LinearBnRelu => "linear_bn_relu",
            NormOrder::LinearReluBn => "linear_relu_bn",
        }
    }
}

/// One dense layer after folding: `y = weight · x + bias`, then ReLU when `relu` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Width of the input.
    pub inputs: usize,
    /// Width of the output.
    pub outputs: usize,
    /// Row-major `outputs × inputs`, as in PyTorch's `nn.Linear`.
    pub weight: Vec<f32>,
    /// `outputs` values.
    pub bias: Vec<f32>,
    /// ReLU after this layer (every layer but the last).
    pub relu: bool,
}

/// A validated model, BatchNorm folded, ready for any backend.
#[derive(Clone, Debug)]
pub struct Model {
    input_dim: usize,
    layer_norm_eps: f32,
    layers: Vec<Dense>,
    hidden_sizes: Vec<usize>,
    norm_order: NormOrder,
    batch_norm_eps: f64,
    threshold: f32,
    metadata: BTreeMap<String, String>,
    parameter_count: usize,
}

impl Model {
    /// Width of one embedding.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Epsilon of the input LayerNorm.
    pub fn layer_norm_eps(&self) -> f32 {
        self.layer_norm_eps
    }

    /// The folded dense layers, input first; the last one has one output and feeds the sigmoid.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Widths of the hidden blocks as stored in the file, e.g. `[512, 256, 128]`.
    pub fn hidden_sizes(&self) -> &[usize] {
        &self.hidden_sizes
    }

    /// BatchNorm/ReLU order recorded in the file.
    pub fn norm_order(&self) -> NormOrder {
        self.norm_order
    }

    /// Epsilon of the BatchNorm layers (already folded).
    pub fn batch_norm_eps(&self) -> f64 {
        self.batch_norm_eps
    }

    /// The model's own decision threshold: label = probability >= threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Every metadata entry of the file as written, provenance included.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Trainable parameters of the unfolded model (LayerNorm, Linear and BatchNorm affine).
    pub fn parameter_count(&self) -> usize {
        self.parameter_count
    }

    /// The folded model as plugins see it: slices into this model's layers.
    pub fn plugin_view(&self) -> crate::error::Result<gemma_cyber_plugin::Model<'_>> {
        let layers = self
            .layers
            .iter()
            .map(|dense| gemma_cyber_plugin::Layer {
                inputs: dense.inputs,
                outputs: dense.outputs,
                weight: &dense.weight,
                bias: &dense.bias,
                relu: dense.relu,
            })
            .collect();
        gemma_cyber_plugin::Model::new(self.input_dim, self.layer_norm_eps, layers)
            .map_err(|e| crate::error::Error::model_invalid(e.message()))
    }
}
