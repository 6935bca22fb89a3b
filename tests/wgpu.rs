//! The wgpu backend against the cpu backend and the golden vectors, run for real: in CI on Mesa's
//! lavapipe (software Vulkan). No adapter is a failure that says how to get one, never a skip.
#![cfg(feature = "wgpu")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gemma_cyber::backend::wgpu::{Kernel, WgpuBackend, WgpuSettings};
use gemma_cyber::backend::{Backend, CpuBackend};
use gemma_cyber::{BackendKind, Classifier, Model, ModelSource, Options, Status};

/// Every backend agrees with cpu (and the float64 reference) to this, absolute, on probabilities.
const TOLERANCE: f32 = 1e-5;

const HOW_TO_GET_AN_ADAPTER: &str = "the wgpu tests need a Vulkan adapter: run tools/setup.sh \
    (it installs Mesa's lavapipe, Debian package mesa-vulkan-drivers from bookworm-backports)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The golden models: (name, model file).
fn golden_models() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("default", root().join("models/default.safetensors")),
        ("relu_bn", root().join("tests/fixtures/relu_bn.safetensors")),
        (
            "small_f16",
            root().join("tests/fixtures/small_f16.safetensors"),
        ),
        (
            "no_metadata",
            root().join("tests/fixtures/no_metadata.safetensors"),
        ),
    ]
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> Vec<T> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    npyz::NpyFile::new(&bytes[..])
        .and_then(|npy| npy.into_vec())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wgpu_options(model: &Path) -> Options {
    Options {
        backend: BackendKind::Wgpu,
        model: ModelSource::Path(model.to_owned()),
        ..Options::default()
    }
}

fn wgpu_classifier(model: &Path) -> Classifier {
    Classifier::new(&wgpu_options(model)).unwrap_or_else(|e| panic!("{e}\n{HOW_TO_GET_AN_ADAPTER}"))
}

fn wgpu_backend(model: &Arc<Model>, kernel: Kernel, max_chunk_rows: usize) -> WgpuBackend {
    wgpu_backend_with(
        model,
        &WgpuSettings {
            kernel,
            max_chunk_rows,
            ..WgpuSettings::default()
        },
    )
}

fn wgpu_backend_with(model: &Arc<Model>, settings: &WgpuSettings) -> WgpuBackend {
    WgpuBackend::new(model, settings).unwrap_or_else(|e| panic!("{e}\n{HOW_TO_GET_AN_ADAPTER}"))
}

/// Deterministic rows with varied scale: unit-ish noise, large and tiny rows, a constant row.
fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    (0..rows)
        .flat_map(|row| {
            let scale = [1.0, 100.0, 1e-3, 0.0][row % 4];
            let offset = if row % 4 == 3 { 0.25 } else { 0.0 };
            (0..dim)
                .map(|_| next() * scale + offset)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cpu_probabilities(model: &Arc<Model>, input: &[f32]) -> Vec<f32> {
    let rows = input.len() / model.input_dim();
    let mut out = vec![0.0; rows];
    CpuBackend::new(model, 0)
        .unwrap()
        .classify(input, rows, &mut out)
        .unwrap();
    out
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (row, error) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        error <= TOLERANCE,
        "{what}: row {row} differs by {error} (wgpu {}, reference {})",
        got[row],
        want[row]
    );
}

#[test]
fn golden_vectors_match_reference_and_cpu() {
    for (name, model_path) in golden_models() {
        let golden = root().join("tests/golden");
        let input: Vec<f32> = read_npy(&golden.join(format!("{name}.inputs.npy")));
        let expected: Vec<f64> = read_npy(&golden.join(format!("{name}.expected.npy")));
        let expected: Vec<f32> = expected.iter().map(|&p| p as f32).collect();
        let classifier = wgpu_classifier(&model_path);
        assert_eq!(classifier.backend(), BackendKind::Wgpu);
        let dim = classifier.input_dim();
        let mut got = vec![0.0; expected.len()];
        classifier.classify(&input, dim, &mut got, None).unwrap();
        assert_close(&format!("{name} vs float64 reference"), &got, &expected);
        let model = Arc::new(Model::from_path(&model_path).unwrap());
        assert_close(
            &format!("{name} vs cpu"),
            &got,
            &cpu_probabilities(&model, &input),
        );
    }
}

#[test]
fn random_batches_of_1_7_1024_rows_match_cpu_with_both_kernels() {
    for (name, model_path) in golden_models() {
        let model = Arc::new(Model::from_path(&model_path).unwrap());
        for kernel in [Kernel::Auto, Kernel::Vector, Kernel::Tiled] {
            let backend = wgpu_backend(&model, kernel, 0);
            for (seed, rows) in [1usize, 7, 1024].into_iter().enumerate() {
                let input = random_rows(rows, model.input_dim(), seed as u64 + 1);
                let mut got = vec![f32::NAN; rows];
                backend.classify(&input, rows, &mut got).unwrap();
                assert_close(
                    &format!("{name}, {kernel:?} kernel, {rows} rows"),
                    &got,
                    &cpu_probabilities(&model, &input),
                );
            }
        }
    }
}

#[test]
fn batches_larger_than_a_chunk_are_split_and_match_cpu() {
    let model = Arc::new(Model::builtin().unwrap());
    for kernel in [Kernel::Vector, Kernel::Tiled] {
        // 1000 rows in chunks of 96: ten full chunks and a partial one.
        let backend = wgpu_backend(&model, kernel, 96);
        assert_eq!(backend.chunk_rows(), 96);
        let input = random_rows(1000, model.input_dim(), 42);
        let mut got = vec![f32::NAN; 1000];
        backend.classify(&input, 1000, &mut got).unwrap();
        assert_close(
            &format!("{kernel:?} kernel in chunks"),
            &got,
            &cpu_probabilities(&model, &input),
        );
    }
}

#[test]
fn calls_split_in_pieces_overlap_and_match_cpu() {
    // 2,500 rows in pieces of at most 1,024: three pieces, alternating between two workspaces, the
    // last one short; the same rows again reuse both workspaces.
    let model = Arc::new(Model::builtin().unwrap());
    let backend = wgpu_backend_with(
        &model,
        &WgpuSettings {
            piece_rows: 1024,
            ..WgpuSettings::default()
        },
    );
    let input = random_rows(2500, model.input_dim(), 77);
    let want = cpu_probabilities(&model, &input);
    for round in 0..2 {
        let mut got = vec![f32::NAN; 2500];
        backend.classify(&input, 2500, &mut got).unwrap();
        assert_close(&format!("pieces, round {round}"), &got, &want);
    }
}

#[test]
fn buffers_are_reused_across_calls_of_different_sizes() {
    let model = Arc::new(Model::builtin().unwrap());
    let backend = wgpu_backend(&model, Kernel::Auto, 0);
    // Growing, shrinking and growing again exercises both reuse and reallocation.
    for (seed, rows) in [3usize, 200, 5, 64, 300, 1].into_iter().enumerate() {
        let input = random_rows(rows, model.input_dim(), 100 + seed as u64);
        let mut got = vec![f32::NAN; rows];
        backend.classify(&input, rows, &mut got).unwrap();
        assert_close(
            &format!("{rows} rows"),
            &got,
            &cpu_probabilities(&model, &input),
        );
    }
}

#[test]
fn concurrent_calls_on_one_classifier_match_cpu() {
    let model_path = root().join("models/default.safetensors");
    let classifier = Arc::new(wgpu_classifier(&model_path));
    let model = Arc::new(Model::from_path(&model_path).unwrap());
    let dim = model.input_dim();
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let classifier = Arc::clone(&classifier);
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                for call in 0..4u64 {
                    let rows = [1usize, 7, 130, 33][(thread + call) as usize % 4];
                    let input = random_rows(rows, dim, thread * 100 + call);
                    let mut got = vec![f32::NAN; rows];
                    let mut labels = vec![7u8; rows];
                    classifier
                        .classify(&input, dim, &mut got, Some(&mut labels))
                        .unwrap();
                    assert_close(
                        &format!("thread {thread} call {call}"),
                        &got,
                        &cpu_probabilities(&model, &input),
                    );
                    for (p, label) in got.iter().zip(&labels) {
                        assert_eq!(*label, u8::from(*p >= classifier.threshold()));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[test]
fn bad_inputs_are_rejected_and_nothing_is_written() {
    let classifier = wgpu_classifier(&root().join("models/default.safetensors"));
    let dim = classifier.input_dim();
    let mut input = random_rows(3, dim, 9);
    let mut out = vec![-1.0f32; 3];

    let error = classifier
        .classify(&input[..3 * (dim - 1)], dim - 1, &mut out, None)
        .unwrap_err();
    assert_eq!(error.status(), Status::DimensionMismatch);

    input[dim + 5] = f32::NAN;
    let error = classifier
        .classify(&input, dim, &mut out, None)
        .unwrap_err();
    assert_eq!(error.status(), Status::NonFiniteInput);
    input[dim + 5] = f32::INFINITY;
    let error = classifier
        .classify(&input, dim, &mut out, None)
        .unwrap_err();
    assert_eq!(error.status(), Status::NonFiniteInput);
    assert_eq!(out, [-1.0; 3], "a failed call wrote probabilities");

    input[dim + 5] = 0.5;
    let error = classifier
        .classify(&input[..2 * dim], dim, &mut out, None)
        .unwrap_err();
    assert_eq!(error.status(), Status::InvalidArgument);

    // Still healthy after the failures; zero rows is a no-op.
    classifier.classify(&input, dim, &mut out, None).unwrap();
    assert!(out.iter().all(|p| (0.0..=1.0).contains(p)));
    classifier.classify(&[], dim, &mut [], None).unwrap();
}

#[test]
fn a_device_that_does_not_finish_in_time_is_backend_failure_not_a_hang() {
    let model = Arc::new(Model::builtin().unwrap());
    let settings = WgpuSettings {
        timeout: Duration::from_micros(1),
        ..WgpuSettings::default()
    };
    let backend = WgpuBackend::new(&model, &settings).unwrap();
    let rows = 16384;
    let input = random_rows(rows, model.input_dim(), 3);
    let mut got = vec![-1.0f32; rows];
    let started = Instant::now();
    match backend.classify(&input, rows, &mut got) {
        // A device this fast is no failure.
        Ok(()) => assert_close("fast device", &got, &cpu_probabilities(&model, &input)),
        Err(error) => {
            assert_eq!(error.status(), Status::BackendFailure, "{error}");
            assert!(
                got.iter().all(|&p| p == -1.0),
                "a failed call wrote probabilities"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_lost_device_is_backend_failure() {
    let model = Arc::new(Model::builtin().unwrap());
    let backend = wgpu_backend(&model, Kernel::Auto, 0);
    let input = random_rows(2, model.input_dim(), 4);
    let mut got = vec![-1.0f32; 2];
    backend.classify(&input, 2, &mut got).unwrap();
    backend.lose_device_for_tests();
    got.fill(-1.0);
    let error = backend.classify(&input, 2, &mut got).unwrap_err();
    assert_eq!(error.status(), Status::BackendFailure, "{error}");
    assert!(error.message().contains("lost"), "{error}");
    assert_eq!(got, [-1.0; 2]);
}

#[test]
fn device_name_reports_adapter_backend_and_type() {
    let classifier = wgpu_classifier(&root().join("models/default.safetensors"));
    let name = classifier.device_name();
    assert!(name.starts_with("wgpu: "), "{name}");
    assert!(
        ["GPU", "software adapter", "other adapter"]
            .iter()
            .any(|kind| name.contains(kind)),
        "{name}"
    );
    assert!(
        ["vulkan", "metal", "dx12", "gl"]
            .iter()
            .any(|api| name.contains(api)),
        "{name}"
    );
}

#[test]
fn unknown_adapter_name_is_backend_unavailable_naming_what_was_tried() {
    let options = Options {
        wgpu_adapter: Some("no-such-adapter-xyz".into()),
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let error = Classifier::new(&options).err().expect("an adapter matched");
    assert_eq!(error.status(), Status::BackendUnavailable);
    assert!(error.message().contains("no-such-adapter-xyz"), "{error}");
    assert!(error.message().contains("found"), "{error}");
}

#[test]
fn adapter_name_filter_is_case_insensitive_substring() {
    // Whatever adapter the default choice lands on, part of its name in other case picks it.
    let plain = wgpu_classifier(&root().join("models/default.safetensors"));
    let adapter = plain.device_name()["wgpu: ".len()..]
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_uppercase();
    let options = Options {
        wgpu_adapter: Some(adapter.clone()),
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let chosen = Classifier::new(&options).unwrap();
    assert!(
        chosen.device_name().to_uppercase().contains(&adapter),
        "{adapter} -> {}",
        chosen.device_name()
    );
}

#[test]
fn bad_backend_names_are_invalid_arguments() {
    for names in ["cuda", " , "] {
        let options = Options {
            wgpu_backends: Some(names.into()),
            ..wgpu_options(&root().join("models/default.safetensors"))
        };
        let error = Classifier::new(&options).err().expect("accepted");
        assert_eq!(
            error.status(),
            Status::InvalidArgument,
            "{names:?}: {error}"
        );
    }
}

#[test]
fn auto_never_picks_a_software_adapter() {
    let classifier = Classifier::new(&Options::default()).unwrap();
    match classifier.backend() {
        BackendKind::Wgpu => assert!(
            !classifier.device_name().contains("software"),
            "{}",
            classifier.device_name()
        ),
        BackendKind::Cpu | BackendKind::Onnxruntime => {}
        BackendKind::Auto => panic!("AUTO is never the active backend"),
    }
}

#[test]
fn kernel_choice_follows_the_documented_rule() {
    // The vector kernel measured faster everywhere (lavapipe and an H200): AUTO takes it; the
    // tiled one runs only when asked for by name.
    let model = Arc::new(Model::builtin().unwrap());
    assert!(!wgpu_backend(&model, Kernel::Auto, 0).uses_tiled_kernel());
    assert!(wgpu_backend(&model, Kernel::Tiled, 0).uses_tiled_kernel());
    assert!(!wgpu_backend(&model, Kernel::Vector, 0).uses_tiled_kernel());
}

#[test]
fn c_abi_creates_and_classifies_on_wgpu() {
    use gemma_cyber::ffi::*;
    let mut options = std::mem::MaybeUninit::<COptions>::zeroed();
    let mut handle = std::ptr::null_mut();
    let rows = 5;
    unsafe {
        gemma_cyber_options_init(options.as_mut_ptr(), std::mem::size_of::<COptions>());
        let mut options = options.assume_init();
        options.backend = BackendKind::Wgpu;
        let status = gemma_cyber_create(&options, &mut handle);
        assert_eq!(status, Status::Ok, "{HOW_TO_GET_AN_ADAPTER}");
        assert_eq!(gemma_cyber_active_backend(handle), BackendKind::Wgpu);
        let name = std::ffi::CStr::from_ptr(gemma_cyber_device_name(handle));
        assert!(name.to_str().unwrap().starts_with("wgpu: "));
        let dim = gemma_cyber_input_dim(handle);
        let input = random_rows(rows, dim, 5);
        let mut got = vec![f32::NAN; rows];
        let status = gemma_cyber_classify(
            handle,
            input.as_ptr(),
            rows,
            dim,
            got.as_mut_ptr(),
            std::ptr::null_mut(),
        );
        assert_eq!(status, Status::Ok);
        gemma_cyber_destroy(handle);
        let model = Arc::new(Model::builtin().unwrap());
        assert_close("C ABI", &got, &cpu_probabilities(&model, &input));
    }
}

#[cfg(feature = "cli")]
#[test]
fn environment_variable_selects_the_adapter_in_the_cli() {
    let run = |adapter: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
            .args(["info", "--backend", "wgpu"])
            .env("GEMMA_CYBER_WGPU_ADAPTER", adapter)
            .output()
            .unwrap()
    };
    let missing = run("no-such-adapter-xyz");
    assert_eq!(missing.status.code(), Some(16), "backend unavailable");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no-such-adapter-xyz"), "{stderr}");

    let found = run("");
    assert!(found.status.success(), "{HOW_TO_GET_AN_ADAPTER}");
    let stdout = String::from_utf8_lossy(&found.stdout);
    assert!(stdout.contains("device:      wgpu: "), "{stdout}");
}
