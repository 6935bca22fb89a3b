//! The wgpu backend plugin, `libgemma_cyber_wgpu.so`: see [`backend`].

pub mod backend;

gemma_cyber_plugin::export_plugin!(backend::WgpuBackend);
