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
    model_bytes(4, &[3], metadata)
}

/// A valid model file of the given input width and hidden block widths, deterministic weights.
pub(crate) fn model_bytes(input: usize, hidden: &[usize], metadata: &[(&str, &str)]) -> Vec<u8> {
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
    let mut tensors = vec![
        ("input_norm.weight".to_owned(), tensor(&[input], 1.0)),
        ("input_norm.bias".to_owned(), tensor(&[input], 0.0)),
    ];
    let mut width = input;
    for (i, &outputs) in hidden.iter().enumerate() {
        let name = |part: &str| format!("hidden.{i}.{part}");
        tensors.push((name("linear.weight"), tensor(&[outputs, width], 0.0)));
        tensors.push((name("linear.bias"), tensor(&[outputs], 0.0)));
        tensors.push((name("norm.weight"), tensor(&[outputs], 1.0)));
        tensors.push((name("norm.bias"), tensor(&[outputs], 0.0)));
        tensors.push((name("norm.running_mean"), tensor(&[outputs], 0.0)));
        tensors.push((name("norm.running_var"), tensor(&[outputs], 1.0)));
        width = outputs;
    }
    tensors.push(("output.weight".to_owned(), tensor(&[1, width], 0.0)));
    tensors.push(("output.bias".to_owned(), tensor(&[1], 0.0)));
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(tensors.iter().map(|(name, t)| (name, t)), Some(metadata))
        .expect("serialisable")
}
