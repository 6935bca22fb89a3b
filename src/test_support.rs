//! A tiny model built in memory, small enough for unit tests under Miri.

use std::collections::HashMap;

use safetensors::{Dtype, View};

struct F32Tensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.bytes[..]).into()
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// A valid model file: input 4, one hidden block of 3, output 1, deterministic weights.
pub(crate) fn tiny_model_bytes(metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut next = 0.0f32;
    let mut tensor = |shape: &[usize], offset: f32| {
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                next += 0.37;
                offset + (next.sin() * 0.5)
            })
            .collect();
        F32Tensor {
            shape: shape.to_vec(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    };
    let tensors = vec![
        ("input_norm.weight", tensor(&[4], 1.0)),
        ("input_norm.bias", tensor(&[4], 0.0)),
        ("hidden.0.linear.weight", tensor(&[3, 4], 0.0)),
        ("hidden.0.linear.bias", tensor(&[3], 0.0)),
        ("hidden.0.norm.weight", tensor(&[3], 1.0)),
        ("hidden.0.norm.bias", tensor(&[3], 0.0)),
        ("hidden.0.norm.running_mean", tensor(&[3], 0.0)),
        ("hidden.0.norm.running_var", tensor(&[3], 1.0)),
        ("output.weight", tensor(&[1, 3], 0.0)),
        ("output.bias", tensor(&[1], 0.0)),
    ];
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(tensors.iter().map(|(name, t)| (*name, t)), Some(metadata))
        .expect("serialisable")
}
