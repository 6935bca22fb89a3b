//! The onnxruntime backend's own machinery, driven directly (not through the core): the session
//! pool under more callers than sessions, the `library` setting's checks, and the device name,
//! each against the cpu backend. Run for real against the ONNX Runtime named by
//! GEMMA_CYBER_ONNXRUNTIME_LIB (tools/test.sh sets it). What every backend owes (golden sets, bad
//! inputs, concurrency through the C ABI) is in the core's tests/conformance.rs.
//!
//! This test target also makes `cargo test` build the plugin's shared library, which the core's
//! tests load from the build directory.

use std::path::PathBuf;

use gemma_cyber::backend::{Backend as _, CpuBackend};
use gemma_cyber::Model;
use gemma_cyber_onnxruntime::backend::OnnxruntimeBackend;
use gemma_cyber_plugin::{Backend as _, Settings, Status};

/// Every backend agrees with cpu to this, absolute, on probabilities.
const TOLERANCE: f32 = 1e-5;

fn onnxruntime_library() -> PathBuf {
    match std::env::var_os("GEMMA_CYBER_ONNXRUNTIME_LIB") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "GEMMA_CYBER_ONNXRUNTIME_LIB is unset, so the onnxruntime plugin cannot be tested. \
             Run the whole suite with tools/test.sh, or fetch ONNX Runtime with \
             tools/fetch_onnxruntime.sh and set \
             GEMMA_CYBER_ONNXRUNTIME_LIB=$PWD/$(cat .ort/LIBRARY_PATH)"
        ),
    }
}

fn builtin() -> Model {
    Model::builtin().expect("the built-in model loads")
}

fn create(model: &Model, settings: &[&str]) -> gemma_cyber_plugin::Result<OnnxruntimeBackend> {
    let library = format!("library={}", onnxruntime_library().display());
    let pairs = std::iter::once(library.as_str()).chain(settings.iter().copied());
    OnnxruntimeBackend::create(&model.plugin_view().unwrap(), Settings::new(pairs)?)
}

/// Deterministic rows of varied scale, different for each seed.
fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..rows * dim)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let scale = [1.0, 30.0, 1e-2][(i / dim) % 3];
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn cpu_probabilities(model: &Model, input: &[f32]) -> Vec<f32> {
    let rows = input.len() / model.input_dim();
    let mut out = vec![0.0; rows];
    CpuBackend::new(model, 0)
        .unwrap()
        .classify(input, rows, &mut out)
        .unwrap();
    out
}

fn max_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max)
}

#[test]
fn more_callers_than_sessions_wait_for_one_and_all_match_cpu() {
    let model = builtin();
    // One thread a session: the pool holds at most one session a core, so eight callers on a
    // machine with fewer cores borrow, wait and return sessions many times over.
    let backend = create(&model, &["num_threads=1"]).unwrap();
    let dim = model.input_dim();
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8u64)
            .map(|caller| {
                let (backend, model) = (&backend, &model);
                scope.spawn(move || {
                    for round in 0..6 {
                        let rows = 1 + (caller as usize * 37 + round * 11) % 90;
                        let input = random_rows(rows, dim, caller * 100 + round as u64);
                        let mut got = vec![f32::NAN; rows];
                        backend.classify(&input, rows, &mut got).unwrap();
                        let error = max_difference(&got, &cpu_probabilities(model, &input));
                        assert!(
                            error <= TOLERANCE,
                            "caller {caller}, round {round}: differs from cpu by {error}"
                        );
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    });
}

#[test]
fn device_name_says_version_threads_and_library() {
    let model = builtin();
    let backend = create(&model, &["num_threads=2"]).unwrap();
    let name = backend.device_name().to_str().unwrap().to_owned();
    let library = std::fs::canonicalize(onnxruntime_library()).unwrap();
    assert!(name.starts_with("ONNX Runtime 1."), "{name}");
    assert!(name.contains("2 threads a session"), "{name}");
    assert!(name.contains(&library.display().to_string()), "{name}");
}

#[test]
fn a_library_setting_that_is_not_onnxruntime_is_unavailable_and_says_why() {
    let model = builtin();
    let view = model.plugin_view().unwrap();
    let directory = std::env::temp_dir();
    let not_a_library = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // A shared library that loads but is not ONNX Runtime: this test's own C library.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.is_file())
    .expect("libm.so.6 is on this Linux machine");
    let cases = [
        (directory.clone(), "a directory"),
        (directory.join("no-such-onnxruntime.so"), "No such file"),
        (not_a_library, "not a usable ONNX Runtime library"),
        (libm, "does not export OrtGetApiBase"),
    ];
    for (path, expected) in cases {
        let setting = format!("library={}", path.display());
        let error =
            match OnnxruntimeBackend::create(&view, Settings::new([setting.as_str()]).unwrap()) {
                Ok(_) => panic!("{} was accepted as ONNX Runtime", path.display()),
                Err(error) => error,
            };
        assert_eq!(error.status(), Status::BackendUnavailable, "{error}");
        let message = error.message();
        assert!(message.contains(expected), "{}: {message}", path.display());
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[test]
fn unknown_and_malformed_settings_are_refused_by_name() {
    let model = builtin();
    let error = match create(&model, &["intra_threads=4"]) {
        Ok(_) => panic!("an unknown setting was accepted"),
        Err(error) => error,
    };
    assert!(error.message().contains("intra_threads"), "{error}");
    assert!(
        error.message().contains("library"),
        "the known keys are named: {error}"
    );
    let error = match create(&model, &["num_threads=many"]) {
        Ok(_) => panic!("a malformed num_threads was accepted"),
        Err(error) => error,
    };
    assert!(error.message().contains("num_threads"), "{error}");
}
