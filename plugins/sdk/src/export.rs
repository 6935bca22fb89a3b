//! A Rust backend behind the C function table: every call guarded, every pointer checked.

use std::ffi::{c_char, c_void, CStr};
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::{
    gemma_cyber_plugin_backend, gemma_cyber_plugin_model, GEMMA_CYBER_PLUGIN_ABI_VERSION,
};
use crate::error::{panic_message, Error, Result, Status};
use crate::model::Model;
use crate::settings::Settings;

/// A backend written in Rust. [`export_plugin!`](crate::export_plugin) turns it into a plugin.
pub trait Backend: Send + Sync + Sized + 'static {
    /// `[a-z0-9_]+`: the `<name>` of the file `libgemma_cyber_<name>.so`.
    const NAME: &'static CStr;
    /// The plugin's version.
    const VERSION: &'static CStr;
    /// `GEMMA_CYBER_PLUGIN_SERIAL` when `classify` must not run concurrently on one instance.
    const FLAGS: u32 = 0;

    /// Prepares to run `model` (copy what you need: the slices outlive the instance, but owning
    /// the data keeps the backend simple). Call [`Settings::finish`] once every key is taken.
    fn create(model: &Model<'_>, settings: Settings) -> Result<Self>;

    /// Writes one probability per row; `embeddings` holds `rows × input_dim` finite floats and
    /// `probabilities` `rows` values.
    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()>;

    /// The device, for people, e.g. "NVIDIA H200 (Vulkan)".
    fn device_name(&self) -> &CStr;
}

/// What an instance pointer points to.
struct Instance<B> {
    backend: B,
    input_dim: usize,
}

/// The function table of `B`, as `gemma_cyber_plugin_entry` fills it. Also how a build that
/// compiles a backend into the core registers it: the same table, without a shared library.
pub fn table<B: Backend>() -> gemma_cyber_plugin_backend {
    gemma_cyber_plugin_backend {
        struct_size: size_of::<gemma_cyber_plugin_backend>() as u32,
        abi_version: GEMMA_CYBER_PLUGIN_ABI_VERSION,
        name: B::NAME.as_ptr(),
        version: B::VERSION.as_ptr(),
        flags: B::FLAGS,
        create: Some(create::<B>),
        classify: Some(classify::<B>),
        device_name: Some(device_name::<B>),
        destroy: Some(destroy::<B>),
    }
}

/// The body of `gemma_cyber_plugin_entry` for `B`: checks the host's ABI version and fills at
/// most `backend->struct_size` bytes of the host's table.
///
/// # Safety
/// `backend` must be NULL or point to a table of at least its own `struct_size` writable bytes.
pub unsafe fn entry<B: Backend>(
    host_abi_version: u32,
    backend: *mut gemma_cyber_plugin_backend,
) -> i32 {
    if host_abi_version != GEMMA_CYBER_PLUGIN_ABI_VERSION {
        return Status::BackendUnavailable as i32;
    }
    if backend.is_null() {
        return Status::BackendFailure as i32;
    }
    // SAFETY: non-NULL; the host sets `struct_size` before calling.
    let room = unsafe { std::ptr::addr_of!((*backend).struct_size).read() } as usize;
    let ours = table::<B>();
    let bytes = room.min(size_of::<gemma_cyber_plugin_backend>());
    // SAFETY: the host provides `room` writable bytes and we copy at most that many.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::addr_of!(ours).cast::<u8>(),
            backend.cast::<u8>(),
            bytes,
        );
    }
    Status::Ok as i32
}

/// Runs `body`, turning an error or a panic into a status and a message in the caller's buffer.
fn guard(error: *mut c_char, error_len: usize, body: impl FnOnce() -> Result<()>) -> i32 {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return Status::Ok as i32,
        Ok(Err(failure)) => failure,
        Err(payload) => Error::backend_failure(format!(
            "the plugin panicked: {}",
            panic_message(payload.as_ref())
        )),
    };
    write_message(error, error_len, failure.message());
    failure.status() as i32
}

/// Copies `message` into `error` as a NUL-terminated string, cut at a character boundary to fit.
fn write_message(error: *mut c_char, error_len: usize, message: &str) {
    if error.is_null() || error_len == 0 {
        return;
    }
    let mut end = message.len().min(error_len - 1);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: the caller provides `error_len` writable bytes; we write `end + 1 <= error_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr().cast::<c_char>(), error, end);
        error.add(end).write(0);
    }
}

unsafe extern "C" fn create<B: Backend>(
    model: *const gemma_cyber_plugin_model,
    settings: *const *const c_char,
    instance: *mut *mut c_void,
    error: *mut c_char,
    error_len: usize,
) -> i32 {
    guard(error, error_len, || {
        if instance.is_null() {
            return Err(Error::backend_failure(
                "create was given a NULL instance pointer",
            ));
        }
        // SAFETY: the core passes a valid model for the instance's life and a NULL-terminated
        // settings array valid during this call.
        let (model, settings) = unsafe { (Model::from_raw(model)?, Settings::from_raw(settings)?) };
        let backend = B::create(&model, settings)?;
        let boxed = Box::new(Instance {
            backend,
            input_dim: model.input_dim(),
        });
        // SAFETY: non-NULL and writable, as the core passes it.
        unsafe { instance.write(Box::into_raw(boxed).cast::<c_void>()) };
        Ok(())
    })
}

unsafe extern "C" fn classify<B: Backend>(
    instance: *mut c_void,
    embeddings: *const f32,
    rows: usize,
    probabilities: *mut f32,
    error: *mut c_char,
    error_len: usize,
) -> i32 {
    guard(error, error_len, || {
        if instance.is_null() || embeddings.is_null() || probabilities.is_null() {
            return Err(Error::backend_failure("classify was given a NULL pointer"));
        }
        // SAFETY: a live instance made by `create` (shared: classify may run concurrently).
        let instance = unsafe { &*instance.cast::<Instance<B>>() };
        let values = rows
            .checked_mul(instance.input_dim)
            .ok_or_else(|| Error::backend_failure("rows × input_dim overflows"))?;
        // SAFETY: the core passes `rows × input_dim` readable floats and `rows` writable ones,
        // not overlapping.
        let (embeddings, probabilities) = unsafe {
            (
                std::slice::from_raw_parts(embeddings, values),
                std::slice::from_raw_parts_mut(probabilities, rows),
            )
        };
        instance.backend.classify(embeddings, rows, probabilities)
    })
}

unsafe extern "C" fn device_name<B: Backend>(instance: *mut c_void) -> *const c_char {
    if instance.is_null() {
        return c"".as_ptr();
    }
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live instance made by `create`.
        let instance = unsafe { &*instance.cast::<Instance<B>>() };
        instance.backend.device_name().as_ptr()
    }))
    .unwrap_or(c"".as_ptr())
}

unsafe extern "C" fn destroy<B: Backend>(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // A panic while dropping must not unwind into C; the instance is gone either way.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: made by `create` through Box::into_raw, destroyed once by the core.
        drop(unsafe { Box::from_raw(instance.cast::<Instance<B>>()) });
    }));
}

/// Makes this plugin's panics silent: each one already becomes a status with its message, and a
/// library never writes to stderr. Only for a plugin's own shared library, whose standard library
/// (and so whose panic hook) is its own; a backend compiled into the core leaves the host's alone.
pub fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

/// Exports `gemma_cyber_plugin_entry` for a [`Backend`] type: the one symbol a plugin library has.
/// Use it once, in the crate that builds the `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($backend:ty) => {
        /// The plugin's entry point: fills the host's function table.
        ///
        /// # Safety
        /// `backend` must be NULL or point to a table of at least its own `struct_size` bytes.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn gemma_cyber_plugin_entry(
            host_abi_version: u32,
            backend: *mut $crate::abi::gemma_cyber_plugin_backend,
        ) -> i32 {
            $crate::quiet_panics();
            // SAFETY: the host's promise is passed on unchanged.
            unsafe { $crate::entry::<$backend>(host_abi_version, backend) }
        }
    };
}

/// The calling crate's package version (`CARGO_PKG_VERSION`) as a `&'static CStr`, for
/// [`Backend::VERSION`]: `const VERSION: &'static CStr = gemma_cyber_plugin::package_version!();`.
/// A macro, not a function, so that `env!` reads the version of the crate that expands it.
#[macro_export]
macro_rules! package_version {
    () => {
        match ::std::ffi::CStr::from_bytes_with_nul(
            concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
        ) {
            Ok(version) => version,
            Err(_) => panic!("the package version has no NUL"),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::write_message;

    #[test]
    fn messages_are_cut_to_fit_at_a_character_boundary() {
        let mut buffer = [0x55 as std::ffi::c_char; 8];
        write_message(buffer.as_mut_ptr(), buffer.len(), "héllo wörld");
        // SAFETY: write_message always leaves a NUL-terminated string in the buffer.
        let text = unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) };
        assert_eq!(text.to_str().unwrap(), "héllo ");
        write_message(buffer.as_mut_ptr(), 1, "x");
        assert_eq!(buffer[0], 0);
    }
}
