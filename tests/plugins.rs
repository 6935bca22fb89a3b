//! The plugin loader: bad plugin files and misbehaving plugins each give their documented status
//! and a message naming the file and the reason, the process carries on and AUTO moves to its next
//! candidate; SERIAL plugins are never overlapped; the search order; the log callback; and the
//! core alone, without plugins beside it.

mod common;

use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::backends::{
    build_c_plugin, build_c_plugin_with, example_c_plugin_dir, onnxruntime_library, scratch_dir,
};
use common::{random_embeddings, repo_path};
use gemma_cyber::ffi::{gemma_cyber_log_callback, gemma_cyber_set_log_callback};
use gemma_cyber::log::LogLevel;
use gemma_cyber::{BackendKind, Classifier, Error, Options, Status};

fn plugin_options(name: &str, dir: &Path) -> Options {
    Options {
        backend: BackendKind::Plugin,
        plugin_name: Some(name.to_owned()),
        plugin_dir: Some(dir.to_owned()),
        ..Options::default()
    }
}

fn create_error(options: &Options) -> Error {
    match Classifier::new(options) {
        Ok(classifier) => panic!("created a classifier on {}", classifier.device_name()),
        Err(error) => error,
    }
}

/// Classifies two rows and returns the failure.
fn classify_error(classifier: &Classifier) -> Error {
    let input = random_embeddings(2, 768, 1);
    let mut out = [-1.0f32; 2];
    let error = classifier
        .classify(&input, 768, &mut out, None)
        .expect_err("classify succeeded");
    assert_eq!(out, [-1.0; 2], "a failed call wrote probabilities");
    error
}

fn assert_error(error: &Error, status: Status, fragments: &[&str]) {
    assert_eq!(error.status(), status, "{error}");
    for fragment in fragments {
        assert!(
            error.message().contains(fragment),
            "{fragment:?} not in: {error}"
        );
    }
}

#[test]
fn unusable_plugin_files_are_backend_unavailable_naming_the_file_and_the_reason() {
    let cases: [(&str, &[&str]); 6] = [
        ("not_a_library", &["not a loadable shared library"]),
        ("no_entry", &["does not export gemma_cyber_plugin_entry"]),
        ("wrong_abi", &["built for plugin ABI version 2"]),
        ("refuses_host", &["entry refused plugin ABI version 1"]),
        ("wrong_name", &["calls itself \"something_else\""]),
        ("null_function", &["leaves destroy NULL"]),
    ];
    for (name, fragments) in cases {
        let dir = scratch_dir(&format!("bad-{name}"));
        let file = dir.join(format!("libgemma_cyber_{name}.so"));
        if name == "not_a_library" {
            std::fs::write(&file, "this is not an ELF file\n").unwrap();
        } else {
            build_c_plugin(name, &dir);
        }
        let error = create_error(&plugin_options(name, &dir));
        assert_error(&error, Status::BackendUnavailable, fragments);
        assert!(error.message().contains(file.to_str().unwrap()), "{error}");
        // Asked again, the same answer: the file was opened once and never unloaded.
        let again = create_error(&plugin_options(name, &dir));
        assert_eq!(again.message(), error.message());
    }
}

#[test]
fn a_plugin_setting_flags_this_abi_does_not_define_is_refused() {
    let dir = scratch_dir("unknown-flags");
    build_c_plugin_with("serial", &dir, &["-DSERIAL_FLAGS=0x81"]);
    let error = create_error(&plugin_options("serial", &dir));
    assert_error(
        &error,
        Status::BackendUnavailable,
        &["sets flags 0x80", "does not define"],
    );
}

#[test]
fn a_missing_plugin_says_where_it_looked() {
    let dir = scratch_dir("empty-plugins");
    let error = create_error(&plugin_options("nothing_here", &dir));
    assert_error(
        &error,
        Status::BackendUnavailable,
        &[
            "libgemma_cyber_nothing_here.so",
            dir.to_str().unwrap(),
            "options.plugin_dir",
        ],
    );
}

#[test]
fn a_fifo_or_a_directory_named_like_a_plugin_is_refused_without_blocking() {
    let dir = scratch_dir("special-plugins");
    let fifo = dir.join("libgemma_cyber_fifo.so");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.join("libgemma_cyber_directory.so")).unwrap();
    for name in ["fifo", "directory"] {
        let error = create_error(&plugin_options(name, &dir));
        assert_error(&error, Status::BackendUnavailable, &["not a regular file"]);
    }
}

#[test]
fn a_link_gives_a_plugin_file_no_second_name() {
    // One file under two names: asked for by the link's name it is refused, whichever name was
    // asked for first, and by its own name it loads.
    let dir = scratch_dir("alias");
    let real = example_c_plugin_dir().join("libgemma_cyber_example_c.so");
    std::os::unix::fs::symlink(&real, dir.join("libgemma_cyber_alias.so")).unwrap();
    let by_alias = || create_error(&plugin_options("alias", &dir));
    let by_name = || Classifier::new(&plugin_options("example_c", &example_c_plugin_dir()));
    assert_error(
        &by_alias(),
        Status::BackendUnavailable,
        &["libgemma_cyber_alias.so", "calls itself \"example_c\""],
    );
    let classifier = by_name().expect("the plugin by its own name");
    assert!(classifier.device_name().starts_with("example_c"));
    assert_error(&by_alias(), Status::BackendUnavailable, &["calls itself"]);
}

#[test]
fn every_command_that_runs_a_backend_runs_a_plugin_by_name() {
    let dir = scratch_dir("every-command");
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "1\n1\n1\n1\n0\n0\n0\n0\n").unwrap();
    let sample = repo_path("examples/data/sample.npy");
    let (sample, labels) = (sample.to_str().unwrap(), labels.to_str().unwrap());
    let plugin_dir = example_c_plugin_dir();
    let commands: [&[&str]; 5] = [
        &["classify", sample],
        &["info"],
        &["evaluate", sample, "--labels", labels],
        &["threshold", sample, "--labels", labels, "--max-f1"],
        &[
            "bench",
            "--backends",
            "plugin",
            "--batches",
            "1",
            "--seconds",
            "0.01",
        ],
    ];
    for command in commands {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
            .args(command)
            .args(["--plugin", "example_c", "--plugin-dir"])
            .arg(&plugin_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command:?}: {stderr}");
    }
}

#[test]
fn a_search_directory_that_cannot_be_looked_into_is_not_passed_over() {
    // A plugin_dir that is a file: the lookup there fails with something other than "not
    // found", so the copy in the environment's directory must not be taken in its place.
    let dir = scratch_dir("not-a-dir");
    let file = dir.join("plugins");
    std::fs::write(&file, "").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .args(["classify", "--plugin", "example_c", "--plugin-dir"])
        .arg(&file)
        .arg(repo_path("examples/data/sample.npy"))
        .env("GEMMA_CYBER_PLUGIN_DIR", example_c_plugin_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(16));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "plugin {}/libgemma_cyber_example_c.so is not usable",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn misbehaving_plugins_fail_their_calls_and_the_process_carries_on() {
    let dir = scratch_dir("misbehaving");
    for name in [
        "create_fails",
        "classify_fails",
        "bad_status",
        "not_a_probability",
    ] {
        build_c_plugin(name, &dir);
    }
    let error = create_error(&plugin_options("create_fails", &dir));
    assert_error(
        &error,
        Status::BackendUnavailable,
        &["create_fails: no device here"],
    );

    let classify_fails = Classifier::new(&plugin_options("classify_fails", &dir)).unwrap();
    assert_eq!(classify_fails.backend(), BackendKind::Plugin);
    let error = classify_error(&classify_fails);
    assert_error(
        &error,
        Status::BackendFailure,
        &["classify_fails: device fell over"],
    );

    // A status outside the ABI's is BACKEND_FAILURE, with the plugin's message.
    let bad_status = Classifier::new(&plugin_options("bad_status", &dir)).unwrap();
    assert_error(
        &classify_error(&bad_status),
        Status::BackendFailure,
        &["bad_status"],
    );

    // A result that is no probability is caught by the core, whichever row it is in.
    for value in ["2.0", "nan", "-0.5", "inf"] {
        let options = Options {
            plugin_settings: vec![format!("value={value}")],
            ..plugin_options("not_a_probability", &dir)
        };
        let plugin = Classifier::new(&options).unwrap();
        assert_error(
            &classify_error(&plugin),
            Status::BackendFailure,
            &["not a probability", "row 1"],
        );
    }
}

#[test]
fn a_rust_plugin_that_panics_in_classify_is_backend_failure() {
    // The example target tests/plugins/panicking.rs, built by tools/test.sh before the tests
    // (`cargo build --release --example gemma_cyber_panicking`).
    let examples = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples");
    let dir = scratch_dir("panicking");
    std::fs::copy(
        examples.join("libgemma_cyber_panicking.so"),
        dir.join("libgemma_cyber_panicking.so"),
    )
    .expect("build the panicking example plugin first: cargo build --release --example gemma_cyber_panicking");
    let plugin = Classifier::new(&plugin_options("panicking", &dir)).unwrap();
    assert_eq!(plugin.device_name(), "panicking 0.0.0: nowhere");
    for _ in 0..3 {
        assert_error(
            &classify_error(&plugin),
            Status::BackendFailure,
            &["panicked", "the panicking plugin always panics"],
        );
    }
}

#[test]
fn a_serial_plugin_is_never_called_concurrently() {
    let serial = scratch_dir("serial");
    build_c_plugin("serial", &serial);
    // The same plugin without the flag: concurrent callers do overlap, which the plugin detects.
    let unserialised = scratch_dir("serial-off");
    build_c_plugin_with("serial", &unserialised, &["-DSERIAL_FLAGS=0"]);
    let failures = |dir: &Path| {
        let classifier = Classifier::new(&plugin_options("serial", dir)).unwrap();
        let input = random_embeddings(3, 768, 5);
        let failed = Mutex::new(0);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    for _ in 0..15 {
                        let mut out = [0.0f32; 3];
                        if let Err(error) = classifier.classify(&input, 768, &mut out, None) {
                            assert!(error.message().contains("overlapping"), "{error}");
                            *failed.lock().unwrap() += 1;
                        }
                    }
                });
            }
        });
        failed.into_inner().unwrap()
    };
    assert_eq!(
        failures(&serial),
        0,
        "the core overlapped calls of a SERIAL plugin"
    );
    assert!(failures(&unserialised) > 0, "the overlap check never fired");
}

#[test]
fn a_plugin_may_keep_the_model_pointers_until_destroy() {
    // The ABI promises the model struct and its arrays stay valid until the instance is
    // destroyed; this plugin reads them through the pointer it was given, in every call.
    let dir = scratch_dir("keeps-model");
    build_c_plugin("keeps_model", &dir);
    let kept = Classifier::new(&plugin_options("keeps_model", &dir)).unwrap();
    let cpu = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        ..Options::default()
    })
    .unwrap();
    let input = random_embeddings(7, 768, 9);
    let (mut want, mut got) = ([0.0f32; 7], [0.0f32; 7]);
    cpu.classify(&input, 768, &mut want, None).unwrap();
    // Other classifiers made and dropped in between reuse whatever memory create used.
    for _ in 0..3 {
        drop(Classifier::new(&plugin_options("keeps_model", &dir)).unwrap());
        kept.classify(&input, 768, &mut got, None)
            .unwrap_or_else(|error| panic!("{error}"));
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5, "{got:?} vs cpu {want:?}");
        }
    }
}

#[test]
fn auto_moves_past_an_unusable_wgpu_plugin_and_keeps_the_reason() {
    // A plugin directory searched first, whose libgemma_cyber_wgpu.so is not a library.
    let dir = scratch_dir("auto-broken-wgpu");
    std::fs::write(dir.join("libgemma_cyber_wgpu.so"), "not a library").unwrap();
    onnxruntime_library();
    let options = Options {
        backend: BackendKind::Auto,
        plugin_dir: Some(dir.clone()),
        ..Options::default()
    };
    let auto = Classifier::new(&options).unwrap();
    assert_eq!(auto.backend(), BackendKind::Onnxruntime);
    let skipped = auto.skipped_backends();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].backend, "wgpu");
    assert!(skipped[0]
        .reason
        .message()
        .contains("not a loadable shared library"));

    // And with onnxruntime unusable too, cpu, with both reasons.
    std::fs::write(dir.join("libgemma_cyber_onnxruntime.so"), "not a library").unwrap();
    let auto = Classifier::new(&options).unwrap();
    assert_eq!(auto.backend(), BackendKind::Cpu);
    let skipped: Vec<&str> = auto
        .skipped_backends()
        .iter()
        .map(|s| s.backend.as_str())
        .collect();
    assert_eq!(skipped, ["wgpu", "onnxruntime"]);
}

#[test]
fn settings_the_library_owns_and_malformed_settings_are_invalid_arguments() {
    for setting in [
        "num_threads=8",
        "wgpu.auto=0",
        "auto=1",
        "no equals sign",
        "=value",
    ] {
        let options = Options {
            backend: BackendKind::Auto,
            plugin_settings: vec![setting.to_owned()],
            ..Options::default()
        };
        let error = create_error(&options);
        assert_eq!(
            error.status(),
            Status::InvalidArgument,
            "{setting}: {error}"
        );
    }
    // A setting for a plugin that is nowhere to be found would reach nobody: its name is most
    // likely misspelt.
    for setting in [
        "wpgu.adapter=nvidia",
        "Wgpu.adapter=nvidia",
        "no such.key=1",
    ] {
        let options = Options {
            backend: BackendKind::Cpu,
            plugin_settings: vec![setting.to_owned()],
            ..Options::default()
        };
        assert_error(&create_error(&options), Status::InvalidArgument, &[setting]);
    }
    // Known names pass, whether or not that plugin is the one started, and spaces around a key
    // do not keep a setting from its plugin.
    let options = Options {
        backend: BackendKind::Cpu,
        plugin_settings: vec!["wgpu.adapter=nvidia".into(), "onnxruntime.library=x".into()],
        ..Options::default()
    };
    Classifier::new(&options).expect("settings for the library's own plugins");
    // Refused by the wgpu plugin itself, so it got the setting (an adapter of no such name).
    let options = Options {
        backend: BackendKind::Wgpu,
        plugin_settings: vec![" wgpu . adapter =nosuchgpu".into()],
        ..Options::default()
    };
    assert_error(
        &create_error(&options),
        Status::BackendUnavailable,
        &["\"nosuchgpu\""],
    );
    for (backend, name) in [
        (BackendKind::Plugin, None),
        (BackendKind::Plugin, Some("Not-Valid")),
        (BackendKind::Cpu, Some("example_c")),
    ] {
        let options = Options {
            backend,
            plugin_name: name.map(str::to_owned),
            ..Options::default()
        };
        assert_eq!(create_error(&options).status(), Status::InvalidArgument);
    }
}

/// Messages the log callback received.
static LOGGED: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn record(_user_data: *mut c_void, level: LogLevel, message: *const c_char) {
    // SAFETY: the library passes a NUL-terminated message valid during the call.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    LOGGED.lock().unwrap().push((level as u32, text));
}

#[test]
fn the_log_callback_receives_autos_reasons_and_the_backend_started() {
    // A plugin file that is there but cannot be loaded is a warning; the backend started, info.
    let dir = scratch_dir("log-broken-wgpu");
    std::fs::write(dir.join("libgemma_cyber_wgpu.so"), "not a library").unwrap();
    let callback: gemma_cyber_log_callback = Some(record);
    // SAFETY: `record` may be called from any thread; user_data is unused.
    unsafe { gemma_cyber_set_log_callback(callback, std::ptr::null_mut()) };
    let options = Options {
        backend: BackendKind::Auto,
        plugin_dir: Some(dir.clone()),
        ..Options::default()
    };
    let auto = Classifier::new(&options).unwrap();
    // SAFETY: NULL turns messages off.
    unsafe { gemma_cyber_set_log_callback(None, std::ptr::null_mut()) };
    let logged = LOGGED.lock().unwrap().clone();
    let wanted = format!("AUTO skipped the wgpu backend: plugin {}", dir.display());
    assert!(
        logged
            .iter()
            .any(|(level, text)| *level == LogLevel::Warning as u32 && text.starts_with(&wanted)),
        "{logged:?}"
    );
    let started = format!("{} backend started on", auto.backend().name());
    assert!(
        logged.iter().any(|(_, text)| text.starts_with(&started)),
        "{logged:?}"
    );
}

#[test]
fn the_plugin_dir_option_is_searched_before_the_environment_and_the_core_directory() {
    // Through the CLI, in child processes, since the environment is process-wide.
    let good = example_c_plugin_dir();
    let broken = scratch_dir("order-broken");
    std::fs::write(broken.join("libgemma_cyber_example_c.so"), "not a library").unwrap();
    let run = |plugin_dir: Option<&Path>, env_dir: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"));
        command
            .args(["classify", "--plugin", "example_c"])
            .arg(repo_path("examples/data/sample.npy"))
            .env_remove("GEMMA_CYBER_PLUGIN_DIR");
        if let Some(dir) = plugin_dir {
            command.arg("--plugin-dir").arg(dir);
        }
        if let Some(dir) = env_dir {
            command.env("GEMMA_CYBER_PLUGIN_DIR", dir);
        }
        command.output().unwrap()
    };
    // The option wins over the environment, either way round.
    assert!(run(Some(&good), Some(&broken)).status.success());
    let shadowed = run(Some(&broken), Some(&good));
    assert_eq!(shadowed.status.code(), Some(16));
    assert!(String::from_utf8_lossy(&shadowed.stderr).contains(broken.to_str().unwrap()));
    // The environment alone.
    assert!(run(None, Some(&good)).status.success());
    // Neither: example_c is not next to the core library.
    let missing = run(None, None);
    assert_eq!(missing.status.code(), Some(16));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("the core library's directory"), "{stderr}");
}

#[test]
fn gemma_cyber_plugins_lists_every_plugin_with_its_state() {
    let dir = scratch_dir("listing");
    build_c_plugin("wrong_abi", &dir);
    build_c_plugin("control_text", &dir);
    let example = example_c_plugin_dir().join("libgemma_cyber_example_c.so");
    std::fs::copy(&example, dir.join("libgemma_cyber_example_c.so")).unwrap();
    // Named like a plugin, but not with a plugin name: listed, never opened.
    std::fs::copy(&example, dir.join("libgemma_cyber_Example.so")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
        .args(["plugins", "--plugin-dir"])
        .arg(&dir)
        .env_remove("GEMMA_CYBER_PLUGIN_DIR")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "example_c 1.0.0 (plugin ABI 1)",
        "libgemma_cyber_wrong_abi.so is not usable: it was built for plugin ABI version 2",
        "libgemma_cyber_Example.so is not usable: its name is not a plugin name ([a-z0-9_]+)",
        "wgpu 0.1.0 (plugin ABI 1)",
        "onnxruntime 0.1.0 (plugin ABI 1)",
        "(options.plugin_dir)",
        "(the core library's directory)",
        // A plugin's version is data: one line, its control characters escaped.
        "control_text 1.0\\u{a}\\u{1b}[31mforged (plugin ABI 1)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    assert!(
        !stdout.contains('\u{1b}'),
        "a terminal command in:\n{stdout}"
    );
}

/// The core library alone in a directory, as an appliance that ships only the core has it.
fn core_alone() -> PathBuf {
    // Made once per test process: two tests making it at once emptied each other's directory.
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let built = Path::new(env!("CARGO_BIN_EXE_gemma-cyber"))
            .parent()
            .unwrap()
            .join("deps/libgemma_cyber.so");
        let dir = scratch_dir("core-alone");
        std::fs::copy(&built, dir.join("libgemma_cyber.so")).expect("cargo test builds the core");
        std::fs::copy(&built, dir.join("libgemma_cyber.so.1")).unwrap();
        dir
    })
    .clone()
}

#[test]
fn the_shared_core_holds_no_wgpu_naga_or_onnx_runtime_code() {
    let core = core_alone().join("libgemma_cyber.so");
    let output = std::process::Command::new("nm")
        .arg("-C")
        .arg(&core)
        .output()
        .expect("nm (binutils) runs");
    assert!(output.status.success());
    let symbols = String::from_utf8_lossy(&output.stdout);
    assert!(
        symbols.contains("gemma_cyber_classify"),
        "nm listed nothing useful"
    );
    // Demangled paths start at a space or a generic's `<`: " ort::", "<ort::" (not "sort::").
    for crate_path in ["wgpu", "naga::", "ort::", "ort_sys::", "prost::"] {
        let found: Vec<&str> = symbols
            .lines()
            .filter(|line| {
                [" ", "<", "&"]
                    .iter()
                    .any(|before| line.contains(&format!("{before}{crate_path}")))
            })
            .take(3)
            .collect();
        assert!(found.is_empty(), "{crate_path} code in the core: {found:?}");
    }
}

#[test]
fn the_core_alone_runs_cpu_and_says_the_plugins_are_missing() {
    let dir = core_alone();
    let source = dir.join("alone.c");
    std::fs::write(
        &source,
        r#"#include <stdio.h>
#include "gemma_cyber.h"
int main(void) {
    gemma_cyber_options options;
    gemma_cyber_classifier *classifier = NULL;
    gemma_cyber_options_init(&options, sizeof options);
    options.backend = GEMMA_CYBER_BACKEND_ONNXRUNTIME;
    int status = (int)gemma_cyber_create(&options, &classifier);
    printf("onnxruntime %d %s\n", status, gemma_cyber_last_error());
    options.backend = GEMMA_CYBER_BACKEND_AUTO;
    if (gemma_cyber_create(&options, &classifier) != GEMMA_CYBER_STATUS_OK) return 1;
    printf("auto %d\n", (int)gemma_cyber_active_backend(classifier));
    gemma_cyber_destroy(classifier);
    return 0;
}
"#,
    )
    .unwrap();
    let program = dir.join("alone");
    let status = std::process::Command::new("cc")
        .arg(format!("-I{}", repo_path("include").display()))
        .arg(&source)
        .arg(format!("-L{}", dir.display()))
        .arg("-lgemma_cyber")
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-o")
        .arg(&program)
        .status()
        .unwrap();
    assert!(status.success());
    // cargo points LD_LIBRARY_PATH at its build directories, which hold the plugins too.
    let output = std::process::Command::new(&program)
        .env_remove("GEMMA_CYBER_PLUGIN_DIR")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("onnxruntime 6 GEMMA_CYBER_STATUS_BACKEND_UNAVAILABLE: no onnxruntime plugin: libgemma_cyber_onnxruntime.so is in none of"),
        "{stdout}"
    );
    // The kernel names the core by its real path: the directory's, links resolved.
    let real_dir = dir.canonicalize().unwrap();
    assert!(
        stdout.contains(&format!(
            "{} (the core library's directory)",
            real_dir.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("auto 1"),
        "AUTO falls back to cpu: {stdout}"
    );
}
