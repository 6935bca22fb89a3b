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

/// Sends every later message to `logger` (any thread may call it, at any time, also
/// concurrently), or turns messages off with `None`. One logger per process. Waits for calls of the
/// logger it replaces to return, so that afterwards nothing calls the old one: a caller may then
/// free what it used. The logger must not create a classifier or set a logger itself: the lock it
/// runs under would wait on itself.
pub fn set_logger(logger: Option<Logger>) {
    *LOGGER.write().unwrap_or_else(PoisonError::into_inner) = logger;
}

/// Hands `message` to the logger, if one is set. The logger runs under the read lock, which is
/// what lets [`set_logger`] wait for it.
pub(crate) fn emit(level: LogLevel, message: &str) {
    if let Some(logger) = LOGGER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        logger(level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn replacing_the_logger_waits_for_its_calls_to_return() {
        let (started, wait_started) = mpsc::channel();
        let returned = Arc::new(AtomicBool::new(false));
        let returned_in_logger = Arc::clone(&returned);
        set_logger(Some(Arc::new(move |_, _| {
            started.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            returned_in_logger.store(true, Ordering::SeqCst);
        })));
        let call = std::thread::spawn(|| emit(LogLevel::Info, "slow"));
        wait_started.recv().unwrap();
        set_logger(None);
        assert!(
            returned.load(Ordering::SeqCst),
            "set_logger returned while the logger it replaced was still running"
        );
        call.join().unwrap();
    }
}
