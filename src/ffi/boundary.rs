//! The one panic boundary every C entry point goes through, and the thread-local last error.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result, Status};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
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
    LAST_ERROR.with(|message| message.borrow().as_ptr())
}

fn record(error: &Error) -> Status {
    let text = format!("{}: {}", error.status().name(), error.message());
    // An interior NUL would cut the C string short; show it instead of dropping the rest.
    let message = CString::new(text.replace('\0', "\\0")).expect("NULs were replaced");
    LAST_ERROR.with(|slot| *slot.borrow_mut() = message);
    error.status()
}

fn panic_error(payload: Box<dyn Any + Send>) -> Error {
    let detail = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message");
    Error::new(
        Status::Panic,
        format!("internal error in gemma-cyber (please report it): {detail}"),
    )
}
