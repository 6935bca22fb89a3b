//! The onnxruntime backend, through the C ABI, against a real ONNX Runtime: it agrees with cpu,
//! answers every bad input with cpu's status, reports a missing library as BACKEND_UNAVAILABLE and
//! is safe to share between threads.
//!
//! The library comes from GEMMA_CYBER_ONNXRUNTIME_LIB (tools/test.sh sets it); these tests fail,
//! never skip, when it is unset.
#![cfg(feature = "onnxruntime")]

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;

use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Status};

/// Agreement every backend owes cpu (DESIGN.md).
const TOLERANCE: f64 = 1e-5;

/// The fixture models with golden vectors, by golden name.
const GOLDEN: [(&str, &str); 4] = [
    ("default", "models/default.safetensors"),
    ("relu_bn", "tests/fixtures/relu_bn.safetensors"),
    ("small_f16", "tests/fixtures/small_f16.safetensors"),
    ("no_metadata", "tests/fixtures/no_metadata.safetensors"),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// ONNX Runtime's library, from GEMMA_CYBER_ONNXRUNTIME_LIB; a loud failure when it is unset.
fn onnxruntime_library() -> PathBuf {
    match std::env::var_os("GEMMA_CYBER_ONNXRUNTIME_LIB") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "GEMMA_CYBER_ONNXRUNTIME_LIB is unset, so the onnxruntime backend cannot be tested. \
             Run the whole suite with tools/test.sh, or fetch ONNX Runtime with \
             tools/fetch_onnxruntime.sh and run \
             `GEMMA_CYBER_ONNXRUNTIME_LIB=$PWD/$(cat .ort/LIBRARY_PATH) cargo test --release --test onnxruntime`"
        ),
    }
}

/// A live classifier, destroyed on drop.
struct Classifier(*mut ClassifierHandle);

// SAFETY: the C ABI allows classify and the accessors from many threads at once.
unsafe impl Send for Classifier {}
unsafe impl Sync for Classifier {}

impl Drop for Classifier {
    fn drop(&mut self) {
        unsafe { gemma_cyber_destroy(self.0) }
    }
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(gemma_cyber_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// Creates a classifier on `backend` for `model`, with `library` as options.onnxruntime_library.
fn try_create(
    backend: BackendKind,
    model: &Path,
    library: Option<&Path>,
) -> Result<Classifier, (Status, String)> {
    let model = CString::new(model.to_str().unwrap()).unwrap();
    let library = library.map(|l| CString::new(l.to_str().unwrap()).unwrap());
    unsafe {
        let mut options = std::mem::zeroed::<COptions>();
        gemma_cyber_options_init(&mut options, std::mem::size_of::<COptions>());
        options.backend = backend;
        options.model_path = model.as_ptr();
        options.onnxruntime_library = library.as_ref().map_or(ptr::null(), |l| l.as_ptr());
        let mut handle = ptr::null_mut();
        match gemma_cyber_create(&options, &mut handle) {
            Status::Ok => Ok(Classifier(handle)),
            status => Err((status, last_error())),
        }
    }
}

fn create(backend: BackendKind, model: &str) -> Classifier {
    let library = onnxruntime_library();
    try_create(backend, &repo(model), Some(&library))
        .unwrap_or_else(|(status, message)| panic!("{backend:?} on {model}: {status:?} {message}"))
}

impl Classifier {
    fn classify(&self, embeddings: &[f32], dim: usize) -> Vec<f32> {
        let rows = embeddings.len() / dim;
        let mut probabilities = vec![f32::NAN; rows];
        let status = unsafe {
            gemma_cyber_classify(
                self.0,
                embeddings.as_ptr(),
                rows,
                dim,
                probabilities.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        assert_eq!(status, Status::Ok, "{}", last_error());
        probabilities
    }

    fn backend(&self) -> BackendKind {
        unsafe { gemma_cyber_active_backend(self.0) }
    }

    fn input_dim(&self) -> usize {
        unsafe { gemma_cyber_input_dim(self.0) }
    }
}

fn read_npy<T: npyz::Deserialize>(path: &Path) -> (Vec<u64>, Vec<T>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    (npy.shape().to_vec(), npy.into_vec().unwrap())
}

/// Deterministic N(0, 1)-ish values (sum of uniforms), scaled, without a random-number crate.
fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows * dim)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) as f32 * 1.7)
        .collect()
}

fn assert_close(what: &str, actual: &[f32], expected: impl IntoIterator<Item = f64>) {
    let mut count = 0;
    for (row, (a, e)) in actual.iter().zip(expected).enumerate() {
        let difference = (*a as f64 - e).abs();
        assert!(
            difference <= TOLERANCE,
            "{what}: row {row}: onnxruntime {a} vs {e} (difference {difference:e})"
        );
        count += 1;
    }
    assert_eq!(count, actual.len(), "{what}: row counts differ");
}

#[test]
fn golden_vectors_agree_with_cpu_and_the_reference() {
    for (name, model) in GOLDEN {
        let onnxruntime = create(BackendKind::Onnxruntime, model);
        assert_eq!(onnxruntime.backend(), BackendKind::Onnxruntime);
        let cpu = create(BackendKind::Cpu, model);
        let (shape, inputs) = read_npy::<f32>(&repo(&format!("tests/golden/{name}.inputs.npy")));
        let (_, expected) = read_npy::<f64>(&repo(&format!("tests/golden/{name}.expected.npy")));
        let dim = shape[1] as usize;
        assert_eq!(dim, onnxruntime.input_dim());
        let probabilities = onnxruntime.classify(&inputs, dim);
        assert_close(name, &probabilities, expected);
        let reference = cpu.classify(&inputs, dim);
        assert_close(name, &probabilities, reference.iter().map(|&p| p as f64));
    }
}

#[test]
fn random_batches_agree_with_cpu() {
    let onnxruntime = create(BackendKind::Onnxruntime, "models/default.safetensors");
    let cpu = create(BackendKind::Cpu, "models/default.safetensors");
    let dim = cpu.input_dim();
    for (seed, rows) in [1, 7, 1024, 5000].into_iter().enumerate() {
        let inputs = random_rows(rows, dim, seed as u64);
        let reference = cpu.classify(&inputs, dim);
        let probabilities = onnxruntime.classify(&inputs, dim);
        assert_close(
            &format!("{rows} rows"),
            &probabilities,
            reference.iter().map(|&p| p as f64),
        );
    }
}

/// One bad call: what it passes to `gemma_cyber_classify`.
struct BadCall {
    name: &'static str,
    embeddings: Option<Vec<f32>>,
    rows: usize,
    dim: usize,
    probabilities: bool,
}

/// Status of `call` on `classifier`, and whether the output buffer stayed untouched.
fn status_of(classifier: *mut ClassifierHandle, call: &BadCall) -> (Status, bool) {
    let mut probabilities = vec![-1.0f32; call.rows.min(16)];
    let mut labels = vec![7u8; call.rows.min(16)];
    let status = unsafe {
        gemma_cyber_classify(
            classifier,
            call.embeddings.as_ref().map_or(ptr::null(), |e| e.as_ptr()),
            call.rows,
            call.dim,
            if call.probabilities {
                probabilities.as_mut_ptr()
            } else {
                ptr::null_mut()
            },
            labels.as_mut_ptr(),
        )
    };
    let untouched = probabilities.iter().all(|&p| p == -1.0) && labels.iter().all(|&l| l == 7);
    (status, untouched)
}

#[test]
fn every_bad_input_gives_the_same_status_as_cpu() {
    let onnxruntime = create(BackendKind::Onnxruntime, "models/default.safetensors");
    let cpu = create(BackendKind::Cpu, "models/default.safetensors");
    let dim = cpu.input_dim();
    let mut nan = random_rows(2, dim, 11);
    nan[dim + 5] = f32::NAN;
    let mut infinity = random_rows(2, dim, 12);
    infinity[3] = f32::NEG_INFINITY;
    let calls = [
        BadCall {
            name: "NULL embeddings",
            embeddings: None,
            rows: 2,
            dim,
            probabilities: true,
        },
        BadCall {
            name: "NULL probabilities",
            embeddings: Some(random_rows(2, dim, 13)),
            rows: 2,
            dim,
            probabilities: false,
        },
        BadCall {
            name: "rows * dim overflows",
            embeddings: Some(random_rows(1, dim, 14)),
            rows: usize::MAX / 2,
            dim,
            probabilities: true,
        },
        BadCall {
            name: "dim is not the model's",
            embeddings: Some(random_rows(2, dim, 15)),
            rows: 2,
            dim: dim - 1,
            probabilities: true,
        },
        BadCall {
            name: "NaN",
            embeddings: Some(nan),
            rows: 2,
            dim,
            probabilities: true,
        },
        BadCall {
            name: "infinity",
            embeddings: Some(infinity),
            rows: 2,
            dim,
            probabilities: true,
        },
        BadCall {
            name: "rows == 0 with NULL pointers",
            embeddings: None,
            rows: 0,
            dim,
            probabilities: false,
        },
    ];
    for call in &calls {
        let (expected, _) = status_of(cpu.0, call);
        let (status, untouched) = status_of(onnxruntime.0, call);
        assert_eq!(status, expected, "{}: {}", call.name, last_error());
        assert!(untouched, "{}: outputs were written on failure", call.name);
    }
    let (status, _) = status_of(ptr::null_mut(), &calls[0]);
    assert_eq!(status, Status::InvalidArgument, "NULL classifier");
}

#[test]
fn a_missing_or_wrong_library_is_backend_unavailable() {
    let model = repo("models/default.safetensors");
    let not_a_library = repo("tests/fixtures/relu_bn.safetensors");
    let cases: [(&str, PathBuf); 4] = [
        (
            "missing file",
            PathBuf::from("/nonexistent/libonnxruntime.so"),
        ),
        ("a directory", repo("tests")),
        ("not a shared library", not_a_library),
        (
            "relative and missing",
            PathBuf::from("no/such/libonnxruntime.so"),
        ),
    ];
    for (what, path) in cases {
        match try_create(BackendKind::Onnxruntime, &model, Some(&path)) {
            Ok(_) => panic!("{what}: {} was accepted as ONNX Runtime", path.display()),
            Err((status, message)) => {
                assert_eq!(status, Status::BackendUnavailable, "{what}: {message}");
                assert!(
                    message.contains(path.to_str().unwrap())
                        && message.contains("GEMMA_CYBER_ONNXRUNTIME_LIB"),
                    "{what}: the message says neither where it looked nor how to fix it: {message}"
                );
            }
        }
        // AUTO falls back to cpu instead.
        let auto = try_create(BackendKind::Auto, &model, Some(&path)).unwrap_or_else(
            |(status, message)| panic!("{what}: AUTO failed: {status:?} {message}"),
        );
        assert_eq!(auto.backend(), BackendKind::Cpu, "{what}: AUTO");
    }
}

#[test]
fn auto_picks_onnxruntime_when_its_library_loads() {
    let auto = create(BackendKind::Auto, "models/default.safetensors");
    assert_eq!(auto.backend(), BackendKind::Onnxruntime);
    let name = unsafe { CStr::from_ptr(gemma_cyber_device_name(auto.0)) };
    assert!(
        name.to_str().unwrap().starts_with("onnxruntime 1."),
        "device name {name:?}"
    );
}

#[test]
fn concurrent_classify_from_six_threads_is_bit_identical() {
    let classifier = create(BackendKind::Onnxruntime, "models/default.safetensors");
    let dim = classifier.input_dim();
    let batches: Vec<Vec<f32>> = [1, 7, 300]
        .into_iter()
        .enumerate()
        .map(|(seed, rows)| random_rows(rows, dim, 100 + seed as u64))
        .collect();
    let expected: Vec<Vec<u32>> = batches
        .iter()
        .map(|batch| bits(&classifier.classify(batch, dim)))
        .collect();
    std::thread::scope(|scope| {
        for thread in 0..6 {
            let (classifier, batches, expected) = (&classifier, &batches, &expected);
            scope.spawn(move || {
                for round in 0..40 {
                    let which = (thread + round) % batches.len();
                    let got = bits(&classifier.classify(&batches[which], dim));
                    assert!(
                        got == expected[which],
                        "thread {thread} round {round}: results differ from the single-threaded run"
                    );
                }
            });
        }
    });
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn num_threads_is_honoured() {
    let model = repo("models/default.safetensors");
    let library = onnxruntime_library();
    let cpu = create(BackendKind::Cpu, "models/default.safetensors");
    let dim = cpu.input_dim();
    let inputs = random_rows(64, dim, 21);
    let reference = cpu.classify(&inputs, dim);
    for (threads, expected) in [(0, "1 thread a session"), (2, "2 threads a session")] {
        let classifier = try_create_with_threads(&model, &library, threads).unwrap_or_else(
            |(status, message)| panic!("num_threads {threads}: {status:?} {message}"),
        );
        let name = unsafe { CStr::from_ptr(gemma_cyber_device_name(classifier.0)) };
        assert!(
            name.to_str().unwrap().contains(expected),
            "num_threads {threads}: device name {name:?}"
        );
        let probabilities = classifier.classify(&inputs, dim);
        assert_close(
            &format!("num_threads {threads}"),
            &probabilities,
            reference.iter().map(|&p| p as f64),
        );
    }
}

fn try_create_with_threads(
    model: &Path,
    library: &Path,
    threads: u32,
) -> Result<Classifier, (Status, String)> {
    let model = CString::new(model.to_str().unwrap()).unwrap();
    let library = CString::new(library.to_str().unwrap()).unwrap();
    unsafe {
        let mut options = std::mem::zeroed::<COptions>();
        gemma_cyber_options_init(&mut options, std::mem::size_of::<COptions>());
        options.backend = BackendKind::Onnxruntime;
        options.model_path = model.as_ptr();
        options.onnxruntime_library = library.as_ptr();
        options.num_threads = threads;
        let mut handle = ptr::null_mut();
        match gemma_cyber_create(&options, &mut handle) {
            Status::Ok => Ok(Classifier(handle)),
            status => Err((status, last_error())),
        }
    }
}

/// Set in the child processes of `the_library_is_found_through_each_source_in_turn`: what the
/// child's `child_process_creates_an_onnxruntime_classifier` must see.
const CHILD_EXPECTS: &str = "GEMMA_CYBER_TEST_CHILD_EXPECTS";

/// Runs in a child process with a controlled environment (a no-op in a normal run): creates an
/// ONNXRUNTIME classifier with no library in the options and checks the outcome the parent expects.
#[test]
fn child_process_creates_an_onnxruntime_classifier() {
    let Some(expected) = std::env::var_os(CHILD_EXPECTS) else {
        return;
    };
    let result = try_create(
        BackendKind::Onnxruntime,
        &repo("models/default.safetensors"),
        None,
    );
    match (expected.to_str().unwrap(), result) {
        ("found", Ok(classifier)) => assert_eq!(classifier.backend(), BackendKind::Onnxruntime),
        ("unavailable", Err((Status::BackendUnavailable, message))) => assert!(
            message.contains("not found") && message.contains("GEMMA_CYBER_ONNXRUNTIME_LIB"),
            "{message}"
        ),
        (expected, Ok(_)) => panic!("expected {expected}, got a classifier"),
        (expected, Err((status, message))) => {
            panic!("expected {expected}, got {status:?} {message}")
        }
    }
}

/// GEMMA_CYBER_ONNXRUNTIME_LIB, then ORT_DYLIB_PATH, then the system loader (LD_LIBRARY_PATH
/// here), else BACKEND_UNAVAILABLE saying where it looked. Each case runs in a child process,
/// since the loader reads LD_LIBRARY_PATH once and a process loads ONNX Runtime once.
#[cfg(target_os = "linux")]
#[test]
fn the_library_is_found_through_each_source_in_turn() {
    let library = std::fs::canonicalize(onnxruntime_library()).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnxruntime-search");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&library, dir.join("libonnxruntime.so")).unwrap();
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    // (what is tried, the one variable set, its value, the outcome)
    let cases = [
        (
            "GEMMA_CYBER_ONNXRUNTIME_LIB",
            "GEMMA_CYBER_ONNXRUNTIME_LIB",
            &library,
            "found",
        ),
        ("ORT_DYLIB_PATH", "ORT_DYLIB_PATH", &library, "found"),
        ("the system loader", "LD_LIBRARY_PATH", &dir, "found"),
        ("nowhere", "LD_LIBRARY_PATH", &empty, "unavailable"),
    ];
    for (source, variable, value, expected) in cases {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "child_process_creates_an_onnxruntime_classifier",
                "--nocapture",
            ])
            .env_remove("GEMMA_CYBER_ONNXRUNTIME_LIB")
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("LD_LIBRARY_PATH")
            .env(CHILD_EXPECTS, expected)
            .env(variable, value);
        let output = child.output().unwrap();
        assert!(
            output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
            "{source}: the child failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
