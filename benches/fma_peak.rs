//! One core's single-precision FMA peak, and what it means for this model: the most rows per
//! second any f32 implementation (ours, ONNX Runtime's MLAS, PyTorch's) can reach on one thread.
//!
//! `cargo bench --bench fma_peak` runs 12 independent chains of 8-lane fused multiply-adds (enough
//! to cover the FMA latency on both FMA ports of current x86 cores) for about a second, five times,
//! and prints the best rate. Under `cargo test` (no `--bench` argument) it only checks that it runs.

use std::time::Instant;

use gemma_cyber::Model;

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let model = Model::builtin().expect("built-in model");
    // Multiply-adds per row: every dense layer's inputs × outputs (LayerNorm and biases are noise).
    let flops_per_row: f64 = model
        .layers()
        .iter()
        .map(|layer| 2.0 * (layer.inputs * layer.outputs) as f64)
        .sum();
    let Some(gflops) = peak_gflops(if smoke { 1_000 } else { 200_000_000 }) else {
        println!("this CPU has no AVX2 + FMA; nothing to measure");
        return;
    };
    println!("one core's AVX2 + FMA peak: {gflops:.1} GFLOP/s (best of 5)");
    println!(
        "model: {:.3} MFLOP a row -> at most {:.0} rows/s on one thread",
        flops_per_row / 1e6,
        gflops * 1e9 / flops_per_row
    );
}

/// Best of five timings of `iterations` × 12 × 8 fused multiply-adds, in GFLOP/s.
fn peak_gflops(iterations: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let mut best = 0.0f64;
        for _ in 0..5 {
            let start = Instant::now();
            // SAFETY: the CPU reports AVX2 and FMA.
            let sink = unsafe { fma_chains(iterations) };
            let seconds = start.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            best = best.max(iterations as f64 * 12.0 * 8.0 * 2.0 / seconds / 1e9);
        }
        return Some(best);
    }
    let _ = iterations;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_setzero_ps(); 12];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(i as f32);
    }
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    let mut lanes = [0.0f32; 8];
    let mut sum = 0.0;
    for a in acc {
        // SAFETY: `lanes` holds the 8 floats written.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
        sum += lanes[0];
    }
    sum
}
