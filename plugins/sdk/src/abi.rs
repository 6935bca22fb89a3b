//! The plugin ABI, version 1, exactly as C sees it. `include/gemma_cyber_plugin.h` is generated
//! from this file by cbindgen; the type names are the C names so that Rust and C read alike.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// The plugin ABI version this header describes. A plugin sets `abi_version` to it; the core
/// refuses a plugin built for another.
pub const GEMMA_CYBER_PLUGIN_ABI_VERSION: u32 = 1;

/// `flags` bit: the core never overlaps calls of `classify` on one instance (it serialises them).
/// Without it, `classify` must be safe to call from many threads at once on one instance.
pub const GEMMA_CYBER_PLUGIN_SERIAL: u32 = 1;

/// One dense layer of the folded model: `y = weight · x + bias`, then ReLU when `relu` is 1. The
/// LayerNorm affine and every BatchNorm are already folded in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gemma_cyber_plugin_layer {
    /// Width of the layer's input.
    pub inputs: usize,
    /// Width of the layer's output.
    pub outputs: usize,
    /// `outputs × inputs` floats, row-major.
    pub weight: *const f32,
    /// `outputs` floats.
    pub bias: *const f32,
    /// 1: ReLU follows. The last layer has 0 and is followed by the sigmoid.
    pub relu: u32,
}

/// The folded model handed to `create`. It and every array it points to stay valid until the
/// instance made from it is destroyed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gemma_cyber_plugin_model {
    /// `sizeof(gemma_cyber_plugin_model)` as the core compiled it.
    pub struct_size: u32,
    /// Width of one embedding (the first layer's `inputs`).
    pub input_dim: usize,
    /// The input LayerNorm, without affine: `(x - mean) / sqrt(var + eps)`, biased variance.
    pub layer_norm_eps: f32,
    /// Number of entries in `layers`, at least 1.
    pub num_layers: usize,
    /// The dense layers, input first; each layer's `inputs` is the previous one's `outputs`, and
    /// the last one has one output.
    pub layers: *const gemma_cyber_plugin_layer,
}

/// What a plugin offers, filled by `gemma_cyber_plugin_entry`. Later ABI versions only append
/// fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gemma_cyber_plugin_backend {
    /// `sizeof(gemma_cyber_plugin_backend)` as the plugin compiled it.
    pub struct_size: u32,
    /// `GEMMA_CYBER_PLUGIN_ABI_VERSION` as the plugin was built for.
    pub abi_version: u32,
    /// `[a-z0-9_]+`, the `<name>` of the file `libgemma_cyber_<name>.so`, e.g. "wgpu".
    pub name: *const c_char,
    /// The plugin's own version, e.g. "1.2.0".
    pub version: *const c_char,
    /// `GEMMA_CYBER_PLUGIN_SERIAL` or 0.
    pub flags: u32,
    /// Makes an instance for `model`. `settings` is a NULL-terminated array of `key=value`
    /// strings, valid during the call only. Returns 0 and sets `*instance`, or
    /// `GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE` / `_BACKEND_FAILURE` with a NUL-terminated message
    /// of at most `error_len` bytes (terminator included) in `error`.
    pub create: Option<
        unsafe extern "C" fn(
            model: *const gemma_cyber_plugin_model,
            settings: *const *const c_char,
            instance: *mut *mut c_void,
            error: *mut c_char,
            error_len: usize,
        ) -> i32,
    >,
    /// Writes one probability per row to `probabilities`. The core has checked the input:
    /// `rows >= 1`, `rows × input_dim` finite floats. Returns 0, or
    /// `GEMMA_CYBER_STATUS_BACKEND_FAILURE` with a message in `error` as for `create`.
    pub classify: Option<
        unsafe extern "C" fn(
            instance: *mut c_void,
            embeddings: *const f32,
            rows: usize,
            probabilities: *mut f32,
            error: *mut c_char,
            error_len: usize,
        ) -> i32,
    >,
    /// The device the instance runs on, for people; valid until `destroy`.
    pub device_name: Option<unsafe extern "C" fn(instance: *mut c_void) -> *const c_char>,
    /// Frees an instance made by `create`.
    pub destroy: Option<unsafe extern "C" fn(instance: *mut c_void)>,
}

/// The signature of the one symbol a plugin exports, `gemma_cyber_plugin_entry`. The core calls
/// it once, while loading the plugin; a classifier created from inside it (or from the library's
/// constructors) cannot load plugins, and gets BACKEND_UNAVAILABLE for them.
pub type gemma_cyber_plugin_entry_fn =
    unsafe extern "C" fn(host_abi_version: u32, backend: *mut gemma_cyber_plugin_backend) -> i32;

/// The name of that symbol, NUL-terminated, for `dlsym`.
pub const ENTRY_SYMBOL: &std::ffi::CStr = c"gemma_cyber_plugin_entry";
