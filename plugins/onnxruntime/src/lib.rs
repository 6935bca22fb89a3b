//! The onnxruntime backend plugin, `libgemma_cyber_onnxruntime.so`: see [`backend`].

pub mod backend;

gemma_cyber_plugin::export_plugin!(backend::OnnxruntimeBackend);
