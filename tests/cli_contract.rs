//! The `gemma-cyber` command line at its edges: flag ranges, every input format and its bad cases,
//! answers streamed through a pipe, bounded memory on a large array, JSON reports, and text from a
//! model that must not reach the terminal as commands.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::repo_path;

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gemma-cyber"));
    command.args(args).current_dir(repo_path(""));
    command
}

/// The tool with `args`, its three streams piped.
fn spawn(args: &[&str]) -> std::process::Child {
    command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args);
    let mut pipe = child.stdin.take().unwrap();
    // The tool may refuse the input before reading all of it: a closed pipe is fine.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "gemma-cyber-contract-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A version 1 `.npy` file with a hand-written header, so a header can lie about its shape.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// The sample embeddings, as float32 values and their width.
fn sample() -> (Vec<f32>, usize) {
    common::npy_f32("examples/data/sample.npy")
}

fn json_line(row: &[f32]) -> String {
    let values: Vec<String> = row.iter().map(|v| v.to_string()).collect();
    format!("[{}]", values.join(","))
}

fn csv_column(output: &Output, column: usize) -> Vec<String> {
    text(&output.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(column).unwrap().to_owned())
        .collect()
}

/// Exit `code` with one line on standard error that holds `needle`.
fn assert_error(output: &Output, code: i32, needle: &str, what: &str) {
    let message = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{what}: {message}");
    assert_eq!(message.lines().count(), 1, "{what}: {message}");
    assert!(
        message.starts_with("gemma-cyber: error: ") && message.contains(needle),
        "{what}: expected {needle:?} in {message}"
    );
}

/// An error, as [`assert_error`], and nothing on standard output.
fn assert_refused(output: &Output, code: i32, needle: &str, what: &str) {
    assert_error(output, code, needle, what);
    assert!(output.stdout.is_empty(), "{what} wrote output");
}

#[test]
fn out_of_range_flags_are_command_line_errors() {
    let sample = "examples/data/sample.npy";
    let labels = "examples/data/sample.npy";
    let cases: &[&[&str]] = &[
        &["classify", "--threshold", "2", sample],
        &["classify", "--threshold", "1.5", sample],
        &["classify", "--threshold=-0.1", sample],
        &["classify", "--threshold", "NaN", sample],
        &["classify", "--num-threads", "5000", sample],
        &["info", "--threads", "1025"],
        &["evaluate", sample, "--labels", labels, "--threshold", "inf"],
        &[
            "threshold",
            sample,
            "--labels",
            labels,
            "--target-precision",
            "1.5",
        ],
        &[
            "threshold",
            sample,
            "--labels",
            labels,
            "--target-precision",
            "NaN",
        ],
        &[
            "threshold",
            sample,
            "--labels",
            labels,
            "--target-recall=-1",
        ],
        &["bench", "--batches", "0"],
        &["bench", "--batches", "1,0"],
        &["bench", "--seconds", "0"],
        &["bench", "--seconds", "NaN"],
    ];
    for args in cases {
        let output = run(args, b"");
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.starts_with("error: invalid value '"),
            "{args:?}: {message}"
        );
        assert!(output.stdout.is_empty(), "{args:?} wrote output");
    }
    // NaN is refused with the way to get the model's own threshold.
    let nan = run(&["classify", "--threshold", "NaN", sample], b"");
    assert!(
        text(&nan.stderr).contains("leave --threshold out for the model's own"),
        "{}",
        text(&nan.stderr)
    );
    // The ends of the ranges are in them.
    for args in [
        &[
            "classify",
            "--threshold",
            "1",
            "--num-threads",
            "1024",
            sample,
        ][..],
        &["classify", "--threshold", "0", "--threads", "0", sample],
    ] {
        let output = run(args, b"");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn non_finite_json_tokens_are_non_finite_input() {
    let (values, dim) = sample();
    for (token, shown) in [
        ("NaN", "NaN"),
        ("Infinity", "inf"),
        ("-Infinity", "-inf"),
        ("1e999", "inf"),
    ] {
        let mut second: Vec<String> = values[dim..2 * dim].iter().map(|v| v.to_string()).collect();
        second[5] = token.to_owned();
        let input = format!("{}\n[{}]\n", json_line(&values[..dim]), second.join(","));
        let output = run(&["classify", "--backend", "cpu"], input.as_bytes());
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(13), "{token}: {message}");
        assert!(
            message.contains(&format!("row 1 column 5 is {shown}")),
            "{token}: {message}"
        );
    }
    // A NaN in a .npy has the same code and message.
    let mut data = values[..2 * dim].to_vec();
    data[dim + 5] = f32::NAN;
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = TempFile::new("nan.npy", &npy("<f4", &format!("(2, {dim})"), &bytes));
    let output = run(&["classify", "--backend", "cpu", file.path()], b"");
    assert_refused(&output, 13, "row 1 column 5 is NaN", "NaN in .npy");
}

#[test]
fn bad_json_lines_are_refused_with_their_line() {
    let (values, dim) = sample();
    let good = json_line(&values[..dim]);
    // With the rows answered on standard input before the bad line (a file prints nothing).
    let cases = [
        (format!("{good}\n\n{good}\n"), "line 2: blank", 1),
        (format!("{good}\n   \n"), "line 2: blank", 1),
        ("[]\n".to_owned(), "line 1: the embedding is empty", 0),
        (
            "0.1,0.2,0.3\n".to_owned(),
            "CSV and other plain-text rows are not supported",
            0,
        ),
        (
            "{\"vector\": [1]}\n".to_owned(),
            "no \"embedding\" array",
            0,
        ),
        (String::new(), "no embeddings", 0),
        ("\n".to_owned(), "line 1: blank", 0),
    ];
    for (input, needle, answered) in &cases {
        let output = run(
            &["classify", "--backend", "cpu", "--format", "jsonl"],
            input.as_bytes(),
        );
        let what = format!("stdin {input:.40?}");
        assert_error(&output, 3, needle, &what);
        assert_eq!(text(&output.stdout).lines().count(), *answered, "{what}");
        // The same from a file.
        let file = TempFile::new("bad.jsonl", input.as_bytes());
        let output = run(&["classify", "--backend", "cpu", file.path()], b"");
        assert_refused(&output, 3, needle, &format!("file {input:.40?}"));
    }
}

#[test]
fn embedding_objects_and_arrays_agree() {
    let (values, dim) = sample();
    let arrays: String = values
        .chunks(dim)
        .map(|row| json_line(row) + "\n")
        .collect();
    let objects: String = values
        .chunks(dim)
        .enumerate()
        .map(|(i, row)| {
            format!(
                "{{\"id\": \"text-{i}\", \"meta\": {{\"tags\": [\"a\", null]}}, \"embedding\": {}}}\n",
                json_line(row)
            )
        })
        .collect();
    let args = ["classify", "--backend", "cpu", "--format", "csv"];
    let from_arrays = run(&args, arrays.as_bytes());
    let from_objects = run(&args, objects.as_bytes());
    assert!(
        from_arrays.status.success(),
        "{}",
        text(&from_arrays.stderr)
    );
    assert!(
        from_objects.status.success(),
        "{}",
        text(&from_objects.stderr)
    );
    assert_eq!(csv_column(&from_arrays, 1).len(), 8);
    assert_eq!(from_arrays.stdout, from_objects.stdout);
}

#[test]
fn float64_npy_gives_the_float32_answers() {
    let (values, dim) = sample();
    let rows = values.len() / dim;
    let as_f64: Vec<u8> = values
        .iter()
        .flat_map(|v| f64::from(*v).to_le_bytes())
        .collect();
    let file = TempFile::new("f64.npy", &npy("<f8", &format!("({rows}, {dim})"), &as_f64));
    let args = ["classify", "--backend", "cpu", "--format", "csv"];
    let from_f64 = run(&[&args[..], &[file.path()]].concat(), b"");
    let from_f32 = run(&[&args[..], &["examples/data/sample.npy"]].concat(), b"");
    assert!(from_f64.status.success(), "{}", text(&from_f64.stderr));
    assert_eq!(from_f64.stdout, from_f32.stdout);
}

#[test]
fn npy_shapes_that_lie_or_hold_nothing_are_refused() {
    let four_rows = vec![0u8; 4 * 768 * 4];
    let cases = [
        // 2^56 + 4 rows: rows × 768 wraps to 3072 values in 64 bits.
        (
            npy("<f4", "(72057594037927940, 768)", &four_rows),
            "too large",
        ),
        (
            npy("<f4", "(5, 768)", &four_rows),
            "promises 5 × 768 values",
        ),
        (
            npy("<f4", "(3, 768)", &four_rows),
            "promises 3 × 768 values",
        ),
        (npy("<f4", "(5, 0)", &[]), "5 × 0"),
        (npy("<f4", "(0, 768)", &[]), "no embeddings"),
        (
            npy("<i4", "(4, 768)", &four_rows),
            "expected float32, float16 or float64",
        ),
    ];
    for (index, (bytes, needle)) in cases.iter().enumerate() {
        let file = TempFile::new(&format!("lie-{index}.npy"), bytes);
        let output = run(&["classify", "--backend", "cpu", file.path()], b"");
        assert_refused(&output, 3, needle, needle);
        // On standard input the length is unknown: a short stream is truncated, never padded.
        let output = run(&["classify", "--backend", "cpu"], bytes);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{needle}: {}",
            text(&output.stderr)
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn npy_headers_nested_deep_are_refused_before_they_are_parsed() {
    // npyz's header parser is exponential in bracket nesting: 28 levels held the tool for hours.
    let brackets = format!("{}{}", "[".repeat(28), "]".repeat(28));
    let nested = npy("<f4", &format!("(8, 768), 'x': {brackets}"), &[]);
    let file = TempFile::new("nested.npy", &nested);
    let needle = "nests brackets 29 deep; the limit is 8";
    let output = run(&["classify", "--backend", "cpu", file.path()], b"");
    assert_refused(&output, 3, needle, "classify FILE");
    let output = run(&["classify", "--backend", "cpu"], &nested);
    assert_refused(&output, 3, needle, "classify < FILE");
    let output = run(
        &[
            "evaluate",
            "examples/data/sample.npy",
            "--labels",
            file.path(),
            "--backend",
            "cpu",
        ],
        b"",
    );
    assert_refused(&output, 3, needle, "evaluate --labels FILE");
}

/// A sparse file whose header and length agree on 100,000,000 × 768 float32 values (307 GB, no
/// disk): refused with a message, not aborted by a failed allocation. The child's address space is
/// capped at 16 GiB so the reservation fails whatever the machine's memory and overcommit policy.
#[cfg(unix)]
#[test]
fn an_npy_too_large_for_memory_is_refused() {
    use std::os::unix::process::CommandExt;
    let file = TempFile::new("huge.npy", &npy("<f4", "(100000000, 768)", &[]));
    let header_len = std::fs::metadata(&file.0).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file.0)
        .unwrap()
        .set_len(header_len + 100_000_000 * 768 * 4)
        .unwrap();
    let mut command = command(&["classify", "--backend", "cpu", file.path()]);
    // SAFETY: setrlimit is async-signal-safe, as calls between fork and exec must be.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 16 << 30,
                rlim_max: 16 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.stdin(Stdio::null()).output().unwrap();
    assert_refused(
        &output,
        3,
        "not enough memory for the array's 100000000 × 768 values (307200000000 bytes as float32)",
        "huge.npy",
    );
}

#[test]
fn labels_mean_the_same_in_every_format() {
    let sample = "examples/data/sample.npy";
    let text_output = run(&["classify", "--backend", "cpu", sample], b"");
    let names: Vec<String> = text(&text_output.stdout)
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().nth(2).unwrap().to_owned())
        .collect();
    let csv = run(
        &["classify", "--backend", "cpu", "--format", "csv", sample],
        b"",
    );
    let jsonl = run(
        &["classify", "--backend", "cpu", "--format", "jsonl", sample],
        b"",
    );
    let from_json: Vec<u64> = text(&jsonl.stdout)
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["label"].as_u64().unwrap()
        })
        .collect();
    let expected: Vec<&str> = names
        .iter()
        .map(|name| match name.as_str() {
            "cyber" => "1",
            "not-cyber" => "0",
            other => panic!("label {other:?}"),
        })
        .collect();
    assert_eq!(csv_column(&csv, 2), expected);
    assert_eq!(
        from_json.iter().map(u64::to_string).collect::<Vec<_>>(),
        expected
    );
    assert!(names.contains(&"cyber".to_owned()) && names.contains(&"not-cyber".to_owned()));
}

#[test]
fn a_stream_of_the_wrong_width_is_refused_at_its_first_row() {
    let wide = format!("[{}]\n", vec!["0.5"; 769].join(","));
    let output = run(
        &["classify", "--backend", "cpu"],
        wide.repeat(100).as_bytes(),
    );
    assert_refused(
        &output,
        12,
        "dim 769 but the model expects 768",
        "100 wide rows",
    );
    // Refused before the next line is even parsed: that line's error never comes up.
    let output = run(
        &["classify", "--backend", "cpu"],
        format!("{wide}not json\n").as_bytes(),
    );
    assert_refused(
        &output,
        12,
        "dim 769 but the model expects 768",
        "a wide row, then a bad one",
    );
}

#[test]
fn lines_are_answered_as_they_arrive() {
    let (values, dim) = sample();
    let mut child = spawn(&["classify", "--backend", "cpu", "--format", "jsonl"]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    // A reader thread hands over each answer line; a missing answer is a timeout, not a hang.
    let (answers, answer) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if answers.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for (row, embedding) in values.chunks(dim).take(3).enumerate() {
        writeln!(stdin, "{}", json_line(embedding)).unwrap();
        stdin.flush().unwrap();
        let line = match answer.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "no answer to line {} while standard input stays open",
                    row + 1
                );
            }
        };
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["row"], row, "{line}");
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn a_bad_line_on_standard_input_ends_the_run_after_the_answers_before_it() {
    let (values, dim) = sample();
    let good: String = values
        .chunks(dim)
        .take(2)
        .map(|row| json_line(row) + "\n")
        .collect();
    let mut nan: Vec<String> = values[2 * dim..3 * dim]
        .iter()
        .map(|v| v.to_string())
        .collect();
    nan[5] = "NaN".to_owned();
    let bad = [
        ("[]".to_owned(), 3, "line 3: the embedding is empty"),
        ("not json".to_owned(), 3, "line 3: expected a JSON array"),
        (
            "[0.5, 0.5]".to_owned(),
            3,
            "line 3 has 2 values; earlier lines have 768",
        ),
        (format!("[{}]", nan.join(",")), 13, "row 2 column 5 is NaN"),
    ];
    for format in ["text", "csv", "jsonl"] {
        let args = ["classify", "--backend", "cpu", "--format", format];
        let answers = run(&args, good.as_bytes());
        assert!(answers.status.success(), "{}", text(&answers.stderr));
        let header = usize::from(format != "jsonl");
        assert_eq!(
            text(&answers.stdout).lines().count(),
            header + 2,
            "{format}"
        );
        for (line, code, needle) in &bad {
            // One write, so the good lines and the bad one reach the tool together.
            let output = run(&args, format!("{good}{line}\n").as_bytes());
            let what = format!("{format}, then {line:.20}");
            assert_error(&output, *code, needle, &what);
            assert_eq!(text(&output.stdout), text(&answers.stdout), "{what}");
        }
    }
}

#[test]
fn an_npy_on_standard_input_is_told_by_its_magic_however_it_is_split() {
    let args = ["classify", "--backend", "cpu", "--format", "csv"];
    let npy = std::fs::read(repo_path("examples/data/sample.npy")).unwrap();
    let expected = run(&args, &npy);
    assert!(expected.status.success(), "{}", text(&expected.stderr));
    let mut child = spawn(&args);
    let mut stdin = child.stdin.take().unwrap();
    // Half the magic, then a pause that lets the tool read it alone before the rest arrives.
    stdin.write_all(&npy[..3]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A tool that took the stream for JSON lines may have closed it already.
    let _ = stdin.write_all(&npy[3..]);
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), text(&expected.stdout));
}

#[test]
fn successful_auto_runs_print_nothing_on_stderr() {
    // Older Mesa prints "XDG_RUNTIME_DIR is invalid or not set" while AUTO probes for a GPU.
    for args in [
        &["classify", "examples/data/sample.npy"][..],
        &["info"],
        &["info", "--backend", "auto", "--format", "json"],
    ] {
        let output = command(args)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stderr), "", "{args:?}");
    }
}

/// A "Vulkan driver" that only prints, as older Mesa does while the loader opens it.
#[cfg(target_os = "linux")]
#[test]
fn driver_noise_during_auto_probing_stays_off_stderr() {
    let dir = std::env::temp_dir().join(format!("gemma-cyber-noisy-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let noise = "error: XDG_RUNTIME_DIR is invalid or not set in the environment.";
    std::fs::write(
        dir.join("noise.c"),
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void noise(void) {{ fprintf(stderr, \"{noise}\\n\"); }}\n"
        ),
    )
    .unwrap();
    let library = dir.join("libnoisy_driver.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(dir.join("noise.c"))
        .status()
        .unwrap();
    assert!(built.success());
    let manifest = dir.join("noisy_icd.json");
    std::fs::write(
        &manifest,
        serde_json::json!({
            "file_format_version": "1.0.0",
            "ICD": {"library_path": library, "api_version": "1.3.0"}
        })
        .to_string(),
    )
    .unwrap();
    let with_driver = |backend: &str| {
        command(&["info", "--backend", backend])
            .env("VK_ICD_FILENAMES", &manifest)
            .env("VK_DRIVER_FILES", &manifest)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let auto = with_driver("auto");
    let named = with_driver("wgpu");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(auto.status.success(), "{}", text(&auto.stderr));
    assert_eq!(text(&auto.stderr), "");
    // Asked for by name, the driver's own words are the user's to see: this also shows the
    // Vulkan loader did open the noisy driver, so the AUTO run above had noise to keep off.
    if text(&named.stderr).contains(noise) {
        assert_eq!(named.status.code(), Some(16), "{}", text(&named.stderr));
    } else {
        eprintln!(
            "note: the Vulkan loader did not open the noisy driver (no libvulkan?): {}",
            text(&named.stderr)
        );
    }
}

#[test]
fn info_and_threshold_write_json() {
    let info = run(&["info", "--backend", "cpu", "--format", "json"], b"");
    assert!(info.status.success(), "{}", text(&info.stderr));
    assert_eq!(text(&info.stdout).lines().count(), 1);
    let value: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(value["layers"], serde_json::json!([768, 512, 256, 128, 1]));
    assert_eq!(value["parameters"], 561409);
    assert_eq!(value["backend"], "cpu");
    assert_eq!(
        value["metadata"]["embedding_model"],
        "sentence-transformers/all-mpnet-base-v2"
    );

    let labels = TempFile::new("labels.txt", b"1\n1\n1\n1\n0\n0\n0\n0\n");
    let output = run(
        &[
            "threshold",
            "examples/data/sample.npy",
            "--labels",
            labels.path(),
            "--max-f1",
            "--backend",
            "cpu",
            "--format",
            "json",
        ],
        b"",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["target"], "max_f1");
    assert_eq!(value["f1"], 1.0);
    assert_eq!(value["rows"], 8);
    let chosen = value["chosen"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&chosen), "{chosen}");
    assert!(value["wrote"].is_null());
}

#[test]
fn export_onnx_says_what_it_wrote() {
    let path =
        std::env::temp_dir().join(format!("gemma-cyber-contract-{}.onnx", std::process::id()));
    let output = run(&["export-onnx", "-o", path.to_str().unwrap()], b"");
    let written = std::fs::metadata(&path).map(|m| m.len());
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), format!("wrote: {}\n", path.display()));
    assert!(written.unwrap() > 1_000_000);
}

#[test]
fn model_text_never_reaches_the_terminal_raw() {
    let (tensors, mut metadata) = common::read_model("tests/fixtures/small_f16.safetensors");
    let hostile = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\0\nfake: line\u{9b}31m\u{202e}";
    metadata.insert("note".to_owned(), hostile.to_owned());
    metadata.insert(format!("key{hostile}"), "value".to_owned());
    let file = TempFile::new(
        "hostile.safetensors",
        &common::write_model(&tensors, &metadata),
    );
    let output = run(&["info", "--backend", "cpu", "--model", file.path()], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let shown = text(&output.stdout);
    for c in shown.chars() {
        assert!(
            c == '\n' || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{c:?} reached the terminal:\n{shown}"
        );
    }
    assert!(
        shown.contains(
            "note: x\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{0}\\u{a}fake: line\\u{9b}31m\\u{202e}"
        ),
        "{shown}"
    );
    assert!(
        !shown.lines().any(|line| line.starts_with("fake")),
        "{shown}"
    );

    // JSON keeps the exact text, escaped.
    let output = run(
        &[
            "info",
            "--backend",
            "cpu",
            "--model",
            file.path(),
            "--format",
            "json",
        ],
        b"",
    );
    let raw = text(&output.stdout);
    assert!(!raw.chars().any(|c| c.is_control() && c != '\n'), "{raw}");
    let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(value["metadata"]["note"], hostile);

    // Error messages quoting a path are escaped too.
    let output = run(&["classify", "no/such/\u{1b}[31mfile.npy"], b"");
    assert_refused(&output, 3, "no/such/\\u{1b}[31mfile.npy", "escaped path");
}

/// Peak resident memory of a finished child, in bytes (Linux reports kilobytes).
#[cfg(target_os = "linux")]
// The child is reaped by wait4, which reports its resource usage; Child::wait cannot.
#[allow(clippy::zombie_processes)]
fn run_measuring_peak_memory(args: &[&str]) -> (i32, u64) {
    let child = command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for this child only.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: `pid` is our own child, not yet waited for; the pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    (libc::WEXITSTATUS(status), usage.ru_maxrss as u64 * 1024)
}

#[cfg(target_os = "linux")]
#[test]
fn a_large_npy_is_held_once() {
    // 20,000 rows: 61 MB of float32. Two copies (file bytes, then values) would peak above 130 MB.
    // Written in pieces: the child's peak counts this process's own (its spawn shares our memory
    // until exec), so the test never holds the array either.
    let rows = 20_000;
    let file = TempFile::new("large.npy", &npy("<f4", &format!("({rows}, 768)"), &[]));
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&file.0)
        .unwrap();
    for piece in 0..rows / 1000 {
        let values = common::random_embeddings(1000, 768, piece as u64);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        writer.write_all(&bytes).unwrap();
    }
    drop(writer);
    let data_len = rows as u64 * 768 * 4;
    let (code, peak) = run_measuring_peak_memory(&[
        "classify",
        "--backend",
        "cpu",
        "--num-threads",
        "2",
        file.path(),
    ]);
    assert_eq!(code, 0);
    assert!(
        peak < data_len + data_len / 4 + (32 << 20),
        "peak RSS {peak} bytes for {data_len} bytes of embeddings"
    );
}

/// A fresh directory in the temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "gemma-cyber-contract-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn join(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The start of the temporary names of runs writing `output`: `.gemma-cyber-<16 hex>-`, from the
/// SHA-256 of its file name (a random part and `.partial` follow).
fn temporary_prefix_of(output: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = std::path::Path::new(output).file_name().unwrap();
    let digest = Sha256::digest(name.as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(".gemma-cyber-{hex}-")
}

#[test]
fn an_output_that_is_a_directory_or_a_link_to_one_is_refused() {
    let dir = TempDir::new("output-dirs");
    std::fs::create_dir(dir.join("adir")).unwrap();
    std::os::unix::fs::symlink(dir.join("adir"), dir.join("linkdir")).unwrap();
    for name in ["adir", "linkdir", "adir/"] {
        let output = run(&["export-onnx", "-o", &dir.join(name)], b"");
        assert_refused(&output, 1, "is a directory", name);
    }
    assert!(std::fs::symlink_metadata(dir.join("linkdir"))
        .unwrap()
        .is_symlink());
    assert_eq!(std::fs::read_dir(dir.join("adir")).unwrap().count(), 0);
}

#[test]
fn killed_runs_leftovers_are_removed_and_a_running_ones_file_is_not() {
    // Killed runs leave their temporaries (a file; or a link somebody planted at such a name):
    // the next run writing the same output removes them without following the link. A temporary
    // that a run still writing holds locked is left alone, and no temporary of the run's own is
    // left behind.
    use std::os::unix::io::AsRawFd;
    let dir = TempDir::new("leftovers");
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let output = dir.join("model.onnx");
    let prefix = temporary_prefix_of(&output);
    let killed = dir.join(&format!("{prefix}killed.partial"));
    let linked = dir.join(&format!("{prefix}linked.partial"));
    let running = dir.join(&format!("{prefix}running.partial"));
    std::fs::write(&killed, "half a model").unwrap();
    std::os::unix::fs::symlink(&precious, &linked).unwrap();
    let held = std::fs::File::create(&running).unwrap();
    // SAFETY: flock on a descriptor `held` owns.
    let locked = unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(locked, 0);
    // Another output's leftover is not this run's to judge.
    let other = dir.join(&format!(
        "{}killed.partial",
        temporary_prefix_of("other.onnx")
    ));
    std::fs::write(&other, "someone else's").unwrap();

    let run = run(&["export-onnx", "-o", &output], b"");
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        "model.onnx".to_owned(),
        "precious.txt".to_owned(),
        format!("{prefix}running.partial"),
        format!("{}killed.partial", temporary_prefix_of("other.onnx")),
    ];
    expected.sort();
    assert_eq!(names, expected);
    drop(held);
}

#[test]
fn single_file_outputs_neither_follow_nor_clobber_what_is_beside_them() {
    // The written file comes from a fresh hidden temporary name of its own: a link or a file of
    // the user's at the old fixed name `OUT.partial` is left as it was, and nothing temporary is
    // left behind.
    let dir = TempDir::new("outputs");
    let precious = dir.join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    std::os::unix::fs::symlink(&precious, dir.join("model.onnx.partial")).unwrap();
    std::fs::write(dir.join("notes.onnx.partial"), "notes").unwrap();
    for name in ["model.onnx", "notes.onnx"] {
        let output = run(&["export-onnx", "-o", &dir.join(name)], b"");
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.onnx.partial")).unwrap(),
        "notes"
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "model.onnx",
            "model.onnx.partial",
            "notes.onnx",
            "notes.onnx.partial",
            "precious.txt"
        ]
    );
    // A name as long as the file system allows is written, not refused for its temporary name.
    let long = dir.join(&format!("{}.onnx", "m".repeat(250)));
    let output = run(&["export-onnx", "-o", &long], b"");
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn an_output_that_is_its_own_input_is_refused() {
    let dir = TempDir::new("own-input");
    let model = dir.join("model.safetensors");
    std::fs::copy(repo_path("models/default.safetensors"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let output = run(&["export-onnx", "--model", &model, "-o", &model], b"");
    assert_refused(
        &output,
        2,
        "is the model itself",
        "export-onnx over its --model",
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // convert's config is an input too.
    let config = dir.join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let checkpoint = repo_path("tests/fixtures/checkpoints/sequential_bn_relu.pt");
    let output = run(
        &[
            "convert",
            checkpoint.to_str().unwrap(),
            "-o",
            &config,
            "--config",
            &config,
        ],
        b"",
    );
    assert_refused(
        &output,
        2,
        "is the config itself",
        "convert over its --config",
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "{}");
}

#[test]
fn a_bad_config_is_named_in_the_message() {
    let dir = TempDir::new("bad-config");
    let config = dir.join("settings.json");
    std::fs::write(&config, r#"{"norm_order": "bogus"}"#).unwrap();
    let checkpoint = repo_path("tests/fixtures/checkpoints/sequential_bn_relu.pt");
    let output = run(
        &[
            "convert",
            checkpoint.to_str().unwrap(),
            "-o",
            &dir.join("out.safetensors"),
            "--config",
            &config,
        ],
        b"",
    );
    assert_refused(
        &output,
        15,
        &format!("{config}: norm_order is \"bogus\""),
        "bad config",
    );
}

#[test]
fn library_refusals_of_command_line_values_are_bad_command_lines() {
    let sample = repo_path("examples/data/sample.npy");
    let sample = sample.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["classify", "--plugin-setting", "foo", sample],
            "not key=value",
        ),
        (
            vec!["classify", "--plugin-setting", "num_threads=2", sample],
            "num_threads",
        ),
        (vec!["classify", "--plugin", "NoSuch", sample], "NoSuch"),
    ] {
        assert_refused(&run(&args, b""), 2, needle, &args.join(" "));
    }
}

#[test]
fn threshold_prints_nothing_when_its_model_cannot_be_written() {
    let dir = TempDir::new("threshold-write");
    // The destination's parent is a file: the write fails whoever runs the test.
    let blocker = dir.join("file");
    std::fs::write(&blocker, "").unwrap();
    let embeddings = repo_path("models/heldout/validation_embeddings.npy");
    let labels = repo_path("models/heldout/validation_labels.npy");
    let output = run(
        &[
            "threshold",
            embeddings.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--max-f1",
            "--write-model",
            &format!("{blocker}/model.safetensors"),
        ],
        b"",
    );
    assert_refused(&output, 1, "cannot write", "threshold --write-model");
}

#[test]
fn bench_measures_a_plugin_by_name_and_refuses_before_printing() {
    let plugins = common::backends::example_c_plugin_dir();
    let plugins = plugins.to_str().unwrap();
    let quick = ["--batches", "2", "--seconds", "0.05"];
    // `--plugin NAME` adds the plugin to the backends measured, found in --plugin-dir.
    let output = run(
        &[
            &[
                "bench",
                "--plugin",
                "example_c",
                "--plugin-dir",
                plugins,
                "--json",
            ],
            &quick[..],
        ]
        .concat(),
        b"",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let lines: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let backends: Vec<&str> = lines
        .iter()
        .map(|l| l["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends, ["cpu", "plugin"]);
    assert!(
        lines[1]["device"]
            .as_str()
            .unwrap()
            .starts_with("example_c "),
        "{lines:?}"
    );
    // A backend that cannot start fails the command before anything is measured or printed,
    // wherever it stands in the list.
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["--backends", "cpu,plugin"],
            2,
            "--backends plugin needs --plugin NAME",
        ),
        (
            &[
                "--backends",
                "cpu",
                "--plugin",
                "not_there",
                "--plugin-dir",
                plugins,
            ],
            16,
            "no not_there plugin",
        ),
        (
            &[
                "--backends",
                "cpu,plugin",
                "--plugin",
                "example_c",
                "--plugin-dir",
                plugins,
                "--plugin-setting",
                "example_c.colour=blue",
            ],
            16,
            "unknown setting colour",
        ),
    ];
    for (args, code, needle) in cases {
        let output = run(&[&["bench"], *args, &quick[..]].concat(), b"");
        assert_refused(&output, *code, needle, &format!("bench {args:?}"));
    }
}

#[test]
fn bench_refuses_batches_whose_input_would_not_fit_its_bound() {
    // A valid model with 2^22 inputs a row: 65,536 rows of it would be a terabyte of input.
    let dir = TempDir::new("bench-wide");
    let model = dir.join("wide.safetensors");
    std::fs::write(&model, wide_model(1 << 22)).unwrap();
    let output = run(
        &[
            "bench",
            "--model",
            &model,
            "--backends",
            "cpu",
            "--batches",
            "65536",
            "--seconds",
            "0.1",
        ],
        b"",
    );
    assert_refused(&output, 2, "--batches 65536", "bench on a wide model");
}

/// A model with `inputs` inputs, no hidden layer and one output, as float16 (small on disk).
fn wide_model(inputs: usize) -> Vec<u8> {
    let one = half_one();
    let tensors: [(&str, Vec<usize>, Vec<u8>); 4] = [
        ("input_norm.weight", vec![inputs], one.repeat(inputs)),
        ("input_norm.bias", vec![inputs], vec![0; 2 * inputs]),
        ("output.weight", vec![1, inputs], vec![0; 2 * inputs]),
        ("output.bias", vec![1], vec![0; 2]),
    ];
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "gemma-cyber", "format_version": "1",
            "norm_order": "linear_bn_relu", "layer_norm_eps": "1e-5", "batch_norm_eps": "1e-5",
            "threshold": "0.5"}),
    );
    let mut offset = 0;
    for (name, shape, data) in &tensors {
        header.insert(
            (*name).into(),
            serde_json::json!({"dtype": "F16", "shape": shape,
                "data_offsets": [offset, offset + data.len()]}),
        );
        offset += data.len();
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    for (_, _, data) in tensors {
        bytes.extend(data);
    }
    bytes
}

/// 1.0 as little-endian float16.
fn half_one() -> Vec<u8> {
    0x3c00u16.to_le_bytes().to_vec()
}
