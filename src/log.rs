//! Messages for the application: why AUTO passed over a backend, which backend started, plugins
//! that failed to load. A library never writes to stderr; it hands messages to the callback the
//! application registers (none by default: silent).

use std::sync::{Arc, PoisonError, RwLock};

/// How much a log message matters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogLevel {
    /// Something went wrong but the library carried on (e.g. a plugin file that cannot be used).
    Warning = 1,
    /// What the library decided (e.g. which backend AUTO picked, and why others were skipped).
    Info = 2,
}

impl LogLevel {
    /// The lower-case name, e.g. `info`.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
        }
    }
}

/// A Rust log callback: the level and a one-line message.
pub type Logger = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// Sends every later message to `logger` (any thread may call it, at any time), or turns
/// messages off with `None`. One logger per process.
pub fn set_logger(logger: Option<Logger>) {
    *LOGGER.write().unwrap_or_else(PoisonError::into_inner) = logger;
}

/// Hands `message` to the logger, if one is set.
pub(crate) fn emit(level: LogLevel, message: &str) {
    let logger = LOGGER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some(logger) = logger {
        logger(level, message);
    }
}
