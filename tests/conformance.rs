//! One conformance suite for every backend, built-in or plugin — cpu, the onnxruntime and wgpu
//! plugins and the plain-C example plugin — each run through the Rust API and through the C ABI:
//! the golden sets against the float64 reference and cpu, batches of 1, 7, 1024 and one more than
//! the largest chunk, every bad input's status with nothing written, and concurrent calls
//! bit-identical to single-threaded ones. wgpu runs for real on lavapipe in CI.

mod common;

use std::path::{Path, PathBuf};

use common::backends::{all_targets, Classify, Target};
use common::{npy_f32, npy_f64, random_embeddings, repo_path, GOLDEN, TOLERANCE};
use gemma_cyber::{BackendKind, Status};

/// Rows of the largest chunk any backend splits a call into (the wgpu plugin's on a software
/// adapter, the onnxruntime plugin's runs, and more than the cpu backend's per-thread share): one
/// more crosses a boundary.
const LARGEST_CHUNK: usize = 4096;

fn default_model() -> PathBuf {
    repo_path("models/default.safetensors")
}

/// Runs `check` on every backend, through the Rust API and through the C ABI.
fn for_every_backend_and_api(model: &Path, check: impl Fn(&str, &dyn Classify)) {
    for target in all_targets() {
        let rust = target.rust(model);
        check(&format!("{} (Rust API)", target.name), &rust);
        let c = target.c(model);
        assert_kind(&target, c.backend());
        check(&format!("{} (C ABI)", target.name), &c);
    }
}

fn assert_kind(target: &Target, kind: BackendKind) {
    assert_eq!(kind, target.backend, "{}: active backend", target.name);
}

fn assert_close(what: &str, actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: row counts differ");
    for (row, (a, e)) in actual.iter().zip(expected).enumerate() {
        let difference = (f64::from(*a) - e).abs();
        assert!(
            difference <= TOLERANCE,
            "{what}: row {row}: {a} vs {e} (difference {difference:e})"
        );
    }
}

#[test]
fn golden_sets_match_the_float64_reference_and_cpu() {
    for (name, model) in GOLDEN {
        let model = repo_path(model);
        let (inputs, dim) = npy_f32(&format!("tests/golden/{name}.inputs.npy"));
        let expected = npy_f64(&format!("tests/golden/{name}.expected.npy"));
        let cpu = all_targets()[0].rust(&model);
        let reference = cpu.probabilities(&inputs, dim).unwrap();
        let reference: Vec<f64> = reference.iter().map(|&p| f64::from(p)).collect();
        for_every_backend_and_api(&model, |backend, classifier| {
            let got = classifier
                .probabilities(&inputs, dim)
                .unwrap_or_else(|e| panic!("{backend} on {name}: {e:?}"));
            assert_close(&format!("{backend} on {name}"), &got, &expected);
            assert_close(&format!("{backend} vs cpu on {name}"), &got, &reference);
        });
    }
}

#[test]
fn batches_of_1_7_1024_and_past_the_largest_chunk_match_cpu() {
    let model = default_model();
    let cpu = all_targets()[0].rust(&model);
    let dim = 768;
    let batches: Vec<(usize, Vec<f32>, Vec<f64>)> = [1, 7, 1024, LARGEST_CHUNK + 1]
        .into_iter()
        .enumerate()
        .map(|(seed, rows)| {
            let inputs = random_embeddings(rows, dim, 40 + seed as u64);
            let reference = cpu.probabilities(&inputs, dim).unwrap();
            (
                rows,
                inputs,
                reference.iter().map(|&p| f64::from(p)).collect(),
            )
        })
        .collect();
    for_every_backend_and_api(&model, |backend, classifier| {
        for (rows, inputs, reference) in &batches {
            let got = classifier
                .probabilities(inputs, dim)
                .unwrap_or_else(|e| panic!("{backend}, {rows} rows: {e:?}"));
            assert_close(&format!("{backend}, {rows} rows"), &got, reference);
        }
    });
}

#[test]
fn a_rows_result_does_not_depend_on_its_batch() {
    let model = default_model();
    let dim = 768;
    let inputs = random_embeddings(300, dim, 77);
    for_every_backend_and_api(&model, |backend, classifier| {
        let whole = classifier.probabilities(&inputs, dim).unwrap();
        for (row, expected) in [0usize, 5, 299].into_iter().map(|r| (r, whole[r])) {
            let alone = classifier
                .probabilities(&inputs[row * dim..(row + 1) * dim], dim)
                .unwrap();
            assert!(
                (alone[0] - expected).abs() <= 1e-6,
                "{backend}: row {row} alone {} vs in a batch {expected}",
                alone[0]
            );
        }
    });
}

/// One bad call: what it tests, the embeddings (None: NULL), rows, dim, whether probabilities are
/// given, and the status expected.
type BadCall<'a> = (&'a str, Option<&'a [f32]>, usize, usize, bool, Status);

#[test]
// A table of bad calls and its one loop read best together.
#[allow(clippy::too_many_lines)]
fn every_bad_input_gets_cpus_status_and_nothing_is_written() {
    use gemma_cyber::ffi::gemma_cyber_classify;
    let model = default_model();
    let dim = 768;
    let mut nan = random_embeddings(2, dim, 11);
    nan[dim + 5] = f32::NAN;
    let mut infinity = random_embeddings(2, dim, 12);
    infinity[3] = f32::NEG_INFINITY;
    let good = random_embeddings(2, dim, 13);
    // (what, embeddings or NULL, rows, dim, probabilities given, expected status)
    let calls: Vec<BadCall> = vec![
        (
            "NULL embeddings",
            None,
            2,
            dim,
            true,
            Status::InvalidArgument,
        ),
        (
            "NULL probabilities",
            Some(&good),
            2,
            dim,
            false,
            Status::InvalidArgument,
        ),
        (
            "rows * dim overflows",
            Some(&good),
            usize::MAX / 2,
            dim,
            true,
            Status::InvalidArgument,
        ),
        (
            "dim is not the model's",
            Some(&good),
            2,
            dim - 1,
            true,
            Status::DimensionMismatch,
        ),
        ("NaN", Some(&nan), 2, dim, true, Status::NonFiniteInput),
        (
            "infinity",
            Some(&infinity),
            2,
            dim,
            true,
            Status::NonFiniteInput,
        ),
        (
            "rows == 0 with NULL pointers",
            None,
            0,
            dim,
            false,
            Status::Ok,
        ),
    ];
    for target in all_targets() {
        let c = target.c(&model);
        for (what, embeddings, rows, call_dim, with_output, expected) in &calls {
            let mut probabilities = vec![-1.0f32; (*rows).min(16)];
            let mut labels = vec![7u8; (*rows).min(16)];
            // SAFETY: each pointer is valid for what it claims, or NULL / too short on purpose
            // where the library must refuse before reading.
            let status = unsafe {
                gemma_cyber_classify(
                    c.0,
                    embeddings.map_or(std::ptr::null(), |e| e.as_ptr()),
                    *rows,
                    *call_dim,
                    if *with_output {
                        probabilities.as_mut_ptr()
                    } else {
                        std::ptr::null_mut()
                    },
                    labels.as_mut_ptr(),
                )
            };
            assert_eq!(status, *expected, "{} (C ABI): {what}", target.name);
            assert!(
                probabilities.iter().all(|&p| p == -1.0) && labels.iter().all(|&l| l == 7),
                "{} (C ABI): {what}: outputs were written",
                target.name
            );
        }
        // The same through the Rust API, where the slices carry the sizes.
        let rust = target.rust(&model);
        for (what, inputs, call_dim, expected) in [
            (
                "dim is not the model's",
                &good,
                dim - 1,
                Status::DimensionMismatch,
            ),
            ("NaN", &nan, dim, Status::NonFiniteInput),
            ("infinity", &infinity, dim, Status::NonFiniteInput),
        ] {
            let mut probabilities = vec![-1.0f32; 2];
            let error = rust
                .classify(&inputs[..2 * call_dim], call_dim, &mut probabilities, None)
                .unwrap_err();
            assert_eq!(
                error.status(),
                expected,
                "{} (Rust API): {what}",
                target.name
            );
            assert!(probabilities.iter().all(|&p| p == -1.0), "{what}: written");
        }
    }
}

#[test]
fn concurrent_calls_are_bit_identical_to_single_threaded_ones() {
    let model = default_model();
    let dim = 768;
    let batches: Vec<Vec<f32>> = [1, 7, 300]
        .into_iter()
        .enumerate()
        .map(|(seed, rows)| random_embeddings(rows, dim, 100 + seed as u64))
        .collect();
    for_every_backend_and_api(&model, |backend, classifier| {
        let expected: Vec<Vec<u32>> = batches
            .iter()
            .map(|batch| bits(&classifier.probabilities(batch, dim).unwrap()))
            .collect();
        std::thread::scope(|scope| {
            for thread in 0..6 {
                let (batches, expected) = (&batches, &expected);
                scope.spawn(move || {
                    for round in 0..12 {
                        let which = (thread + round) % batches.len();
                        let got = bits(&classifier.probabilities(&batches[which], dim).unwrap());
                        assert!(
                            got == expected[which],
                            "{backend}: thread {thread} round {round} differs"
                        );
                    }
                });
            }
        });
    });
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}
