//! The C ABI (version 1). Translation only: pointers and sizes become slices and options, results
//! become statuses; the model logic lives in the Rust API.
//!
//! Types only this ABI has carry their C names (`gemma_cyber_options`, `gemma_cyber_classifier`,
//! `gemma_cyber_log_callback`), so Rust and C read alike. The enums it shares with the Rust API
//! (`Status`, `BackendKind`, `LogLevel`) keep their Rust names, which every Rust caller matches
//! on; the header gives them their C names (`cbindgen.toml`).
//!
//! Thread safety: every function may be called from any thread. `gemma_cyber_classify` and the
//! accessors may run concurrently on one classifier; `gemma_cyber_destroy` must not overlap any
//! other use of that classifier.

mod boundary;
mod options;

use std::ffi::{c_char, c_void, CString};
use std::mem::size_of;
use std::sync::Arc;

pub use options::gemma_cyber_options;

use crate::backend::BackendKind;
use crate::classifier::Classifier;
use crate::error::{Error, Result, Status};
use crate::log::{self, LogLevel};

/// Version of this C ABI. Bumped only by a change that breaks existing callers.
pub const GEMMA_CYBER_ABI_VERSION: u32 = 1;

/// A loaded model bound to a backend. Opaque; create with `gemma_cyber_create`, free with
/// `gemma_cyber_destroy`.
#[allow(non_camel_case_types)] // named as C sees it, like every type only the C ABI has
pub struct gemma_cyber_classifier {
    classifier: Classifier,
    device_name: CString,
}

/// Fills `options` with defaults: AUTO backend, the built-in model, the model's own threshold,
/// library-chosen threads. Call it as `gemma_cyber_options_init(&o, sizeof o)`: it writes at most
/// `struct_size` bytes and sets `o.struct_size`, so a caller compiled against an older header is
/// never overrun. NULL `options` does nothing (and sets the last error).
///
/// # Safety
/// `options` must be NULL or point to `struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_options_init(
    options: *mut gemma_cyber_options,
    struct_size: usize,
) {
    // SAFETY: the caller promised `options` is NULL or writable for `struct_size` bytes.
    boundary::guard(|| unsafe { options::write_defaults(options, struct_size) });
}

/// Loads the model the options name and starts the backend they ask for, storing the new
/// classifier in `*out`. On failure `*out` is left as it was.
///
/// Statuses: INVALID_ARGUMENT (NULL pointer, struct_size too small, bad field), MODEL_NOT_FOUND,
/// MODEL_INVALID, BACKEND_UNAVAILABLE, BACKEND_FAILURE, PANIC.
///
/// # Safety
/// `options` must be NULL or a struct filled by `gemma_cyber_options_init` and valid for its
/// `struct_size`; `out` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_create(
    options: *const gemma_cyber_options,
    out: *mut *mut gemma_cyber_classifier,
) -> Status {
    boundary::guard(|| {
        if out.is_null() {
            return Err(Error::invalid_argument("out is NULL"));
        }
        // SAFETY: the caller promised `options` is NULL or valid for its `struct_size`.
        let classifier = Classifier::new(&unsafe { options::read(options) }?)?;
        let device_name =
            CString::new(classifier.device_name().replace('\0', " ")).expect("NULs were replaced");
        let handle = Box::into_raw(Box::new(gemma_cyber_classifier {
            classifier,
            device_name,
        }));
        // SAFETY: `out` is not NULL (checked above) and the caller promised it is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Classifies `rows` embeddings of `dim` floats each (row-major), writing one probability per row
/// to `probabilities` and, when `labels` is not NULL, one label (1: cyber, 0: not) per row.
///
/// `rows == 0` succeeds without reading any pointer but `classifier`. On failure nothing is
/// written. Safe to call from many threads at once on one classifier.
///
/// Statuses: INVALID_ARGUMENT (NULL pointer, `rows * dim` overflow, a float pointer off a 4-byte
/// boundary, buffers that overlap), DIMENSION_MISMATCH, NON_FINITE_INPUT, BACKEND_FAILURE, PANIC.
///
/// # Safety
/// `classifier` must be NULL or a live classifier; `embeddings` must be readable for
/// `rows * dim` floats; `probabilities` (and `labels` unless NULL) writable for `rows` values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_classify(
    classifier: *mut gemma_cyber_classifier,
    embeddings: *const f32,
    rows: usize,
    dim: usize,
    probabilities: *mut f32,
    labels: *mut u8,
) -> Status {
    boundary::guard(|| {
        // SAFETY: the caller promised `classifier` is NULL or live.
        let handle = unsafe { handle_ref(classifier) }?;
        if rows == 0 {
            return Ok(());
        }
        // First: with dim 0, any `rows` would pass the size check below, and slices of `rows`
        // outputs could then be longer than isize allows.
        handle.classifier.check_dim(dim)?;
        let values = rows
            .checked_mul(dim)
            .filter(|&n| {
                n.checked_mul(size_of::<f32>())
                    .is_some_and(|bytes| bytes <= isize::MAX as usize)
            })
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "rows * dim ({rows} * {dim}) overflows the address space"
                ))
            })?;
        if embeddings.is_null() {
            return Err(Error::invalid_argument("embeddings is NULL"));
        }
        if probabilities.is_null() {
            return Err(Error::invalid_argument("probabilities is NULL"));
        }
        // A float pointer off a 4-byte boundary (a buffer read from a byte offset) cannot be a
        // slice of floats: a status, not undefined behaviour.
        for (name, address) in [
            ("embeddings", embeddings as usize),
            ("probabilities", probabilities as usize),
        ] {
            if !address.is_multiple_of(align_of::<f32>()) {
                return Err(Error::invalid_argument(format!(
                    "{name} is not aligned to {} bytes, as a float array must be",
                    align_of::<f32>()
                )));
            }
        }
        // Outputs on top of the input (or of each other) would make one buffer both read and
        // written through separate slices: a status, not undefined behaviour.
        let spans = [
            ("embeddings", embeddings as usize, values * size_of::<f32>()),
            (
                "probabilities",
                probabilities as usize,
                rows * size_of::<f32>(),
            ),
            (
                "labels",
                labels as usize,
                if labels.is_null() { 0 } else { rows },
            ),
        ];
        for (i, &(name, start, len)) in spans.iter().enumerate() {
            for &(other, other_start, other_len) in &spans[i + 1..] {
                if len > 0
                    && other_len > 0
                    && start < other_start.saturating_add(other_len)
                    && other_start < start.saturating_add(len)
                {
                    return Err(Error::invalid_argument(format!(
                        "{other} overlaps {name}; each must be a buffer of its own"
                    )));
                }
            }
        }
        // SAFETY: the pointers are not NULL, aligned and apart (checked above), and the caller
        // promised they are valid for `rows * dim` floats in and `rows` values out; `values` fits
        // in isize bytes and `dim` is at least 1 (the model's), so `rows` floats and labels do
        // too.
        let embeddings = unsafe { std::slice::from_raw_parts(embeddings, values) };
        // SAFETY: as above.
        let probabilities = unsafe { std::slice::from_raw_parts_mut(probabilities, rows) };
        // SAFETY: as above; `labels` is used only when not NULL.
        let labels =
            (!labels.is_null()).then(|| unsafe { std::slice::from_raw_parts_mut(labels, rows) });
        handle
            .classifier
            .classify(embeddings, dim, probabilities, labels)
    })
}

/// Frees a classifier. NULL is fine. The classifier must not be in use by another thread.
///
/// # Safety
/// `classifier` must be NULL or a classifier from `gemma_cyber_create` not yet destroyed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_destroy(classifier: *mut gemma_cyber_classifier) {
    boundary::guard(|| {
        if !classifier.is_null() {
            // SAFETY: the caller promised a classifier from `gemma_cyber_create` (a leaked Box),
            // not yet destroyed and not in use.
            drop(unsafe { Box::from_raw(classifier) });
        }
        Ok(())
    });
}

/// This thread's most recent failure as "STATUS_NAME: message", or "" if none. The string is
/// owned by the library and stays valid until this thread's next failing call, even while the
/// thread exits; successful calls leave it as it was. A message over 16 KiB is cut, ending in
/// "…".
#[unsafe(no_mangle)]
pub extern "C" fn gemma_cyber_last_error() -> *const c_char {
    boundary::last_error()
}

/// The backend the classifier runs on (never AUTO for a live classifier); AUTO for NULL.
///
/// # Safety
/// `classifier` must be NULL or a live classifier.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_active_backend(
    classifier: *const gemma_cyber_classifier,
) -> BackendKind {
    boundary::guard_value(BackendKind::Auto, || {
        // SAFETY: the caller promised `classifier` is NULL or live.
        unsafe { handle_ref(classifier) }.map_or(BackendKind::Auto, |h| h.classifier.backend())
    })
}

/// The device the classifier runs on, for people (e.g. the GPU adapter's name); "" for NULL.
/// Owned by the classifier, valid until it is destroyed.
///
/// # Safety
/// `classifier` must be NULL or a live classifier.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_device_name(
    classifier: *const gemma_cyber_classifier,
) -> *const c_char {
    boundary::guard_value(c"".as_ptr(), || {
        // SAFETY: the caller promised `classifier` is NULL or live.
        unsafe { handle_ref(classifier) }.map_or(c"".as_ptr(), |h| h.device_name.as_ptr())
    })
}

/// The model's input dimension (the `dim` that classify expects); 0 for NULL.
///
/// # Safety
/// `classifier` must be NULL or a live classifier.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_input_dim(classifier: *const gemma_cyber_classifier) -> usize {
    boundary::guard_value(0, || {
        // SAFETY: the caller promised `classifier` is NULL or live.
        unsafe { handle_ref(classifier) }.map_or(0, |h| h.classifier.input_dim())
    })
}

/// The library's version, e.g. "0.1.0" (static string).
#[unsafe(no_mangle)]
pub extern "C" fn gemma_cyber_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The C ABI version this library implements: `GEMMA_CYBER_ABI_VERSION`.
#[unsafe(no_mangle)]
pub extern "C" fn gemma_cyber_abi_version() -> u32 {
    GEMMA_CYBER_ABI_VERSION
}

/// A log callback: receives the `user_data` given to `gemma_cyber_set_log_callback`, the level
/// and a one-line NUL-terminated message valid during the call only (control characters from a
/// plugin's or a driver's text, a newline among them, arrive as `\u{..}` escapes). It may be
/// called from any thread the library runs on, also concurrently, and must not call back into the
/// library.
#[allow(non_camel_case_types)] // named as C sees it, like every type only the C ABI has
pub type gemma_cyber_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: LogLevel, message: *const c_char)>;

/// Sends the library's messages to `callback`: which backend AUTO picked and why it passed over
/// the others, plugin files that cannot be used, backends' warnings. NULL (the default) turns
/// them off; the library never writes to stderr. One callback per process; a later call replaces
/// it, and returns once calls of the callback it replaced have returned, so that the caller may
/// then free that callback's `user_data`. `user_data` is passed back untouched. Called from inside
/// the callback it changes nothing and sets the last error (INVALID_ARGUMENT); messages of what
/// the callback itself does (a classifier it creates) are dropped.
///
/// # Safety
/// `callback` must be NULL or a function safe to call from any thread with `user_data` until it
/// is replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gemma_cyber_set_log_callback(
    callback: gemma_cyber_log_callback,
    user_data: *mut c_void,
) {
    boundary::guard(|| {
        /// The caller's pointer, handed back as it is.
        struct UserData(*mut c_void);
        // SAFETY: the library never dereferences it; the caller promised it may be used from any
        // thread.
        unsafe impl Send for UserData {}
        // SAFETY: as above.
        unsafe impl Sync for UserData {}
        impl UserData {
            // A method, so that closures capture the whole (Send) wrapper, not its raw field.
            fn get(&self) -> *mut c_void {
                self.0
            }
        }
        let logger: Option<log::Logger> = callback.map(|callback| {
            let user_data = UserData(user_data);
            Arc::new(move |level: LogLevel, message: &str| {
                // `emit` escaped every control character, NUL among them.
                let text = CString::new(message).expect("a log message holds no NUL");
                // SAFETY: the caller's callback with the caller's user_data, as promised.
                unsafe { callback(user_data.get(), level, text.as_ptr()) };
            }) as log::Logger
        });
        log::set_logger(logger)
    });
}

/// The classifier behind a C handle; INVALID_ARGUMENT for NULL.
///
/// # Safety
/// `classifier` must be NULL or a live classifier from `gemma_cyber_create`, not destroyed while
/// the returned reference is used.
unsafe fn handle_ref<'a>(
    classifier: *const gemma_cyber_classifier,
) -> Result<&'a gemma_cyber_classifier> {
    // SAFETY: NULL or live, as the caller promised.
    unsafe { classifier.as_ref() }.ok_or_else(|| Error::invalid_argument("classifier is NULL"))
}

#[cfg(test)]
mod tests {
    //! The unsafe C boundary on a tiny model, small enough to run under Miri.

    use super::*;
    use crate::test_support::tiny_model_bytes;
    use std::ffi::CStr;
    use std::ptr::{null, null_mut};

    fn options_for(bytes: &[u8]) -> gemma_cyber_options {
        let mut options = std::mem::MaybeUninit::<gemma_cyber_options>::uninit();
        // SAFETY: the pointer covers a whole gemma_cyber_options.
        let mut options = unsafe {
            gemma_cyber_options_init(options.as_mut_ptr(), size_of::<gemma_cyber_options>());
            options.assume_init()
        };
        options.model_data = bytes.as_ptr();
        options.model_data_len = bytes.len();
        // cpu by name: AUTO would look for plugin libraries, which Miri cannot load.
        options.backend = BackendKind::Cpu;
        options
    }

    fn last_error() -> String {
        // SAFETY: the library's own NUL-terminated string.
        unsafe { CStr::from_ptr(gemma_cyber_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn lifecycle_and_bad_inputs_through_the_c_functions() {
        let bytes = tiny_model_bytes(&[]);
        let options = options_for(&bytes);
        let mut handle = null_mut();
        // SAFETY: (the whole test) every pointer passed is valid for what the C API documents, or
        // NULL/out of range on purpose.
        unsafe {
            assert_eq!(gemma_cyber_create(&options, &mut handle), Status::Ok);
            assert_eq!(gemma_cyber_input_dim(handle), 4);
            let input = [0.5f32, -1.0, 2.0, 0.25, 1.0, 1.0, 1.0, 1.0];
            let mut probabilities = [-1.0f32; 2];
            let mut labels = [9u8; 2];
            let ok = gemma_cyber_classify(
                handle,
                input.as_ptr(),
                2,
                4,
                probabilities.as_mut_ptr(),
                labels.as_mut_ptr(),
            );
            assert_eq!(ok, Status::Ok);
            assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
            assert!(labels.iter().all(|&l| l <= 1));

            let nan = [f32::NAN; 4];
            let mut untouched = [-1.0f32];
            let status = gemma_cyber_classify(
                handle,
                nan.as_ptr(),
                1,
                4,
                untouched.as_mut_ptr(),
                null_mut(),
            );
            assert_eq!(status, Status::NonFiniteInput);
            assert_eq!(untouched, [-1.0]);
            assert!(last_error().starts_with("GEMMA_CYBER_STATUS_NON_FINITE_INPUT"));
            let status = gemma_cyber_classify(
                handle,
                input.as_ptr(),
                usize::MAX,
                4,
                untouched.as_mut_ptr(),
                null_mut(),
            );
            assert_eq!(status, Status::InvalidArgument);
            assert_eq!(
                gemma_cyber_classify(handle, null(), 0, 4, null_mut(), null_mut()),
                Status::Ok
            );
            assert_eq!(
                gemma_cyber_classify(
                    handle,
                    input.as_ptr(),
                    1,
                    3,
                    untouched.as_mut_ptr(),
                    null_mut()
                ),
                Status::DimensionMismatch
            );

            let device = CStr::from_ptr(gemma_cyber_device_name(handle));
            assert!(!device.to_bytes().is_empty());
            gemma_cyber_destroy(handle);
            gemma_cyber_destroy(null_mut());
        }
    }

    #[test]
    fn options_are_read_without_trusting_their_enum_or_size() {
        let bytes = tiny_model_bytes(&[]);
        let mut options = options_for(&bytes);
        let mut handle = null_mut();
        // SAFETY: as above; the backend is written as the integer a C caller could store.
        unsafe {
            std::ptr::addr_of_mut!(options.backend)
                .cast::<u32>()
                .write(77);
            assert_eq!(
                gemma_cyber_create(&options, &mut handle),
                Status::InvalidArgument
            );
            assert!(handle.is_null());
            let mut small = options_for(&bytes);
            small.struct_size = 4;
            assert_eq!(
                gemma_cyber_create(&small, &mut handle),
                Status::InvalidArgument
            );
            let mut buffer = [0xAAu8; 16];
            gemma_cyber_options_init(buffer.as_mut_ptr().cast(), 8);
            assert!(buffer[8..].iter().all(|&b| b == 0xAA));
        }
    }
}
