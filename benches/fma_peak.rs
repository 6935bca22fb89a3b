//! One core's single-precision FMA peak, and what it means for this model: the most rows per
//! second any f32 implementation (ours, ONNX Runtime's MLAS, PyTorch's) can reach on one thread.
//!
//! `cargo bench --bench fma_peak` runs 12 independent chains of fused multiply-adds (enough to
//! cover the FMA latency on both FMA ports of current x86 cores) for about a second, five times, at
//! each vector width the CPU has: 256-bit (AVX2 + FMA) and 512-bit (AVX-512 F). It prints the best
//! rate of each and the model's ceiling at the widest one. Under `cargo test` (no `--bench`
//! argument) it only checks that it runs.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89: this benchmark, unlike the library, needs it.

use std::time::Instant;

use gemma_cyber::Model;

/// Independent accumulator chains: FMA latency (4 cycles) × 2 ports, with room to spare.
const CHAINS: usize = 12;

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let iterations = if smoke { 1_000 } else { 200_000_000 };
    let model = Model::builtin().expect("built-in model");
    // Multiply-adds per row: every dense layer's inputs × outputs (LayerNorm and biases are noise).
    let flops_per_row: f64 = model
        .layers()
        .iter()
        .map(|layer| 2.0 * (layer.inputs * layer.outputs) as f64)
        .sum();
    let mut widest = None;
    for width in [Width::Avx2, Width::Avx512] {
        match peak_gflops(width, iterations) {
            Some(gflops) => {
                println!(
                    "one core's {} peak: {gflops:.1} GFLOP/s (best of 5)",
                    width.name()
                );
                widest = Some((width, gflops));
            }
            None => println!("one core's {} peak: this CPU lacks it", width.name()),
        }
    }
    let Some((width, gflops)) = widest else {
        println!("nothing to measure on this CPU");
        return;
    };
    println!(
        "model: {:.3} MFLOP a row -> at most {:.0} rows/s on one thread ({})",
        flops_per_row / 1e6,
        gflops * 1e9 / flops_per_row,
        width.name()
    );
}

#[derive(Clone, Copy)]
enum Width {
    Avx2,
    Avx512,
}

impl Width {
    fn name(self) -> &'static str {
        match self {
            Width::Avx2 => "AVX2 + FMA (256-bit)",
            Width::Avx512 => "AVX-512 F (512-bit)",
        }
    }

    fn lanes(self) -> f64 {
        match self {
            Width::Avx2 => 8.0,
            Width::Avx512 => 16.0,
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn supported(self) -> bool {
        match self {
            Width::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            Width::Avx512 => is_x86_feature_detected!("avx512f"),
        }
    }

    /// Runs the chains; the caller has checked [`Width::supported`].
    #[cfg(target_arch = "x86_64")]
    fn run(self, iterations: u64) -> f32 {
        match self {
            // SAFETY: the CPU reports AVX2 and FMA.
            Width::Avx2 => unsafe { fma_chains_256(iterations) },
            // SAFETY: the CPU reports AVX-512 F.
            Width::Avx512 => unsafe { fma_chains_512(iterations) },
        }
    }
}

/// Best of five timings of `iterations` × [`CHAINS`] vector fused multiply-adds, in GFLOP/s;
/// `None` when the CPU lacks the instructions.
fn peak_gflops(width: Width, iterations: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if width.supported() {
        let mut best = 0.0f64;
        for _ in 0..5 {
            let start = Instant::now();
            let sink = width.run(iterations);
            let seconds = start.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            let flops = iterations as f64 * CHAINS as f64 * width.lanes() * 2.0;
            best = best.max(flops / seconds / 1e9);
        }
        return Some(best);
    }
    let _ = (width, iterations);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_chains_256(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_setzero_ps(); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_set1_ps(i as f32);
    }
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, b, c);
        }
    }
    // The first lane of each chain, so that no chain is dead code.
    acc.iter().map(|&a| _mm256_cvtss_f32(a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[clippy::msrv = "1.89"]
fn fma_chains_512(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_set1_ps(i as f32);
    }
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, b, c);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}
