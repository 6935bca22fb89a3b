//! Output files written whole or not at all: under a hidden temporary name beside the output,
//! flushed to disk, then renamed into place, so that no run (failed, killed or crashed) leaves a
//! torn file under an output's name.
//!
//! Each run writes a temporary of its own (`.gemma-cyber-<output>-<random>.partial`, where
//! `<output>` is 16 hex digits of the SHA-256 of the output's file name), created only if nothing
//! has the name: two runs writing one output never touch each other's file, and whichever renames
//! last leaves a whole file. A run holds an advisory lock on its temporary while it writes, so
//! that a later run can tell a killed run's leftover (unlocked: removed) from a file still being
//! written (locked: left alone).

use std::fs::{self, File};
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::Failure;

/// What every temporary name starts with.
const PREFIX: &str = ".gemma-cyber-";
/// What every temporary name ends with.
const SUFFIX: &str = ".partial";

/// An output being written under its temporary name; removed when dropped unless renamed into
/// place by [`rename_to`](Self::rename_to).
pub(crate) struct PartialOutput {
    temporary: NamedTempFile,
}

impl PartialOutput {
    /// Creates a temporary file of this run's own beside `target`, locked while it lives, with
    /// the mode of any new file (0666 less the umask).
    pub(crate) fn create(target: &Path) -> io::Result<PartialOutput> {
        let mut builder = tempfile::Builder::new();
        let prefix = output_prefix(target)?;
        builder.prefix(&prefix).suffix(SUFFIX);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let dir = directory_of(target);
        let temporary = builder.tempfile_in(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a temporary file in {}: {e}", dir.display()),
            )
        })?;
        // Where locks are not to be had, no leftover looks unused, so none is removed.
        let _ = try_lock(temporary.as_file());
        Ok(PartialOutput { temporary })
    }

    /// Where it is being written.
    pub(crate) fn path(&self) -> &Path {
        self.temporary.path()
    }

    /// The file, to write to.
    pub(crate) fn file(&self) -> &File {
        self.temporary.as_file()
    }

    /// Flushes it to disk, so that a crash after the rename never shows a torn file under the
    /// output's name.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.temporary.as_file().sync_all()
    }

    /// Renames it to `target`, replacing a regular file that is there (or a link, which is
    /// replaced, not followed), but never anything else: see [`not_a_file`]. Call
    /// [`sync`](Self::sync) first.
    pub(crate) fn rename_to(self, target: &Path) -> io::Result<()> {
        // Looked at again here, the last moment before the rename: a FIFO or device put at the
        // name while the output was being written is left as it is too.
        if let Some(what) = not_a_file(target) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("it is {what}, not a regular file"),
            ));
        }
        self.temporary
            .persist(target)
            .map(drop)
            .map_err(|e| e.error)
    }
}

/// What `target` names (symbolic links followed) when that is something an output must not
/// replace: "a directory", "a FIFO (named pipe)", "a socket", "a character device" or "a block
/// device". `None` for a regular file, a link to one, or nothing there (a dangling link, a name
/// that cannot be looked at: the write itself tells what is wrong with those).
///
/// An output is put in place by renaming a new file over its name, so a FIFO another program
/// reads, or `/dev/null` for a run as root, would be replaced by a regular file and the run would
/// report success: such a name is refused instead, and left as it is.
pub(crate) fn not_a_file(target: &Path) -> Option<&'static str> {
    let file_type = fs::metadata(target).ok()?.file_type();
    if file_type.is_file() {
        return None;
    }
    if file_type.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
    }
    Some("something other than a file")
}

/// Exit 1, before any work, when `path` names something an output must not replace (a
/// directory, a FIFO, a socket, a device, or a link to one; see [`not_a_file`]): the
/// rename that puts the output in place would replace a link (and fail on a directory only at
/// the end), and would put a regular file where a FIFO or device was.
pub(crate) fn refuse_unreplaceable_output(path: &Path) -> Result<(), Failure> {
    match not_a_file(path) {
        Some(what) => Err(Failure {
            message: format!(
                "cannot write {}: it is {what}, not a regular file",
                path.display()
            ),
            code: 1,
        }),
        None => Ok(()),
    }
}

/// Removes the temporaries that killed runs left in `dir`: those of the output `target` names, or
/// where `target` is `None` every one of this program's. A temporary still locked by the run
/// writing it is left alone, and so is anything that cannot be removed (another user's file in a
/// shared directory): a leftover never stops a run, which writes under a name of its own.
pub(crate) fn remove_leftovers(dir: &Path, target: Option<&Path>) {
    let prefix = match target.map(output_prefix) {
        Some(Ok(prefix)) => prefix,
        Some(Err(_)) => return,
        None => PREFIX.to_owned(),
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(&prefix) && name.ends_with(SUFFIX)) {
            continue;
        }
        let path = entry.path();
        // Not followed: a link is removed, never what it points to.
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_file() && !is_unused(&path) {
            continue;
        }
        let _ = fs::remove_file(&path);
    }
}

/// `.gemma-cyber-<16 hex digits of the SHA-256 of target's file name>-`.
fn output_prefix(target: &Path) -> io::Result<String> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the output does not name a file",
        )
    })?;
    let digest = Sha256::digest(name.as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{PREFIX}{hex}-"))
}

/// The directory `target` is in (`.` for a bare name).
pub(crate) fn directory_of(target: &Path) -> &Path {
    target
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether no run holds the regular file at `path` locked. Opened without following a link or
/// waiting on a FIFO swapped in meanwhile.
fn is_unused(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(file) = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        else {
            return false;
        };
        // The lock, if taken, goes with `file`.
        try_lock(&file)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Takes an exclusive advisory lock on `file` without waiting; whether it was had.
fn try_lock(file: &File) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a descriptor `file` owns; it touches nothing else.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        false
    }
}
