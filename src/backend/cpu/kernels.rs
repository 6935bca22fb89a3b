//! The cpu backend's matrix kernel: weights packed once at create into panels of `NR` outputs,
//! multiplied by a tile of input rows at a time in registers (`MR`, or `AVX512_TALL_ROWS`), with
//! bias and ReLU fused into the store.
//!
//! One kernel serves every batch size: a single row streams each weight once (the batch-1 case is
//! bound by reading 2.2 MB of weights), and larger batches reuse each loaded weight vector for
//! every row of a tile. Every output accumulates over the inputs in the same order whatever the
//! batch size, tile or thread split, so a row's probability does not depend on what it was batched
//! with. The AVX2 and AVX-512 kernels do the same fused multiply-adds in the same order, so they
//! agree bit for bit.

use crate::error::{Error, Result};
use crate::model::Dense;

/// Outputs per panel: two 8-lane AVX registers, or one 16-lane AVX-512 register.
const NR: usize = 16;
/// Rows per register tile: 6 × 2 accumulators + 2 weight vectors + 1 broadcast = 15 of the 16
/// AVX registers.
pub(super) const MR: usize = 6;
/// Panels the AVX-512 kernel multiplies together: 6 rows × 4 panels = 24 accumulators, 4 weight
/// vectors and a broadcast in the 32 AVX-512 registers, so each loaded weight serves 6 rows and
/// each broadcast 64 outputs.
const AVX512_PANELS: usize = 4;
/// Rows per register tile of the AVX-512 kernel where a batch has that many: 12 rows × 2 panels
/// are 24 accumulators too, but each loaded weight serves 12 rows, which halves the weights read
/// from L2 per multiply-add (a group of panels, 196 KB, does not fit in L1). The group stays 4
/// panels, done as two halves. One thread on the AVX-512 Xeon, medians of three alternating runs:
/// +2 % at 256 rows, +1–2 % at 4,096 and 65,536; `fma_peak`'s paired share of the peak went from
/// 85–87 % to 87–88.5 %.
const AVX512_TALL_ROWS: usize = 2 * MR;
/// Rows × panels in the largest tile: the rows of `NR` floats a tile may need in scratch.
const MAX_TILE: usize = AVX512_TALL_ROWS * AVX512_PANELS;

/// Runs `$step` with `$i` bound to each input index `0..$k` in order, eight to a loop iteration
/// (and `$every_eight` after each such iteration, where given).
/// A loop that steps one input at a time spends ~7 instructions of its own (counter, addresses,
/// branch) beside the 20 of an AVX2 step (2 weight loads, 6 broadcasts, 12 fused multiply-adds).
/// On an idle core that costs nothing, but when the core's other hardware thread is busy the two
/// share its instruction throughput, and the extra instructions slow the FMAs. Unrolled, calls of
/// 256 and 1,024 rows on one thread of the shared AVX2 EPYC went from 0.84–0.91× ONNX Runtime to
/// 0.99–1.08× by median (calls of the two taken in turn), with best calls unchanged. The order of
/// the sums is the same.
macro_rules! for_each_input {
    ($k:expr, |$i:ident| $step:block) => {
        for_each_input!($k, {}, |$i| $step)
    };
    ($k:expr, $every_eight:block, |$i:ident| $step:block) => {{
        let k: usize = $k;
        let unrolled = k - k % 8;
        let mut first = 0;
        while first < unrolled {
            for_each_input!(@steps first, $i, $step, 0 1 2 3 4 5 6 7);
            $every_eight
            first += 8;
        }
        for $i in unrolled..k $step
    }};
    (@steps $first:ident, $i:ident, $step:block, $($offset:literal)*) => {
        $({
            let $i = $first + $offset;
            $step
        })*
    };
}

/// Cache lines the AVX-512 kernel asks L2 for while it runs, one every eight inputs: the next
/// block's input, read in early (see `CpuBackend::forward_with`). Its first read from L3 or memory
/// was most of LayerNorm's time, 5–6 % of a call. Spread out, the reads hide behind the kernel's
/// arithmetic; asked for in bursts before each tile instead, they cost the layer as much time as
/// they saved LayerNorm (timed stage by stage on the AVX-512 Xeon,
/// `docs/bench/xeon/tried_2026-12-06c.txt`). A prefetch changes no result.
pub(super) struct Prefetch {
    /// The next line to ask for; never read through.
    next: *const f32,
    /// Lines still to ask for.
    lines: usize,
}

impl Prefetch {
    /// Nothing to ask for.
    pub(super) fn none() -> Prefetch {
        Prefetch {
            next: std::ptr::null(),
            lines: 0,
        }
    }

    /// Every cache line of `values`.
    pub(super) fn of(values: &[f32]) -> Prefetch {
        Prefetch {
            next: values.as_ptr(),
            lines: values.len().div_ceil(CACHE_LINE_FLOATS),
        }
    }

    /// The next line's address, if any is left.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    fn take_line(&mut self) -> Option<*const f32> {
        if self.lines == 0 {
            return None;
        }
        let line = self.next;
        // Within `values` while lines are left; `wrapping_add`, as the last step may pass its end.
        self.next = self.next.wrapping_add(CACHE_LINE_FLOATS);
        self.lines -= 1;
        Some(line)
    }

    /// Asks for the next line to be brought into L2 (not L1, which holds the kernel's own rows).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn next_line(&mut self) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        if let Some(line) = self.take_line() {
            // SAFETY: a prefetch reads nothing the program sees and cannot fault.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(line.cast()) };
        }
    }
}

/// Which instruction set the kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernel {
    /// Plain Rust that any CPU runs (the compiler vectorises it for the baseline target).
    Portable,
    /// x86-64 AVX2 with FMA, chosen at run time when the CPU has both.
    Avx2Fma,
    /// x86-64 AVX-512 F (512-bit fused multiply-adds), chosen at run time when the CPU has it.
    Avx512,
}

impl CpuKernel {
    /// Every kernel, narrowest first. (A function, not an associated constant: cbindgen would
    /// put the type of a constant into the C header.)
    pub fn all() -> [CpuKernel; 3] {
        [CpuKernel::Portable, CpuKernel::Avx2Fma, CpuKernel::Avx512]
    }

    /// The best kernel this CPU supports: the widest it runs.
    pub fn detect() -> CpuKernel {
        CpuKernel::all()
            .into_iter()
            .rev()
            .find(|kernel| kernel.is_supported())
            .unwrap_or(CpuKernel::Portable)
    }

    /// The kernel a cpu backend runs: the one `GEMMA_CYBER_CPU_KERNEL` (`portable`, `avx2`,
    /// `avx512`) names, or the [best](Self::detect) where it is unset, empty or `auto`.
    pub fn chosen() -> Result<CpuKernel> {
        match std::env::var("GEMMA_CYBER_CPU_KERNEL").ok().as_deref() {
            None | Some("") | Some("auto") => Ok(CpuKernel::detect()),
            Some(name) => CpuKernel::from_name(name).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "GEMMA_CYBER_CPU_KERNEL is {name:?}; expected auto, portable, avx2 or avx512"
                ))
            }),
        }
    }

    /// The kernel of this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<CpuKernel> {
        CpuKernel::all()
            .into_iter()
            .find(|kernel| kernel.name() == name)
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            CpuKernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx2Fma => {
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
            }
            // AVX2 too, which every AVX-512 CPU has: the AVX-512 kernel's ReLU and the
            // backend's LayerNorm use it.
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 => {
                is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Name used in device names and by `GEMMA_CYBER_CPU_KERNEL`: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernel::Portable => "portable",
            CpuKernel::Avx2Fma => "avx2",
            CpuKernel::Avx512 => "avx512",
        }
    }

    /// Rows per register tile for a batch of `rows` (the last tile may have fewer).
    pub(super) fn tile_rows(self, rows: usize) -> usize {
        match self {
            CpuKernel::Avx512 if rows >= AVX512_TALL_ROWS => AVX512_TALL_ROWS,
            _ => MR,
        }
    }

    /// Panels multiplied together for a batch of `rows`. With AVX2, one or two rows leave the FMA
    /// units waiting on a short dependency chain, so several panels give them independent
    /// accumulators; AVX-512 has registers for four panels at every height. Grouping never
    /// changes any sum's order.
    pub(super) fn panel_group(self, rows: usize) -> usize {
        match (self, rows) {
            (CpuKernel::Avx512, _) => AVX512_PANELS,
            (_, 1) => 4,
            (_, 2) => 2,
            _ => 1,
        }
    }
}

/// A dense layer with its weights laid out for the kernel: panel `p` holds outputs
/// `p*NR .. p*NR+NR` as `inputs` consecutive groups of `NR` weights (zero-padded past `outputs`).
pub(super) struct PackedDense {
    inputs: usize,
    outputs: usize,
    relu: bool,
    weight: CacheAligned,
    bias: CacheAligned,
}

/// Bytes in a cache line of current x86 and ARM cores.
const CACHE_LINE: usize = 64;
/// Floats in a cache line: what the cpu backend's prefetches step by.
pub(super) const CACHE_LINE_FLOATS: usize = CACHE_LINE / size_of::<f32>();

/// Zero-initialised floats that start on a cache line. A panel's row of weights is `NR` floats,
/// one cache line, so every weight load of the AVX-512 kernel, and every pair of the AVX2 kernel,
/// then reads exactly one line. The allocator only promises 16 bytes (glibc puts a large block 16
/// bytes past a page boundary), where every AVX-512 weight load and half the AVX2 ones straddle
/// two lines. On the AVX2 EPYC that made no measurable difference; Intel cores split such loads
/// at a cost.
struct CacheAligned {
    storage: Vec<f32>,
    start: usize,
    len: usize,
}

impl CacheAligned {
    /// `None` when the memory cannot be had.
    fn zeros(len: usize) -> Option<CacheAligned> {
        let slack = CACHE_LINE_FLOATS - 1;
        let mut storage = Vec::new();
        storage.try_reserve_exact(len.checked_add(slack)?).ok()?;
        storage.resize(len + slack, 0.0);
        // `align_offset` may decline (usize::MAX); the floats are then merely unaligned.
        let start = storage.as_ptr().align_offset(CACHE_LINE).min(slack);
        Some(CacheAligned {
            storage,
            start,
            len,
        })
    }
}

impl std::ops::Deref for CacheAligned {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for CacheAligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

impl PackedDense {
    /// The layer packed into panels; `None` when the memory cannot be had (a model too large for
    /// this machine is an error at create, not an abort).
    pub(super) fn new(layer: &Dense) -> Option<PackedDense> {
        let (k, n) = (layer.inputs, layer.outputs);
        let panels = n.div_ceil(NR);
        let mut weight = CacheAligned::zeros(panels.checked_mul(k)?.checked_mul(NR)?)?;
        let mut bias = CacheAligned::zeros(panels * NR)?;
        for (o, row) in layer.weight.chunks_exact(k).enumerate() {
            let (panel, lane) = (o / NR, o % NR);
            for (i, &w) in row.iter().enumerate() {
                weight[(panel * k + i) * NR + lane] = w;
            }
            bias[o] = layer.bias[o];
        }
        Some(PackedDense {
            inputs: k,
            outputs: n,
            relu: layer.relu,
            weight,
            bias,
        })
    }

    pub(super) fn inputs(&self) -> usize {
        self.inputs
    }

    pub(super) fn outputs(&self) -> usize {
        self.outputs
    }

    /// Panels of `NR` outputs.
    pub(super) fn panels(&self) -> usize {
        self.outputs.div_ceil(NR)
    }

    /// `output[r][o] = relu?(weight[o] · input[r] + bias[o])` for every row of `input`, asking for
    /// lines of `prefetch` as it goes.
    pub(super) fn forward(
        &self,
        kernel: CpuKernel,
        input: &[f32],
        output: &mut [f32],
        prefetch: &mut Prefetch,
    ) {
        assert_eq!(output.len(), input.len() / self.inputs * self.outputs);
        // SAFETY: `output` is borrowed exclusively and holds every output of every row.
        unsafe {
            self.forward_panels(
                kernel,
                input,
                output.as_mut_ptr(),
                0..self.panels(),
                prefetch,
            )
        }
    }

    /// [`forward`](Self::forward) for the outputs of `panels` only (asking for lines of `prefetch`
    /// as it goes), written through `output`
    /// (rows × outputs floats, row-major). Several threads may each write their own panels of the
    /// same output at once; each output's sum runs over the inputs in the same order whichever
    /// panels are taken together.
    ///
    /// # Safety
    /// `output` must be valid for writes of `input.len() / inputs * outputs` floats, and nothing may
    /// read or write the columns of `panels` during the call.
    pub(super) unsafe fn forward_panels(
        &self,
        kernel: CpuKernel,
        input: &[f32],
        output: *mut f32,
        panels: std::ops::Range<usize>,
        prefetch: &mut Prefetch,
    ) {
        let (k, n) = (self.inputs, self.outputs);
        let rows = input.len() / k;
        assert!(panels.end <= self.panels());
        let group = kernel.panel_group(rows);
        // A tile of a group that ends in a partial panel goes here first, then its valid columns
        // to `output`; reused, and never zeroed (each kernel call overwrites what it fills, and
        // only that is read: zeroing a fresh one for every tile showed as 1 % of a profile).
        let mut scratch = [[0.0f32; NR]; MAX_TILE];
        let mut first = panels.start;
        // Panels outside, rows inside: a panel's weights (k × NR floats) stay in cache while every
        // row of the block passes over them.
        while first < panels.end {
            let count = if panels.end - first >= group {
                group
            } else {
                1
            };
            let weights = &self.weight[first * k * NR..(first + count) * k * NR];
            let bias = &self.bias[first * NR..(first + count) * NR];
            let step = kernel.tile_rows(rows);
            for r0 in (0..rows).step_by(step) {
                let tile_rows = step.min(rows - r0);
                let rows_input = &input[r0 * k..(r0 + tile_rows) * k];
                // Whole panels: the kernel stores straight into `output` (a copy through
                // `scratch` took ~2 % of a call).
                let whole = (first + count) * NR <= n;
                let out = if whole {
                    TileOut {
                        // SAFETY: row `r0` < rows and column `first * NR` < n lie in `output`
                        // (caller's contract).
                        ptr: unsafe { output.add(r0 * n + first * NR) },
                        stride: n,
                    }
                } else {
                    TileOut {
                        ptr: scratch.as_mut_ptr().cast(),
                        stride: count * NR,
                    }
                };
                // SAFETY: for whole panels, rows `r0..r0 + tile_rows` < rows and columns
                // `first * NR..(first + count) * NR` ≤ n lie in `output` (caller's contract), in
                // our panels; otherwise `scratch` holds MAX_TILE ≥ tile_rows × count rows of NR
                // floats, at `r * count * NR + p * NR`, and is ours alone.
                unsafe {
                    kernel.tile(
                        tile_rows, count, rows_input, k, weights, bias, self.relu, out, prefetch,
                    );
                }
                if whole {
                    continue;
                }
                for r in 0..tile_rows {
                    for p in 0..count {
                        let start = (first + p) * NR;
                        let lanes = NR.min(n - start);
                        // SAFETY: row `r0 + r` < rows and columns `start..start + lanes` ≤ n lie
                        // in `output` (caller's contract), in panel `first + p`, which is ours.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                scratch[r * count + p].as_ptr(),
                                output.add((r0 + r) * n + start),
                                lanes,
                            );
                        }
                    }
                }
            }
            first += count;
        }
    }
}

/// One register tile of a large batch's rows multiplied by one group of panels, pass after pass on
/// the same data, which stays in cache: the kernel's own speed, apart from the memory traffic of a
/// real call (LayerNorm's first read of the input, the weights streamed from L3 for every block).
/// `benches/fma_peak.rs` times it against the FMA peak; not for use beyond that.
#[doc(hidden)]
pub struct CacheResidentTile {
    kernel: CpuKernel,
    rows: usize,
    panels: usize,
    layer: PackedDense,
    input: Vec<f32>,
    output: Vec<f32>,
}

impl CacheResidentTile {
    /// The tile `kernel` uses for a large batch, `inputs` deep; `None` when the CPU lacks the
    /// kernel, `inputs` is 0 or the memory cannot be had.
    pub fn new(kernel: CpuKernel, inputs: usize) -> Option<CacheResidentTile> {
        if !kernel.is_supported() || inputs == 0 {
            return None;
        }
        let rows = kernel.tile_rows(usize::MAX);
        let panels = kernel.panel_group(usize::MAX);
        let layer = PackedDense::new(&patterned_layer(inputs, panels * NR, true))?;
        let input = (0..rows * inputs)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 16.0)
            .collect();
        Some(CacheResidentTile {
            kernel,
            rows,
            panels,
            layer,
            input,
            output: vec![0.0; rows * panels * NR],
        })
    }

    /// Floating-point operations in one pass (a fused multiply-add counts two).
    pub fn flops(&self) -> f64 {
        2.0 * (self.rows * self.panels * NR * self.layer.inputs) as f64
    }

    /// `passes` passes over the tile.
    pub fn run(&mut self, passes: usize) {
        let out = TileOut {
            ptr: self.output.as_mut_ptr(),
            stride: self.panels * NR,
        };
        for _ in 0..passes {
            // SAFETY: `new` checked that the CPU has the kernel; `output` holds `rows` rows of
            // `panels` panels of NR floats at that stride, and `&mut self` makes it ours alone.
            unsafe {
                self.kernel.tile(
                    self.rows,
                    self.panels,
                    std::hint::black_box(&self.input),
                    self.layer.inputs,
                    &self.layer.weight,
                    &self.layer.bias,
                    self.layer.relu,
                    out,
                    &mut Prefetch::none(),
                );
            }
        }
    }

    /// The last pass's outputs, `rows` × (`panels` × 16), row by row.
    pub fn output(&self) -> &[f32] {
        &self.output
    }
}

/// A layer of ordinary weights of either sign in a fixed pattern: what a [`CacheResidentTile`]
/// multiplies by, and the kernel tests' layer.
fn patterned_layer(inputs: usize, outputs: usize, relu: bool) -> Dense {
    Dense {
        inputs,
        outputs,
        weight: (0..inputs * outputs)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect(),
        bias: (0..outputs).map(|o| o as f32 / 10.0 - 1.0).collect(),
        relu,
    }
}

/// Where a kernel writes its tile: row `r` of panel `p` as the `NR` floats at
/// `ptr + r * stride + p * NR`.
#[derive(Clone, Copy)]
struct TileOut {
    ptr: *mut f32,
    stride: usize,
}

impl TileOut {
    /// The `NR` floats of row `r`, panel `p`.
    ///
    /// # Safety
    /// They must be valid for writes, and nothing else may access them while the slice lives.
    unsafe fn panel<'a>(self, r: usize, p: usize) -> &'a mut [f32; NR] {
        // SAFETY: the caller's contract.
        unsafe { &mut *self.ptr.add(r * self.stride + p * NR).cast::<[f32; NR]>() }
    }

    /// The same tile without its first `p` panels.
    ///
    /// # Safety
    /// Panel `p` of row 0 must lie in the tile.
    unsafe fn skip_panels(self, p: usize) -> TileOut {
        TileOut {
            // SAFETY: the caller's contract.
            ptr: unsafe { self.ptr.add(p * NR) },
            stride: self.stride,
        }
    }
}

impl CpuKernel {
    /// Row `r`, panel `p` of `out` = `relu?(Σ_i input[r][i] · weights[p][i][j] + bias[p * NR +
    /// j])` for `rows` rows of width `k` and `panels` consecutive panels (as
    /// [`panel_group`](Self::panel_group) picks, or one). The bias and ReLU are applied in
    /// registers: done afterwards one float at a time they took 6 % of a call. The AVX-512 kernel
    /// asks for lines of `prefetch` as it goes; the others leave it, for want of a measurement on
    /// their host (the AVX2 EPYC, with a quarter of the Xeon's L2 for the lines to wait in).
    ///
    /// # Safety
    /// Every row and panel of `out` must be valid for writes and ours alone during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        self,
        rows: usize,
        panels: usize,
        input: &[f32],
        k: usize,
        weights: &[f32],
        bias: &[f32],
        relu: bool,
        out: TileOut,
        prefetch: &mut Prefetch,
    ) {
        // Every kernel takes the same arguments; each arm names only its tile shape.
        macro_rules! dispatch {
            ($kernel:ident, $args:tt) => {
                match (rows, panels) {
                    (1, 4) => $kernel::<1, 4> $args,
                    (2, 2) => $kernel::<2, 2> $args,
                    (1, _) => $kernel::<1, 1> $args,
                    (2, _) => $kernel::<2, 1> $args,
                    (3, _) => $kernel::<3, 1> $args,
                    (4, _) => $kernel::<4, 1> $args,
                    (5, _) => $kernel::<5, 1> $args,
                    _ => $kernel::<6, 1> $args,
                }
            };
        }
        macro_rules! dispatch_avx512 {
            ($args:tt) => {
                match (rows, panels) {
                    (1, AVX512_PANELS) => tile_avx512::<1, AVX512_PANELS> $args,
                    (2, AVX512_PANELS) => tile_avx512::<2, AVX512_PANELS> $args,
                    (3, AVX512_PANELS) => tile_avx512::<3, AVX512_PANELS> $args,
                    (4, AVX512_PANELS) => tile_avx512::<4, AVX512_PANELS> $args,
                    (5, AVX512_PANELS) => tile_avx512::<5, AVX512_PANELS> $args,
                    (_, AVX512_PANELS) => tile_avx512::<6, AVX512_PANELS> $args,
                    (1, _) => tile_avx512::<1, 1> $args,
                    (2, _) => tile_avx512::<2, 1> $args,
                    (3, _) => tile_avx512::<3, 1> $args,
                    (4, _) => tile_avx512::<4, 1> $args,
                    (5, _) => tile_avx512::<5, 1> $args,
                    _ => tile_avx512::<6, 1> $args,
                }
            };
        }
        // Tiles of 7 to 12 rows, with 2 panels or 1.
        macro_rules! dispatch_avx512_tall {
            ($panels:expr, $args:tt) => {
                match rows {
                    7 => tile_avx512::<7, { $panels }> $args,
                    8 => tile_avx512::<8, { $panels }> $args,
                    9 => tile_avx512::<9, { $panels }> $args,
                    10 => tile_avx512::<10, { $panels }> $args,
                    11 => tile_avx512::<11, { $panels }> $args,
                    _ => tile_avx512::<12, { $panels }> $args,
                }
            };
        }
        match self {
            // SAFETY: Avx2Fma is only ever selected when the CPU reports AVX2 and FMA; the slice
            // lengths are checked inside, and `out` is the caller's contract.
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx2Fma => unsafe {
                dispatch!(tile_avx2_fma, (input, k, weights, bias, relu, out))
            },
            // SAFETY: Avx512 is only ever selected when the CPU reports AVX-512 F; the slice
            // lengths are checked inside, and `out` is the caller's contract.
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 if rows <= MR => unsafe {
                dispatch_avx512!((input, k, weights, bias, relu, out, prefetch))
            },
            // A tall tile has registers for half a group of panels at a time.
            // SAFETY: as above; the second half's weights, bias and outputs start `HALF` panels
            // in, within the group's.
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 if panels == AVX512_PANELS => unsafe {
                const HALF: usize = AVX512_PANELS / 2;
                for first in [0, HALF] {
                    let weights = &weights[first * k * NR..];
                    let bias = &bias[first * NR..];
                    let out = out.skip_panels(first);
                    dispatch_avx512_tall!(HALF, (input, k, weights, bias, relu, out, prefetch));
                }
            },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 => unsafe {
                dispatch_avx512_tall!(1, (input, k, weights, bias, relu, out, prefetch))
            },
            // SAFETY: `out` is the caller's contract.
            _ => unsafe { dispatch!(tile_portable, (input, k, weights, bias, relu, out)) },
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = prefetch; // only the AVX-512 kernel asks for lines
    }
}

/// # Safety
/// As [`CpuKernel::tile`].
unsafe fn tile_portable<const ROWS: usize, const PANELS: usize>(
    input: &[f32],
    k: usize,
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    out: TileOut,
) {
    assert!(input.len() >= ROWS * k && weights.len() >= PANELS * k * NR && ROWS * PANELS <= MR);
    assert!(bias.len() >= PANELS * NR);
    let mut acc = [[[0.0f32; NR]; PANELS]; ROWS];
    for i in 0..k {
        for (r, row) in acc.iter_mut().enumerate() {
            let x = input[r * k + i];
            for (p, sums) in row.iter_mut().enumerate() {
                let w = &weights[(p * k + i) * NR..][..NR];
                for (s, wj) in sums.iter_mut().zip(w) {
                    *s += x * wj;
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (p, sums) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            let out = unsafe { out.panel(r, p) };
            for ((y, s), b) in out.iter_mut().zip(sums).zip(&bias[p * NR..]) {
                let v = s + b;
                *y = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_fma<const ROWS: usize, const PANELS: usize>(
    input: &[f32],
    k: usize,
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    out: TileOut,
) {
    use std::arch::x86_64::*;
    assert!(input.len() >= ROWS * k && weights.len() >= PANELS * k * NR && ROWS * PANELS <= MR);
    assert!(bias.len() >= PANELS * NR);
    let (x, w) = (input.as_ptr(), weights.as_ptr());
    let mut acc = [[[_mm256_setzero_ps(); 2]; PANELS]; ROWS];
    for_each_input!(k, |i| {
        let mut wv = [[_mm256_setzero_ps(); 2]; PANELS];
        for (p, v) in wv.iter_mut().enumerate() {
            // SAFETY: `(p * k + i) * NR + 16 <= PANELS * k * NR <= weights.len()` (asserted above).
            unsafe {
                v[0] = _mm256_loadu_ps(w.add((p * k + i) * NR));
                v[1] = _mm256_loadu_ps(w.add((p * k + i) * NR + 8));
            }
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r * k + i < ROWS * k <= input.len()` (asserted above).
            let xi = _mm256_broadcast_ss(unsafe { &*x.add(r * k + i) });
            for (sums, v) in row.iter_mut().zip(&wv) {
                sums[0] = _mm256_fmadd_ps(xi, v[0], sums[0]);
                sums[1] = _mm256_fmadd_ps(xi, v[1], sums[1]);
            }
        }
    });
    // With `max(v, 0)`, a NaN sum gives 0, as `f32::max` does in the portable kernel.
    let zero = _mm256_setzero_ps();
    for (r, row) in acc.iter().enumerate() {
        for (p, sums) in row.iter().enumerate() {
            // SAFETY: `bias[p * NR..]` holds NR = 16 floats (asserted above), and row `r`, panel
            // `p` of `out` is 16 floats of ours (the caller's contract); each is read or written
            // as two vectors of 8.
            unsafe {
                let out = out.panel(r, p).as_mut_ptr();
                let b = bias.as_ptr().add(p * NR);
                let mut low = _mm256_add_ps(sums[0], _mm256_loadu_ps(b));
                let mut high = _mm256_add_ps(sums[1], _mm256_loadu_ps(b.add(8)));
                if relu {
                    low = _mm256_max_ps(low, zero);
                    high = _mm256_max_ps(high, zero);
                }
                _mm256_storeu_ps(out, low);
                _mm256_storeu_ps(out.add(8), high);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const ROWS: usize, const PANELS: usize>(
    input: &[f32],
    k: usize,
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    out: TileOut,
    prefetch: &mut Prefetch,
) {
    use std::arch::x86_64::*;
    assert!(
        input.len() >= ROWS * k && weights.len() >= PANELS * k * NR && ROWS * PANELS <= MAX_TILE
    );
    assert!(bias.len() >= PANELS * NR);
    let (x, w) = (input.as_ptr(), weights.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); PANELS]; ROWS];
    // Unrolled as the AVX2 kernel: fewer instructions per step of 24 fused multiply-adds. One
    // line asked for every eight steps (192 multiply-adds at most) spreads a block's input over
    // the layer after the first.
    for_each_input!(k, { prefetch.next_line() }, |i| {
        let mut wv = [_mm512_setzero_ps(); PANELS];
        for (p, v) in wv.iter_mut().enumerate() {
            // SAFETY: `(p * k + i) * NR + 16 <= PANELS * k * NR <= weights.len()` (asserted above).
            *v = unsafe { _mm512_loadu_ps(w.add((p * k + i) * NR)) };
        }
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: `r * k + i < ROWS * k <= input.len()` (asserted above).
            let xi = _mm512_set1_ps(unsafe { *x.add(r * k + i) });
            for (sum, v) in row.iter_mut().zip(&wv) {
                *sum = _mm512_fmadd_ps(xi, *v, *sum);
            }
        }
    });
    // The AVX2 kernel's bias and ReLU. The ReLU takes the sums' two halves through the AVX2
    // `max`: the same instruction on 8 lanes, and one Miri can run (it lacks the 16-lane one).
    let zero = _mm256_setzero_ps();
    for (r, row) in acc.iter().enumerate() {
        for (p, sum) in row.iter().enumerate() {
            // SAFETY: `bias[p * NR..]` holds NR = 16 floats (asserted above), and row `r`, panel
            // `p` of `out` is 16 floats of ours (the caller's contract): one 16-lane vector, or
            // two of 8.
            unsafe {
                let out = out.panel(r, p).as_mut_ptr();
                let v = _mm512_add_ps(*sum, _mm512_loadu_ps(bias.as_ptr().add(p * NR)));
                if relu {
                    let low = _mm512_castps512_ps256(v);
                    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
                    _mm256_storeu_ps(out, _mm256_max_ps(low, zero));
                    _mm256_storeu_ps(out.add(8), _mm256_max_ps(high, zero));
                } else {
                    _mm512_storeu_ps(out, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_weights_start_on_a_cache_line() {
        // The model's first layer is a block glibc maps on its own (16 bytes past a page); Miri
        // takes minutes to pack it, and has an allocator of its own anyway.
        let first_layer = if cfg!(miri) { (40, 33) } else { (768, 512) };
        for (inputs, outputs) in [first_layer, (128, 1), (3, 17)] {
            let packed = PackedDense::new(&patterned_layer(inputs, outputs, true)).unwrap();
            for values in [&*packed.weight, &*packed.bias] {
                assert_eq!(values.as_ptr() as usize % CACHE_LINE, 0);
            }
            assert_eq!(packed.weight.len(), outputs.div_ceil(NR) * inputs * NR);
        }
    }

    /// float64 `x · Wᵀ + b` for comparison.
    fn reference(input: &[f32], layer: &Dense) -> Vec<f64> {
        let mut out = Vec::new();
        for x in input.chunks_exact(layer.inputs) {
            for (w, b) in layer.weight.chunks_exact(layer.inputs).zip(&layer.bias) {
                let y = w
                    .iter()
                    .zip(x)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    + *b as f64;
                out.push(if layer.relu { y.max(0.0) } else { y });
            }
        }
        out
    }

    fn kernels() -> Vec<CpuKernel> {
        CpuKernel::all()
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    #[test]
    fn every_kernel_matches_float64_for_every_tile_height_and_ragged_panel() {
        for kernel in kernels() {
            // Output widths below, at and past one panel; row counts covering every tile height.
            // Miri interprets every instruction: keep the widths small there.
            let shapes: &[(usize, usize)] = if cfg!(miri) {
                &[(3, 17), (9, 2), (2, 70)]
            } else {
                &[(768, 5), (45, 16), (3, 17), (41, 1), (9, 40), (20, 70)]
            };
            // Past 12 rows, the AVX-512 kernel's tall tiles, then tails of 1, 7 and 11 rows.
            for &(inputs, outputs) in shapes {
                for rows in [1, 2, 3, 4, 5, 6, 7, 13, 19, 23] {
                    for relu in [false, true] {
                        let layer = patterned_layer(inputs, outputs, relu);
                        let input: Vec<f32> = (0..rows * inputs)
                            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
                            .collect();
                        let mut output = vec![f32::NAN; rows * outputs];
                        PackedDense::new(&layer).unwrap().forward(
                            kernel,
                            &input,
                            &mut output,
                            &mut Prefetch::none(),
                        );
                        for (got, want) in output.iter().zip(reference(&input, &layer)) {
                            assert!(
                                (*got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                                "{kernel:?} {inputs}x{outputs} rows {rows}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_cache_resident_tile_computes_the_layer() {
        // Shallow under Miri; the model's depths elsewhere.
        let depths: &[usize] = if cfg!(miri) { &[11] } else { &[11, 768] };
        for kernel in kernels() {
            for &inputs in depths {
                let mut tile = CacheResidentTile::new(kernel, inputs).unwrap();
                tile.run(2);
                let outputs = tile.panels * NR;
                let want = reference(&tile.input, &patterned_layer(inputs, outputs, true));
                assert_eq!(tile.output().len(), want.len());
                for (got, want) in tile.output().iter().zip(want) {
                    assert!(
                        (*got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{kernel:?} {inputs} deep: {got} vs {want}"
                    );
                }
                assert_eq!(tile.flops(), (2 * tile.rows * outputs * inputs) as f64);
            }
        }
        assert!(CacheResidentTile::new(CpuKernel::Portable, 0).is_none());
    }

    #[test]
    fn a_prefetch_asks_for_every_line_once_then_stops() {
        // Two whole lines and part of a third.
        let values = vec![0.0f32; 40];
        let mut prefetch = Prefetch::of(&values);
        let lines: Vec<_> = std::iter::from_fn(|| prefetch.take_line()).collect();
        let want: Vec<_> = (0..3)
            .map(|l| values[l * CACHE_LINE_FLOATS..].as_ptr())
            .collect();
        assert_eq!(lines, want);
        assert!(prefetch.take_line().is_none());
        assert!(Prefetch::none().take_line().is_none());
        assert!(Prefetch::of(&[]).take_line().is_none());
    }

    #[test]
    fn a_rows_result_does_not_depend_on_its_batch() {
        let layer = PackedDense::new(&patterned_layer(100, 33, true)).unwrap();
        for kernel in kernels() {
            let input: Vec<f32> = (0..11 * 100)
                .map(|i| ((i * 7 % 31) as f32 - 15.0) / 9.0)
                .collect();
            let mut batched = vec![0.0; 11 * 33];
            layer.forward(kernel, &input, &mut batched, &mut Prefetch::none());
            for (x, expected) in input.chunks_exact(100).zip(batched.chunks_exact(33)) {
                let mut single = vec![0.0; 33];
                layer.forward(kernel, x, &mut single, &mut Prefetch::none());
                assert_eq!(single, expected, "{kernel:?}");
            }
        }
    }

    #[test]
    fn avx2_and_avx512_kernels_agree_bit_for_bit() {
        // The same fused multiply-adds in the same order: only the register width differs.
        if !(CpuKernel::Avx2Fma.is_supported() && CpuKernel::Avx512.is_supported()) {
            return;
        }
        let shapes: &[(usize, usize)] = if cfg!(miri) {
            // 11 inputs: one unrolled pass of eight, then three single steps.
            &[(3, 70), (11, 17)]
        } else {
            &[(768, 70), (45, 16), (3, 17), (41, 1), (9, 130)]
        };
        for &(inputs, outputs) in shapes {
            let packed = PackedDense::new(&patterned_layer(inputs, outputs, true)).unwrap();
            for rows in [1, 2, 3, 6, 7, 13, 19, 24] {
                let input: Vec<f32> = (0..rows * inputs)
                    .map(|i| ((i * 11 % 23) as f32 - 11.0) / 7.0)
                    .collect();
                let mut avx2 = vec![f32::NAN; rows * outputs];
                let mut avx512 = vec![f32::NAN; rows * outputs];
                packed.forward(CpuKernel::Avx2Fma, &input, &mut avx2, &mut Prefetch::none());
                packed.forward(
                    CpuKernel::Avx512,
                    &input,
                    &mut avx512,
                    &mut Prefetch::none(),
                );
                assert_eq!(avx2, avx512, "{inputs}x{outputs}, {rows} rows");
            }
        }
    }
}
