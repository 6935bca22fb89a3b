//! Shared test helpers: golden files, and a safetensors writer for building good and bad models.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod backends;

/// Runs the `gemma-cyber` command line from the repository root, with no standard input.
#[cfg(feature = "cli")]
pub fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .args(args)
        .current_dir(repo_path(""))
        .output()
        .unwrap()
}

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn npy(relative: &str) -> npyz::NpyFile<std::io::Cursor<Vec<u8>>> {
    let bytes = std::fs::read(repo_path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    npyz::NpyFile::new(std::io::Cursor::new(bytes)).expect("valid .npy")
}

/// A 2-D float32 .npy file: values and row width.
pub fn npy_f32(relative: &str) -> (Vec<f32>, usize) {
    let file = npy(relative);
    let dim = file.shape()[1] as usize;
    (file.into_vec::<f32>().expect("float32 data"), dim)
}

/// A 1-D float64 .npy file.
pub fn npy_f64(relative: &str) -> Vec<f64> {
    npy(relative).into_vec::<f64>().expect("float64 data")
}

/// A 1-D uint8 .npy file.
pub fn npy_u8(relative: &str) -> Vec<u8> {
    npy(relative).into_vec::<u8>().expect("uint8 data")
}

/// The golden sets: name, model file, and whether the built-in model is that file.
pub const GOLDEN: [(&str, &str); 5] = [
    ("default", "models/default.safetensors"),
    ("relu_bn", "tests/fixtures/relu_bn.safetensors"),
    ("small_f16", "tests/fixtures/small_f16.safetensors"),
    ("no_metadata", "tests/fixtures/no_metadata.safetensors"),
    (
        "fixture_default",
        "tests/fixtures/fixture_default.safetensors",
    ),
];

/// Agreement required between any backend and the float64 reference.
pub const TOLERANCE: f64 = 1e-5;

/// Largest |a - b| over two probability vectors of equal length.
pub fn max_abs_diff(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (*a as f64 - e).abs())
        .fold(0.0, f64::max)
}

/// One tensor to write: name, safetensors dtype string, shape, little-endian bytes.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    /// An F32 tensor.
    pub fn f32(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
        Tensor {
            name: name.to_owned(),
            dtype: "F32".to_owned(),
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// The values of an F32 tensor.
    pub fn values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32");
        self.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The tensors and metadata of a model file, in file order, for tests to alter and write back.
pub fn read_model(relative: &str) -> (Vec<Tensor>, BTreeMap<String, String>) {
    let bytes = std::fs::read(repo_path(relative)).expect("model readable");
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("valid safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut tensors: Vec<(usize, Tensor)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let offset = header.info(&name).expect("listed").data_offsets.0;
            let tensor = Tensor {
                name,
                dtype: format!("{:?}", view.dtype()),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            (offset, tensor)
        })
        .collect();
    tensors.sort_by_key(|(offset, _)| *offset);
    let metadata = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    (tensors.into_iter().map(|(_, t)| t).collect(), metadata)
}

/// A safetensors file with consecutive offsets, written the way the format specifies.
pub fn write_model(tensors: &[Tensor], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut offset = 0;
    for t in tensors {
        let end = offset + t.data.len();
        entries.push(format!(
            "{:?}:{{\"dtype\":{:?},\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            t.name, t.dtype, t.shape
        ));
        offset = end;
    }
    let header = format!("{{{}}}", entries.join(","));
    with_header(
        &header,
        &tensors
            .iter()
            .flat_map(|t| t.data.clone())
            .collect::<Vec<u8>>(),
    )
}

/// `text` as a JSON string literal (Rust's `{:?}` is not JSON for control characters).
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A file made of a raw JSON header and a data section.
pub fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// Deterministic pseudo-random embeddings (xorshift), `rows × dim`, values in [-1, 1).
pub fn random_embeddings(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}
