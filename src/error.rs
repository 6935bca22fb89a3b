//! The one error type of the library and the one place it becomes a C status.

use std::fmt;

/// Result code of every fallible C entry point.
///
/// `GEMMA_CYBER_STATUS_OK` is success; every other value comes with a message readable through
/// `gemma_cyber_last_error()` on the same thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A NULL pointer, `rows * dim` overflowing, or bad options (struct_size too small, unknown
    /// backend, both model_path and model_data, threshold outside [0, 1], num_threads over 1024,
    /// a plugin name or setting refused). Fix the call.
    InvalidArgument = 1,
    /// `dim` is not the model's input dimension (the message names both). Pass
    /// `gemma_cyber_input_dim()` and embeddings of that width.
    DimensionMismatch = 2,
    /// NaN or infinity somewhere in the embeddings (the message gives row and column). Nothing was
    /// written; clean the embedding upstream.
    NonFiniteInput = 3,
    /// `model_path` cannot be opened (missing, unreadable, or not a regular file: a directory, a
    /// FIFO, a device). Check the path and permissions.
    ModelNotFound = 4,
    /// The model file is malformed or inconsistent (values that overflow float32 once folded
    /// included), its SHA-256 is not `model_sha256`, or it is too large for the memory available
    /// (the message says "not enough memory"). Nothing was loaded; use a file made by this
    /// project's tools.
    ModelInvalid = 5,
    /// The requested backend cannot run here (no ONNX Runtime library, no GPU adapter, left out of
    /// this build). Another backend may.
    BackendUnavailable = 6,
    /// The backend failed while running. The classifier may work again; if not, recreate it.
    BackendFailure = 7,
    /// An internal bug, caught at the C boundary. Please report it with the message.
    Panic = 8,
}

/// A failure: its status and a message meant for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// A failure with `status` and the message `message`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }

    /// Bad pointer, size or option.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Status::InvalidArgument, message)
    }

    /// Malformed or inconsistent model.
    pub fn model_invalid(message: impl Into<String>) -> Self {
        Self::new(Status::ModelInvalid, message)
    }

    /// The requested backend cannot run here.
    pub fn backend_unavailable(message: impl Into<String>) -> Self {
        Self::new(Status::BackendUnavailable, message)
    }

    /// The backend failed while running.
    pub fn backend_failure(message: impl Into<String>) -> Self {
        Self::new(Status::BackendFailure, message)
    }

    /// The C status this error maps to.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message, without the status.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context` put in front of the message.
    pub fn context(self, context: impl fmt::Display) -> Self {
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

impl Status {
    /// The name used in the C header, e.g. `GEMMA_CYBER_STATUS_MODEL_INVALID`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "GEMMA_CYBER_STATUS_OK",
            Status::InvalidArgument => "GEMMA_CYBER_STATUS_INVALID_ARGUMENT",
            Status::DimensionMismatch => "GEMMA_CYBER_STATUS_DIMENSION_MISMATCH",
            Status::NonFiniteInput => "GEMMA_CYBER_STATUS_NON_FINITE_INPUT",
            Status::ModelNotFound => "GEMMA_CYBER_STATUS_MODEL_NOT_FOUND",
            Status::ModelInvalid => "GEMMA_CYBER_STATUS_MODEL_INVALID",
            Status::BackendUnavailable => "GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE",
            Status::BackendFailure => "GEMMA_CYBER_STATUS_BACKEND_FAILURE",
            Status::Panic => "GEMMA_CYBER_STATUS_PANIC",
        }
    }
}

/// Shorthand for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
