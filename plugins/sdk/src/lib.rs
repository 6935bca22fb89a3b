//! The gemma-cyber backend plugin ABI (version 1), and a safe way to write a plugin in Rust.
//!
//! A plugin is a shared library `libgemma_cyber_<name>.so` exporting one C function,
//! `gemma_cyber_plugin_entry`, that fills a table of four functions ([`abi`]). The core validates
//! every input before a plugin sees it, so a plugin only computes. In Rust: implement [`Backend`]
//! and invoke [`export_plugin!`]; every call is then guarded (a panic becomes
//! `GEMMA_CYBER_STATUS_BACKEND_FAILURE` with its message) and the raw pointers are checked and
//! turned into slices. `docs/plugins.md` is the guide; `include/gemma_cyber_plugin.h` the header.

pub mod abi;
mod error;
mod export;
mod model;
mod pool;
mod settings;

pub use error::{panic_message, Error, Result, Status};
pub use export::{entry, quiet_panics, table, Backend};
pub use model::{Layer, Model, ModelStorage};
pub use pool::{Lease, OnDrop, Pool};
pub use settings::Settings;
