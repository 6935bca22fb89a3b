//! Every cpu code path — portable and AVX2 kernels, one thread and the pool — against the
//! float64 golden vectors, and a row's result independent of its batch.

mod common;

use std::sync::Arc;

use common::*;
use gemma_cyber::backend::{Backend, CpuBackend, CpuKernel};
use gemma_cyber::Model;

/// Every kernel this CPU runs. The first call says on standard error which ones these tests cover
/// on this host (written past the test harness's capture, so that it shows in CI logs: the CI host
/// may be either kind of x86 machine).
fn kernels() -> Vec<CpuKernel> {
    let (supported, missing): (Vec<CpuKernel>, Vec<CpuKernel>) =
        CpuKernel::all().into_iter().partition(|k| k.is_supported());
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let names = |kernels: &[CpuKernel]| {
            let names: Vec<&str> = kernels.iter().map(|k| k.name()).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let line = format!(
            "cpu kernels tested on this host: {}; not supported here: {}\n",
            names(&supported),
            names(&missing)
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    });
    supported
}

fn run(backend: &CpuBackend, inputs: &[f32], dim: usize) -> Vec<f32> {
    let rows = inputs.len() / dim;
    let mut out = vec![f32::NAN; rows];
    backend.classify(inputs, rows, &mut out).unwrap();
    out
}

#[test]
fn the_widest_kernel_the_cpu_has_is_chosen() {
    // The CI machines have AVX2 and FMA, some AVX-512 too; if this fails there, a fast path is
    // silently off.
    #[cfg(target_arch = "x86_64")]
    {
        let expected = if std::is_x86_feature_detected!("avx512f") {
            CpuKernel::Avx512
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            CpuKernel::Avx2Fma
        } else {
            CpuKernel::Portable
        };
        assert_eq!(CpuKernel::detect(), expected);
    }
    assert!(CpuKernel::Portable.is_supported());
}

#[test]
fn every_kernel_and_thread_count_matches_the_golden_vectors() {
    for (name, path) in GOLDEN {
        let model = Model::from_path(&repo_path(path)).unwrap();
        let (inputs, dim) = npy_f32(&format!("tests/golden/{name}.inputs.npy"));
        let expected = npy_f64(&format!("tests/golden/{name}.expected.npy"));
        // 64 golden rows repeated to 640, so the pool splits them.
        let repeated: Vec<f32> = inputs
            .iter()
            .copied()
            .cycle()
            .take(inputs.len() * 10)
            .collect();
        for kernel in kernels() {
            for threads in [1, 2, 3] {
                let backend = CpuBackend::with_kernel(&model, threads, kernel).unwrap();
                let got = run(&backend, &inputs, dim);
                let diff = max_abs_diff(&got, &expected);
                assert!(
                    diff <= TOLERANCE,
                    "{name} {kernel:?} {threads} threads: {diff:e}"
                );
                let big = run(&backend, &repeated, dim);
                for chunk in big.chunks_exact(expected.len()) {
                    assert_eq!(
                        chunk,
                        &got[..],
                        "{name} {kernel:?} {threads} threads: batch changed a row"
                    );
                }
            }
        }
    }
}

#[test]
fn a_rows_probability_does_not_depend_on_batch_size() {
    let model = Model::from_path(&repo_path("models/default.safetensors")).unwrap();
    let inputs = random_embeddings(300, 768, 5);
    for kernel in kernels() {
        let backend = CpuBackend::with_kernel(&model, 2, kernel).unwrap();
        let all = run(&backend, &inputs, 768);
        for rows in [1, 2, 3, 5, 7, 13, 129] {
            assert_eq!(
                run(&backend, &inputs[..rows * 768], 768),
                all[..rows],
                "{kernel:?} {rows} rows"
            );
        }
    }
}

#[test]
fn portable_and_avx2_kernels_agree_closely() {
    if kernels().len() < 2 {
        return;
    }
    let model = Model::from_path(&repo_path("tests/fixtures/relu_bn.safetensors")).unwrap();
    let inputs = random_embeddings(50, 768, 8);
    let portable = run(
        &CpuBackend::with_kernel(&model, 1, CpuKernel::Portable).unwrap(),
        &inputs,
        768,
    );
    let avx2 = run(
        &CpuBackend::with_kernel(&model, 1, CpuKernel::Avx2Fma).unwrap(),
        &inputs,
        768,
    );
    let as_f64: Vec<f64> = avx2.iter().map(|&p| p as f64).collect();
    assert!(max_abs_diff(&portable, &as_f64) <= 1e-6);
}

#[test]
fn concurrent_calls_share_one_pool() {
    let model = Model::from_path(&repo_path("models/default.safetensors")).unwrap();
    let backend = Arc::new(CpuBackend::with_kernel(&model, 2, CpuKernel::detect()).unwrap());
    let inputs = Arc::new(random_embeddings(700, 768, 9));
    let reference = run(&backend, &inputs, 768);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (backend, inputs, reference) = (backend.clone(), inputs.clone(), reference.clone());
            std::thread::spawn(move || {
                for _ in 0..5 {
                    assert_eq!(run(&backend, &inputs, 768), reference);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn avx2_and_avx512_kernels_give_identical_probabilities() {
    // Same fused multiply-adds in the same order, so the same bits; checked wherever both run.
    if !(CpuKernel::Avx2Fma.is_supported() && CpuKernel::Avx512.is_supported()) {
        return;
    }
    let model = Model::from_path(&repo_path("models/default.safetensors")).unwrap();
    let inputs = random_embeddings(300, 768, 11);
    for threads in [1, 2] {
        for rows in [1, 2, 5, 64, 300] {
            let probabilities = |kernel| {
                let backend = CpuBackend::with_kernel(&model, threads, kernel).unwrap();
                run(&backend, &inputs[..rows * 768], 768)
            };
            assert_eq!(
                probabilities(CpuKernel::Avx2Fma),
                probabilities(CpuKernel::Avx512),
                "{threads} threads, {rows} rows"
            );
        }
    }
}

/// A backend that checks its input as it reads it turns back a batch with one value that is not
/// ordinary (NaN, an infinity, or a magnitude of 2^16 or more) wherever it is: in the first, a
/// middle or the last block, on one thread or shared out by rows or by outputs; and writes
/// nothing. An ordinary batch gives what `classify` gives.
#[test]
fn unchecked_calls_find_an_unusual_value_anywhere_and_write_nothing() {
    let model = Model::builtin().unwrap();
    let dim = model.input_dim();
    let input = random_embeddings(1000, dim, 21);
    let sentinel = -1.0f32;
    for kernel in kernels() {
        for threads in [1, 2, 3] {
            let backend = CpuBackend::with_kernel(&model, threads, kernel).unwrap();
            for rows in [5, 1000] {
                let input = &input[..rows * dim];
                let expected = run(&backend, input, dim);
                let mut got = vec![sentinel; rows];
                assert!(backend.classify_unchecked(input, rows, &mut got).unwrap());
                assert_eq!(got, expected, "{kernel:?}, {threads} threads, {rows} rows");
                let last = rows * dim - 1;
                for position in [0, 3 * dim + 5, last / 2, last] {
                    for unusual in [f32::NAN, f32::NEG_INFINITY, 65536.0, -f32::MAX] {
                        let case = format!(
                            "{kernel:?}, {threads} threads, {rows} rows, {unusual} at {position}"
                        );
                        let mut with_unusual = input.to_vec();
                        with_unusual[position] = unusual;
                        let mut got = vec![sentinel; rows];
                        let ordinary = backend
                            .classify_unchecked(&with_unusual, rows, &mut got)
                            .unwrap();
                        assert!(!ordinary, "{case}");
                        assert!(got.iter().all(|&p| p == sentinel), "{case}: written");
                    }
                }
            }
        }
    }
}

/// Through the classifier, in a batch the cpu backend checks as it goes: the first NaN or infinity
/// is named, with nothing written; rows with large values are conditioned and the others keep
/// their bits.
#[test]
fn classifier_names_the_first_non_finite_value_of_a_large_batch() {
    use gemma_cyber::{Classifier, ModelSource, Options, Status};
    let dim = 768;
    let rows = 1000;
    let input = random_embeddings(rows, dim, 22);
    for num_threads in [1, 2] {
        let classifier = Classifier::new(&Options {
            backend: gemma_cyber::BackendKind::Cpu,
            model: ModelSource::Builtin,
            num_threads,
            ..Options::default()
        })
        .unwrap();
        let mut expected = vec![0.0f32; rows];
        classifier
            .classify(&input, dim, &mut expected, None)
            .unwrap();
        let mut with_bad = input.clone();
        with_bad[998 * dim + 700] = f32::INFINITY;
        with_bad[999 * dim + 767] = f32::NAN;
        with_bad[10 * dim] = f32::MAX;
        let (mut probabilities, mut labels) = (vec![-1.0f32; rows], vec![9u8; rows]);
        let error = classifier
            .classify(&with_bad, dim, &mut probabilities, Some(&mut labels))
            .unwrap_err();
        assert_eq!(error.status(), Status::NonFiniteInput, "{error}");
        assert!(
            error.message().contains("row 998 column 700 is inf"),
            "{error}"
        );
        assert!(probabilities.iter().all(|&p| p == -1.0) && labels.iter().all(|&l| l == 9));
        let mut with_large = input.clone();
        with_large[990 * dim + 3] = f32::MAX;
        classifier
            .classify(&with_large, dim, &mut probabilities, None)
            .unwrap();
        let mut alone = [0.0f32];
        classifier
            .classify(&with_large[990 * dim..991 * dim], dim, &mut alone, None)
            .unwrap();
        assert_eq!(probabilities[990], alone[0], "{num_threads} threads");
        probabilities[990] = expected[990];
        assert_eq!(probabilities, expected, "{num_threads} threads");
    }
}
