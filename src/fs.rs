//! Reading files whose paths come from callers: model files, checkpoints, `config.json`, and the
//! check made on ONNX Runtime's library before it is loaded.
//!
//! A path may name something that is not a file: a FIFO blocks the open (or the read) until a
//! writer comes, and `/dev/zero` or `/dev/urandom` never end while their size reads as 0. So what
//! is not a regular file is refused before it is opened, the open itself does not block, the
//! opened file is checked again (the path may have been swapped in between), and the read goes
//! through a hard cap whatever the size claims.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::path::Path;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Missing, unreadable, or not a regular file (the message says which).
    Open(io::Error),
    /// Longer than the limit the caller gave.
    TooLarge {
        /// Bytes the file has at least.
        at_least: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The bytes could not be allocated.
    OutOfMemory(u64),
    /// A read failed after the file was opened.
    Read(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Open(e) | ReadError::Read(e) => write!(f, "{e}"),
            ReadError::TooLarge { at_least, limit } => {
                write!(f, "it is {at_least} bytes or more; the limit is {limit}")
            }
            ReadError::OutOfMemory(bytes) => {
                write!(f, "not enough memory to read its {bytes} bytes")
            }
        }
    }
}

/// Succeeds only when `path` (symbolic links followed) is a regular file; otherwise an error whose
/// message says what it is instead ("a directory", "a FIFO (named pipe)", "a character device").
/// Opens nothing, so it never blocks: call it before handing a path to anything that opens it,
/// such as the system's library loader.
pub fn check_regular_file(path: &Path) -> io::Result<Metadata> {
    let metadata = std::fs::metadata(path)?;
    check_metadata(&metadata)?;
    Ok(metadata)
}

/// The whole regular file at `path`, refused when it holds more than `limit` bytes. The size the
/// file system reports is only a hint: the read itself stops after `limit + 1` bytes.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    check_regular_file(path).map_err(ReadError::Open)?;
    let file = open_without_blocking(path).map_err(ReadError::Open)?;
    // The path may have been replaced since it was checked; what was opened is what counts.
    let metadata = file.metadata().map_err(ReadError::Open)?;
    check_metadata(&metadata).map_err(ReadError::Open)?;
    if metadata.len() > limit {
        return Err(ReadError::TooLarge {
            at_least: metadata.len(),
            limit,
        });
    }
    let mut bytes = Vec::new();
    // Reserved up front (a file of the limit's size read in growing steps would need up to twice
    // its size at once), and fallibly, so a big file on a small machine is an error, not an abort.
    let expected = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    bytes
        .try_reserve_exact(expected.saturating_add(1))
        .map_err(|_| ReadError::OutOfMemory(metadata.len()))?;
    let mut capped = file.take(limit.saturating_add(1));
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match capped.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Read(e)),
        };
        // A file that grew since its size was read still grows its buffer fallibly.
        bytes
            .try_reserve(n)
            .map_err(|_| ReadError::OutOfMemory(bytes.len() as u64 + n as u64))?;
        bytes.extend_from_slice(&chunk[..n]);
    }
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            at_least: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

fn check_metadata(metadata: &Metadata) -> io::Result<()> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {}, not a regular file", kind(metadata)),
    ))
}

fn kind(metadata: &Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "something other than a file"
}

/// Opens for reading without waiting: a FIFO swapped in after the check would otherwise block the
/// open until a writer came. Reads from a regular file ignore the flag.
fn open_without_blocking(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Miri does not model opening with O_NONBLOCK or device files.
    #[cfg_attr(miri, ignore)]
    #[test]
    fn regular_files_are_read_and_capped() {
        let dir = std::env::temp_dir().join(format!("gemma-cyber-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ten");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_regular_file(&path, 10).unwrap(), b"0123456789");
        let error = read_regular_file(&path, 9).unwrap_err();
        assert!(
            matches!(error, ReadError::TooLarge { limit: 9, .. }),
            "{error}"
        );
        let error = read_regular_file(&dir, 10).unwrap_err();
        assert!(error.to_string().contains("a directory"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[cfg_attr(miri, ignore)]
    #[test]
    fn devices_are_refused_before_they_are_read() {
        for device in ["/dev/zero", "/dev/urandom", "/dev/null"] {
            let error = read_regular_file(Path::new(device), 1 << 20).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("a character device, not a regular file"),
                "{device}: {error}"
            );
            assert!(check_regular_file(Path::new(device)).is_err());
        }
    }
}
