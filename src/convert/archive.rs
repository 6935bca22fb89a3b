//! The zip container of `torch.save`: `<archive>/data.pkl`, `<archive>/data/<key>` (one entry a
//! storage), `<archive>/version`, `<archive>/byteorder`.
//!
//! Only stored (uncompressed) entries are read. `torch.save` never compresses, and refusing every
//! compression method means a zip bomb has nothing to expand: an entry's bytes are at most the
//! file's own bytes.

use std::io::{self, Cursor, Read, Seek, SeekFrom};

use zip::{CompressionMethod, ZipArchive};

use crate::error::{Error, Result};

/// Largest checkpoint file accepted: the model's is 2.2 MB; a training checkpoint with optimizer
/// state a few times that.
pub const MAX_CHECKPOINT_BYTES: u64 = 1 << 30;
/// Most zip entries accepted; a checkpoint has one per storage plus three or four.
pub const MAX_ENTRIES: usize = 16384;

/// An opened checkpoint archive.
pub struct Archive<'a> {
    zip: ZipArchive<BudgetedReader<'a>>,
    /// `<archive>/`, the folder every entry sits in.
    prefix: String,
    /// The file's length in bytes.
    len: u64,
    /// `len` less the bytes of the entries read so far.
    unread: u64,
}

impl<'a> Archive<'a> {
    /// Opens `bytes` as a `torch.save` zip and finds its `data.pkl`.
    pub fn open(bytes: &'a [u8]) -> Result<Archive<'a>> {
        if bytes.len() as u64 > MAX_CHECKPOINT_BYTES {
            return Err(Error::model_invalid(format!(
                "the checkpoint is {} bytes; the limit is {MAX_CHECKPOINT_BYTES}",
                bytes.len()
            )));
        }
        if !bytes.starts_with(b"PK\x03\x04") {
            let hint = if bytes.first() == Some(&0x80) {
                " (it looks like a legacy pickle-only torch.save file from before PyTorch 1.6; \
                 load and save it again with a current PyTorch)"
            } else {
                ""
            };
            return Err(Error::model_invalid(format!(
                "not a PyTorch checkpoint: not a zip file{hint}"
            )));
        }
        // The zip reader allocates for every entry the central directory claims, so the claim is
        // checked first.
        let claimed = claimed_entries(bytes)?;
        if claimed > MAX_ENTRIES as u64 {
            return Err(Error::model_invalid(format!(
                "the checkpoint zip claims {claimed} entries; the limit is {MAX_ENTRIES}"
            )));
        }
        // The archive starts at offset 0 (the file starts with a local header, checked above).
        // Left to detect it, the zip reader scans from the central directory's offset up to
        // every end-of-directory record it finds, so a file of such records (each failing) takes
        // time quadratic in its length; at a known offset each record is checked in one place.
        let config = zip::read::Config {
            archive_offset: zip::read::ArchiveOffset::Known(0),
        };
        let zip = ZipArchive::with_config(config, BudgetedReader::new(bytes))
            .map_err(|e| Error::model_invalid(format!("not a readable zip file: {e}")))?;
        if zip.len() > MAX_ENTRIES {
            return Err(Error::model_invalid(format!(
                "the checkpoint zip has {} entries; the limit is {MAX_ENTRIES}",
                zip.len()
            )));
        }
        let pickles: Vec<&str> = zip
            .file_names()
            .filter(|name| {
                name.strip_suffix("data.pkl")
                    .is_some_and(|dir| dir.matches('/').count() == 1 && dir.ends_with('/'))
            })
            .collect();
        let prefix = match pickles[..] {
            [one] => one.trim_end_matches("data.pkl").to_owned(),
            [] => {
                return Err(Error::model_invalid(
                    "not a PyTorch checkpoint: the zip has no <archive>/data.pkl",
                ))
            }
            _ => {
                return Err(Error::model_invalid(format!(
                    "the zip holds {} data.pkl entries; a checkpoint has one",
                    pickles.len()
                )))
            }
        };
        let mut archive = Archive {
            zip,
            prefix,
            len: bytes.len() as u64,
            unread: bytes.len() as u64,
        };
        if let Some(order) = archive.read("byteorder", 16)?
            && order != b"little"
        {
            return Err(Error::model_invalid(format!(
                "the checkpoint was saved {:?}-endian; only little-endian is supported",
                String::from_utf8_lossy(&order)
            )));
        }
        Ok(archive)
    }

    /// The pickle, at most `limit` bytes.
    pub fn pickle(&mut self, limit: usize) -> Result<Vec<u8>> {
        self.read("data.pkl", limit)?
            .ok_or_else(|| Error::model_invalid("the zip has no data.pkl"))
    }

    /// The bytes of storage `key`, which must be at least `needed` bytes long.
    pub fn storage(&mut self, key: &str, needed: u64) -> Result<Vec<u8>> {
        let name = format!("data/{key}");
        let limit = usize::try_from(needed).unwrap_or(usize::MAX);
        let bytes = self.read(&name, limit)?.ok_or_else(|| {
            Error::model_invalid(format!(
                "the pickle names storage {key:?} but the zip has no {}{name}",
                self.prefix
            ))
        })?;
        if (bytes.len() as u64) < needed {
            return Err(Error::model_invalid(format!(
                "storage {key:?} is {} bytes but the pickle says it holds {needed} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Entry `<prefix><name>`, refused if compressed; `None` when there is no such entry. At most
    /// `limit` bytes are read. A non-storage entry whose header claims more is refused; a storage
    /// entry is only read up to what the pickle says the storage holds, since nothing beyond that
    /// can be used (a shorter entry is the caller's error to report).
    fn read(&mut self, name: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        let full = format!("{}{name}", self.prefix);
        let Some(index) = self.zip.index_for_name(&full) else {
            return Ok(None);
        };
        // The method is checked on the raw entry first, so that no decompressor is ever asked for.
        let method = self
            .zip
            .by_index_raw(index)
            .map_err(|e| Error::model_invalid(format!("zip entry {full}: {e}")))?
            .compression();
        if method != CompressionMethod::Stored {
            return Err(Error::model_invalid(format!(
                "zip entry {full} is compressed ({method}); torch.save stores entries \
                 uncompressed, and compressed checkpoints are refused so that nothing can expand"
            )));
        }
        let mut entry = self
            .zip
            .by_index(index)
            .map_err(|e| Error::model_invalid(format!("zip entry {full}: {e}")))?;
        let size = entry.size();
        if !name.starts_with("data/") && size > limit as u64 {
            return Err(Error::model_invalid(format!(
                "zip entry {full} is {size} bytes; the limit is {limit}"
            )));
        }
        // `size` is what the entry claims; a stored entry cannot really exceed the file, but
        // the claim can lie, so the read itself is bounded too.
        let want = size.min(limit as u64);
        // Stored entries lie side by side in the file, so together they hold at most its length.
        // Directory records pointing at the same bytes would otherwise be read, and held, once
        // each: a 32 MiB entry named by a hundred storage keys is 3 GiB from a 32 MB file.
        if want > self.unread {
            return Err(Error::model_invalid(format!(
                "zip entry {full} overlaps entries already read: with it they would hold more \
                 than the checkpoint's {} bytes; every entry must have bytes of its own",
                self.len
            )));
        }
        self.unread -= want;
        let mut bytes = Vec::with_capacity(usize::try_from(want).unwrap_or(0).min(1 << 26));
        (&mut entry)
            .take(want)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::model_invalid(format!("zip entry {full}: {e}")))?;
        Ok(Some(bytes))
    }
}

/// The checkpoint's bytes for the zip reader, with a cap on how many it may read in all. When an
/// end-of-directory record does not lead to a readable directory, the reader tries the next one
/// back, and each try may parse a directory again: a file of such records costs time quadratic in
/// its length. A valid archive is read about once for the directory and once for the entries
/// (their total is capped at the file's length besides), so [`READ_BUDGET_PER_BYTE`] passes stop
/// only such files, in time linear in their length.
struct BudgetedReader<'a> {
    bytes: Cursor<&'a [u8]>,
    left: u64,
}

/// Passes over the file the zip reader may make, counting every byte it reads.
const READ_BUDGET_PER_BYTE: u64 = 4;
/// Reads allowed beyond those passes: the records of a small archive read more than once.
const READ_BUDGET_SLACK: u64 = 1 << 20;

impl<'a> BudgetedReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BudgetedReader {
            bytes: Cursor::new(bytes),
            left: (bytes.len() as u64)
                .saturating_mul(READ_BUDGET_PER_BYTE)
                .saturating_add(READ_BUDGET_SLACK),
        }
    }
}

impl Read for BudgetedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bytes.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other(format!(
                "its records took more than {READ_BUDGET_PER_BYTE} passes over the file to read \
                 (many end-of-directory records that lead nowhere?)"
            ))
        })?;
        Ok(n)
    }
}

impl Seek for BudgetedReader<'_> {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        self.bytes.seek(position)
    }
}

/// The entry count in the zip's end-of-central-directory record, read without trusting anything
/// else in the file: the larger of the classic record's and, when a zip64 locator precedes it, the
/// zip64 record's. The zip reader takes the zip64 count whenever any classic field is saturated
/// (an offset of 0xFFFFFFFF with a count of 1 let a file claim millions of entries unchecked).
fn claimed_entries(bytes: &[u8]) -> Result<u64> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const EOCD64_LOCATOR: &[u8] = b"PK\x06\x07";
    const EOCD64: &[u8] = b"PK\x06\x06";
    let not_zip = || Error::model_invalid("not a readable zip file: no end of central directory");
    // The record is 22 bytes plus a comment of at most 65535.
    let search_from = bytes.len().saturating_sub(22 + 65535);
    let at = bytes[search_from..]
        .windows(4)
        .rposition(|w| w == EOCD)
        .map(|i| search_from + i)
        .ok_or_else(not_zip)?;
    let field = |start: usize, len: usize| -> Option<u64> {
        let slice = bytes.get(start..start.checked_add(len)?)?;
        let mut buf = [0u8; 8];
        buf[..len].copy_from_slice(slice);
        Some(u64::from_le_bytes(buf))
    };
    let total = field(at + 10, 2).ok_or_else(not_zip)?;
    // zip64: the locator sits right before the classic record and points at the zip64 record.
    let Some(locator) = at.checked_sub(20) else {
        return Ok(total);
    };
    if bytes.get(locator..locator + 4) != Some(EOCD64_LOCATOR) {
        return Ok(total);
    }
    let record = field(locator + 8, 8).ok_or_else(not_zip)?;
    let record = usize::try_from(record).map_err(|_| not_zip())?;
    if bytes.get(record..record.saturating_add(4)) != Some(EOCD64) {
        return Err(not_zip());
    }
    Ok(total.max(field(record + 32, 8).ok_or_else(not_zip)?))
}
