//! The one panic boundary every C entry point goes through, and the thread-local last error.
//!
//! A C caller may call in while its thread is being torn down: from a pthread-key destructor or an
//! `atexit` handler, after Rust's thread-locals with destructors are gone. Touching one then
//! panics, and a panic outside `catch_unwind` in an `extern "C"` function aborts the process. So
//! the message slot is only reached through `try_with`, and a thread whose slot is gone gets a
//! static message for its last status instead, kept in a thread-local that has no destructor and
//! so stays readable until the thread's memory is freed.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result, Status};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// The status of this thread's last failure, readable even during thread teardown: a `Copy`
    /// value with a const initializer registers no destructor.
    static LAST_STATUS: Cell<Status> = const { Cell::new(Status::Ok) };
}

/// Runs `body`, turning its error or panic into a status and this thread's last error.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(error)) => record(&error),
        Err(payload) => record(&panic_error(payload)),
    }
}

/// Runs an accessor that cannot fail; a panic records the last error and yields `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        record(&panic_error(payload));
        fallback
    })
}

/// This thread's last error message; valid until this thread's next failing call.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|message| message.borrow().as_ptr())
        .unwrap_or_else(|_| teardown_message(LAST_STATUS.get()).as_ptr())
}

fn record(error: &Error) -> Status {
    LAST_STATUS.set(error.status());
    let text = format!("{}: {}", error.status().name(), error.message());
    // An interior NUL would cut the C string short; show it instead of dropping the rest.
    let message = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
    // During thread teardown the slot is gone; `last_error` then gives the static message.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = message);
    error.status()
}

/// The message `last_error` gives on a thread whose message slot is gone: static, so it stays
/// valid for as long as the caller holds it.
fn teardown_message(status: Status) -> &'static CStr {
    match status {
        Status::Ok => c"",
        Status::InvalidArgument => c"GEMMA_CYBER_STATUS_INVALID_ARGUMENT: (the message is unavailable while the calling thread exits)",
        Status::DimensionMismatch => c"GEMMA_CYBER_STATUS_DIMENSION_MISMATCH: (the message is unavailable while the calling thread exits)",
        Status::NonFiniteInput => c"GEMMA_CYBER_STATUS_NON_FINITE_INPUT: (the message is unavailable while the calling thread exits)",
        Status::ModelNotFound => c"GEMMA_CYBER_STATUS_MODEL_NOT_FOUND: (the message is unavailable while the calling thread exits)",
        Status::ModelInvalid => c"GEMMA_CYBER_STATUS_MODEL_INVALID: (the message is unavailable while the calling thread exits)",
        Status::BackendUnavailable => c"GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE: (the message is unavailable while the calling thread exits)",
        Status::BackendFailure => c"GEMMA_CYBER_STATUS_BACKEND_FAILURE: (the message is unavailable while the calling thread exits)",
        Status::Panic => c"GEMMA_CYBER_STATUS_PANIC: (the message is unavailable while the calling thread exits)",
    }
}

fn panic_error(payload: Box<dyn Any + Send>) -> Error {
    Error::new(
        Status::Panic,
        format!(
            "internal error in gemma-cyber (please report it): {}",
            gemma_cyber_plugin::panic_message(payload.as_ref())
        ),
    )
}
