//! A Rust plugin for tests/plugins.rs whose `classify` always panics: the SDK must turn the panic
//! into BACKEND_FAILURE with its message, and the host process must carry on.

use std::ffi::CStr;

use gemma_cyber_plugin::{Backend, Model, Result, Settings};

/// Accepts any model; panics when asked to classify.
pub struct Panicking;

impl Backend for Panicking {
    const NAME: &'static CStr = c"panicking";
    const VERSION: &'static CStr = c"0.0.0";

    fn create(_model: &Model<'_>, settings: Settings) -> Result<Self> {
        settings.finish()?;
        Ok(Panicking)
    }

    fn classify(&self, _embeddings: &[f32], _rows: usize, _out: &mut [f32]) -> Result<()> {
        panic!("the panicking plugin always panics")
    }

    fn device_name(&self) -> &CStr {
        c"nowhere"
    }
}

gemma_cyber_plugin::export_plugin!(Panicking);
