//! Reading the arranged tensors out of the checkpoint's storages and writing the safetensors file.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::TensorView;

use super::archive;
use super::checkpoint::{BatchNorm, LayerNorm, Layers, Linear};
use super::pickle::{Dtype, Tensor};
use crate::error::{Error, Result};

/// Most values a converted model may have: the real one has 563 thousand; this bounds the memory
/// a hostile file can make the conversion use.
const MAX_MODEL_ELEMENTS: u64 = 1 << 25;

/// Reads every tensor the model needs out of its storage and writes the safetensors file.
pub(super) fn write(
    archive: &mut archive::Archive<'_>,
    layers: &Layers<'_>,
    metadata: BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    // Every tensor to write, named, before anything is read: a parameter the module left out
    // (`bias=False`, `affine=False`) is written as the identity it stands for.
    let mut wanted: Vec<(String, Source<'_>)> = Vec::new();
    let LayerNorm { weight, bias } = layers.input_norm.role;
    wanted.push(("input_norm.weight".into(), Source::Tensor(weight)));
    wanted.push(("input_norm.bias".into(), Source::Tensor(bias)));
    for (i, (linear, norm)) in layers.blocks.iter().enumerate() {
        let Linear { weight, bias } = linear.role;
        let outputs = weight.shape[0];
        wanted.push((format!("hidden.{i}.linear.weight"), Source::Tensor(weight)));
        wanted.push((
            format!("hidden.{i}.linear.bias"),
            Source::or(bias, outputs, 0.0),
        ));
        let BatchNorm {
            weight,
            bias,
            mean,
            var,
        } = norm.role;
        wanted.push((
            format!("hidden.{i}.norm.weight"),
            Source::or(weight, outputs, 1.0),
        ));
        wanted.push((
            format!("hidden.{i}.norm.bias"),
            Source::or(bias, outputs, 0.0),
        ));
        wanted.push((
            format!("hidden.{i}.norm.running_mean"),
            Source::Tensor(mean),
        ));
        wanted.push((format!("hidden.{i}.norm.running_var"), Source::Tensor(var)));
    }
    let Linear { weight, bias } = layers.output.role;
    wanted.push(("output.weight".into(), Source::Tensor(weight)));
    wanted.push(("output.bias".into(), Source::or(bias, 1, 0.0)));

    // Saturating: each count fits 64 bits, but a hostile file's sum need not.
    let elements: u64 = wanted
        .iter()
        .fold(0u64, |sum, (_, source)| sum.saturating_add(source.numel()));
    if elements > MAX_MODEL_ELEMENTS {
        return Err(Error::model_invalid(format!(
            "the model has {elements} values; the limit is {MAX_MODEL_ELEMENTS}"
        )));
    }
    let mut reader = TensorReader {
        archive,
        storages: HashMap::new(),
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(wanted.len());
    for (name, source) in wanted {
        let (shape, values) = match source {
            Source::Tensor(tensor) => (shape_of(tensor), reader.read(&name, tensor)?),
            Source::Filled(n, value) => (vec![n as usize], vec![value; n as usize]),
        };
        let bytes = f32_bytes(&values);
        tensors.push((name, shape, bytes));
    }

    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::model_invalid(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata.into_iter().collect()))
        .map_err(|e| Error::model_invalid(format!("cannot write the safetensors file: {e}")))
}

/// Where a written tensor's values come from.
enum Source<'p> {
    /// A tensor of the checkpoint.
    Tensor(&'p Tensor),
    /// `n` copies of one value, for a parameter the module does not have.
    Filled(u64, f64),
}

impl<'p> Source<'p> {
    fn or(tensor: Option<&'p Tensor>, n: u64, value: f64) -> Source<'p> {
        tensor.map_or(Source::Filled(n, value), Source::Tensor)
    }

    fn numel(&self) -> u64 {
        match self {
            Source::Tensor(tensor) => tensor
                .shape
                .iter()
                .try_fold(1u64, |n, d| n.checked_mul(*d))
                .unwrap_or(u64::MAX),
            Source::Filled(n, _) => *n,
        }
    }
}

fn shape_of(tensor: &Tensor) -> Vec<usize> {
    tensor.shape.iter().map(|d| *d as usize).collect()
}

/// Float64 values narrowed to little-endian float32, the stored dtype of converted models.
fn f32_bytes(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect()
}

/// Storages read once each and shared by the tensors that view them.
struct TensorReader<'r, 'a> {
    archive: &'r mut archive::Archive<'a>,
    storages: HashMap<String, Vec<u8>>,
}

impl TensorReader<'_, '_> {
    /// The tensor's elements in row-major order, widened to float64.
    fn read(&mut self, name: &str, tensor: &Tensor) -> Result<Vec<f64>> {
        let storage = &tensor.storage;
        if !storage.dtype.is_float() {
            return Err(Error::model_invalid(format!(
                "{name} is stored as {:?}; model weights must be floating point",
                storage.dtype
            )));
        }
        let size = storage.dtype.size();
        if !self.storages.contains_key(&storage.key) {
            // The pickle already checked that every view lies inside `numel` elements; here the
            // entry must really hold them.
            let needed = storage.numel.checked_mul(size as u64).ok_or_else(|| {
                Error::model_invalid(format!(
                    "storage {:?} claims {} elements of {size} bytes, more than 64 bits count",
                    storage.key, storage.numel
                ))
            })?;
            let bytes = self.archive.storage(&storage.key, needed)?;
            self.storages.insert(storage.key.clone(), bytes);
        }
        let bytes = &self.storages[&storage.key];
        let needed = storage.numel.checked_mul(size as u64);
        if needed.is_none_or(|needed| (bytes.len() as u64) < needed) {
            // The same key named twice with different numels.
            return Err(Error::model_invalid(format!(
                "storage {:?} is shorter than {name} needs",
                storage.key
            )));
        }
        let numel = tensor.numel() as usize;
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0u64; tensor.shape.len()];
        for _ in 0..numel {
            let element: u64 = tensor.offset
                + index
                    .iter()
                    .zip(&tensor.stride)
                    .map(|(i, s)| i * s)
                    .sum::<u64>();
            let at = element as usize * size;
            values.push(element_at(storage.dtype, &bytes[at..at + size]));
            // Row-major increment of the multi-index.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < tensor.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(values)
    }
}

fn element_at(dtype: Dtype, b: &[u8]) -> f64 {
    match dtype {
        Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        Dtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
        Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
        Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
        _ => unreachable!("checked to be a float dtype"),
    }
}
