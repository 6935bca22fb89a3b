//! The cpu backend: plain Rust, no system dependencies, the reference for the other backends.
//!
//! Weights are packed once at create for the register-tiled kernel in `kernels`; a call runs
//! blocks of rows through the layers, and a large batch is shared out among threads started for
//! the call and joined before it returns.
//! Scratch buffers live per thread, so a single-threaded call does not allocate once warm.

mod kernels;

pub use kernels::CpuKernel;

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::model::Model;
use kernels::PackedDense;

/// Rows handed to one thread at least: starting a thread (~20 µs) is then under 2% of its work.
const MIN_ROWS_PER_THREAD: usize = 64;

/// Rows run through the layers together: enough to reuse each weight panel many times, few enough
/// that one block's activations (BLOCK_ROWS × 768 floats) stay in L2.
const BLOCK_ROWS: usize = 192;

thread_local! {
    /// Two activation buffers per thread, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs the folded model with packed weights, splitting large batches across threads.
pub struct CpuBackend {
    input_dim: usize,
    layer_norm_eps: f32,
    layers: Vec<PackedDense>,
    kernel: CpuKernel,
    threads: usize,
    device_name: String,
}

impl CpuBackend {
    /// A cpu backend using up to `threads` threads per call (0: one per available core), with the
    /// best kernel this CPU supports, or the one `GEMMA_CYBER_CPU_KERNEL` (`portable`, `avx2`) names.
    pub fn new(model: &Model, threads: usize) -> Result<CpuBackend> {
        let kernel = match std::env::var("GEMMA_CYBER_CPU_KERNEL").ok().as_deref() {
            None | Some("") | Some("auto") => CpuKernel::detect(),
            Some("portable") => CpuKernel::Portable,
            Some("avx2") => CpuKernel::Avx2Fma,
            Some(other) => {
                return Err(Error::invalid_argument(format!(
                    "GEMMA_CYBER_CPU_KERNEL is {other:?}; expected auto, portable or avx2"
                )))
            }
        };
        CpuBackend::with_kernel(model, threads, kernel)
    }

    /// A cpu backend with a given kernel; BACKEND_UNAVAILABLE if this CPU lacks its instructions.
    pub fn with_kernel(model: &Model, threads: usize, kernel: CpuKernel) -> Result<CpuBackend> {
        if !kernel.is_supported() {
            return Err(Error::backend_unavailable(format!(
                "the {} cpu kernel needs instructions this CPU lacks",
                kernel.name()
            )));
        }
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let device_name = format!(
            "cpu: {} ({}), {} thread{}",
            std::env::consts::ARCH,
            kernel.name(),
            threads,
            if threads == 1 { "" } else { "s" }
        );
        Ok(CpuBackend {
            input_dim: model.input_dim(),
            layer_norm_eps: model.layer_norm_eps(),
            layers: model
                .layers()
                .iter()
                .map(PackedDense::new)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::backend_unavailable(
                        "not enough memory to lay out the model's weights for the cpu backend",
                    )
                })?,
            kernel,
            threads,
            device_name,
        })
    }

    /// Probabilities for `output.len()` rows of `input`, block by block, on this thread.
    fn forward(&self, input: &[f32], output: &mut [f32]) {
        let mut run = |(activations, next): &mut (Vec<f32>, Vec<f32>)| {
            self.forward_with(input, output, activations, next)
        };
        // A C caller may call from its thread's teardown, when the scratch buffers are gone:
        // then the call uses buffers of its own.
        if SCRATCH
            .try_with(|scratch| run(&mut scratch.borrow_mut()))
            .is_err()
        {
            run(&mut (Vec::new(), Vec::new()));
        }
    }

    fn forward_with(
        &self,
        input: &[f32],
        output: &mut [f32],
        activations: &mut Vec<f32>,
        next: &mut Vec<f32>,
    ) {
        let dim = self.input_dim;
        for (block, out) in input
            .chunks(BLOCK_ROWS * dim)
            .zip(output.chunks_mut(BLOCK_ROWS))
        {
            layer_norm(block, dim, self.layer_norm_eps, activations);
            for layer in &self.layers {
                next.clear();
                next.resize(out.len() * layer.outputs(), 0.0);
                layer.forward(self.kernel, activations, next);
                std::mem::swap(activations, next);
            }
            for (p, &logit) in out.iter_mut().zip(activations.iter()) {
                *p = sigmoid(logit);
            }
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
        // A thread in teardown (its thread-locals gone) starts no threads: std's spawning relies on
        // thread-locals of the calling thread.
        let tearing_down = SCRATCH.try_with(|_| ()).is_err();
        if self.threads == 1 || rows < 2 * MIN_ROWS_PER_THREAD || tearing_down {
            self.forward(embeddings, probabilities);
            return Ok(());
        }
        // Equal chunks of at most a block, as many as a multiple of the thread count, so each
        // thread gets the same share on idle cores (blocks of 192 plus a remainder left one thread
        // a sixth more work than the other at 1,024 rows); taken from a shared counter, so a thread
        // whose core is busy with other work simply takes fewer of them.
        let count = rows.div_ceil(BLOCK_ROWS).next_multiple_of(self.threads);
        let chunk = rows.div_ceil(count).max(MIN_ROWS_PER_THREAD);
        let inputs: Vec<&[f32]> = embeddings.chunks(chunk * self.input_dim).collect();
        let outputs: Vec<Mutex<&mut [f32]>> =
            probabilities.chunks_mut(chunk).map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(input) = inputs.get(i) else { break };
            let mut output = outputs[i].lock().unwrap_or_else(|e| e.into_inner());
            self.forward(input, &mut output);
        };
        let mut helpers = JoinOnDrop(Vec::new());
        for _ in 1..self.threads.min(inputs.len()) {
            let builder = std::thread::Builder::new().name("gemma-cyber-cpu".to_owned());
            // SAFETY: `helpers` joins every thread before this function returns or unwinds, so
            // nothing `work` borrows is dropped while a thread still runs it. (std::thread::scope
            // would do the same, but it registers the calling thread with std, which a foreign
            // thread never frees.)
            match unsafe { builder.spawn_unchecked(work) } {
                Ok(handle) => helpers.0.push(handle),
                // Fewer threads only means this one takes more chunks.
                Err(_) => break,
            }
        }
        work();
        if helpers.join_all() {
            panic!("a cpu worker thread panicked");
        }
        Ok(())
    }
}

/// Worker threads that are joined when this is dropped, also while unwinding.
struct JoinOnDrop(Vec<std::thread::JoinHandle<()>>);

impl JoinOnDrop {
    /// Joins every thread; true if any of them panicked.
    fn join_all(&mut self) -> bool {
        // Every thread is joined, not only those up to the first that panicked.
        let panics = self.0.drain(..).filter_map(|handle| handle.join().err());
        panics.count() > 0
    }
}

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        self.join_all();
    }
}

/// LayerNorm without affine (folded into the first layer), biased variance as in PyTorch.
fn layer_norm(input: &[f32], dim: usize, eps: f32, output: &mut Vec<f32>) {
    output.clear();
    for row in input.chunks_exact(dim) {
        let mean = lane_sum(row, |x| x) / dim as f32;
        let variance = lane_sum(row, |x| (x - mean) * (x - mean)) / dim as f32;
        let inv_std = 1.0 / (variance + eps).sqrt();
        output.extend(row.iter().map(|x| (x - mean) * inv_std));
    }
}

/// Sum of `f` over `values` in [`SUM_LANES`] interleaved partial sums. A single running sum is one
/// chain of dependent additions that no compiler may reorder (a tenth of all the time at batch
/// 1,024); independent lanes become SIMD registers. The order is fixed, so a row's result is the
/// same in every batch and on every thread.
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    let chunks = values.chunks_exact(SUM_LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().map(|&x| f(x)).sum::<f32>()
}

/// Partial sums in [`lane_sum`]: four SSE or two AVX registers.
const SUM_LANES: usize = 16;

/// The logistic function, without overflow for large |x|.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
