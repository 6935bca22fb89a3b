//! The backends: one trait; cpu in the core, every other backend a plugin. A backend runs the
//! folded [`Model`](crate::model::Model) on a batch.

mod cpu;
pub mod plugin;

#[doc(hidden)]
pub use cpu::CacheResidentTile;
pub use cpu::{CpuBackend, CpuKernel};
pub use plugin::{Plugin, PluginBackend};

use crate::error::Result;

/// Which backend runs the model. `Auto` lets the library choose at create time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A real GPU through the wgpu plugin, else the onnxruntime plugin if ONNX Runtime's library
    /// loads, else cpu.
    #[default]
    Auto = 0,
    /// Plain Rust on the CPU: no system dependencies, the reference for every other backend.
    Cpu = 1,
    /// The onnxruntime plugin: ONNX Runtime, itself loaded at run time.
    Onnxruntime = 2,
    /// The wgpu plugin: WGSL compute shaders through wgpu (Vulkan, Metal, DX12). Its settings
    /// `adapter` and `backends` (or `GEMMA_CYBER_WGPU_ADAPTER`, `GEMMA_CYBER_WGPU_BACKENDS`) choose
    /// the adapter; asked for by name it may be a software one (e.g. lavapipe), which AUTO never
    /// picks.
    Wgpu = 3,
    /// The plugin named by `plugin_name`: a backend shipped as its own shared library.
    Plugin = 4,
}

/// Every kind, in C value order.
const ALL_KINDS: [BackendKind; 5] = [
    BackendKind::Auto,
    BackendKind::Cpu,
    BackendKind::Onnxruntime,
    BackendKind::Wgpu,
    BackendKind::Plugin,
];

impl BackendKind {
    /// The kind with C value `value`, if there is one.
    pub fn from_c(value: u32) -> Option<BackendKind> {
        ALL_KINDS.into_iter().find(|kind| *kind as u32 == value)
    }

    /// The lower-case name used by the CLI and in messages: `auto`, `cpu`, `onnxruntime`,
    /// `wgpu`, `plugin`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Cpu => "cpu",
            BackendKind::Onnxruntime => "onnxruntime",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Plugin => "plugin",
        }
    }

    /// The plugin that serves this kind, if a fixed one does (`wgpu`, `onnxruntime`).
    pub fn plugin_name(self) -> Option<&'static str> {
        match self {
            BackendKind::Onnxruntime | BackendKind::Wgpu => Some(self.name()),
            _ => None,
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

    /// [`classify`](Self::classify) for embeddings of the model's width whose values are not
    /// checked yet: `Ok(false)`, with nothing written, when some value is NaN, infinite or of
    /// magnitude 2^16 or more, for the caller to find and deal with. The default checks all of the
    /// input, then classifies it; a backend that reads its input in parts may check each part
    /// just before reading it, on the thread that reads it.
    fn classify_unchecked(
        &self,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<bool> {
        if !crate::classifier::is_ordinary(embeddings) {
            return Ok(false);
        }
        self.classify(embeddings, rows, probabilities)?;
        Ok(true)
    }
}
