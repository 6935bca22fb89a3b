//! Paths that name something other than a regular file — a FIFO, `/dev/zero`, `/dev/urandom`, a
//! directory — as the model (Rust API, C API, `--model`), as `convert`'s checkpoint and
//! `--config`, and as ONNX Runtime's library (option and environment variable): each is refused
//! with its documented status and a message saying what it is, before anything is opened, so
//! nothing hangs and nothing reads without end.
#![cfg(unix)]

mod common;

use std::ffi::CString;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::repo_path;
use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Classifier, Model, ModelSource, Options, Status};

/// Longer than any refusal takes; a hang shows up as a failure instead of a stuck test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh directory holding a FIFO named `fifo`.
fn fifo_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("gemma-cyber-special-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    dir
}

/// The special files every path is tried with: a FIFO, two endless devices, a directory.
fn special_paths(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    vec![
        (dir.join("fifo"), "a FIFO (named pipe), not a regular file"),
        ("/dev/zero".into(), "a character device, not a regular file"),
        (
            "/dev/urandom".into(),
            "a character device, not a regular file",
        ),
        (dir.to_path_buf(), "a directory, not a regular file"),
    ]
}

/// Runs `body` on its own thread and fails the test if it does not finish in time.
fn within_patience<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || send.send(body()));
    receive
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} did not return within {PATIENCE:?}"))
}

/// Runs the command line with a deadline; a hang is killed and fails the test.
fn cli_within_patience(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gemma-cyber"));
    command
        .args(args)
        .current_dir(repo_path(""))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("gemma-cyber {args:?} did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn rust_api_refuses_special_files_as_the_model() {
    let dir = fifo_dir("rust");
    for (path, what) in special_paths(&dir) {
        let shown = path.display().to_string();
        let error = within_patience(&shown, move || Model::from_path(&path).unwrap_err());
        assert_eq!(error.status(), Status::ModelNotFound, "{shown}: {error}");
        assert!(error.message().contains(what), "{shown}: {error}");
        assert!(error.message().contains(&shown), "{shown}: {error}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn c_api_refuses_special_files_as_model_path() {
    let dir = fifo_dir("c");
    for (path, what) in special_paths(&dir) {
        let shown = path.display().to_string();
        let (status, message) = within_patience(&shown, move || {
            let c_path = CString::new(path.to_str().unwrap()).unwrap();
            let mut options = std::mem::MaybeUninit::<gemma_cyber_options>::uninit();
            let mut handle = std::ptr::null_mut();
            // SAFETY: options is initialised by the library before use; the path outlives the
            // call; the message is the library's NUL-terminated string, copied at once.
            unsafe {
                gemma_cyber_options_init(options.as_mut_ptr(), size_of::<gemma_cyber_options>());
                let mut options = options.assume_init();
                options.model_path = c_path.as_ptr();
                let status = gemma_cyber_create(&options, &mut handle);
                assert!(handle.is_null());
                let message = std::ffi::CStr::from_ptr(gemma_cyber_last_error())
                    .to_string_lossy()
                    .into_owned();
                (status, message)
            }
        });
        assert_eq!(status, Status::ModelNotFound, "{shown}: {message}");
        assert!(message.contains(what), "{shown}: {message}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn onnxruntime_library_setting_refuses_special_files() {
    let dir = fifo_dir("ort-option");
    for (path, what) in special_paths(&dir) {
        let shown = path.display().to_string();
        let error = within_patience(&shown, move || {
            Classifier::new(&Options {
                backend: BackendKind::Onnxruntime,
                model: ModelSource::Builtin,
                plugin_settings: vec![format!("onnxruntime.library={}", path.display())],
                ..Options::default()
            })
            .err()
            .expect("refused")
        });
        assert_eq!(
            error.status(),
            Status::BackendUnavailable,
            "{shown}: {error}"
        );
        assert!(error.message().contains(what), "{shown}: {error}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "cli")]
fn assert_one_line(output: &Output, code: i32, what: &str, context: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{context}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{context}: {stderr}");
    assert!(stderr.contains(what), "{context}: {stderr}");
}

#[cfg(feature = "cli")]
#[test]
fn cli_refuses_special_files_as_model_checkpoint_and_config() {
    let dir = fifo_dir("cli");
    let output = dir.join("out.safetensors");
    let checkpoint = repo_path("tests/fixtures/checkpoints/sequential_bn_relu.pt");
    for (path, what) in special_paths(&dir) {
        let path = path.to_str().unwrap();
        let info = cli_within_patience(&["info", "--backend", "cpu", "--model", path], &[]);
        // 14: model not found.
        assert_one_line(&info, 14, what, &format!("info --model {path}"));
        let convert = cli_within_patience(
            &["convert", path, "--output", output.to_str().unwrap()],
            &[],
        );
        assert_one_line(&convert, 14, what, &format!("convert {path}"));
        let config = cli_within_patience(
            &[
                "convert",
                checkpoint.to_str().unwrap(),
                "--config",
                path,
                "--output",
                output.to_str().unwrap(),
            ],
            &[],
        );
        assert_one_line(&config, 14, what, &format!("convert --config {path}"));
        assert!(!output.exists(), "nothing is written on failure");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn cli_refuses_special_files_and_oversized_files_as_labels() {
    let dir = fifo_dir("labels");
    let sample = "examples/data/sample.npy";
    for (path, what) in special_paths(&dir) {
        let path = path.to_str().unwrap();
        for command in ["evaluate", "threshold"] {
            let mut args = vec![command, sample, "--labels", path, "--backend", "cpu"];
            if command == "threshold" {
                args.push("--max-f1");
            }
            let output = cli_within_patience(&args, &[]);
            // 3: input unreadable or malformed.
            assert_one_line(&output, 3, what, &format!("{command} --labels {path}"));
        }
    }
    // A sparse file far larger than 8 rows' labels can take is refused by its size, unread.
    let big = dir.join("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let output = cli_within_patience(
        &[
            "evaluate",
            sample,
            "--labels",
            big.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
        &[],
    );
    assert_one_line(
        &output,
        3,
        "as labels for 8 rows: it is 1073741824 bytes or more; the limit is",
        "evaluate --labels big.txt",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn onnxruntime_library_variable_refuses_special_files() {
    let dir = fifo_dir("ort-env");
    for (path, what) in special_paths(&dir) {
        let output = cli_within_patience(
            &["info", "--backend", "onnxruntime"],
            &[("GEMMA_CYBER_ONNXRUNTIME_LIB", &path)],
        );
        // 16: backend unavailable.
        assert_one_line(
            &output,
            16,
            what,
            &format!("GEMMA_CYBER_ONNXRUNTIME_LIB={}", path.display()),
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_model_file_over_the_limit_is_refused_by_its_size() {
    // A sparse file: 1 GiB + 1 byte of nothing, refused before a byte of it is read.
    let dir = fifo_dir("big");
    let path = dir.join("big.safetensors");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(gemma_cyber::model::MAX_FILE_BYTES + 1)
        .unwrap();
    let error = Model::from_path(&path).unwrap_err();
    assert_eq!(error.status(), Status::ModelInvalid, "{error}");
    assert!(
        error.message().contains("the limit is 1073741824"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
