//! The wgpu backend's own machinery, driven directly (not through the core): chunks, pieces,
//! workspace reuse, timeouts and device loss, each checked against the cpu
//! backend. Run for real: in CI on Mesa's lavapipe (software Vulkan). No adapter is a failure that
//! says how to get one, never a skip. What every backend owes (golden sets, bad inputs,
//! concurrency, the C ABI) is in the core's tests/conformance.rs.

use std::time::{Duration, Instant};

use gemma_cyber::backend::{Backend as _, CpuBackend};
use gemma_cyber::Model;
use gemma_cyber_plugin::{Backend as _, Status};
use gemma_cyber_wgpu::backend::{WgpuBackend, WgpuSettings};

/// Every backend agrees with cpu (and the float64 reference) to this, absolute, on probabilities.
const TOLERANCE: f32 = 1e-5;

const HOW_TO_GET_AN_ADAPTER: &str = "the wgpu tests need a Vulkan adapter: run tools/setup.sh \
    (it installs Mesa's lavapipe, Debian package mesa-vulkan-drivers from bookworm-backports)";

fn builtin() -> Model {
    Model::builtin().expect("the built-in model loads")
}

fn wgpu_backend(model: &Model, max_chunk_rows: usize) -> WgpuBackend {
    wgpu_backend_with(
        model,
        &WgpuSettings {
            max_chunk_rows,
            ..WgpuSettings::default()
        },
    )
}

fn wgpu_backend_with(model: &Model, settings: &WgpuSettings) -> WgpuBackend {
    WgpuBackend::new(&model.plugin_view().unwrap(), settings)
        .unwrap_or_else(|e| panic!("{e}\n{HOW_TO_GET_AN_ADAPTER}"))
}

/// Deterministic rows with varied scale: unit-ish noise, large and tiny rows, a constant row.
fn random_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    (0..rows)
        .flat_map(|row| {
            let scale = [1.0, 100.0, 1e-3, 0.0][row % 4];
            let offset = if row % 4 == 3 { 0.25 } else { 0.0 };
            (0..dim)
                .map(|_| next() * scale + offset)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cpu_probabilities(model: &Model, input: &[f32]) -> Vec<f32> {
    let rows = input.len() / model.input_dim();
    let mut out = vec![0.0; rows];
    CpuBackend::new(model, 0)
        .unwrap()
        .classify(input, rows, &mut out)
        .unwrap();
    out
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let (row, error) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        error <= TOLERANCE,
        "{what}: row {row} differs by {error} (wgpu {}, reference {})",
        got[row],
        want[row]
    );
}

#[test]
fn batches_larger_than_a_chunk_are_split_and_match_cpu() {
    let model = builtin();
    // 1000 rows in chunks of 96: ten full chunks and a partial one.
    let backend = wgpu_backend(&model, 96);
    assert_eq!(backend.chunk_rows(), 96);
    let input = random_rows(1000, model.input_dim(), 42);
    let mut got = vec![f32::NAN; 1000];
    backend.classify(&input, 1000, &mut got).unwrap();
    assert_close("in chunks", &got, &cpu_probabilities(&model, &input));
}

#[test]
fn calls_split_in_pieces_overlap_and_match_cpu() {
    // 2,500 rows in pieces of at most 1,024: three pieces, alternating between two workspaces, the
    // last one short; the same rows again reuse both workspaces.
    let model = builtin();
    let backend = wgpu_backend_with(
        &model,
        &WgpuSettings {
            piece_rows: 1024,
            ..WgpuSettings::default()
        },
    );
    let input = random_rows(2500, model.input_dim(), 77);
    let want = cpu_probabilities(&model, &input);
    for round in 0..2 {
        let mut got = vec![f32::NAN; 2500];
        backend.classify(&input, 2500, &mut got).unwrap();
        assert_close(&format!("pieces, round {round}"), &got, &want);
    }
}

#[test]
fn buffers_are_reused_across_calls_of_different_sizes() {
    let model = builtin();
    let backend = wgpu_backend(&model, 0);
    // Growing, shrinking and growing again exercises both reuse and reallocation.
    for (seed, rows) in [3usize, 200, 5, 64, 300, 1].into_iter().enumerate() {
        let input = random_rows(rows, model.input_dim(), 100 + seed as u64);
        let mut got = vec![f32::NAN; rows];
        backend.classify(&input, rows, &mut got).unwrap();
        assert_close(
            &format!("{rows} rows"),
            &got,
            &cpu_probabilities(&model, &input),
        );
    }
}

#[test]
fn a_device_that_does_not_finish_in_time_is_backend_failure_not_a_hang() {
    let model = builtin();
    let settings = WgpuSettings {
        timeout: Duration::from_micros(1),
        ..WgpuSettings::default()
    };
    let backend = wgpu_backend_with(&model, &settings);
    let rows = 16384;
    let input = random_rows(rows, model.input_dim(), 3);
    let mut got = vec![-1.0f32; rows];
    let started = Instant::now();
    match backend.classify(&input, rows, &mut got) {
        // A device this fast is no failure.
        Ok(()) => assert_close("fast device", &got, &cpu_probabilities(&model, &input)),
        Err(error) => {
            assert_eq!(error.status(), Status::BackendFailure, "{error}");
            assert!(
                got.iter().all(|&p| p == -1.0),
                "a failed call wrote probabilities"
            );
        }
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_lost_device_is_backend_failure() {
    let model = builtin();
    let backend = wgpu_backend(&model, 0);
    let input = random_rows(2, model.input_dim(), 4);
    let mut got = vec![-1.0f32; 2];
    backend.classify(&input, 2, &mut got).unwrap();
    backend.lose_device_for_tests();
    got.fill(-1.0);
    let error = backend.classify(&input, 2, &mut got).unwrap_err();
    assert_eq!(error.status(), Status::BackendFailure, "{error}");
    assert!(error.message().contains("lost"), "{error}");
    assert_eq!(got, [-1.0; 2]);
}
