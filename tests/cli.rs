//! The `gemma-cyber` command line: outputs, formats and exit codes.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::repo_path;
use npyz::WriterBuilder;

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .args(args)
        .current_dir(repo_path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn csv_probabilities(text: &str) -> Vec<f32> {
    text.lines()
        .skip(1)
        .map(|line| line.split(',').nth(1).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn npy_and_json_lines_give_the_same_probabilities() {
    let from_npy = run(
        &[
            "classify",
            "--backend",
            "cpu",
            "--format",
            "csv",
            "examples/data/sample.npy",
        ],
        None,
    );
    assert!(from_npy.status.success(), "{}", stderr(&from_npy));
    let jsonl = std::fs::read(repo_path("examples/data/sample.jsonl")).unwrap();
    let from_stdin = run(
        &["classify", "--backend", "cpu", "--format", "csv"],
        Some(&jsonl),
    );
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    let probabilities = csv_probabilities(&stdout(&from_npy));
    assert_eq!(probabilities.len(), 8);
    assert_eq!(probabilities, csv_probabilities(&stdout(&from_stdin)));
    assert!(stdout(&from_npy).starts_with("row,probability,label\n"));
}

#[test]
fn golden_inputs_through_the_cli_match_the_reference() {
    let output = run(
        &[
            "classify",
            "--format",
            "jsonl",
            "tests/golden/default.inputs.npy",
        ],
        None,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let expected = common::npy_f64("tests/golden/default.expected.npy");
    let labels = common::npy_u8("tests/golden/default.labels.npy");
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), expected.len());
    for (i, line) in lines.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["row"], i);
        let p = value["probability"].as_f64().unwrap();
        assert!(
            (p - expected[i]).abs() <= common::TOLERANCE,
            "row {i}: {p} vs {}",
            expected[i]
        );
        assert_eq!(value["label"], labels[i]);
    }
}

#[test]
fn text_output_names_labels_and_threshold_changes_them() {
    let output = run(&["classify", "examples/data/sample.npy"], None);
    let text = stdout(&output);
    assert!(
        text.contains("cyber") && text.contains("not-cyber"),
        "{text}"
    );
    let everything = run(
        &["classify", "--threshold", "0", "examples/data/sample.npy"],
        None,
    );
    assert!(!stdout(&everything).contains("not-cyber"));
}

#[test]
fn f16_npy_is_accepted() {
    let (values, dim) = common::npy_f32("examples/data/sample.npy");
    let path = std::env::temp_dir().join(format!("gemma-cyber-f16-{}.npy", std::process::id()));
    let mut writer = npyz::WriteOptions::<half::f16>::new()
        .default_dtype()
        .shape(&[(values.len() / dim) as u64, dim as u64])
        .writer(std::fs::File::create(&path).unwrap())
        .begin_nd()
        .unwrap();
    writer
        .extend(values.iter().map(|v| half::f16::from_f32(*v)))
        .unwrap();
    writer.finish().unwrap();
    let output = run(
        &["classify", "--format", "csv", path.to_str().unwrap()],
        None,
    );
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(csv_probabilities(&stdout(&output)).len(), 8);
}

#[test]
fn info_describes_model_backend_and_provenance() {
    let output = run(&["info", "--backend", "cpu"], None);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for needle in [
        "768 -> 512 -> 256 -> 128 -> 1",
        "parameters:  561409",
        "backend:     cpu",
        "device:      cpu",
        "embedding_model: sentence-transformers/all-mpnet-base-v2",
    ] {
        assert!(text.contains(needle), "info lacks {needle:?}:\n{text}");
    }
}

#[test]
fn errors_are_one_line_with_documented_exit_codes() {
    // A first row of the model's width, so that the second row's width is what is refused (a
    // first row of the wrong width is refused before the second is read).
    let uneven = format!("[{}]\n[1, 2]\n", vec!["0"; 768].join(","));
    // Arguments, standard input, exit code, message, and the rows answered before the error (on
    // standard input, the lines before a bad one are answered).
    type Case<'a> = (&'a [&'a str], &'a [u8], i32, &'a str, usize);
    let cases: [Case; 6] = [
        (
            &["classify", "no/such/file.npy"],
            b"",
            3,
            "cannot read no/such/file.npy",
            0,
        ),
        (
            &["classify", "--format", "jsonl"],
            uneven.as_bytes(),
            3,
            "line 2 has 2 values",
            1,
        ),
        (
            &["classify"],
            b"{\"not\": \"an array\"}\n",
            3,
            "line 1: the object has no \"embedding\" array",
            0,
        ),
        (
            &["classify"],
            b"[1, 2, 3]\n",
            12,
            "dim 3 but the model expects 768",
            0,
        ),
        (
            &[
                "classify",
                "--model",
                "no/such/model.safetensors",
                "examples/data/sample.npy",
            ],
            b"",
            14,
            "no/such/model.safetensors",
            0,
        ),
        (
            &[
                "classify",
                "--model",
                "examples/data/sample.npy",
                "examples/data/sample.npy",
            ],
            b"",
            15,
            "safetensors",
            0,
        ),
    ];
    for (args, input, code, needle, answered) in cases {
        let output = run(args, Some(input));
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(
            message.starts_with("gemma-cyber: error: ") && message.contains(needle),
            "{args:?}: {message}"
        );
        assert_eq!(stdout(&output).lines().count(), answered, "{args:?}");
    }
}

#[test]
#[cfg(target_os = "linux")]
fn help_and_version_that_cannot_be_written_are_output_failures() {
    let cases: [&[&str]; 4] = [
        &["--help"],
        &["classify", "--help"],
        &["help", "classify"],
        &["--version"],
    ];
    for args in cases {
        let output = run(args, None);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert!(!output.stdout.is_empty(), "{args:?}");
        assert!(output.stderr.is_empty(), "{args:?}: {}", stderr(&output));
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
            .args(args)
            .stdout(full)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(
            message.starts_with("gemma-cyber: error: cannot write output: "),
            "{args:?}: {message}"
        );
    }
}

#[test]
fn non_finite_and_bad_npy_are_refused() {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("gemma-cyber-1d-{}.npy", std::process::id()));
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[768])
        .writer(std::fs::File::create(&path).unwrap())
        .begin_nd()
        .unwrap();
    writer.extend(std::iter::repeat_n(0.5f32, 768)).unwrap();
    writer.finish().unwrap();
    let output = run(&["classify", path.to_str().unwrap()], None);
    let _ = std::fs::remove_file(&path);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("expected a 2-D array"),
        "{}",
        stderr(&output)
    );

    let huge = format!("[{}]\n", vec!["1e39"; 768].join(","));
    let output = run(&["classify"], Some(huge.as_bytes()));
    assert_eq!(output.status.code(), Some(13), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("row 0 column 0 is inf"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn model_sha256_pins_the_model_and_sha256_is_its_alias() {
    use sha2::Digest;
    let bytes = std::fs::read(repo_path("tests/fixtures/small_f16.safetensors")).unwrap();
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let model = "tests/fixtures/small_f16.safetensors";
    let good = run(&["info", "--model", model, "--model-sha256", &hex], None);
    assert!(good.status.success(), "{}", stderr(&good));
    let wrong = "0".repeat(64);
    let bad = run(&["info", "--model", model, "--sha256", &wrong], None);
    assert_eq!(bad.status.code(), Some(15), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("SHA-256 is "), "{}", stderr(&bad));
    let malformed = run(&["info", "--sha256", "xyz"], None);
    assert_eq!(malformed.status.code(), Some(2));

    // Every command that loads a model takes the pin, and one that writes writes nothing when
    // the pin does not hold.
    let out = std::env::temp_dir().join(format!("gemma-cyber-pin-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let written = out.join("written");
    let written = written.to_str().unwrap();
    let sample = "examples/data/sample.npy";
    let labels = out.join("labels.txt");
    std::fs::write(&labels, "1\n1\n1\n1\n0\n0\n0\n0\n").unwrap();
    let labels = labels.to_str().unwrap();
    let commands: [&[&str]; 6] = [
        &["classify", sample],
        &["info"],
        &["evaluate", sample, "--labels", labels],
        &[
            "threshold",
            sample,
            "--labels",
            labels,
            "--max-f1",
            "--write-model",
            written,
        ],
        &["bench", "--batches", "1", "--seconds", "0.01"],
        &["export-onnx", "-o", written],
    ];
    let builtin: String = sha2::Sha256::digest(gemma_cyber::Model::builtin_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for command in commands {
        let pinned = |hash: &str| {
            let mut args = command.to_vec();
            args.extend(["--backend", "cpu", "--model-sha256", hash]);
            if command[0] == "bench" || command[0] == "export-onnx" {
                args.retain(|&a| a != "--backend" && a != "cpu");
            }
            run(&args, None)
        };
        let bad = pinned(&wrong);
        assert_eq!(bad.status.code(), Some(15), "{command:?}: {}", stderr(&bad));
        assert!(stderr(&bad).contains("SHA-256 is "), "{}", stderr(&bad));
        assert!(
            !Path::new(written).exists(),
            "{command:?} wrote despite the pin"
        );
        let good = pinned(&builtin);
        assert!(good.status.success(), "{command:?}: {}", stderr(&good));
        let _ = std::fs::remove_file(written);
    }
    std::fs::remove_dir_all(&out).unwrap();
}
