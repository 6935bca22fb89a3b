//! The cpu backend: plain Rust, no system dependencies, the reference for the other backends.

use std::sync::Arc;

use super::{Backend, BackendKind};
use crate::error::Result;
use crate::model::{Dense, Model};

/// Rows handed to one thread at least; below this, spawning costs more than it saves.
const MIN_ROWS_PER_THREAD: usize = 64;

/// Rows run through the layers together: large enough for the GEMM to reach full speed, small
/// enough that the activations of one block stay in cache.
const BLOCK_ROWS: usize = 256;

/// Runs the folded model with a blocked SGEMM per layer, splitting large batches across threads.
pub struct CpuBackend {
    model: Arc<Model>,
    threads: usize,
    device_name: String,
}

impl CpuBackend {
    /// A cpu backend using up to `threads` threads per call (0: one per available core).
    pub fn new(model: Arc<Model>, threads: usize) -> CpuBackend {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let device_name = format!(
            "cpu: {}, {} thread{}",
            std::env::consts::ARCH,
            threads,
            if threads == 1 { "" } else { "s" }
        );
        CpuBackend {
            model,
            threads,
            device_name,
        }
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device_name(&self) -> &str {
        &self.device_name
    }

    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        let dim = self.model.input_dim();
        let threads = self.threads.min(rows / MIN_ROWS_PER_THREAD).max(1);
        if threads == 1 {
            forward(&self.model, embeddings, probabilities);
            return Ok(());
        }
        let rows_per_thread = rows.div_ceil(threads);
        std::thread::scope(|scope| {
            for (input, output) in embeddings
                .chunks(rows_per_thread * dim)
                .zip(probabilities.chunks_mut(rows_per_thread))
            {
                scope.spawn(|| forward(&self.model, input, output));
            }
        });
        Ok(())
    }
}

/// Probabilities for `output.len()` rows of `input`, block by block.
fn forward(model: &Model, input: &[f32], output: &mut [f32]) {
    let dim = model.input_dim();
    let mut activations = Vec::new();
    let mut next = Vec::new();
    for (block, out) in input
        .chunks(BLOCK_ROWS * dim)
        .zip(output.chunks_mut(BLOCK_ROWS))
    {
        layer_norm(block, dim, model.layer_norm_eps(), &mut activations);
        for layer in model.layers() {
            dense(&activations, out.len(), layer, &mut next);
            std::mem::swap(&mut activations, &mut next);
        }
        for (p, &logit) in out.iter_mut().zip(&activations) {
            *p = sigmoid(logit);
        }
    }
}

/// LayerNorm without affine (folded into the first layer), biased variance as in PyTorch.
fn layer_norm(input: &[f32], dim: usize, eps: f32, output: &mut Vec<f32>) {
    output.clear();
    output.extend_from_slice(input);
    for row in output.chunks_exact_mut(dim) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let variance = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / dim as f32;
        let inv_std = 1.0 / (variance + eps).sqrt();
        row.iter_mut().for_each(|x| *x = (*x - mean) * inv_std);
    }
}

/// `output = input · weightᵀ + bias`, then ReLU if the layer has one.
fn dense(input: &[f32], rows: usize, layer: &Dense, output: &mut Vec<f32>) {
    let (k, n) = (layer.inputs, layer.outputs);
    debug_assert_eq!(input.len(), rows * k);
    output.clear();
    output.resize(rows * n, 0.0);
    // SAFETY: `input` is rows×k row-major, `weight` is n×k row-major read as its k×n transpose
    // (row stride 1, column stride k), `output` is rows×n row-major; all three lengths match.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            k,
            n,
            1.0,
            input.as_ptr(),
            k as isize,
            1,
            layer.weight.as_ptr(),
            1,
            k as isize,
            0.0,
            output.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    for row in output.chunks_exact_mut(n) {
        for (y, b) in row.iter_mut().zip(&layer.bias) {
            let v = *y + b;
            *y = if layer.relu { v.max(0.0) } else { v };
        }
    }
}

/// The logistic function, without overflow for large |x|.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
