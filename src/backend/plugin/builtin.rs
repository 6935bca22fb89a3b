//! Backends compiled into the core (the static library cannot load plugins): the very same
//! modules as the plugins under `plugins/`, registered through the same function table.

use std::sync::{Arc, OnceLock};

use super::loader::{check, Plugin};

#[cfg(any(feature = "static-wgpu", feature = "static-onnxruntime"))]
use gemma_cyber_plugin::abi::gemma_cyber_plugin_backend;
use gemma_cyber_plugin::abi::gemma_cyber_plugin_entry_fn;

// The plugins' Rust-only extras go unused here, and their features (the wgpu plugin's
// `bench-hooks`) are not the core's.
#[cfg(feature = "static-onnxruntime")]
#[path = "../../../plugins/onnxruntime/src/backend.rs"]
#[allow(dead_code)]
mod onnxruntime;
#[cfg(feature = "static-wgpu")]
#[path = "../../../plugins/wgpu/src/backend/mod.rs"]
#[allow(dead_code, unused_imports, unexpected_cfgs)]
mod wgpu;

#[cfg(feature = "static-wgpu")]
unsafe extern "C" fn wgpu_entry(version: u32, table: *mut gemma_cyber_plugin_backend) -> i32 {
    // SAFETY: the loader passes a table of at least its own struct_size.
    unsafe { gemma_cyber_plugin::entry::<wgpu::WgpuBackend>(version, table) }
}

#[cfg(feature = "static-onnxruntime")]
unsafe extern "C" fn onnxruntime_entry(
    version: u32,
    table: *mut gemma_cyber_plugin_backend,
) -> i32 {
    // SAFETY: as above.
    unsafe { gemma_cyber_plugin::entry::<onnxruntime::OnnxruntimeBackend>(version, table) }
}

/// The entries of the compiled-in backends, each with its name.
// One push per backend compiled in, each under its own feature: no single `vec![]` fits them all.
#[allow(clippy::vec_init_then_push)]
fn entries() -> Vec<(&'static str, gemma_cyber_plugin_entry_fn)> {
    vec![
        #[cfg(feature = "static-wgpu")]
        ("wgpu", wgpu_entry as gemma_cyber_plugin_entry_fn),
        #[cfg(feature = "static-onnxruntime")]
        (
            "onnxruntime",
            onnxruntime_entry as gemma_cyber_plugin_entry_fn,
        ),
    ]
}

/// Every compiled-in backend, checked like a loaded plugin.
pub(super) fn all() -> Vec<Arc<Plugin>> {
    static ALL: OnceLock<Vec<Arc<Plugin>>> = OnceLock::new();
    ALL.get_or_init(|| {
        entries()
            .into_iter()
            .filter_map(|(name, entry)| check(entry, None, name).ok())
            .collect()
    })
    .clone()
}

/// The compiled-in backend called `name`.
pub(super) fn find(name: &str) -> Option<Arc<Plugin>> {
    all().into_iter().find(|plugin| plugin.name == name)
}
