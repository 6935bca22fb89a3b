//! A lean build without the `onnxruntime` feature still builds, and asking it for ONNX Runtime is
//! BACKEND_UNAVAILABLE (AUTO then runs on cpu). Run by tools/test.sh with `--no-default-features`.
#![cfg(not(feature = "onnxruntime"))]

use gemma_cyber::{BackendKind, Classifier, Options, Status};

#[test]
fn onnxruntime_is_backend_unavailable_without_the_feature() {
    let options = Options {
        backend: BackendKind::Onnxruntime,
        ..Options::default()
    };
    let error = Classifier::new(&options)
        .err()
        .expect("no onnxruntime backend");
    assert_eq!(error.status(), Status::BackendUnavailable, "{error}");
    assert!(
        error.message().contains("not part of this build"),
        "{error}"
    );
    let auto = Classifier::new(&Options::default()).expect("AUTO falls back to cpu");
    assert_eq!(auto.backend(), BackendKind::Cpu);
}
