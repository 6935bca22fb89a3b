//! The onnxruntime plugin's own behaviour, against a real ONNX Runtime: where it finds the
//! library (the C field options.onnxruntime_library, the environment, the system loader), a
//! missing one as BACKEND_UNAVAILABLE with AUTO moving on, and num_threads. Agreement with cpu,
//! bad inputs and concurrency are in tests/conformance.rs, for every backend alike.
//!
//! The library comes from GEMMA_CYBER_ONNXRUNTIME_LIB (tools/test.sh sets it); these tests fail,
//! never skip, when it is unset.

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;

use common::backends::{last_error, onnxruntime_library, CClassifier, Classify};
use common::random_embeddings;
use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Status};

/// Agreement every backend owes cpu (1e-5 on probabilities).
const TOLERANCE: f64 = 1e-5;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

use common::backends::CClassifier as Classifier;

/// Creates a classifier on `backend` for `model`, with `library` as options.onnxruntime_library.
fn try_create(
    backend: BackendKind,
    model: &Path,
    library: Option<&Path>,
) -> Result<Classifier, (Status, String)> {
    let model = CString::new(model.to_str().unwrap()).unwrap();
    let library = library.map(|l| CString::new(l.to_str().unwrap()).unwrap());
    // SAFETY: zeroed bytes are valid options (NULL pointers, AUTO backend), which options_init then
    // fills; the strings outlive the call; handle is writable.
    unsafe {
        let mut options = std::mem::zeroed::<gemma_cyber_options>();
        gemma_cyber_options_init(&mut options, std::mem::size_of::<gemma_cyber_options>());
        options.backend = backend;
        options.model_path = model.as_ptr();
        options.onnxruntime_library = library.as_ref().map_or(ptr::null(), |l| l.as_ptr());
        let mut handle = ptr::null_mut();
        match gemma_cyber_create(&options, &mut handle) {
            Status::Ok => Ok(CClassifier(handle)),
            status => Err((status, last_error())),
        }
    }
}

fn create(backend: BackendKind, model: &str) -> Classifier {
    let library = onnxruntime_library();
    try_create(backend, &repo(model), Some(&library))
        .unwrap_or_else(|(status, message)| panic!("{backend:?} on {model}: {status:?} {message}"))
}

fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    random_embeddings(rows, dim, seed)
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

/// Builds `tests/fixtures/fake_onnxruntime.c` with `define` into a scratch directory.
fn fake_onnxruntime(define: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gemma-cyber-fake-ort-{}-{}",
        std::process::id(),
        define.to_lowercase()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let library = dir.join("libonnxruntime.so");
    let status = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-shared",
            "-fPIC",
            "-Wall",
            "-Werror",
            &format!("-D{define}"),
        ])
        .arg(repo("tests/fixtures/fake_onnxruntime.c"))
        .arg("-o")
        .arg(&library)
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "fake_onnxruntime.c does not compile");
    library
}

#[test]
fn a_library_that_is_not_a_whole_onnx_runtime_is_refused_before_ort_holds_it() {
    let model = repo("models/default.safetensors");
    // Before: a NULL version string crashed the process, and a NULL API made ort panic after it
    // had taken the library, which it then kept: the real library failed too, in that process.
    for (define, reason) in [
        ("NO_API", "does not offer the ONNX Runtime API version"),
        ("NO_VERSION", "gives no version string"),
    ] {
        let fake = fake_onnxruntime(define);
        match try_create(BackendKind::Onnxruntime, &model, Some(&fake)) {
            Ok(_) => panic!("{define}: accepted as ONNX Runtime"),
            Err((status, message)) => {
                assert_eq!(status, Status::BackendUnavailable, "{define}: {message}");
                assert!(
                    message.contains(fake.to_str().unwrap()) && message.contains(reason),
                    "{define}: {message}"
                );
            }
        }
    }
    create(BackendKind::Onnxruntime, "models/default.safetensors");
}

#[test]
fn auto_picks_onnxruntime_when_its_library_loads() {
    let auto = create(BackendKind::Auto, "models/default.safetensors");
    assert_eq!(auto.backend(), BackendKind::Onnxruntime);
    let name = CString::new(auto.device_name()).unwrap();
    assert!(
        name.to_str()
            .unwrap()
            .starts_with("onnxruntime 0.1.0: ONNX Runtime 1."),
        "device name {name:?}"
    );
}

#[test]
fn num_threads_is_honoured() {
    let model = repo("models/default.safetensors");
    let library = onnxruntime_library();
    let cpu = create(BackendKind::Cpu, "models/default.safetensors");
    let dim = cpu.input_dim();
    let inputs = random_rows(64, dim, 21);
    let reference = cpu.probabilities(&inputs, dim).unwrap();
    // More threads than cores only wait for them: capped at the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads_a_session = |n: usize| match n {
        1 => "1 thread a session".to_owned(),
        n => format!("{n} threads a session"),
    };
    for (threads, expected) in [
        (0, threads_a_session(1)),
        (2, threads_a_session(cores.min(2))),
        (1024, threads_a_session(cores)),
    ] {
        let classifier = try_create_with_threads(&model, &library, threads).unwrap_or_else(
            |(status, message)| panic!("num_threads {threads}: {status:?} {message}"),
        );
        let name = CString::new(classifier.device_name()).unwrap();
        assert!(
            name.to_str().unwrap().contains(&expected),
            "num_threads {threads}: device name {name:?}"
        );
        let probabilities = classifier.probabilities(&inputs, dim).unwrap();
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
    // SAFETY: as in try_create.
    unsafe {
        let mut options = std::mem::zeroed::<gemma_cyber_options>();
        gemma_cyber_options_init(&mut options, std::mem::size_of::<gemma_cyber_options>());
        options.backend = BackendKind::Onnxruntime;
        options.model_path = model.as_ptr();
        options.onnxruntime_library = library.as_ptr();
        options.num_threads = threads;
        let mut handle = ptr::null_mut();
        match gemma_cyber_create(&options, &mut handle) {
            Status::Ok => Ok(CClassifier(handle)),
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
