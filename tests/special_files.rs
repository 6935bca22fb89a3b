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

/// Makes a FIFO at `path`.
#[cfg(feature = "cli")]
fn make_fifo(path: &Path) {
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Outputs that are not regular files, each with what the refusal calls it: a FIFO, a link to
/// another FIFO (`out-pointed-to-fifo`, not in the list), a socket, and where this process may
/// make one (as root), a character device with `/dev/null`'s numbers, all made in `dir`. None
/// may be replaced by the output file.
#[cfg(feature = "cli")]
fn special_outputs(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let fifo = dir.join("out-fifo");
    make_fifo(&fifo);
    // A FIFO of its own to point to, so that each output can be moved or removed alone.
    let pointed = dir.join("out-pointed-to-fifo");
    make_fifo(&pointed);
    let link = dir.join("out-link-to-fifo");
    std::os::unix::fs::symlink(&pointed, &link).unwrap();
    let socket = dir.join("out-socket");
    // Bound and left: the name stays a socket after the listener is dropped.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut outputs = vec![
        (fifo, "a FIFO (named pipe)"),
        (link, "a FIFO (named pipe)"),
        (socket, "a socket"),
    ];
    let device = dir.join("out-null");
    let device_c = CString::new(device.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; makes a node in the test's own directory, never in /dev.
    let made = unsafe {
        libc::mknod(
            device_c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        )
    };
    if made == 0 {
        outputs.push((device, "a character device"));
    } else {
        // Said, not skipped in silence: the FIFO, link and socket cases still run.
        eprintln!(
            "note: cannot make a character device in {} ({}); the device case is not tested in this run",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    outputs
}

/// What `path` is, not following a link: compared before and after each refused run.
#[cfg(feature = "cli")]
fn file_kind(path: &Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    let file_type = std::fs::symlink_metadata(path).unwrap().file_type();
    if file_type.is_symlink() {
        format!("link to {}", std::fs::read_link(path).unwrap().display())
    } else if file_type.is_fifo() {
        "FIFO".into()
    } else if file_type.is_socket() {
        "socket".into()
    } else if file_type.is_char_device() {
        "character device".into()
    } else if file_type.is_file() {
        "regular file".into()
    } else {
        format!("{file_type:?}")
    }
}

/// The names in `dir`, sorted.
#[cfg(feature = "cli")]
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A Parquet file of `rows` rows with a FixedSizeList<float32>[768] `embedding` column, as
/// `classify` reads it.
#[cfg(feature = "cli")]
fn write_parquet(path: &Path, rows: usize) {
    use arrow_array::types::Float32Type;
    use arrow_array::{ArrayRef, FixedSizeListArray, RecordBatch};
    let embedding = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        (0..rows).map(|row| Some((0..768).map(move |i| Some(((row * 768 + i) % 7) as f32 / 7.0)))),
        768,
    );
    let batch =
        RecordBatch::try_from_iter([("embedding", std::sync::Arc::new(embedding) as ArrayRef)])
            .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Runs `args` with `{OUT}` replaced by each special output in turn and checks the refusal: exit
/// 1, one line naming the output (`{OUT}`, or `shown` with it substituted) and what it is, nothing
/// on standard output, the special file as it was and nothing new beside it.
#[cfg(feature = "cli")]
fn assert_outputs_refused(dir: &Path, args: &[&str], shown: &str, wanted: &str) {
    for (special, what) in special_outputs(dir) {
        let out = special.to_str().unwrap();
        let args: Vec<String> = args.iter().map(|arg| arg.replace("{OUT}", out)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let context = args.join(" ");
        let kind = file_kind(&special);
        let before = names_in(dir);
        let output = cli_within_patience(&args, &[]);
        let message = format!(
            "cannot write {}: it is {what}, not {wanted}",
            shown.replace("{OUT}", out)
        );
        assert_one_line(&output, 1, &message, &context);
        assert!(output.stdout.is_empty(), "{context}: prints nothing");
        assert_eq!(file_kind(&special), kind, "{context}: left as it was");
        if kind.starts_with("link") {
            let pointed = dir.join("out-pointed-to-fifo");
            assert_eq!(file_kind(&pointed), "FIFO", "{context}");
        }
        assert_eq!(names_in(dir), before, "{context}: nothing else written");
    }
    for name in names_in(dir) {
        if name.starts_with("out-") {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_refuses_to_replace_special_files_given_as_model_outputs() {
    let dir = fifo_dir("model-outputs");
    let sample = "examples/data/sample.npy";
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "1\n1\n1\n1\n0\n0\n0\n0\n").unwrap();
    let labels = labels.to_str().unwrap();
    let checkpoint = repo_path("tests/fixtures/checkpoints/sequential_bn_relu.pt");
    let checkpoint = checkpoint.to_str().unwrap();
    assert_outputs_refused(
        &dir,
        &["export-onnx", "-o", "{OUT}"],
        "{OUT}",
        "a regular file",
    );
    assert_outputs_refused(
        &dir,
        &[
            "threshold",
            sample,
            "--labels",
            labels,
            "--max-f1",
            "--backend",
            "cpu",
            "--write-model",
            "{OUT}",
        ],
        "{OUT}",
        "a regular file",
    );
    assert_outputs_refused(
        &dir,
        &["convert", checkpoint, "-o", "{OUT}"],
        "{OUT}",
        "a regular file",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn cli_refuses_to_replace_special_files_given_as_parquet_outputs() {
    let dir = fifo_dir("parquet-outputs");
    let shards = dir.join("shards");
    std::fs::create_dir(&shards).unwrap();
    let shard = shards.join("part-0.parquet");
    write_parquet(&shard, 3);
    let shard = shard.to_str().unwrap();
    let classify = ["classify", "--backend", "cpu"];

    // One file into a file.
    let args = [&classify[..], &[shard, "-o", "{OUT}"]].concat();
    assert_outputs_refused(&dir, &args, "{OUT}", "a regular file");
    // Shards into a directory.
    let args = [&classify[..], &[shards.to_str().unwrap(), "-o", "{OUT}"]].concat();
    assert_outputs_refused(&dir, &args, "{OUT}", "a directory");
    let glob = shards.join("part-*.parquet");
    let args = [&classify[..], &[glob.to_str().unwrap(), "-o", "{OUT}"]].concat();
    assert_outputs_refused(&dir, &args, "{OUT}", "a directory");

    // Outputs inside an output directory, under the shard's name: one file into the directory,
    // and shards into it (where an output that is there is otherwise taken as finished).
    let out_dir = dir.join("out");
    let made = dir.join("made");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::create_dir(&made).unwrap();
    for input in [shard, shards.to_str().unwrap()] {
        for (special, what) in special_outputs(&made) {
            let target = out_dir.join("part-0.parquet");
            std::fs::rename(&special, &target).unwrap();
            let kind = file_kind(&target);
            let args = [&classify[..], &[input, "-o", out_dir.to_str().unwrap()]].concat();
            let context = args.join(" ");
            let output = cli_within_patience(&args, &[]);
            let message = format!(
                "cannot write {}: it is {what}, not a regular file",
                target.display()
            );
            assert_one_line(&output, 1, &message, &format!("{context} ({kind})"));
            assert_eq!(file_kind(&target), kind, "{context}: left as it was");
            std::fs::remove_file(&target).unwrap();
            assert!(
                names_in(&out_dir).is_empty(),
                "{context}: nothing else written"
            );
        }
        for name in names_in(&made) {
            std::fs::remove_file(made.join(name)).unwrap();
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "cli")]
#[test]
fn cli_outputs_still_replace_regular_files_and_links_to_them() {
    // A regular file is replaced; a link to one is replaced by the output file, as a rename
    // does, and what it pointed to is left as it was.
    let dir = fifo_dir("regular-outputs");
    let shard = dir.join("in.parquet");
    write_parquet(&shard, 3);
    let precious = dir.join("precious");
    for args in [
        vec!["export-onnx", "-o", "{OUT}"],
        vec![
            "classify",
            "--backend",
            "cpu",
            shard.to_str().unwrap(),
            "-o",
            "{OUT}",
        ],
    ] {
        for linked in [false, true] {
            let out = dir.join("out");
            std::fs::write(&precious, "keep me").unwrap();
            if linked {
                std::os::unix::fs::symlink(&precious, &out).unwrap();
            } else {
                std::fs::write(&out, "old").unwrap();
            }
            let args: Vec<String> = args
                .iter()
                .map(|arg| arg.replace("{OUT}", out.to_str().unwrap()))
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = cli_within_patience(&args, &[]);
            let context = format!("{} (linked: {linked})", args.join(" "));
            assert_eq!(
                output.status.code(),
                Some(0),
                "{context}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(file_kind(&out), "regular file", "{context}");
            assert!(std::fs::metadata(&out).unwrap().len() > 100, "{context}");
            assert_eq!(
                std::fs::read_to_string(&precious).unwrap(),
                "keep me",
                "{context}"
            );
            std::fs::remove_file(&out).unwrap();
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
