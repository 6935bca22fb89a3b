//! The wgpu plugin through the core: how its settings and environment variables choose the
//! adapter, how AUTO treats it, and the device name. Run for real: in CI on Mesa's lavapipe
//! (software Vulkan). Its internals are tested in plugins/wgpu/tests; agreement with cpu, bad
//! inputs and concurrency in tests/conformance.rs.

mod common;

use std::path::PathBuf;

use common::backends::HOW_TO_GET_AN_ADAPTER;
use gemma_cyber::{BackendKind, Classifier, ModelSource, Options, Status};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn wgpu_options(model: &std::path::Path) -> Options {
    Options {
        backend: BackendKind::Wgpu,
        model: ModelSource::Path(model.to_owned()),
        ..Options::default()
    }
}

fn wgpu_classifier(model: &std::path::Path) -> Classifier {
    Classifier::new(&wgpu_options(model)).unwrap_or_else(|e| panic!("{e}\n{HOW_TO_GET_AN_ADAPTER}"))
}

#[test]
fn device_name_reports_adapter_backend_and_type() {
    let classifier = wgpu_classifier(&root().join("models/default.safetensors"));
    let name = classifier.device_name();
    assert!(name.starts_with("wgpu 0.1.0: wgpu: "), "{name}");
    assert!(
        ["GPU", "software adapter", "other adapter"]
            .iter()
            .any(|kind| name.contains(kind)),
        "{name}"
    );
    assert!(
        ["vulkan", "metal", "dx12", "gl"]
            .iter()
            .any(|api| name.contains(api)),
        "{name}"
    );
}

#[test]
fn unknown_adapter_name_is_backend_unavailable_naming_what_was_tried() {
    let options = Options {
        plugin_settings: vec!["wgpu.adapter=no-such-adapter-xyz".into()],
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let error = Classifier::new(&options).err().expect("an adapter matched");
    assert_eq!(error.status(), Status::BackendUnavailable);
    assert!(error.message().contains("no-such-adapter-xyz"), "{error}");
    assert!(error.message().contains("found"), "{error}");
}

#[test]
fn adapter_name_filter_is_case_insensitive_substring() {
    // Whatever adapter the default choice lands on, part of its name in other case picks it.
    let plain = wgpu_classifier(&root().join("models/default.safetensors"));
    let adapter = plain.device_name()["wgpu 0.1.0: wgpu: ".len()..]
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_uppercase();
    let options = Options {
        plugin_settings: vec![format!("wgpu.adapter={adapter}")],
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let chosen = Classifier::new(&options).unwrap();
    assert!(
        chosen.device_name().to_uppercase().contains(&adapter),
        "{adapter} -> {}",
        chosen.device_name()
    );
}

#[test]
fn bad_graphics_api_names_are_backend_unavailable_and_auto_moves_on() {
    for names in ["cuda", " , "] {
        let options = Options {
            plugin_settings: vec![format!("wgpu.backends={names}")],
            ..wgpu_options(&root().join("models/default.safetensors"))
        };
        let error = Classifier::new(&options).err().expect("accepted");
        assert_eq!(
            error.status(),
            Status::BackendUnavailable,
            "{names:?}: {error}"
        );
        // A bad wgpu setting costs AUTO the wgpu plugin only, with the reason kept.
        let auto = Classifier::new(&Options {
            backend: BackendKind::Auto,
            ..options
        })
        .unwrap();
        assert_ne!(auto.backend(), BackendKind::Wgpu);
        let skipped = &auto.skipped_backends()[0];
        assert_eq!(skipped.backend, "wgpu");
        assert!(
            skipped.reason.message().contains("backends"),
            "{}",
            skipped.reason
        );
    }
}

#[test]
fn unknown_settings_are_refused_naming_the_key() {
    let options = Options {
        plugin_settings: vec!["wgpu.adaptor=x".into()],
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let error = Classifier::new(&options).err().expect("accepted");
    assert_eq!(error.status(), Status::BackendUnavailable, "{error}");
    assert!(error.message().contains("adaptor"), "{error}");
}

#[test]
fn auto_never_picks_a_software_adapter() {
    let classifier = Classifier::new(&Options::default()).unwrap();
    match classifier.backend() {
        BackendKind::Wgpu => assert!(
            !classifier.device_name().contains("software"),
            "{}",
            classifier.device_name()
        ),
        BackendKind::Cpu | BackendKind::Onnxruntime => {}
        other => panic!("AUTO picked {other:?}"),
    }
}

#[cfg(feature = "cli")]
#[test]
fn environment_variable_selects_the_adapter_in_the_cli() {
    let run = |adapter: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"))
            .args(["info", "--backend", "wgpu"])
            .env("GEMMA_CYBER_WGPU_ADAPTER", adapter)
            .output()
            .unwrap()
    };
    let missing = run("no-such-adapter-xyz");
    assert_eq!(missing.status.code(), Some(16), "backend unavailable");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("no-such-adapter-xyz"), "{stderr}");

    let found = run("");
    assert!(found.status.success(), "{HOW_TO_GET_AN_ADAPTER}");
    let stdout = String::from_utf8_lossy(&found.stdout);
    assert!(
        stdout.contains("device:      wgpu 0.1.0: wgpu: "),
        "{stdout}"
    );
    // The adapter's first word, with the spaces a shell script may leave: trimmed, as settings
    // are (before, " llvmpipe" found no adapter).
    let word = stdout
        .split("wgpu: ")
        .nth(1)
        .and_then(|name| name.split_whitespace().next())
        .expect("an adapter name");
    let padded = run(&format!(" {word} "));
    assert!(
        padded.status.success(),
        "{}",
        String::from_utf8_lossy(&padded.stderr)
    );
}

#[test]
fn a_timeout_of_zero_is_refused_at_create() {
    // Every call would time out: create must say so rather than succeed.
    let options = Options {
        plugin_settings: vec!["wgpu.timeout_ms=0".into()],
        ..wgpu_options(&root().join("models/default.safetensors"))
    };
    let error = Classifier::new(&options).err().expect("refused");
    assert_eq!(error.status(), Status::BackendUnavailable, "{error}");
    assert!(error.message().contains("timeout_ms"), "{error}");
}

#[test]
fn a_row_whose_first_value_is_an_outlier_keeps_its_precision() {
    // LayerNorm alone into one output of 4,097 positive weights, which adds the normalised row's
    // rounding coherently: a LayerNorm taking values relative to the row's first value (as this
    // shader once did) was 1e-3 off on a row of zeros after one value of 7.1.
    let dim = 4097;
    let weights: Vec<f32> = common::random_embeddings(1, dim, 3)
        .iter()
        .map(|v| (v + 1.0) * 0.025)
        .collect();
    // A row of one value and zeros normalises to sqrt(dim - 1) and -1 / sqrt(dim - 1) whatever the
    // value: the bias puts its logit at 0, where the sigmoid shows every error in full.
    let root = ((dim - 1) as f64).sqrt();
    let rest: f64 = weights[1..].iter().map(|&w| f64::from(w)).sum();
    let bias = (rest / root - f64::from(weights[0]) * root) as f32;
    let tensors = [
        common::Tensor::f32("input_norm.weight", &[dim], &vec![1.0; dim]),
        common::Tensor::f32("input_norm.bias", &[dim], &vec![0.0; dim]),
        common::Tensor::f32("output.weight", &[1, dim], &weights),
        common::Tensor::f32("output.bias", &[1], &[bias]),
    ];
    let bytes = common::write_model(&tensors, &Default::default());
    let mut rows = vec![0.0f32; 4 * dim];
    for (row, first) in [1000.3f32, 30000.7, 7.1, -3.0].iter().enumerate() {
        rows[row * dim] = *first;
    }
    let classify = |backend| {
        let classifier = Classifier::new(&Options {
            backend,
            model: ModelSource::Bytes(bytes.clone()),
            ..Options::default()
        })
        .unwrap();
        let mut probabilities = [0.0f32; 4];
        classifier
            .classify(&rows, dim, &mut probabilities, None)
            .unwrap();
        probabilities
    };
    let (cpu, wgpu) = (classify(BackendKind::Cpu), classify(BackendKind::Wgpu));
    for (c, w) in cpu.iter().zip(&wgpu) {
        assert!((c - w).abs() <= 1e-5, "cpu {cpu:?}, wgpu {wgpu:?}");
    }
}
