//! The C options struct and its reading: versioned by `struct_size`, enums read as integers.

use std::ffi::{c_char, CStr};
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::ptr::addr_of;

use crate::backend::BackendKind;
use crate::classifier::{ModelSource, Options};
use crate::error::{Error, Result};

/// Options for `gemma_cyber_create`. Fill it with `gemma_cyber_options_init(&o, sizeof o)`, then set
/// the fields you need. Later ABI versions only append fields; `struct_size` tells the library which
/// of them the caller knows.
#[repr(C)]
#[allow(non_camel_case_types)] // named as C sees it, like every type only the C ABI has
pub struct gemma_cyber_options {
    /// `sizeof(gemma_cyber_options)` as the caller compiled it; set by `gemma_cyber_options_init`.
    pub struct_size: u32,
    /// Which backend; `GEMMA_CYBER_BACKEND_AUTO` lets the library choose.
    pub backend: BackendKind,
    /// Path of a safetensors model file (UTF-8 or the platform's bytes). NULL with no
    /// `model_data`: the built-in default model.
    pub model_path: *const c_char,
    /// A whole safetensors model already in memory, `model_data_len` bytes; copied at create, so
    /// the caller may free it afterwards. At most one of `model_path` and `model_data` may be set.
    pub model_data: *const u8,
    /// Length of `model_data` in bytes.
    pub model_data_len: usize,
    /// label = probability >= threshold, a number in [0, 1]; NaN (the default): the model's own.
    pub threshold: f32,
    /// Threads a backend may use per call; 0 (the default): the library decides.
    pub num_threads: u32,
    /// Path of ONNX Runtime's shared library (1.17 or newer) for the onnxruntime backend, relative
    /// to the working directory or absolute, in UTF-8 (it reaches the plugin as the text setting
    /// `onnxruntime.library`; the environment variables take any path); NULL: the
    /// `GEMMA_CYBER_ONNXRUNTIME_LIB` environment variable, then `ORT_DYLIB_PATH`, then the system
    /// loader's search for `libonnxruntime`.
    pub onnxruntime_library: *const c_char,
    /// The SHA-256 the model file must have, 32 bytes; NULL (the default): not checked. A
    /// mismatch is MODEL_INVALID and nothing is loaded. Appended within ABI version 1: read only
    /// when `struct_size` covers it, so callers built against the first header are unaffected.
    pub model_sha256: *const u8,
    /// A directory searched for plugin libraries first, before `GEMMA_CYBER_PLUGIN_DIR` and the
    /// directory holding this library; NULL: those two only. Appended within ABI version 1.
    pub plugin_dir: *const c_char,
    /// With `backend = GEMMA_CYBER_BACKEND_PLUGIN`: the plugin's name, `[a-z0-9_]+`, as in its file
    /// name `libgemma_cyber_<name>.so`. Appended within ABI version 1.
    pub plugin_name: *const c_char,
    /// NULL, or a NULL-terminated array of `"key=value"` settings for plugins (read during
    /// `gemma_cyber_create` only). A key prefixed with a plugin's name and a dot
    /// (`"wgpu.adapter=NVIDIA"`) reaches only that plugin; any other reaches every plugin started.
    /// Appended within ABI version 1.
    pub plugin_settings: *const *const c_char,
}

/// Size of the first version-1 struct (up to `onnxruntime_library`): the least a caller may pass.
pub(crate) const OPTIONS_V1_SIZE: usize = offset_of!(gemma_cyber_options, model_sha256);

/// Writes defaults into at most `struct_size` bytes of `options` and sets its `struct_size`.
///
/// # Safety
/// `options` must point to at least `struct_size` writable bytes.
pub(crate) unsafe fn write_defaults(
    options: *mut gemma_cyber_options,
    struct_size: usize,
) -> Result<()> {
    if options.is_null() {
        return Err(Error::invalid_argument("options is NULL"));
    }
    if struct_size < size_of::<u32>() {
        return Err(Error::invalid_argument(format!(
            "struct_size is {struct_size}; pass sizeof(gemma_cyber_options)"
        )));
    }
    let defaults = gemma_cyber_options {
        struct_size: u32::try_from(struct_size).unwrap_or(u32::MAX),
        backend: BackendKind::Auto,
        model_path: std::ptr::null(),
        model_data: std::ptr::null(),
        model_data_len: 0,
        threshold: f32::NAN,
        num_threads: 0,
        onnxruntime_library: std::ptr::null(),
        model_sha256: std::ptr::null(),
        plugin_dir: std::ptr::null(),
        plugin_name: std::ptr::null(),
        plugin_settings: std::ptr::null(),
    };
    let bytes = options.cast::<u8>();
    let known = struct_size.min(size_of::<gemma_cyber_options>());
    // SAFETY: the caller provides `struct_size` writable bytes; we write `known` <= that from a
    // padding-free #[repr(C)] value, and zero fields of later versions we do not know.
    unsafe {
        std::ptr::copy_nonoverlapping(addr_of!(defaults).cast::<u8>(), bytes, known);
        std::ptr::write_bytes(bytes.add(known), 0, struct_size - known);
    }
    Ok(())
}

/// Reads one field of the caller's struct by value, without forming a reference to the struct.
/// Used only inside the functions below, whose callers promise a readable struct of its own
/// `struct_size` bytes, and only for fields that size covers.
macro_rules! field {
    ($options:ident . $name:ident) => {
        // SAFETY: `$options` is not NULL and is readable for `struct_size` bytes (the enclosing
        // function's contract), and the field lies within them.
        unsafe { addr_of!((*$options).$name).read() }
    };
}

/// A field appended within version 1 (a pointer, like all of them): its value when the caller's
/// struct, `struct_size` bytes, reaches the field's end; NULL, "not set", when the caller's struct
/// predates it. Used as [`field!`] is.
macro_rules! appended {
    ($options:ident . $name:ident, $struct_size:expr) => {
        if $struct_size >= offset_of!(gemma_cyber_options, $name) + size_of::<*const u8>() {
            field!($options.$name)
        } else {
            std::ptr::null()
        }
    };
}

/// Reads and checks the caller's options without ever forming a reference to them, so an
/// out-of-range enum value is an error rather than undefined behaviour.
///
/// # Safety
/// `options` must be NULL or point to a readable struct of at least its own `struct_size` bytes,
/// whose string fields are NULL or NUL-terminated and whose `model_data` is NULL or readable for
/// `model_data_len` bytes.
pub(crate) unsafe fn read(options: *const gemma_cyber_options) -> Result<Options> {
    if options.is_null() {
        return Err(Error::invalid_argument(
            "options is NULL; fill one with gemma_cyber_options_init(&o, sizeof o)",
        ));
    }
    let struct_size = field!(options.struct_size) as usize;
    if struct_size < OPTIONS_V1_SIZE {
        return Err(Error::invalid_argument(format!(
            "options.struct_size is {struct_size}, smaller than version 1's {OPTIONS_V1_SIZE}; \
             fill the options with gemma_cyber_options_init(&o, sizeof o)"
        )));
    }
    // SAFETY: within version 1's size, checked above; read as the integer a C caller stores, so
    // that a value outside the enum is refused instead of being undefined behaviour.
    let backend_value = unsafe { addr_of!((*options).backend).cast::<u32>().read() };
    let backend = BackendKind::from_c(backend_value).ok_or_else(|| {
        Error::invalid_argument(format!(
            "options.backend is {backend_value}, not a gemma_cyber_backend value"
        ))
    })?;
    // SAFETY: the caller's promises, passed on.
    let model = unsafe { read_model(options) }?;
    let threshold = field!(options.threshold);
    let sha256 = appended!(options.model_sha256, struct_size);
    let plugin_dir = appended!(options.plugin_dir, struct_size);
    // SAFETY: a string field is NULL or NUL-terminated (the caller's promise).
    let plugin_dir = unsafe { path_field(plugin_dir, "plugin_dir") }?;
    let plugin_name = appended!(options.plugin_name, struct_size);
    // SAFETY: as above.
    let plugin_name = unsafe { text_field(plugin_name, "plugin_name") }?;
    Ok(Options {
        backend,
        model,
        threshold: (!threshold.is_nan()).then_some(threshold),
        num_threads: field!(options.num_threads) as usize,
        // SAFETY: a caller that sets the field provides 32 readable bytes there.
        model_sha256: (!sha256.is_null())
            .then(|| unsafe { sha256.cast::<[u8; 32]>().read_unaligned() }),
        plugin_dir,
        plugin_install_dir: None,
        plugin_name,
        // SAFETY: the caller's promises, passed on.
        plugin_settings: unsafe { read_plugin_settings(options, struct_size) }?,
    })
}

/// The model the options name: a path, a copy of the caller's buffer, or the built-in model.
///
/// # Safety
/// As for [`read`], with `options` not NULL.
unsafe fn read_model(options: *const gemma_cyber_options) -> Result<ModelSource> {
    let text = field!(options.model_path);
    // SAFETY: a string field is NULL or NUL-terminated (the caller's promise).
    let model_path = unsafe { path_field(text, "model_path") }?;
    let model_data = field!(options.model_data);
    let model_data_len = field!(options.model_data_len);
    Ok(match (model_path, model_data.is_null()) {
        (Some(_), false) => {
            return Err(Error::invalid_argument(
                "options set both model_path and model_data; set one",
            ));
        }
        (Some(path), true) => ModelSource::Path(path),
        (None, false) => {
            if model_data_len > isize::MAX as usize {
                return Err(Error::invalid_argument(format!(
                    "options.model_data_len is {model_data_len}, larger than any buffer"
                )));
            }
            // Checked before the copy: a buffer over the model limit is refused without touching
            // it, and one the memory cannot hold is an error, not an abort.
            if model_data_len as u64 > crate::model::MAX_FILE_BYTES {
                return Err(Error::model_invalid(format!(
                    "model data is {model_data_len} bytes; the limit is {}",
                    crate::model::MAX_FILE_BYTES
                )));
            }
            let mut copy = Vec::new();
            copy.try_reserve_exact(model_data_len).map_err(|_| {
                Error::model_invalid(format!(
                    "not enough memory to copy the {model_data_len} bytes of model data"
                ))
            })?;
            // SAFETY: not NULL, and the caller promised `model_data_len` readable bytes, at most
            // isize::MAX (checked above).
            copy.extend_from_slice(unsafe {
                std::slice::from_raw_parts(model_data, model_data_len)
            });
            ModelSource::Bytes(copy)
        }
        (None, true) if model_data_len != 0 => {
            return Err(Error::invalid_argument(format!(
                "options.model_data is NULL but model_data_len is {model_data_len}"
            )));
        }
        (None, true) => ModelSource::Builtin,
    })
}

/// The plugin settings: the first version's `onnxruntime_library` as the onnxruntime plugin's
/// `library` setting, then the entries of `plugin_settings` when the caller's struct has it.
///
/// # Safety
/// As for [`read`], with `options` not NULL and `struct_size` its own.
unsafe fn read_plugin_settings(
    options: *const gemma_cyber_options,
    struct_size: usize,
) -> Result<Vec<String>> {
    let mut plugin_settings = Vec::new();
    // The first version's ONNX Runtime path is now a setting of the onnxruntime plugin.
    let text = field!(options.onnxruntime_library);
    // SAFETY: a string field is NULL or NUL-terminated (the caller's promise).
    let library = unsafe { text_field(text, "onnxruntime_library") }?;
    if let Some(library) = library {
        plugin_settings.push(format!("onnxruntime.library={library}"));
    }
    let mut item: *const *const c_char = appended!(options.plugin_settings, struct_size);
    if !item.is_null() {
        // SAFETY: the caller promised a NULL-terminated array of NUL-terminated strings, so
        // every item up to and including the NULL one is readable.
        while let Some(entry) = unsafe { item.read().as_ref() } {
            // SAFETY: a non-NULL entry is a NUL-terminated string (as above).
            let setting =
                unsafe { text_field(entry, "plugin_settings entry") }?.ok_or_else(|| {
                    Error::invalid_argument("options.plugin_settings holds an empty string")
                })?;
            plugin_settings.push(setting);
            // SAFETY: the array goes on at least to its NULL entry, not reached yet.
            item = unsafe { item.add(1) };
        }
    }
    Ok(plugin_settings)
}

/// The bytes of a C string field; NULL is `None`, an empty string an error.
///
/// # Safety
/// `text` must be NULL or a NUL-terminated string that outlives `'a`.
unsafe fn field_bytes<'a>(text: *const c_char, field: &str) -> Result<Option<&'a [u8]>> {
    if text.is_null() {
        return Ok(None);
    }
    // SAFETY: not NULL, so NUL-terminated and alive for 'a (the caller's promise).
    let bytes = unsafe { CStr::from_ptr(text) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid_argument(format!(
            "options.{field} is an empty string; use NULL for none"
        )));
    }
    Ok(Some(bytes))
}

/// A C string field as UTF-8 text; NULL is `None`.
///
/// # Safety
/// `text` must be NULL or a NUL-terminated string.
unsafe fn text_field(text: *const c_char, field: &str) -> Result<Option<String>> {
    // SAFETY: the caller's promise, passed on.
    let Some(bytes) = (unsafe { field_bytes(text, field) })? else {
        return Ok(None);
    };
    std::str::from_utf8(bytes)
        .map(|text| Some(text.to_owned()))
        .map_err(|_| Error::invalid_argument(format!("options.{field} is not valid UTF-8")))
}

/// A C string field as a path (the platform's bytes on Unix, UTF-8 elsewhere); NULL is `None`.
///
/// # Safety
/// `text` must be NULL or a NUL-terminated string.
unsafe fn path_field(text: *const c_char, field: &str) -> Result<Option<PathBuf>> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: the caller's promise, passed on.
        let bytes = unsafe { field_bytes(text, field) }?;
        Ok(bytes.map(|bytes| PathBuf::from(std::ffi::OsStr::from_bytes(bytes))))
    }
    #[cfg(not(unix))]
    {
        // SAFETY: the caller's promise, passed on.
        Ok(unsafe { text_field(text, field) }?.map(PathBuf::from))
    }
}
