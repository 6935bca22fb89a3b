//! Concurrency and lifetime stress on every backend: one classifier shared by 8 threads making
//! 10,000 calls each of mixed batch sizes, results bit-identical to single-threaded ones; and
//! create/classify/destroy churn from many threads without memory growth.
//!
//! `GEMMA_CYBER_STRESS_CALLS` changes the calls per thread (default 10,000; 1,500 on wgpu, whose
//! CI device is lavapipe, a software Vulkan about 50× slower per call than the cpu backend, where
//! 10,000 would take CI over eight minutes alone).

mod common;

use common::random_embeddings;
use gemma_cyber::{BackendKind, Classifier, Options};

const THREADS: usize = 8;

/// The two tests run one after the other: the memory check must not see the other's allocations.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const BATCHES: [usize; 6] = [1, 2, 3, 7, 16, 33];

fn calls_per_thread(backend: BackendKind) -> usize {
    let default = if backend == BackendKind::Wgpu {
        1_500
    } else {
        10_000
    };
    std::env::var("GEMMA_CYBER_STRESS_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn classifier(backend: BackendKind) -> Classifier {
    Classifier::new(&Options {
        backend,
        ..Options::default()
    })
    .unwrap_or_else(|e| {
        panic!(
            "the {} backend must be available for this test: {e}",
            backend.name()
        )
    })
}

/// Every backend; each of them must run here (the plugins are built beside the core).
fn backends() -> Vec<BackendKind> {
    vec![
        BackendKind::Cpu,
        BackendKind::Onnxruntime,
        BackendKind::Wgpu,
    ]
}

fn classify(classifier: &Classifier, inputs: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows];
    classifier
        .classify(&inputs[..rows * 768], 768, &mut out, None)
        .unwrap();
    out
}

#[test]
fn eight_threads_of_mixed_batches_match_single_threaded_results() {
    let _serial = serial();
    let inputs = random_embeddings(*BATCHES.iter().max().unwrap(), 768, 21);
    for backend in backends() {
        let calls = calls_per_thread(backend);
        let classifier = classifier(backend);
        let expected: Vec<Vec<f32>> = BATCHES
            .iter()
            .map(|&rows| classify(&classifier, &inputs, rows))
            .collect();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (classifier, inputs, expected) = (&classifier, &inputs, &expected);
                scope.spawn(move || {
                    for call in 0..calls {
                        let which = (call + t) % BATCHES.len();
                        let got = classify(classifier, inputs, BATCHES[which]);
                        assert!(
                            got == expected[which],
                            "{}: thread {t} call {call} differs",
                            backend.name()
                        );
                    }
                });
            }
        });
    }
}

/// Resident memory of this process in bytes.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn create_and_destroy_churn_does_not_grow_memory() {
    let _serial = serial();
    let inputs = random_embeddings(16, 768, 22);
    for backend in backends() {
        // Device creation dominates on wgpu; fewer rounds still show a per-classifier leak.
        let per_thread = if backend == BackendKind::Wgpu { 3 } else { 25 };
        let round = || {
            std::thread::scope(|scope| {
                for _ in 0..THREADS {
                    scope.spawn(|| {
                        for _ in 0..per_thread {
                            let c = classifier(backend);
                            assert_eq!(classify(&c, &inputs, 16).len(), 16);
                        }
                    });
                }
            })
        };
        // The first rounds settle allocator pools and one-time library state.
        round();
        round();
        let before = resident_bytes();
        for _ in 0..3 {
            round();
        }
        let growth = resident_bytes().saturating_sub(before);
        let created = 3 * THREADS * per_thread;
        // Each leaked classifier would hold its packed weights (over 2 MB); allow allocator noise.
        assert!(
            growth < 32 << 20,
            "{}: resident memory grew {growth} bytes over {created} classifiers",
            backend.name()
        );
    }
}
