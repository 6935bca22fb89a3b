//! A plugin's failures: a status the core understands and a message for people.

use std::any::Any;
use std::fmt;

/// The statuses a plugin returns: values of the core's `gemma_cyber_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// From `create`: this backend cannot run here (no device, no runtime library, a bad setting).
    /// AUTO moves on to its next candidate.
    BackendUnavailable = 6,
    /// The backend failed while running.
    BackendFailure = 7,
}

/// A failure with its status and a one-line message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// This backend cannot run here.
    pub fn backend_unavailable(message: impl Into<String>) -> Error {
        Error {
            status: Status::BackendUnavailable,
            message: message.into(),
        }
    }

    /// The backend failed while running.
    pub fn backend_failure(message: impl Into<String>) -> Error {
        Error {
            status: Status::BackendFailure,
            message: message.into(),
        }
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message, without the status.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` put in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error {
            status: self.status,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of a plugin.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The text a panic carried (`panic!("...")` or a formatted message), or "no message".
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
