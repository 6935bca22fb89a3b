//! The backends: one trait, one module each. A backend runs the folded [`Model`](crate::model::Model)
//! on a batch.

mod cpu;
#[cfg(feature = "onnxruntime")]
mod onnxruntime;
#[cfg(feature = "wgpu")]
pub mod wgpu;

pub use cpu::{CpuBackend, CpuKernel};
#[cfg(feature = "onnxruntime")]
pub use onnxruntime::{onnx_model, OnnxruntimeBackend, LIBRARY_ENV as ONNXRUNTIME_LIBRARY_ENV};
#[cfg(feature = "wgpu")]
pub use wgpu::{WgpuBackend, WgpuSettings};

use crate::error::Result;

/// Which backend runs the model. `Auto` lets the library choose at create time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A real GPU through wgpu, else ONNX Runtime if its library loads, else cpu.
    #[default]
    Auto = 0,
    /// Plain Rust on the CPU: no system dependencies, the reference for every other backend.
    Cpu = 1,
    /// ONNX Runtime, loaded at run time.
    Onnxruntime = 2,
    /// WGSL compute shaders through wgpu (Vulkan, Metal, DX12). The environment variables
    /// `GEMMA_CYBER_WGPU_ADAPTER` (part of the adapter's name) and `GEMMA_CYBER_WGPU_BACKENDS`
    /// (`vulkan`, `metal`, `dx12`) choose the adapter; asked for by name it may be a software one
    /// (e.g. lavapipe), which AUTO never picks.
    Wgpu = 3,
}

/// Every kind, in C value order.
const ALL_KINDS: [BackendKind; 4] = [
    BackendKind::Auto,
    BackendKind::Cpu,
    BackendKind::Onnxruntime,
    BackendKind::Wgpu,
];

impl BackendKind {
    /// The kind with C value `value`, if there is one.
    pub fn from_c(value: u32) -> Option<BackendKind> {
        ALL_KINDS.into_iter().find(|kind| *kind as u32 == value)
    }

    /// The lower-case name used by the CLI and in messages: `auto`, `cpu`, `onnxruntime`, `wgpu`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Onnxruntime => "onnxruntime",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// The kind called `name` (as [`BackendKind::name`] spells it).
    pub fn from_name(name: &str) -> Option<BackendKind> {
        ALL_KINDS.into_iter().find(|kind| kind.name() == name)
    }
}

/// A backend ready to classify with one model. Shared by every thread that calls `classify`.
pub trait Backend: Send + Sync {
    /// Which backend this is (never `Auto`).
    fn kind(&self) -> BackendKind;

    /// The device it runs on, for people: e.g. `cpu: x86_64, avx2+fma, 2 threads`.
    fn device_name(&self) -> &str;

    /// Writes one probability per row of `embeddings` (row-major, `rows × input_dim`, already
    /// checked to be finite and of the model's width) into `probabilities`.
    ///
    /// Writes to `probabilities` only when it succeeds.
    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()>;
}
