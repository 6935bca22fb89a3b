//! One core's single-precision FMA peak, and what it means for this model: the most rows per
//! second any f32 implementation (ours, ONNX Runtime's MLAS, PyTorch's) can reach on one thread.
//!
//! `cargo bench --bench fma_peak` runs 12 independent chains of fused multiply-adds (enough to
//! cover the FMA latency on both FMA ports of current x86 cores) for about a second, five times, at
//! each vector width the CPU has: 256-bit (AVX2 + FMA) and 512-bit (AVX-512 F). It prints the best
//! rate of each and the model's ceiling at the widest one, and, where the CPU has AVX512_BF16, the
//! rate of its bf16 dot products (the ceiling of a reduced-precision kernel, which the cpu backend
//! does not have). Then it measures the cpu backend's share
//! of the ceiling at its kernel's width on one thread (the widest, or AVX2's under
//! `GEMMA_CYBER_CPU_KERNEL=avx2`, as on a host without AVX-512), paired: each window of 65,536 rows (in calls of 256 to 65,536
//! rows, from an input too large for any cache, as when scoring a shard) follows an FMA window of
//! the same FLOPs, so the share is the one window's time over the other's, and a busy spell of a
//! shared host weighs on both. Last, each kernel the CPU has against its own width's peak, on
//! data that stays in cache: one register tile of rows multiplied by one group of weight panels,
//! pass after pass, at the depth of each of the model's layers, in the same paired windows (about
//! 0.1 s each). The gap between that and the share of a real call is the memory traffic's (the
//! input's first read, the weights streamed from L3 for every block of rows), not the kernel's.
//! Under `cargo test` (no `--bench` argument) it only checks that it runs.
//!
//! The AVX-512 intrinsics are stable since Rust 1.89: this benchmark, unlike the library, needs it.

use std::time::Instant;

use gemma_cyber::backend::{CacheResidentTile, CpuKernel};
use gemma_cyber::{BackendKind, Classifier, Model, Options};

/// Independent accumulator chains: FMA latency (4 cycles) × 2 ports, with room to spare.
const CHAINS: usize = 12;

/// Rows in one paired window of the cpu backend: 192 MiB of input, far beyond any cache.
const SHARE_ROWS: usize = 65_536;
/// Batch sizes of the calls a paired window is made of.
const SHARE_BATCHES: [usize; 4] = [256, 1024, 4096, 65_536];
/// Pairs of windows per batch size.
const SHARE_ROUNDS: usize = 5;
/// Pairs of windows per layer depth for the kernel on cache-resident data.
const KERNEL_ROUNDS: usize = 9;
/// Seconds of one such window at the peak.
const KERNEL_WINDOW_S: f64 = 0.1;

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
    let mut peaks = Vec::new();
    for width in [Width::Avx2, Width::Avx512] {
        match peak_gflops(width, iterations) {
            Some(gflops) => {
                println!(
                    "one core's {} peak: {gflops:.1} GFLOP/s (best of 5)",
                    width.name()
                );
                widest = Some((width, gflops));
                peaks.push((width, gflops));
            }
            None => println!("one core's {} peak: this CPU lacks it", width.name()),
        }
    }
    match bf16_dot_peak_gflops(iterations) {
        Some(gflops) => println!(
            "one core's AVX-512 BF16 dot-product peak: {gflops:.1} GFLOP/s (best of 5; bf16 \
             products summed in f32, which the cpu backend does not use: what a reduced-precision \
             kernel could reach at most)"
        ),
        None => println!("one core's AVX-512 BF16 dot-product peak: this CPU lacks it"),
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
    #[cfg(target_arch = "x86_64")]
    {
        // The cpu backend's share is of its own kernel's width: with `GEMMA_CYBER_CPU_KERNEL=avx2`
        // on an AVX-512 host, that of the AVX2 peak, as on a host that has no more.
        let kernel = CpuKernel::chosen().expect("GEMMA_CYBER_CPU_KERNEL");
        let (width, gflops) = peaks
            .iter()
            .copied()
            .find(|(width, _)| Some(*width) == Width::of(kernel))
            .unwrap_or((width, gflops));
        share_of_peak(width, flops_per_row, gflops, smoke);
        let layers: Vec<(usize, f64)> = model
            .layers()
            .iter()
            .map(|layer| (layer.inputs, 2.0 * (layer.inputs * layer.outputs) as f64))
            .collect();
        for (width, gflops) in peaks {
            kernel_share(width, gflops, &layers, smoke);
        }
    }
}

/// Passes of the kernel over one cache-resident tile, as a share of `width`'s FMA peak, paired
/// with FMA windows as in [`share_of_peak`], at the depth of each of the model's layers. Beside
/// the share of a real call, this tells the kernel's own losses from those of the memory traffic.
#[cfg(target_arch = "x86_64")]
fn kernel_share(width: Width, peak_gflops: f64, layers: &[(usize, f64)], smoke: bool) {
    let kernel = match width {
        Width::Avx2 => CpuKernel::Avx2Fma,
        Width::Avx512 => CpuKernel::Avx512,
    };
    let rounds = if smoke { 1 } else { KERNEL_ROUNDS };
    println!(
        "the {} kernel on cache-resident data: one tile of a large batch's rows by one group of \
         panels, each window after an FMA window of the same FLOPs, {rounds} rounds",
        kernel.name(),
    );
    let total: f64 = layers.iter().map(|(_, flops)| flops).sum();
    let mut weighted = 0.0;
    for &(inputs, flops) in layers {
        let Some(mut tile) = CacheResidentTile::new(kernel, inputs) else {
            println!("    the {} kernel does not run on this CPU", kernel.name());
            return;
        };
        let passes = if smoke {
            10
        } else {
            (KERNEL_WINDOW_S * peak_gflops * 1e9 / tile.flops()).ceil() as usize
        };
        let iterations = width.iterations_for(passes as f64 * tile.flops());
        let mut shares = Vec::new();
        for _ in 0..rounds {
            let (fma_seconds, seconds) = paired_window(width, iterations, || tile.run(passes));
            shares.push(fma_seconds / seconds);
        }
        std::hint::black_box(tile.output());
        shares.sort_by(f64::total_cmp);
        let median = shares[shares.len() / 2];
        weighted += median * flops / total;
        println!(
            "    {inputs:>4} inputs deep, {passes} passes a window: median of pairs {:.1} % of \
             the peak, best {:.1} %",
            100.0 * median,
            100.0 * shares[shares.len() - 1]
        );
    }
    println!(
        "    weighted by the model's layers' multiply-adds: {:.1} % of the peak",
        100.0 * weighted
    );
}

/// Rows/s on one thread as a share of `width`'s FMA peak, each window paired with an FMA window of
/// equal FLOPs just before it (see the module's documentation): the cpu backend's, and ONNX
/// Runtime's through the onnxruntime plugin next to it where that loads, so that what a tuned GEMM
/// reaches in the same windows shows how much of the peak the host lets any code sustain.
#[cfg(target_arch = "x86_64")]
fn share_of_peak(width: Width, flops_per_row: f64, best_gflops: f64, smoke: bool) {
    let (rows, batches, rounds) = if smoke {
        (512, &SHARE_BATCHES[..1], 1)
    } else {
        (SHARE_ROWS, &SHARE_BATCHES[..], SHARE_ROUNDS)
    };
    let cpu = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        num_threads: 1,
        ..Options::default()
    })
    .expect("cpu classifier");
    let mut classifiers = vec![cpu];
    match Classifier::new(&Options {
        backend: BackendKind::Plugin,
        plugin_name: Some("onnxruntime".into()),
        num_threads: 1,
        ..Options::default()
    }) {
        Ok(onnxruntime) => classifiers.push(onnxruntime),
        Err(error) => println!("onnxruntime: not measured ({error})"),
    }
    let dim = classifiers[0].input_dim();
    let input = unit_rows(rows, dim);
    let mut probabilities = vec![0.0f32; rows];
    // At the peak, the FMA window takes exactly as long as the model's window.
    let iterations = width.iterations_for(rows as f64 * flops_per_row);
    println!(
        "share of the {} peak on one thread: windows of {rows} rows from a {} MiB input, each \
         after an FMA window of the same FLOPs, {rounds} rounds",
        width.name(),
        (input.len() * 4) >> 20,
    );
    // Per classifier and batch size: each pair's share, and the best window's rows/s.
    let mut shares = vec![vec![Vec::new(); batches.len()]; classifiers.len()];
    let mut best = vec![vec![0.0f64; batches.len()]; classifiers.len()];
    for round in 0..rounds {
        // Each round starts at another batch size, so none is always the first after a pause.
        for k in 0..batches.len() {
            let b = (round + k) % batches.len();
            for (c, classifier) in classifiers.iter().enumerate() {
                let (fma_seconds, seconds) = paired_window(width, iterations, || {
                    for (part, out) in input
                        .chunks(batches[b] * dim)
                        .zip(probabilities.chunks_mut(batches[b]))
                    {
                        classifier.classify(part, dim, out, None).expect("classify");
                    }
                });
                std::hint::black_box(&probabilities);
                shares[c][b].push(fma_seconds / seconds);
                best[c][b] = best[c][b].max(rows as f64 / seconds);
            }
        }
    }
    let best_rows_per_s = best_gflops * 1e9 / flops_per_row;
    for ((classifier, shares), best) in classifiers.iter().zip(&mut shares).zip(&best) {
        println!("  {}", classifier.device_name());
        for ((batch, shares), best) in batches.iter().zip(shares).zip(best) {
            shares.sort_by(f64::total_cmp);
            println!(
                "    batch {batch:>6}: median of pairs {:.1} % of the peak; best window {best:.0} \
                 rows/s, {:.1} % of the best peak",
                100.0 * shares[shares.len() / 2],
                100.0 * best / best_rows_per_s
            );
        }
    }
}

/// `rows` rows of `dim` values with unit norm, like sentence embeddings, from a fixed seed.
#[cfg(target_arch = "x86_64")]
fn unit_rows(rows: usize, dim: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut values: Vec<f32> = (0..rows * dim)
        .map(|_| {
            // xorshift64*: plenty for values whose only job is to be ordinary numbers.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            bits as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    for row in values.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    values
}

#[derive(Clone, Copy, PartialEq)]
enum Width {
    Avx2,
    Avx512,
}

impl Width {
    /// The width `kernel` computes in; `None` for the portable kernel, which the compiler
    /// vectorises for the baseline target.
    fn of(kernel: CpuKernel) -> Option<Width> {
        match kernel {
            CpuKernel::Portable => None,
            CpuKernel::Avx2Fma => Some(Width::Avx2),
            CpuKernel::Avx512 => Some(Width::Avx512),
        }
    }

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

    /// FLOPs of one iteration of the chains: a fused multiply-add (two) in every lane of each.
    fn flops_per_iteration(self) -> f64 {
        CHAINS as f64 * self.lanes() * 2.0
    }

    /// Iterations of the chains that do at least `flops`.
    fn iterations_for(self, flops: f64) -> u64 {
        (flops / self.flops_per_iteration()).ceil() as u64
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

/// Seconds of `iterations` of `width`'s FMA chains, then seconds of `work` just after: one pair of
/// windows, so that a busy spell of a shared host weighs on both.
#[cfg(target_arch = "x86_64")]
fn paired_window(width: Width, iterations: u64, work: impl FnOnce()) -> (f64, f64) {
    let start = Instant::now();
    time_fma(width, iterations);
    let fma_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    work();
    (fma_seconds, start.elapsed().as_secs_f64())
}

/// Runs the chains between two clock readings: both the count and the result pass through
/// `black_box`, so the compiler can move the pure computation neither before the first reading
/// nor after the second (inlined into two callers, it did: a "peak" of 10^9 GFLOP/s).
#[cfg(target_arch = "x86_64")]
fn time_fma(width: Width, iterations: u64) {
    std::hint::black_box(width.run(std::hint::black_box(iterations)));
}

/// Best of five timings of `iterations` × [`CHAINS`] vector fused multiply-adds, in GFLOP/s;
/// `None` when the CPU lacks the instructions.
fn peak_gflops(width: Width, iterations: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if width.supported() {
        let flops = iterations as f64 * width.flops_per_iteration();
        return Some(best_of_five_gflops(flops, || time_fma(width, iterations)));
    }
    let _ = (width, iterations);
    None
}

/// The best rate of five runs of `run`, each doing `flops`, in GFLOP/s.
#[cfg(target_arch = "x86_64")]
fn best_of_five_gflops(flops: f64, run: impl Fn()) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        run();
        best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Best of five timings of `iterations` × [`CHAINS`] AVX-512 BF16 dot products (`vdpbf16ps`:
/// in each of 16 lanes, two bf16 products added to an f32, four FLOPs), in GFLOP/s; `None` when
/// the CPU lacks AVX512_BF16. Beside the f32 peak, it says whether bf16 weights would pay on this
/// core: on Zen 4 one `vdpbf16ps` issues as often as one 512-bit FMA, so it does twice the FLOPs.
fn bf16_dot_peak_gflops(iterations: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f") {
        let flops = iterations as f64 * (CHAINS * 16 * 4) as f64;
        return Some(best_of_five_gflops(flops, || {
            // SAFETY: the CPU reports AVX-512 F and AVX512_BF16.
            std::hint::black_box(unsafe { bf16_dot_chains_512(std::hint::black_box(iterations)) });
        }));
    }
    let _ = iterations;
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[clippy::msrv = "1.89"]
fn bf16_dot_chains_512(iterations: u64) -> f32 {
    use std::arch::x86_64::*;
    // Every bf16 of both operands is 1.0 (0x3f80): each step adds 2.0 to every lane.
    // SAFETY: a vector of 32 bf16 values has the layout of one of 32 16-bit integers.
    let ones: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(0x3f80)) };
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_set1_ps(i as f32);
    }
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, ones, ones);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
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
