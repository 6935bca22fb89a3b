//! Output files written whole or not at all: under a hidden temporary name beside the output,
//! flushed to disk, then renamed into place, so that no run (failed, killed or crashed) leaves a
//! torn file under an output's name.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An output being written under its temporary name; removed when dropped unless renamed into
/// place by [`rename_to`](Self::rename_to).
pub(crate) struct PartialOutput {
    path: PathBuf,
    file: File,
    renamed: bool,
}

impl PartialOutput {
    /// Creates the temporary file for `target`. Its name is the same for every run that writes
    /// `target`, so a killed run's leftover is replaced by the next run rather than piling up;
    /// it is short whatever the length of the output's name. What has that name is removed, not
    /// opened, and the file is created only if nothing has the name by then (opening it would
    /// follow a link planted there). Its mode is that of any new file (0666 less the umask).
    pub(crate) fn create(target: &Path) -> io::Result<PartialOutput> {
        let path = temporary_path(target)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(PartialOutput {
            path,
            file,
            renamed: false,
        })
    }

    /// Where it is being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file, to write to.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Flushes it to disk, so that a crash after the rename never shows a torn file under the
    /// output's name.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Renames it to `target`, replacing what is there. Call [`sync`](Self::sync) first.
    pub(crate) fn rename_to(mut self, target: &Path) -> io::Result<()> {
        fs::rename(&self.path, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for PartialOutput {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// `.gemma-cyber-<16 hex digits>.partial` beside `target`: the digits are the start of the
/// SHA-256 of the output's file name.
fn temporary_path(target: &Path) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the output does not name a file",
        )
    })?;
    let digest = Sha256::digest(name.as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(target.with_file_name(format!(".gemma-cyber-{hex}.partial")))
}
