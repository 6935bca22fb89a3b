//! Rows per second of the wgpu backend by batch size, against the cpu backend.
//!
//! `cargo bench -p gemma-cyber-wgpu --bench kernels` prints a Markdown table for docs/BENCHMARKS.md. "end to end" is one
//! `classify` call: upload, every kernel, read-back. "device" is the kernels alone (submit to
//! finish, no transfers), scaled to the whole batch when it runs in several chunks.
//!
//! Options (after `--`): `--min-rows N`, `--max-rows N` (batch sizes 1 … 65536 by default),
//! `--piece-rows N` (rows per submission when a call is split; default the library's),
//! `--budget-s S` (stop growing the batch once one call takes longer; default 20). Adapter choice as in the library
//! (`GEMMA_CYBER_WGPU_ADAPTER`, `GEMMA_CYBER_WGPU_BACKENDS`). Under `cargo test` (no `--bench`
//! argument) it only checks that it runs, on tiny batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gemma_cyber::backend::{Backend as _, CpuBackend};
use gemma_cyber::Model;
use gemma_cyber_plugin::Backend as _;
use gemma_cyber_wgpu::backend::{WgpuBackend, WgpuSettings};

const BATCHES: [usize; 9] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let value = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let max_rows = if smoke {
        4
    } else {
        value("--max-rows", 65536.0) as usize
    };
    let min_rows = value("--min-rows", 1.0) as usize;
    let budget = Duration::from_secs_f64(value("--budget-s", 20.0));
    let piece_rows = value("--piece-rows", 0.0) as usize;

    let model = Arc::new(Model::builtin().expect("built-in model"));
    let cpu = CpuBackend::new(&model, 0).expect("cpu backend");
    let view = model.plugin_view().expect("plugin view");
    let settings = WgpuSettings {
        piece_rows,
        ..WgpuSettings::default()
    }
    .with_env();
    let backend = WgpuBackend::new(&view, &settings).unwrap_or_else(|e| {
        panic!("{e}\n(install a Vulkan driver, e.g. tools/setup.sh for Mesa's lavapipe)")
    });
    let device = backend.device_name().to_string_lossy().into_owned();
    println!("adapter: {device}");
    println!(
        "software adapter: {}; chunk: {} rows; cpu reference: {}",
        backend.is_software(),
        backend.chunk_rows(),
        cpu.device_name()
    );
    println!();
    println!("| rows | end to end rows/s | device rows/s | device share | cpu rows/s | max abs diff vs cpu |");
    println!("|---:|---:|---:|---:|---:|---:|");

    let dim = model.input_dim();
    let batches = BATCHES
        .iter()
        .filter(|&&r| (min_rows..=max_rows).contains(&r));
    for &rows in batches {
        let input = random_rows(rows, dim);
        let mut wgpu_out = vec![0.0f32; rows];
        let mut cpu_out = vec![0.0f32; rows];
        let (seconds, _) = time(budget, smoke, || {
            backend.classify(&input, rows, &mut wgpu_out).expect("wgpu")
        });
        let device = device_seconds(&backend, rows);
        let (cpu_seconds, _) = time(budget, smoke, || {
            cpu.classify(&input, rows, &mut cpu_out).expect("cpu")
        });
        let diff = wgpu_out
            .iter()
            .zip(&cpu_out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "| {rows} | {:.0} | {:.0} | {:.0}% | {:.0} | {diff:.1e} |",
            rows as f64 / seconds,
            rows as f64 / device,
            100.0 * (device / seconds).min(1.0),
            rows as f64 / cpu_seconds,
        );
        if seconds > budget.as_secs_f64() {
            println!("| … | stopped: one call took {seconds:.1} s | | | | |");
            break;
        }
    }
}

/// Seconds per call of `run`: one warm-up call, then as many as fit in about a second (at least
/// one, at most 20); a single call longer than `budget` (or any, when `once`) is timed once.
fn time(budget: Duration, once: bool, mut run: impl FnMut()) -> (f64, usize) {
    let start = Instant::now();
    run();
    let first = start.elapsed();
    if first > budget || once {
        return (first.as_secs_f64(), 1);
    }
    let repeats = ((1.0 / first.as_secs_f64().max(1e-6)) as usize).clamp(1, 20);
    let start = Instant::now();
    for _ in 0..repeats {
        run();
    }
    (start.elapsed().as_secs_f64() / repeats as f64, repeats)
}

/// The kernels' time for a whole batch of `rows`: full chunks plus the remainder.
fn device_seconds(backend: &WgpuBackend, rows: usize) -> f64 {
    let chunk = backend.chunk_rows();
    let full = rows / chunk;
    let rest = rows % chunk;
    let repeats = if rows >= 4096 { 1 } else { 5 };
    let mut seconds = 0.0;
    if full > 0 {
        seconds += full as f64 * backend.device_seconds(chunk, repeats).expect("device");
    }
    if rest > 0 {
        seconds += backend.device_seconds(rest, repeats).expect("device");
    }
    seconds
}

/// Deterministic embeddings of roughly unit scale.
fn random_rows(rows: usize, dim: usize) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..rows * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}
