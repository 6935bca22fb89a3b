//! C programs built against the header and the shared library, with warnings as errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared library cargo built for this test run. `cargo test` leaves it in `deps/` and copies it
/// up beside the binaries only on `cargo build`, so a copy there may be stale (or, on a fresh
/// clone, missing): the one in `deps/` is preferred.
fn built_library() -> PathBuf {
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .parent()
        .unwrap();
    let candidates = [
        profile_dir.join("deps").join("libgemma_cyber.so"),
        profile_dir.join("libgemma_cyber.so"),
    ];
    candidates
        .iter()
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no shared library built; looked for {candidates:?}"))
        .clone()
}

/// A directory holding this build's library under both the name the linker looks for
/// (`libgemma_cyber.so`) and its soname (`libgemma_cyber.so.1`), as an installed tree has it.
/// One per program, so tests running in parallel do not race on the links.
fn library_dir(program: &str) -> PathBuf {
    let built = built_library();
    let dir = std::env::temp_dir().join(format!("gemma-cyber-{}-{program}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libgemma_cyber.so", "libgemma_cyber.so.1"] {
        std::os::unix::fs::symlink(&built, dir.join(name)).unwrap();
    }
    dir
}

/// Every test program is C11 with warnings as errors.
const C_FLAGS: [&str; 6] = [
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-pedantic",
    "-O1",
];

/// Compiles `source` into a fresh directory that also holds the library; returns the program.
fn compile(source: &str, output_name: &str) -> PathBuf {
    compile_against(source, output_name, "include")
}

/// The same against the header in `include_dir` (relative to the repository).
fn compile_against(source: &str, output_name: &str, include_dir: &str) -> PathBuf {
    let lib_dir = library_dir(output_name);
    let output = lib_dir.join(output_name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(C_FLAGS)
        .arg(format!("-I{}", common::repo_path(include_dir).display()))
        .arg(common::repo_path(source))
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lgemma_cyber")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        // An RPATH, not a RUNPATH: searched before LD_LIBRARY_PATH, where `cargo test` puts
        // target/<profile>/, whose libgemma_cyber.so.1 is the copy `cargo build` last made and
        // may predate the library under test.
        .arg("-Wl,--disable-new-dtags")
        .arg("-lm")
        .arg("-o")
        .arg(&output)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "{source} does not compile cleanly");
    output
}

/// Runs a compiled tests/c/c_api_test.c on the repository and checks it reports no failure.
fn run_c_api_test(program: &Path) {
    let run = Command::new(program)
        .arg(common::repo_path(""))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(program.parent().unwrap());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "c_api_test failed:\n{stdout}{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn c_caller_gets_golden_results_and_documented_statuses() {
    run_c_api_test(&compile("tests/c/c_api_test.c", "c_api_test"));
}

/// Programs built against the header as it was before plugins (ABI 1 with `model_sha256` last,
/// kept in tests/c/header-before-plugins) run unchanged: their smaller options struct is read
/// only as far as its `struct_size`, and `onnxruntime_library` still reaches ONNX Runtime.
#[test]
fn c_caller_built_against_the_header_before_plugins_keeps_working() {
    run_c_api_test(&compile_against(
        "tests/c/c_api_test.c",
        "c_api_test_header_before_plugins",
        "tests/c/header-before-plugins",
    ));
}

/// Every backend asked for by name from C, against today's header and the one before plugins:
/// the same probability from each (within 1e-5), ONNX Runtime found through the old field.
#[test]
fn c_callers_reach_every_backend_by_name_with_either_header() {
    let library = std::env::var("GEMMA_CYBER_ONNXRUNTIME_LIB")
        .expect("GEMMA_CYBER_ONNXRUNTIME_LIB names ONNX Runtime's library (tools/test.sh sets it)");
    for (include, name) in [
        ("include", "backends_by_name"),
        (
            "tests/c/header-before-plugins",
            "backends_by_name_before_plugins",
        ),
    ] {
        let program = compile_against("tests/c/backends_by_name.c", name, include);
        let run = Command::new(&program)
            .arg(&library)
            .env("XDG_RUNTIME_DIR", std::env::temp_dir())
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(program.parent().unwrap());
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{name}:\n{stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let probabilities: Vec<f64> = stdout
            .lines()
            .map(|line| line.split(' ').nth(3).unwrap().parse().unwrap())
            .collect();
        assert_eq!(probabilities.len(), 4, "{stdout}");
        for p in &probabilities {
            assert!((p - probabilities[0]).abs() <= 1e-5, "{name}: {stdout}");
        }
        for (line, kind) in stdout
            .lines()
            .zip(["cpu ok 1", "onnxruntime ok 2", "wgpu ok 3"])
        {
            assert!(line.starts_with(kind), "{name}: {line}");
        }
    }
}

#[test]
fn c_example_runs() {
    let program = compile("examples/c/classify.c", "classify");
    let run = Command::new(&program).output().unwrap();
    let _ = std::fs::remove_dir_all(program.parent().unwrap());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "example failed:\n{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(stdout.matches("probability").count(), 4, "{stdout}");
    assert!(stdout.contains("wrong dim -> status 2"), "{stdout}");
}

#[test]
fn calls_from_thread_teardown_return_statuses_instead_of_aborting() {
    // A pthread-key destructor and an atexit handler run after the library's thread-locals on
    // that thread are destroyed; every call there must still end in its documented status.
    let program = compile("tests/c/teardown.c", "teardown");
    for backend in ["cpu", "onnxruntime"] {
        let run = Command::new(&program).arg(backend).output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.success(),
            "teardown program on {backend} failed ({:?}):\n{stdout}{stderr}",
            run.status
        );
        assert_every_part_passed(
            &stdout,
            &stderr,
            &["pthread key destructor", "atexit"],
            backend,
        );
    }
    let _ = std::fs::remove_dir_all(program.parent().unwrap());
}

#[test]
fn a_forked_child_classifies_with_its_parents_classifier() {
    // The cpu backend's worker threads exist only in the parent after a fork; the child must
    // still get every batch's probabilities, bit for bit, without waiting on them.
    let program = compile("tests/c/fork.c", "fork");
    let run = Command::new(&program).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "fork program failed ({:?}):\n{stdout}{stderr}",
        run.status
    );
    assert_every_part_passed(&stdout, &stderr, &["child", "parent"], "cpu");
    let _ = std::fs::remove_dir_all(program.parent().unwrap());
}

/// Each of a C program's `parts` printed "<part>: N passed, 0 failed" with N > 0.
fn assert_every_part_passed(stdout: &str, stderr: &str, parts: &[&str], backend: &str) {
    for part in parts {
        assert!(
            stdout.contains(&format!("{part}: ")) && !stdout.contains(&format!("{part}: 0 passed")),
            "{backend}: {part} did not run its checks:\n{stdout}{stderr}"
        );
    }
    assert_eq!(
        stdout.matches(" 0 failed").count(),
        parts.len(),
        "{backend}: {stdout}{stderr}"
    );
}

#[test]
fn a_core_opened_by_a_relative_path_never_looks_for_plugins_in_the_working_directory() {
    // The program moves to a directory with a file named like the core and a plugin the core
    // would otherwise load from there. It is not linked to the library (so its one copy is the
    // one opened by the relative path).
    let lib_dir = library_dir("relative_load");
    let program = lib_dir.join("relative_load");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(C_FLAGS)
        .arg(format!("-I{}", common::repo_path("include").display()))
        .arg(common::repo_path("tests/c/relative_load.c"))
        .arg("-ldl")
        .arg("-o")
        .arg(&program)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "tests/c/relative_load.c does not compile cleanly"
    );
    let elsewhere = common::backends::scratch_dir("relative-load-cwd");
    std::fs::write(elsewhere.join("libgemma_cyber.so"), "").unwrap();
    std::fs::copy(
        common::backends::example_c_plugin_dir().join("libgemma_cyber_example_c.so"),
        elsewhere.join("libgemma_cyber_example_c.so"),
    )
    .unwrap();
    let run = Command::new(&program)
        .arg(&lib_dir)
        .arg(&elsewhere)
        .env_remove("GEMMA_CYBER_PLUGIN_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Not found: the core's own directory is where the built library really is.
    let real_dir = built_library().canonicalize().unwrap();
    let real_dir = real_dir.parent().unwrap().to_str().unwrap();
    assert!(stdout.starts_with("status 6: "), "{stdout}");
    assert!(stdout.contains("no example_c plugin"), "{stdout}");
    assert!(
        stdout.contains(&format!("{real_dir} (the core library's directory)")),
        "{stdout}"
    );
    assert!(!stdout.contains(elsewhere.to_str().unwrap()), "{stdout}");
    let _ = std::fs::remove_dir_all(&lib_dir);
}
