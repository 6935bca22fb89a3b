//! Every golden set, through the Rust API, against the independent float64 reference.

mod common;

use common::*;
use gemma_cyber::{BackendKind, Classifier, Model, ModelSource, Options};

fn classify_golden(name: &str, model: ModelSource) -> (Vec<f32>, Vec<u8>) {
    let classifier = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        model,
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (inputs, dim) = npy_f32(&format!("tests/golden/{name}.inputs.npy"));
    let rows = inputs.len() / dim;
    let mut probabilities = vec![0.0; rows];
    let mut labels = vec![0; rows];
    classifier
        .classify(&inputs, dim, &mut probabilities, Some(&mut labels))
        .expect("classify");
    (probabilities, labels)
}

#[test]
fn cpu_matches_float64_reference_on_every_golden_set() {
    for (name, path) in GOLDEN {
        let (probabilities, labels) = classify_golden(name, ModelSource::Path(repo_path(path)));
        let expected = npy_f64(&format!("tests/golden/{name}.expected.npy"));
        let diff = max_abs_diff(&probabilities, &expected);
        assert!(
            diff <= TOLERANCE,
            "{name}: max |cpu - reference| = {diff:e}"
        );
        assert_eq!(
            labels,
            npy_u8(&format!("tests/golden/{name}.labels.npy")),
            "{name}: labels"
        );
    }
}

#[test]
fn builtin_model_is_the_shipped_default_file() {
    let (builtin, _) = classify_golden("default", ModelSource::Builtin);
    let (from_file, _) = classify_golden(
        "default",
        ModelSource::Path(repo_path("models/default.safetensors")),
    );
    assert_eq!(builtin, from_file);
}

#[test]
fn model_loaded_from_memory_equals_model_loaded_from_path() {
    let bytes = std::fs::read(repo_path("tests/fixtures/relu_bn.safetensors")).unwrap();
    let (from_bytes, _) = classify_golden("relu_bn", ModelSource::Bytes(bytes));
    let (from_path, _) = classify_golden(
        "relu_bn",
        ModelSource::Path(repo_path("tests/fixtures/relu_bn.safetensors")),
    );
    assert_eq!(from_bytes, from_path);
}

#[test]
fn shapes_and_metadata_come_from_the_file() {
    let model = Model::from_path(&repo_path("models/default.safetensors")).unwrap();
    assert_eq!(model.input_dim(), 768);
    assert_eq!(model.hidden_sizes(), &[512, 256, 128]);
    assert_eq!(
        model.parameter_count(),
        561_409,
        "the model card's parameter count"
    );
    assert_eq!(
        model.metadata().get("format").map(String::as_str),
        Some("gemma-cyber")
    );

    let small = Model::from_path(&repo_path("tests/fixtures/small_f16.safetensors")).unwrap();
    assert_eq!((small.input_dim(), small.hidden_sizes()), (16, &[8, 4][..]));
    assert_eq!(small.threshold(), 0.3);
    assert_eq!(small.layer_norm_eps(), 1e-3);
    assert_eq!(small.batch_norm_eps(), 1e-4);

    let bare = Model::from_path(&repo_path("tests/fixtures/no_metadata.safetensors")).unwrap();
    assert!(bare.metadata().is_empty());
    assert_eq!(
        (
            bare.threshold(),
            bare.layer_norm_eps(),
            bare.batch_norm_eps()
        ),
        (0.5, 1e-5, 1e-5)
    );
    assert_eq!(bare.norm_order().as_str(), "linear_bn_relu");
}

#[test]
fn batches_split_across_threads_equal_one_thread() {
    let (inputs, dim) = npy_f32("tests/golden/default.inputs.npy");
    // Enough rows that several threads each get several blocks.
    let big: Vec<f32> = inputs.iter().copied().cycle().take(dim * 64 * 40).collect();
    let rows = big.len() / dim;
    let run = |threads| {
        let classifier = Classifier::new(&Options {
            backend: BackendKind::Cpu,
            num_threads: threads,
            ..Options::default()
        })
        .unwrap();
        let mut out = vec![0.0; rows];
        classifier.classify(&big, dim, &mut out, None).unwrap();
        out
    };
    let single = run(1);
    assert_eq!(run(4), single);
    let expected = npy_f64("tests/golden/default.expected.npy");
    assert!(max_abs_diff(&single[..64], &expected) <= TOLERANCE);
}
