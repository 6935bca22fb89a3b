//! Embedding readers, one file per input format: `npy` (float32, float16 or float64 arrays, read
//! straight into one float32 buffer) and `jsonl` (one array of numbers, or one object with an
//! `"embedding"` array, a line). Parquet shards have a pipeline of their own (`crate::parquet`).
//! Every reader bounds what a header or a line can make it allocate; what they share, the
//! [`Embeddings`] they fill and the finiteness check run on it, is here.

mod jsonl;
mod npy;

pub(crate) use jsonl::{check_width, read_json_lines, JsonLines};
pub(crate) use npy::{read_npy, read_npy_header, NPY_MAGIC};

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
