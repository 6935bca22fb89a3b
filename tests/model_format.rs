//! Every malformed model is refused with MODEL_INVALID (or MODEL_NOT_FOUND) and a clear message.

mod common;

use std::collections::BTreeMap;

use common::*;
use gemma_cyber::{Model, Status};

const SMALL: &str = "tests/fixtures/no_metadata.safetensors";

fn small() -> (Vec<Tensor>, BTreeMap<String, String>) {
    read_model(SMALL)
}

#[track_caller]
fn assert_invalid(bytes: &[u8], needle: &str) {
    let error = Model::from_bytes(bytes).expect_err("the model must be refused");
    assert_eq!(error.status(), Status::ModelInvalid, "{error}");
    assert!(
        error.message().contains(needle),
        "message {:?} lacks {needle:?}",
        error.message()
    );
}

fn tensor_mut<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.name == name).unwrap()
}

#[test]
fn writer_round_trips_a_valid_model() {
    let (tensors, metadata) = small();
    let original = Model::from_path(&repo_path(SMALL)).unwrap();
    let rewritten = Model::from_bytes(&write_model(&tensors, &metadata)).unwrap();
    assert_eq!(original.layers(), rewritten.layers());
}

#[test]
fn junk_empty_and_truncated_files_are_invalid() {
    assert_invalid(b"", "shorter than the 8-byte header length");
    assert_invalid(b"this is not a model at all, just text", "header claims");
    let good = std::fs::read(repo_path(SMALL)).unwrap();
    assert_invalid(&good[..good.len() - 1], "not a valid safetensors file");
    assert_invalid(&good[..100], "header claims");
    let mut not_json = good.clone();
    not_json[8] = b'[';
    assert_invalid(&not_json, "not a valid safetensors file");
}

#[test]
fn huge_header_length_is_refused_before_parsing() {
    let mut bytes = std::fs::read(repo_path(SMALL)).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_invalid(&bytes, "the limit is");
    bytes[..8].copy_from_slice(&(64u64 << 20).to_le_bytes());
    assert_invalid(&bytes, "the limit is");
}

#[test]
fn inconsistent_offsets_are_invalid() {
    let data = vec![0u8; 16];
    let overlapping = r#"{"input_norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"input_norm.bias":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_invalid(
        &with_header(overlapping, &data),
        "not a valid safetensors file",
    );
    let past_end = r#"{"input_norm.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"input_norm.bias":{"dtype":"F32","shape":[2],"data_offsets":[8,400]}}"#;
    assert_invalid(
        &with_header(past_end, &data),
        "not a valid safetensors file",
    );
    let size_mismatch = r#"{"input_norm.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    assert_invalid(
        &with_header(size_mismatch, &data[..8]),
        "not a valid safetensors file",
    );
    let overflow = r#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,8]}}"#;
    assert_invalid(
        &with_header(overflow, &data[..8]),
        "not a valid safetensors file",
    );
}

#[test]
fn unsupported_dtype_is_invalid() {
    let (mut tensors, metadata) = small();
    tensor_mut(&mut tensors, "output.bias").dtype = "I32".into();
    assert_invalid(
        &write_model(&tensors, &metadata),
        "dtype I32; expected F32, F16 or BF16",
    );
}

#[test]
fn shapes_that_do_not_chain_are_invalid() {
    let (tensors, metadata) = small();
    let mut wrong_rank = tensors.clone();
    tensor_mut(&mut wrong_rank, "output.bias").shape = vec![1, 1];
    assert_invalid(
        &write_model(&wrong_rank, &metadata),
        "\"output.bias\" has shape [1, 1]; expected [1]",
    );

    // hidden.0 maps 12 -> 6; claim it reads 6 inputs (same byte count, so only the shape is wrong).
    let mut unchained = tensors.clone();
    tensor_mut(&mut unchained, "hidden.0.linear.weight").shape = vec![12, 6];
    assert_invalid(
        &write_model(&unchained, &metadata),
        "expected [outputs, 12]",
    );

    let mut short_bn = tensors;
    let var = tensor_mut(&mut short_bn, "hidden.0.norm.running_var");
    var.shape = vec![5];
    var.data.truncate(20);
    assert_invalid(
        &write_model(&short_bn, &metadata),
        "\"hidden.0.norm.running_var\" has shape [5]; expected [6]",
    );
}

#[test]
fn missing_and_unexpected_tensors_are_invalid() {
    let (tensors, metadata) = small();
    let without_bias: Vec<Tensor> = tensors
        .iter()
        .filter(|t| t.name != "hidden.0.linear.bias")
        .cloned()
        .collect();
    assert_invalid(
        &write_model(&without_bias, &metadata),
        "missing tensor \"hidden.0.linear.bias\"",
    );

    let mut extra = tensors.clone();
    extra.push(Tensor::f32(
        "hidden.0.norm.num_batches_tracked",
        &[1],
        &[1.0],
    ));
    assert_invalid(
        &write_model(&extra, &metadata),
        "unexpected tensor \"hidden.0.norm.num_batches_tracked\"",
    );

    // A gap in the layer indices: hidden.0 renamed hidden.1.
    let gap: Vec<Tensor> = tensors
        .iter()
        .map(|t| Tensor {
            name: t.name.replace("hidden.0.", "hidden.1."),
            ..t.clone()
        })
        .collect();
    assert_invalid(
        &write_model(&gap, &metadata),
        "unexpected tensor \"hidden.1.",
    );
}

#[test]
fn non_finite_weights_and_negative_variance_are_invalid() {
    let (tensors, metadata) = small();
    let mut nan = tensors.clone();
    let weight = tensor_mut(&mut nan, "hidden.0.linear.weight");
    let mut values = weight.values();
    values[7] = f32::NAN;
    *weight = Tensor::f32(&weight.name.clone(), &weight.shape.clone(), &values);
    assert_invalid(&write_model(&nan, &metadata), "non-finite value at index 7");

    let mut negative = tensors;
    let var = tensor_mut(&mut negative, "hidden.0.norm.running_var");
    let values: Vec<f32> = var.values().iter().map(|v| -v).collect();
    *var = Tensor::f32("hidden.0.norm.running_var", &[6], &values);
    assert_invalid(&write_model(&negative, &metadata), "negative variance");
}

#[test]
fn bad_metadata_is_invalid() {
    let (tensors, _) = small();
    for (key, value, needle) in [
        ("format", "pytorch", "metadata format"),
        ("format_version", "2", "format_version"),
        ("norm_order", "bn_first", "norm_order"),
        ("layer_norm_eps", "0", "layer_norm_eps"),
        ("batch_norm_eps", "-1e-5", "batch_norm_eps"),
        ("batch_norm_eps", "nan", "batch_norm_eps"),
        ("threshold", "1.5", "threshold"),
        ("threshold", "half", "threshold"),
    ] {
        let metadata = BTreeMap::from([(key.to_owned(), value.to_owned())]);
        assert_invalid(&write_model(&tensors, &metadata), needle);
    }
}

#[test]
fn bf16_and_f16_are_widened_exactly() {
    // Values that bf16 holds exactly, so the F32 and BF16 files describe the same model.
    let (tensors, metadata) = small();
    let rounded: Vec<Tensor> = tensors
        .iter()
        .map(|t| {
            let values: Vec<f32> = t
                .values()
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_f32())
                .collect();
            Tensor::f32(&t.name, &t.shape, &values)
        })
        .collect();
    let as_bf16: Vec<Tensor> = rounded
        .iter()
        .map(|t| Tensor {
            dtype: "BF16".into(),
            data: t
                .values()
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            ..t.clone()
        })
        .collect();
    let as_f16: Vec<Tensor> = rounded
        .iter()
        .map(|t| {
            let values: Vec<f32> = t
                .values()
                .iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect();
            Tensor::f32(&t.name, &t.shape, &values)
        })
        .collect();
    let f16_file: Vec<Tensor> = as_f16
        .iter()
        .map(|t| Tensor {
            dtype: "F16".into(),
            data: t
                .values()
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            ..t.clone()
        })
        .collect();
    let load = |ts: &[Tensor]| Model::from_bytes(&write_model(ts, &metadata)).unwrap();
    assert_eq!(load(&rounded).layers(), load(&as_bf16).layers());
    assert_eq!(load(&as_f16).layers(), load(&f16_file).layers());
}

#[test]
fn missing_file_is_model_not_found_and_directory_too() {
    let error = Model::from_path(&repo_path("models/no-such-model.safetensors")).unwrap_err();
    assert_eq!(error.status(), Status::ModelNotFound);
    assert!(
        error.message().contains("no-such-model.safetensors"),
        "{error}"
    );
    let error = Model::from_path(&repo_path("models")).unwrap_err();
    assert_eq!(error.status(), Status::ModelNotFound);
}

#[test]
fn absurd_tensor_count_is_refused() {
    let tensors: Vec<Tensor> = (0..2000)
        .map(|i| Tensor::f32(&format!("t{i}"), &[1], &[0.0]))
        .collect();
    assert_invalid(
        &write_model(&tensors, &BTreeMap::new()),
        "model has 2000 tensors",
    );
}

fn set_values(tensors: &mut [Tensor], name: &str, f: impl Fn(usize, f32) -> f32) {
    let tensor = tensor_mut(tensors, name);
    let values: Vec<f32> = tensor
        .values()
        .iter()
        .enumerate()
        .map(|(i, v)| f(i, *v))
        .collect();
    *tensor = Tensor::f32(name, &tensor.shape.clone(), &values);
}

#[test]
fn values_that_overflow_float32_once_folded_are_invalid() {
    // Every stored value is finite, but BatchNorm's scale γ / sqrt(var + eps) is 1e41.
    let (mut tensors, mut metadata) = small();
    set_values(&mut tensors, "hidden.0.norm.weight", |i, v| {
        if i == 2 {
            3e38
        } else {
            v
        }
    });
    set_values(&mut tensors, "hidden.0.norm.running_var", |i, v| {
        if i == 2 {
            0.0
        } else {
            v
        }
    });
    assert_invalid(
        &write_model(&tensors, &metadata),
        "tensor \"hidden.0.linear.weight\" is",
    );
    // Folded after the ReLU, the same BatchNorm lands in the next layer's weights.
    metadata.insert("norm_order".into(), "linear_relu_bn".into());
    assert_invalid(
        &write_model(&tensors, &metadata),
        "tensor \"output.weight\" is",
    );
}

#[test]
fn layers_whose_activations_could_overflow_float32_are_invalid() {
    // Finite weights of 1e20 in two layers: an input can reach 1e42 at the output.
    let (mut tensors, metadata) = small();
    set_values(&mut tensors, "hidden.0.linear.weight", |_, _| 1e20);
    let one_layer = write_model(&tensors, &metadata);
    Model::from_bytes(&one_layer).expect("one layer of 1e20 stays within float32");
    set_values(&mut tensors, "output.weight", |_, _| 1e20);
    assert_invalid(
        &write_model(&tensors, &metadata),
        "layer \"output\" can reach",
    );
}

#[test]
fn layer_norm_eps_that_narrows_to_zero_or_infinity_is_invalid() {
    let (tensors, mut metadata) = small();
    for (eps, narrowed) in [
        ("1e-50", "which is 0 in float32"),
        ("1e300", "which is inf in float32"),
    ] {
        metadata.insert("layer_norm_eps".into(), eps.into());
        assert_invalid(&write_model(&tensors, &metadata), narrowed);
    }
    metadata.insert("layer_norm_eps".into(), "1e-44".into());
    Model::from_bytes(&write_model(&tensors, &metadata)).expect("a subnormal eps is positive");
    // Rows spread past 2^40 are scaled down before LayerNorm, which an eps this large would notice.
    metadata.insert("layer_norm_eps".into(), "1e10".into());
    Model::from_bytes(&write_model(&tensors, &metadata)).expect("1e10 is the largest eps");
    metadata.insert("layer_norm_eps".into(), "1e24".into());
    assert_invalid(
        &write_model(&tensors, &metadata),
        "layer_norm_eps is 1e24; at most 1e10 is supported",
    );
}

/// Property: whatever the magnitudes of a model's stored values, it either loads and then gives
/// a finite probability for every finite input, extreme ones included, or it is MODEL_INVALID.
#[test]
fn any_model_that_loads_gives_finite_probabilities_for_finite_inputs() {
    use gemma_cyber::{BackendKind, Classifier, ModelSource, Options};

    let (base, metadata) = small();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let dim = 12;
    let mut inputs = random_embeddings(4, dim, 7);
    inputs.extend([f32::MAX; 12]);
    inputs.extend((0..12).map(|i| if i % 2 == 0 { 1e30 } else { 0.0 }));
    inputs.extend((0..12).map(|i| if i % 2 == 0 { f32::MAX } else { f32::MIN }));
    inputs.extend([1e-40; 12]);
    let rows = inputs.len() / dim;
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..300 {
        let mut tensors = base.clone();
        for tensor in &mut tensors {
            // A power of ten from 1e-30 to 1e38 for each tensor, a random sign for each value
            // (never for a variance).
            let exponent = (next() % 69) as i32 - 30;
            let scale = 10f64.powi(exponent);
            let signed = !tensor.name.ends_with("running_var");
            let values: Vec<f32> = tensor
                .values()
                .iter()
                .map(|v| {
                    let flip = if signed && next() % 2 == 0 { -1.0 } else { 1.0 };
                    ((*v as f64).abs().max(0.01) * scale * flip).clamp(-3e38, 3e38) as f32
                })
                .collect();
            *tensor = Tensor::f32(&tensor.name.clone(), &tensor.shape.clone(), &values);
        }
        let bytes = write_model(&tensors, &metadata);
        match Model::from_bytes(&bytes) {
            Err(error) => {
                assert_eq!(error.status(), Status::ModelInvalid, "case {case}: {error}");
                refused += 1;
            }
            Ok(_) => {
                loaded += 1;
                let classifier = Classifier::new(&Options {
                    backend: BackendKind::Cpu,
                    model: ModelSource::Bytes(bytes),
                    ..Options::default()
                })
                .unwrap();
                let mut probabilities = vec![f32::NAN; rows];
                classifier
                    .classify(&inputs, dim, &mut probabilities, None)
                    .unwrap();
                assert!(
                    probabilities.iter().all(|p| (0.0..=1.0).contains(p)),
                    "case {case}: {probabilities:?}"
                );
            }
        }
    }
    assert!(
        loaded > 20 && refused > 20,
        "{loaded} loaded, {refused} refused"
    );
}
