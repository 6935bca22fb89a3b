//! C programs built against the header and the shared library, with warnings as errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding this build's libgemma_cyber.so (next to the CLI binary).
fn library_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compile(source: &str, output_name: &str) -> PathBuf {
    let lib_dir = library_dir();
    let output =
        std::env::temp_dir().join(format!("gemma-cyber-{}-{output_name}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O1",
        ])
        .arg(format!("-I{}", common::repo_path("include").display()))
        .arg(common::repo_path(source))
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lgemma_cyber")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lm")
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "{source} does not compile cleanly");
    output
}

#[test]
fn c_caller_gets_golden_results_and_documented_statuses() {
    let program = compile("tests/c/c_api_test.c", "c_api_test");
    let run = Command::new(&program)
        .arg(common::repo_path(""))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&program);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "c_api_test failed:\n{stdout}{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn c_example_runs() {
    let program = compile("examples/c/classify.c", "classify");
    let run = Command::new(&program).output().unwrap();
    let _ = std::fs::remove_file(&program);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "example failed:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(stdout.matches("probability").count(), 4, "{stdout}");
    assert!(stdout.contains("wrong dim -> status 2"), "{stdout}");
}
