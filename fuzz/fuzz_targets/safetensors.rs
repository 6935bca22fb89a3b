//! Arbitrary bytes as a model file: loading either fails with MODEL_INVALID or gives a model that
//! classifies without panicking.
#![no_main]

use gemma_cyber::{BackendKind, Classifier, ModelSource, Options, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = Options {
        backend: BackendKind::Cpu,
        model: ModelSource::Bytes(data.to_vec()),
        num_threads: 1,
        ..Options::default()
    };
    match Classifier::new(&options) {
        Err(error) => assert_eq!(error.status(), Status::ModelInvalid, "{error}"),
        Ok(classifier) => {
            let dim = classifier.input_dim();
            let rows = 3;
            let embeddings: Vec<f32> = (0..rows * dim).map(|i| (i % 7) as f32 - 3.0).collect();
            let mut probabilities = vec![0.0; rows];
            classifier.classify(&embeddings, dim, &mut probabilities, None).unwrap();
            // Finite weights and inputs can still overflow to inf inside a wide layer; the sigmoid
            // of inf is 1, of -inf 0, and NaN only from inf - inf, so a probability is NaN or in [0, 1].
            assert!(probabilities.iter().all(|p| p.is_nan() || (0.0..=1.0).contains(p)));
        }
    }
});
