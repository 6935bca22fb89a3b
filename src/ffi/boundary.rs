//! The one panic boundary every C entry point goes through, and the thread-local last error.
//!
//! A C caller may call in while its thread is being torn down: from a pthread-key destructor or an
//! `atexit` handler, after Rust's thread-locals with destructors are gone; and it may keep the
//! last error's pointer until then. So the message lives in a fixed buffer with a const
//! initializer, which registers no destructor: it is there for every call and every pointer
//! handed out stays readable until the thread's memory is freed.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result, Status};

/// Bytes of the last error, its terminating NUL included: room for a message naming a few paths
/// of the longest a Linux path may be. A longer one is cut, and ends with `…` to say so.
const MESSAGE_BYTES: usize = 16 * 1024;

thread_local! {
    static LAST_ERROR: RefCell<[u8; MESSAGE_BYTES]> = const { RefCell::new([0; MESSAGE_BYTES]) };
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

/// This thread's last error message; valid until this thread's next failing call, and through
/// the thread's teardown.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|message| message.as_ptr().cast())
}

fn record(error: &Error) -> Status {
    let text = format!("{}: {}", error.status().name(), error.message());
    // An interior NUL would cut the C string short; show it instead of dropping the rest.
    let text = text.replace('\0', "\\0");
    LAST_ERROR.with(|slot| fill(&mut slot.borrow_mut()[..], &text));
    error.status()
}

/// `text` as a C string in `buffer`, cut at a character boundary with `…` where it does not fit.
fn fill(buffer: &mut [u8], text: &str) {
    const CUT: &str = "…";
    let room = buffer.len() - 1;
    let kept = if text.len() <= room {
        text
    } else {
        let mut end = room - CUT.len();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    };
    buffer[..kept.len()].copy_from_slice(kept.as_bytes());
    let mut end = kept.len();
    if kept.len() < text.len() {
        buffer[end..end + CUT.len()].copy_from_slice(CUT.as_bytes());
        end += CUT.len();
    }
    buffer[end] = 0;
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

#[cfg(test)]
mod tests {
    use super::fill;
    use std::ffi::CStr;

    #[test]
    fn a_message_that_does_not_fit_is_cut_at_a_character_and_says_so() {
        let mut buffer = [0xffu8; 12];
        fill(&mut buffer, "short");
        assert_eq!(CStr::from_bytes_until_nul(&buffer).unwrap(), c"short");
        // 11 bytes of room, 8 of them before the 3 of "…": the cut falls inside "é" (bytes 7
        // and 8), so it moves back to 7.
        fill(&mut buffer, "abcdefgéhij");
        assert_eq!(
            CStr::from_bytes_until_nul(&buffer)
                .unwrap()
                .to_str()
                .unwrap(),
            "abcdefg…"
        );
        fill(&mut buffer, "exactly 11b");
        assert_eq!(CStr::from_bytes_until_nul(&buffer).unwrap(), c"exactly 11b");
    }
}
