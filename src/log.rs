//! Messages for the application: why AUTO passed over a backend, which backend started, plugins
//! that failed to load. A library never writes to stderr; it hands messages to the callback the
//! application registers (none by default: silent).

use std::cell::Cell;
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::{text, thread_flag};

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

/// A Rust log callback: the level and a one-line message (control characters escaped).
pub type Logger = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

thread_local! {
    /// Whether this thread is inside the logger. The logger runs under the read lock, so what it
    /// does there must not take the lock again: a second read waits behind a writer that waits
    /// for the first (and a write waits for itself).
    static IN_LOGGER: Cell<bool> = const { Cell::new(false) };
}

/// Sends every later message to `logger` (any thread may call it, at any time, also
/// concurrently), or turns messages off with `None`. One logger per process. Waits for calls of the
/// logger it replaces to return, so that afterwards nothing calls the old one: a caller may then
/// free what it used. From inside the logger it changes nothing and is INVALID_ARGUMENT (it would
/// wait for itself); messages of what the logger itself does (a classifier it creates) are dropped.
pub fn set_logger(logger: Option<Logger>) -> Result<()> {
    if IN_LOGGER.get() {
        return Err(Error::invalid_argument(
            "the log callback cannot be set from inside the log callback",
        ));
    }
    *LOGGER.write().unwrap_or_else(PoisonError::into_inner) = logger;
    Ok(())
}

/// Hands `message` to the logger, if one is set, as one line: its control characters, which may
/// come from a plugin's or a driver's text (a device name with a newline and a forged second
/// line), are written as escapes ([`text::escape`]). The logger runs under the read lock, which is
/// what lets [`set_logger`] wait for it.
pub(crate) fn emit(level: LogLevel, message: &str) {
    if IN_LOGGER.get() {
        return;
    }
    if let Some(logger) = LOGGER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        // Until the logger returns or panics.
        let _inside = thread_flag::raise(&IN_LOGGER);
        logger(level, &text::escape(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// The logger is one per process: these tests take turns with it.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn replacing_the_logger_waits_for_its_calls_to_return() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let (started, wait_started) = mpsc::channel();
        let returned = Arc::new(AtomicBool::new(false));
        let returned_in_logger = Arc::clone(&returned);
        set_logger(Some(Arc::new(move |_, _| {
            started.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            returned_in_logger.store(true, Ordering::SeqCst);
        })))
        .unwrap();
        let call = std::thread::spawn(|| emit(LogLevel::Info, "slow"));
        wait_started.recv().unwrap();
        set_logger(None).unwrap();
        assert!(
            returned.load(Ordering::SeqCst),
            "set_logger returned while the logger it replaced was still running"
        );
        call.join().unwrap();
    }

    #[test]
    fn a_message_reaches_the_logger_as_one_line_without_terminal_commands() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard_in_logger = Arc::clone(&heard);
        set_logger(Some(Arc::new(move |_, message: &str| {
            heard_in_logger.lock().unwrap().push(message.to_owned());
        })))
        .unwrap();
        // A device name as a plugin might give it: a forged second line and a screen clear.
        emit(
            LogLevel::Info,
            "plugin backend started on evil: CPU\ninfo: forged\u{1b}[2J\0",
        );
        set_logger(None).unwrap();
        assert_eq!(
            *heard.lock().unwrap(),
            ["plugin backend started on evil: CPU\\u{a}info: forged\\u{1b}[2J\\u{0}"]
        );
    }

    #[test]
    fn what_the_logger_does_never_waits_on_its_own_lock() {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        // Inside the logger: a message of its own (a classifier it creates) while another thread
        // waits to replace the logger, and a call to replace it itself. Before, the first waited
        // behind the writer that waited for it, and the second for itself.
        let (started, wait_started) = mpsc::channel();
        let (outcome, wait_outcome) = mpsc::channel();
        let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heard_in_logger = Arc::clone(&heard);
        set_logger(Some(Arc::new(move |_, message: &str| {
            heard_in_logger.lock().unwrap().push(message.to_owned());
            if message == "outer" {
                started.send(()).unwrap();
                // Time for the other thread to start waiting for the write lock.
                std::thread::sleep(Duration::from_millis(200));
                emit(LogLevel::Info, "nested");
                outcome.send(set_logger(None)).unwrap();
            }
        })))
        .unwrap();
        let call = std::thread::spawn(|| emit(LogLevel::Info, "outer"));
        wait_started.recv().unwrap();
        let replace = std::thread::spawn(|| set_logger(None));
        let nested_set = wait_outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("the logger hung on its own lock");
        assert!(nested_set.is_err());
        call.join().unwrap();
        replace.join().unwrap().unwrap();
        assert_eq!(*heard.lock().unwrap(), ["outer"]);
    }
}
