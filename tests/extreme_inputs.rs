//! Finite inputs at float32's extremes (rows of FLT_MAX, 1e30 in half the columns, ±FLT_MAX
//! alternating, narrow rows far from zero, above 2^16 or below, an outlier first value) give one finite answer on
//! every backend, within 1e-5 of each other and of a float64 reference; ordinary rows are
//! unaffected bit for bit.

mod common;

use common::{random_embeddings, TOLERANCE};
use gemma_cyber::{BackendKind, Classifier, Model, ModelSource, Options};

/// Every backend; each is required to run (wgpu on lavapipe in CI).
fn backends() -> Vec<BackendKind> {
    vec![
        BackendKind::Cpu,
        BackendKind::Onnxruntime,
        BackendKind::Wgpu,
    ]
}

/// The model's probability for one row, in float64 from the folded float32 weights: the
/// LayerNorm's mean and variance in float64 cannot overflow for any finite float32 row.
fn reference(model: &Model, row: &[f32]) -> f64 {
    let n = row.len() as f64;
    let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
    let mean = x.iter().sum::<f64>() / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv_std = 1.0 / (variance + f64::from(model.layer_norm_eps())).sqrt();
    let mut activations: Vec<f64> = x.iter().map(|v| (v - mean) * inv_std).collect();
    for layer in model.layers() {
        activations = layer
            .weight
            .chunks_exact(layer.inputs)
            .zip(&layer.bias)
            .map(|(row, b)| {
                let y = row
                    .iter()
                    .zip(&activations)
                    .map(|(w, a)| f64::from(*w) * a)
                    .sum::<f64>()
                    + f64::from(*b);
                if layer.relu {
                    y.max(0.0)
                } else {
                    y
                }
            })
            .collect();
    }
    1.0 / (1.0 + (-activations[0]).exp())
}

/// Of 64 random rows, the one whose probability is nearest 0.5, where an error in LayerNorm moves
/// the probability most (near 0 or 1 the sigmoid flattens it below any tolerance).
fn undecided_row(model: &Model) -> Vec<f32> {
    let dim = model.input_dim();
    random_embeddings(64, dim, 23)
        .chunks_exact(dim)
        .min_by(|a, b| {
            let distance = |row: &[f32]| (reference(model, row) - 0.5).abs();
            distance(a).total_cmp(&distance(b))
        })
        .unwrap()
        .to_vec()
}

/// Rows no float32 LayerNorm computed naively survives, and some that are merely large.
fn extreme_rows(model: &Model) -> Vec<(&'static str, Vec<f32>)> {
    let dim = model.input_dim();
    let random = random_embeddings(1, dim, 11);
    let undecided = undecided_row(model);
    let scaled = |by: f32| random.iter().map(|v| v * by).collect::<Vec<f32>>();
    vec![
        ("FLT_MAX everywhere", vec![f32::MAX; dim]),
        ("-FLT_MAX everywhere", vec![f32::MIN; dim]),
        (
            "1e30 in half the columns",
            (0..dim)
                .map(|i| if i % 2 == 0 { 1e30 } else { 0.0 })
                .collect(),
        ),
        (
            "FLT_MAX and -FLT_MAX alternating",
            (0..dim)
                .map(|i| if i % 2 == 0 { f32::MAX } else { f32::MIN })
                .collect(),
        ),
        (
            "one FLT_MAX among small values",
            (0..dim)
                .map(|i| if i == 5 { f32::MAX } else { random[i] })
                .collect(),
        ),
        ("random times 1e35", scaled(1e35)),
        ("random times 1e20", scaled(1e20)),
        ("random times 1e5", scaled(1e5)),
        (
            "1e6 plus small variation",
            random.iter().map(|v| 1e6 + v * 100.0).collect(),
        ),
        // Below 2^16, so no backend is spared them by conditioning: narrow rows far from zero,
        // whose small differences a float32 sum of the raw values loses.
        ("12345.678 everywhere", vec![12345.678; dim]),
        (
            "10000 plus random times 0.02",
            random.iter().map(|v| 10000.0 + v * 0.02).collect(),
        ),
        (
            "5000 plus random times 0.02",
            random.iter().map(|v| 5000.0 + v * 0.02).collect(),
        ),
        (
            "1000 plus random",
            random.iter().map(|v| 1000.0 + v).collect(),
        ),
        (
            "-30000 plus random times 0.2",
            random.iter().map(|v| -30000.0 + v * 0.2).collect(),
        ),
        // The same shifts of a row whose probability is near 0.5: the rows above are scored
        // near 0, where the sigmoid hides what a float32 sum of the raw values (ONNX Runtime's
        // LayerNormalization) loses.
        (
            "10000 plus an undecided row times 0.02",
            undecided.iter().map(|v| 10000.0 + v * 0.02).collect(),
        ),
        (
            "-30000 plus an undecided row times 0.2",
            undecided.iter().map(|v| -30000.0 + v * 0.2).collect(),
        ),
        // An outlier first value: a LayerNorm taking values relative to it (wgpu's did) loses
        // the rest of the row's differences.
        (
            "an undecided row with 7.1 in the first column",
            (0..dim)
                .map(|i| if i == 0 { 7.1 } else { undecided[i] })
                .collect(),
        ),
        (
            "a first value 500 above an undecided row at 10000",
            (0..dim)
                .map(|i| {
                    if i == 0 {
                        10500.0
                    } else {
                        10000.0 + undecided[i]
                    }
                })
                .collect(),
        ),
    ]
}

#[test]
fn extreme_finite_rows_agree_on_every_backend_and_with_float64() {
    let model = Model::builtin().unwrap();
    let dim = model.input_dim();
    let rows = extreme_rows(&model);
    let ordinary = random_embeddings(3, dim, 5);
    // Ordinary rows first, the extreme ones after them, in one batch.
    let mut batch = ordinary.clone();
    for (_, row) in &rows {
        batch.extend_from_slice(row);
    }
    let count = batch.len() / dim;
    let mut results = Vec::new();
    for kind in backends() {
        let classifier = Classifier::new(&Options {
            backend: kind,
            model: ModelSource::Builtin,
            ..Options::default()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let mut probabilities = vec![f32::NAN; count];
        classifier
            .classify(&batch, dim, &mut probabilities, None)
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        // Ordinary rows are not touched: the same bits as when they are classified alone.
        let mut alone = vec![f32::NAN; 3];
        classifier
            .classify(&ordinary, dim, &mut alone, None)
            .unwrap();
        assert_eq!(probabilities[..3], alone, "{}", kind.name());
        for (i, (name, row)) in rows.iter().enumerate() {
            let p = probabilities[3 + i];
            let expected = reference(&model, row);
            assert!(
                p.is_finite() && (f64::from(p) - expected).abs() <= TOLERANCE,
                "{} on {name}: {p}, float64 reference {expected}",
                kind.name()
            );
        }
        results.push((kind, probabilities));
    }
    let (first, baseline) = &results[0];
    for (kind, probabilities) in &results[1..] {
        for (i, (a, b)) in baseline.iter().zip(probabilities).enumerate() {
            assert!(
                (a - b).abs() <= TOLERANCE as f32,
                "row {i}: {} gives {a}, {} gives {b}",
                first.name(),
                kind.name()
            );
        }
    }
}

#[test]
fn one_large_row_leaves_the_rest_of_a_long_batch_as_it_is() {
    // Conditioning copies only the part of the batch that holds the large row: the other rows
    // get the bits they get without it, on each side of the parts' boundaries.
    let model = Model::builtin().unwrap();
    let dim = model.input_dim();
    let rows = 2 * 4096 + 10;
    let ordinary = random_embeddings(rows, dim, 8);
    let large_at = 5000;
    let mut batch = ordinary.clone();
    for (i, v) in batch[large_at * dim..(large_at + 1) * dim]
        .iter_mut()
        .enumerate()
    {
        *v = 1e6 + (i as f32) * 0.5;
    }
    let classifier = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        ..Options::default()
    })
    .unwrap();
    let mut with_large = vec![f32::NAN; rows];
    classifier
        .classify(&batch, dim, &mut with_large, None)
        .unwrap();
    let mut without = vec![f32::NAN; rows];
    classifier
        .classify(&ordinary, dim, &mut without, None)
        .unwrap();
    for row in (0..rows).filter(|&row| row != large_at) {
        assert_eq!(
            with_large[row].to_bits(),
            without[row].to_bits(),
            "row {row}"
        );
    }
    let expected = reference(&model, &batch[large_at * dim..(large_at + 1) * dim]);
    assert!((f64::from(with_large[large_at]) - expected).abs() <= TOLERANCE);
}
