//! Backends as plugins: the loader ([`loader`]) and the backend that runs a plugin's instance.
//!
//! The core checks every input before a plugin sees it (the classifier validates dims and
//! finiteness, rows >= 1), so a plugin only computes. What the plugin returns is checked too: a
//! status outside the ABI's is BACKEND_FAILURE, and so is a probability outside [0, 1].

mod builtin;
pub mod loader;

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::{Arc, Mutex, PoisonError};

use gemma_cyber_plugin::ModelStorage;

pub use loader::{Plugin, PLUGIN_DIR_ENV};

use super::{Backend, BackendKind};
use crate::error::{Error, Result, Status};
use crate::model::Model;

/// Bytes of the message buffer a plugin may fill on failure.
const ERROR_LEN: usize = 1024;

/// The plugin called `name`: compiled into this library (static builds), else found on disk
/// ([`loader::search_dirs`]).
pub fn find(
    name: &str,
    plugin_dir: Option<&std::path::Path>,
    install_dir: Option<&std::path::Path>,
) -> Result<Arc<Plugin>> {
    if !loader::is_valid_name(name) {
        return Err(Error::invalid_argument(format!(
            "plugin name {name:?} is not [a-z0-9_]+"
        )));
    }
    if let Some(plugin) = builtin::find(name) {
        return Ok(plugin);
    }
    loader::find(name, plugin_dir, install_dir)
}

/// Whether the plugin called `name` is there to load: compiled in, or a file of its name (of
/// whatever kind) in one of [`loader::search_dirs`].
pub fn is_present(
    name: &str,
    plugin_dir: Option<&std::path::Path>,
    install_dir: Option<&std::path::Path>,
) -> bool {
    builtin::find(name).is_some()
        || loader::search_dirs(plugin_dir, install_dir)
            .iter()
            .any(|(dir, _)| std::fs::symlink_metadata(dir.join(loader::file_name(name))).is_ok())
}

/// The backends compiled into this library, as plugins (empty unless a static-* feature is on).
pub fn builtin() -> Vec<Arc<Plugin>> {
    builtin::all()
}

/// A plugin's instance, running one model.
pub struct PluginBackend {
    plugin: Arc<Plugin>,
    instance: *mut c_void,
    /// Held while `classify` runs when the plugin is SERIAL.
    serial: Option<Mutex<()>>,
    device_name: String,
    /// The model's arrays, which the instance may read until it is destroyed; after `instance`
    /// in drop order is not needed: `Drop` destroys the instance first.
    _storage: ModelStorage,
    _model: Arc<Model>,
}

// SAFETY: the instance is only used through the plugin's functions, which the ABI makes callable
// from any thread, concurrently unless SERIAL (then `serial` serialises them).
unsafe impl Send for PluginBackend {}
// SAFETY: as above.
unsafe impl Sync for PluginBackend {}

impl PluginBackend {
    /// Makes an instance of `plugin` for `model` with `settings` (`key=value`).
    pub fn new(plugin: Arc<Plugin>, model: &Arc<Model>, settings: &[String]) -> Result<Self> {
        let create = plugin.table.create.expect("checked at load");
        let storage = ModelStorage::new(&model.plugin_view()?);
        let settings: Vec<CString> = settings
            .iter()
            .map(|pair| {
                CString::new(pair.as_str()).map_err(|_| {
                    Error::invalid_argument(format!("plugin setting {pair:?} contains a NUL byte"))
                })
            })
            .collect::<Result<_>>()?;
        let mut pointers: Vec<*const c_char> = settings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = [0 as c_char; ERROR_LEN];
        // SAFETY: the model and its arrays outlive the instance (kept in the backend), the
        // settings live through the call, and the out-pointers are valid and sized as passed.
        let status = unsafe {
            create(
                storage.as_raw(),
                pointers.as_ptr(),
                &mut instance,
                message.as_mut_ptr(),
                ERROR_LEN,
            )
        };
        if status != 0 {
            let mapped = map_status(
                status,
                &[Status::BackendUnavailable, Status::BackendFailure],
            );
            return Err(Error::new(
                mapped,
                plugin_message(&plugin, &message, status),
            ));
        }
        if instance.is_null() {
            return Err(Error::backend_failure(format!(
                "the {} plugin's create returned OK but no instance",
                plugin.name
            )));
        }
        let device_name = plugin.table.device_name.expect("checked at load");
        // SAFETY: a live instance; the plugin returns NULL or a NUL-terminated string.
        let device = unsafe {
            let name = device_name(instance);
            if name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            }
        };
        let serial = (plugin.table.flags & gemma_cyber_plugin::abi::GEMMA_CYBER_PLUGIN_SERIAL != 0)
            .then(|| Mutex::new(()));
        Ok(PluginBackend {
            device_name: format!("{} {}: {device}", plugin.name, plugin.version),
            plugin,
            instance,
            serial,
            _storage: storage,
            _model: Arc::clone(model),
        })
    }

    /// The plugin this backend runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        let destroy = self.plugin.table.destroy.expect("checked at load");
        // SAFETY: made by this plugin's `create`, destroyed once, with no call running (a
        // `&mut self` here means no `classify` borrows it).
        unsafe { destroy(self.instance) };
    }
}

impl Backend for PluginBackend {
    fn kind(&self) -> BackendKind {
        match self.plugin.name.as_str() {
            "wgpu" => BackendKind::Wgpu,
            "onnxruntime" => BackendKind::Onnxruntime,
            _ => BackendKind::Plugin,
        }
    }

    fn device_name(&self) -> &str {
        &self.device_name
    }

    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        let classify = self.plugin.table.classify.expect("checked at load");
        // The plugin writes into memory of ours: on failure the caller's outputs stay untouched.
        let mut results = vec![f32::NAN; rows];
        let mut message = [0 as c_char; ERROR_LEN];
        let _serial = self
            .serial
            .as_ref()
            .map(|lock| lock.lock().unwrap_or_else(PoisonError::into_inner));
        // SAFETY: a live instance; `embeddings` holds `rows × input_dim` checked floats and
        // `results` `rows` writable ones; the message buffer is ERROR_LEN bytes.
        let status = unsafe {
            classify(
                self.instance,
                embeddings.as_ptr(),
                rows,
                results.as_mut_ptr(),
                message.as_mut_ptr(),
                ERROR_LEN,
            )
        };
        drop(_serial);
        if status != 0 {
            let mapped = map_status(status, &[Status::BackendFailure]);
            return Err(Error::new(
                mapped,
                plugin_message(&self.plugin, &message, status),
            ));
        }
        if let Some(row) = results.iter().position(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::backend_failure(format!(
                "the {} plugin returned {} for row {row}, not a probability",
                self.plugin.name, results[row]
            )));
        }
        probabilities.copy_from_slice(&results);
        Ok(())
    }
}

/// A plugin's status as ours: one of `allowed`, else BACKEND_FAILURE.
fn map_status(status: i32, allowed: &[Status]) -> Status {
    allowed
        .iter()
        .copied()
        .find(|known| *known as i32 == status)
        .unwrap_or(Status::BackendFailure)
}

/// The message a plugin left in `buffer` with its raw `status`, named after the plugin.
fn plugin_message(plugin: &Plugin, buffer: &[c_char], status: i32) -> String {
    let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
    // SAFETY: c_char and u8 have the same size and alignment.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), end) };
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return format!(
            "{} plugin: failed with status {status} and no message",
            plugin.name
        );
    }
    // Plugins often name themselves already ("wgpu: no adapter"): say it once.
    if text.starts_with(&format!("{}:", plugin.name)) {
        text.into_owned()
    } else {
        format!("{} plugin: {text}", plugin.name)
    }
}
