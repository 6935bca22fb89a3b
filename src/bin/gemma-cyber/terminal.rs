//! Text from a model file, a checkpoint or a device driver is data, not terminal commands: control
//! characters (C0, DEL, C1 such as CSI) and the bidirectional overrides that reorder what a reader
//! sees are written as `\u{..}` escapes ([`gemma_cyber::text`]) before they reach standard output
//! or standard error.

pub(crate) use gemma_cyber::text::escape;
use gemma_cyber::text::escape_with;

/// A dependency's message (the Parquet decoder's, npyz's) on one line: its line breaks and runs
/// of spaces become single spaces, as every message of this tool is one line.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One JSON value on one line. serde_json escapes C0 controls itself; DEL, C1 and the
/// bidirectional overrides are valid raw in JSON strings, so they are escaped here as `\uXXXX`
/// (outside strings serde_json writes only ASCII, so every such character is inside one).
pub(crate) fn json(value: &serde_json::Value) -> String {
    let text = value.to_string();
    escape_with(&text, |out, c| out.push_str(&format!("\\u{c:04x}"))).unwrap_or(text)
}

/// Runs `start` with file descriptor 2 pointed at an unlinked temporary file, so what graphics
/// drivers print while AUTO probes for a GPU (older Mesa writes "XDG_RUNTIME_DIR is invalid or not
/// set" from inside the Vulkan loader, whatever the outcome) never reaches the user: the library
/// reports every failure as a value. If `start` panics, the captured text, panic message
/// included, is copied to the real standard error. The tool is single-threaded while this runs.
#[cfg(unix)]
pub(crate) fn without_driver_noise<T>(start: impl FnOnce() -> T) -> T {
    use std::io::{Read, Seek, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    struct Restore {
        saved: OwnedFd,
        capture: std::fs::File,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: both descriptors are open and owned here; dup2 only replaces fd 2.
            unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
            if std::thread::panicking() {
                let mut text = Vec::new();
                let _ = self.capture.rewind();
                let _ = (&self.capture).take(64 * 1024).read_to_end(&mut text);
                let _ = std::io::stderr().write_all(&text);
            }
        }
    }

    let capture = (|| {
        let path = std::env::temp_dir().join(format!(".gemma-cyber-stderr-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok::<_, std::io::Error>(file)
    })();
    // SAFETY: dup of fd 2 returns a new descriptor or -1.
    let saved = unsafe { libc::dup(2) };
    let (Ok(capture), true) = (capture, saved >= 0) else {
        // No temporary file or no spare descriptor: run as is, noise and all.
        return start();
    };
    let _ = std::io::stderr().flush();
    // SAFETY: `saved` is a fresh descriptor this function now owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: the capture file is open; dup2 makes fd 2 a second descriptor for it.
    if unsafe { libc::dup2(capture.as_raw_fd(), 2) } < 0 {
        return start();
    }
    let _restore = Restore { saved, capture };
    start()
}

#[cfg(not(unix))]
pub(crate) fn without_driver_noise<T>(start: impl FnOnce() -> T) -> T {
    start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_text_kept() {
        assert_eq!(escape("plain: é ü"), "plain: é ü");
        assert_eq!(
            escape("a\u{1b}[31mb\nc\0d\u{9b}e\u{202e}f\u{7f}"),
            "a\\u{1b}[31mb\\u{a}c\\u{0}d\\u{9b}e\\u{202e}f\\u{7f}"
        );
    }

    #[test]
    fn json_stays_valid_and_inert() {
        let value = serde_json::json!({"k\u{9b}": "v\u{1b}\u{202e}\n"});
        let line = json(&value);
        assert!(line.is_ascii(), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }
}
