//! Embedding readers, one file per input format: `npy` (float32, float16 or float64 arrays, read
//! straight into one float32 buffer) and `jsonl` (one array of numbers, or one object with an
//! `"embedding"` array, a line). Parquet shards have a pipeline of their own (`crate::parquet`).
//! Every reader bounds what a header or a line can make it allocate; what they share, the
//! [`Embeddings`] they fill, the finiteness check run on it and telling a `.npy` stream from JSON
//! lines, is here.

mod jsonl;
mod npy;

use std::io::{self, Chain, Cursor, Read};

pub(crate) use jsonl::{check_width, read_json_lines, JsonLines};
#[cfg(test)]
pub(crate) use npy::npy_file;
use npy::NPY_MAGIC;
pub(crate) use npy::{not_valid_npy, read_npy, read_npy_header};

/// A stream after [`sniff_npy`]: the bytes it read, then the rest.
pub(crate) type Sniffed<R> = Chain<Cursor<Vec<u8>>, R>;

/// Whether a stream is a `.npy` (by its magic), and the whole stream to read it from. A pipe may
/// hand over fewer bytes than the magic in one read, so reading goes on until the magic's length
/// or the end of the input: the format must not depend on how the writer's bytes were split.
pub(crate) fn sniff_npy<R: Read>(mut reader: R) -> io::Result<(bool, Sniffed<R>)> {
    let mut head = Vec::with_capacity(NPY_MAGIC.len());
    (&mut reader)
        .take(NPY_MAGIC.len() as u64)
        .read_to_end(&mut head)?;
    Ok((head == NPY_MAGIC, Cursor::new(head).chain(reader)))
}

/// Embeddings, row-major, `dim` values a row.
pub(crate) struct Embeddings {
    pub values: Vec<f32>,
    pub dim: usize,
}

impl Embeddings {
    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }
}

/// The first NaN or infinity in `values`: its index.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    values.iter().position(|v| !v.is_finite())
}
