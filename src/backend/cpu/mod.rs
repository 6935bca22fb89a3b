//! The cpu backend: plain Rust, no system dependencies, the reference for the other backends.
//!
//! Weights are packed once at create for the register-tiled kernel in `kernels`; a call runs
//! blocks of rows through the layers. With more than one thread, the backend keeps worker threads
//! (`pool`): a large batch is shared out among them by rows, a small one (down to a single row) by
//! each layer's outputs.
//! Scratch buffers live per thread or in the pool, so a call does not allocate once warm.

mod kernels;
mod pool;

#[doc(hidden)]
pub use kernels::CacheResidentTile;
pub use kernels::CpuKernel;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Instant;

use super::{Backend, BackendKind};
use crate::classifier::{is_ordinary, LARGE};
use crate::error::{Error, Result};
use crate::model::Model;
use kernels::{PackedDense, Prefetch};
use pool::Workers;

/// Batches of fewer rows are shared out by each layer's outputs, larger ones by rows.
const SPLIT_BY_OUTPUTS_BELOW: usize = 128;

/// Rows a thread takes at a time when a batch is shared out by rows, at least: small chunks leave
/// little of a call waiting on a thread whose core was taken away. Two threads on the shared
/// 2-vCPU AVX2 EPYC, 1,024-row calls, medians of three alternating runs: 96k rows/s with chunks of
/// up to 192 rows, 107k with 64, 117k with 32. Where blocks are larger (a larger L2), a chunk is
/// half a block: each chunk streams every weight once, and on the quiet 2-vCPU Xeon with 2 MiB of
/// L2 per core, chunks of 96 or 192 rows gave 3–8 % more than 32 at 256 to 65,536 rows.
const SHARED_CHUNK_ROWS: usize = 32;

/// Rows run through the layers together where the L2 cache's size is unknown: enough to reuse each
/// weight panel many times (8 row tiles), few enough that the activations stay in a 512 KiB L2
/// beside the weights passing through.
const BLOCK_ROWS: usize = 48;

/// The largest block: past it, bigger blocks gave nothing on the Xeon's 2 MiB L2 (192, 288 and
/// 384 rows within 2 % of one another), and each thread's activation buffers grow with it.
const MAX_BLOCK_ROWS: usize = 384;

/// Rows run through the layers together, for a core with `l2_bytes` of L2 cache and rows whose
/// two activation buffers (the block's input and the widest layer's output) take `row_bytes`:
/// as many as fill half the L2, in whole register tiles, so that the activations stay there
/// while every weight passes through once per block. The weights (2.2 MB for the default model)
/// do not fit beside them, so every block streams them from L3 again: the larger the block, the
/// less weight traffic per row. One thread, medians of three alternating runs:
///
/// | host | L2 per core | block rows | 1,024 rows | 4,096 rows |
/// |---|---|---|---|---|
/// | AVX2 EPYC (best of five) | 512 KiB | 48 / 192 | 80.6k / 76.4k | 78.4k / 76.5k |
/// | AVX-512 Xeon | 2 MiB | 48 / 96 / 192 / 288 | 133k / 137k / 139k / 141k | 128k / 132k / 134k / 136k |
/// | AVX-512 EPYC (Zen 4) | 1 MiB | 48 / 102 / 204 / 384 | 100.3k / 100.0k / 99.2k / 98.3k | 100.1k / 99.5k / 98.1k / 97.4k |
///
/// The rule gives 48 rows for the AVX2 EPYC, 102 for the Zen 4 EPYC (whose L3 feeds the weights
/// fast enough that every size there is within 3 %) and 204 for the Xeon. A row's result does not
/// depend on the block it is in.
fn block_rows(l2_bytes: Option<usize>, row_bytes: usize) -> usize {
    let Some(l2_bytes) = l2_bytes else {
        return BLOCK_ROWS;
    };
    let rows = l2_bytes / 2 / row_bytes.max(1);
    (rows - rows % kernels::MR).clamp(kernels::MR, MAX_BLOCK_ROWS)
}

/// The size of one core's L2 cache, as the CPU reports it (CPUID leaf 0x8000_0006, which AMD and
/// Intel both fill in); `None` where it cannot be asked.
fn l2_cache_bytes() -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::__cpuid;
        if __cpuid(0x8000_0000).eax >= 0x8000_0006 {
            let kib = (__cpuid(0x8000_0006).ecx >> 16) as usize;
            return (kib > 0).then_some(kib * 1024);
        }
    }
    None
}

thread_local! {
    /// Two activation buffers per thread, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// Probabilities of a call that checks its input as it goes, kept until all of it is checked.
    static STAGED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs the folded model with packed weights, splitting large batches across threads.
pub struct CpuBackend {
    input_dim: usize,
    layer_norm_eps: f32,
    layers: Vec<PackedDense>,
    kernel: CpuKernel,
    threads: usize,
    device_name: String,
    /// Rows run through the layers together, at most ([`block_rows`]).
    block_rows: usize,
    /// Rows a thread takes at a time when a batch is shared out by rows.
    chunk_rows: usize,
    /// Started by the first call that shares its work; one call uses it at a time.
    pool: Mutex<Option<Pool>>,
}

/// Worker threads, and the activations of a batch shared out by outputs, kept across calls.
struct Pool {
    workers: Workers,
    /// The input of each layer and the last layer's output.
    activations: Vec<Vec<f32>>,
    /// `activations` as the threads of a call write them.
    pointers: Vec<SharedPtr>,
    /// Per layer: units of work taken and finished.
    progress: Vec<(AtomicUsize, AtomicUsize)>,
    /// When the last call shared out by outputs ended.
    last_end: Option<Instant>,
}

/// A buffer that several threads of one call write, each its own part.
#[derive(Clone, Copy)]
struct SharedPtr(*mut f32);

impl SharedPtr {
    /// The pointer (a method, so that closures capture the whole `SharedPtr`, which is `Sync`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: a `SharedPtr` is only written through in disjoint parts by the threads of one call, and
// read after the writes are complete (see `CpuBackend::run_split`).
unsafe impl Send for SharedPtr {}
// SAFETY: as above.
unsafe impl Sync for SharedPtr {}

impl CpuBackend {
    /// A cpu backend using up to `threads` threads per call (0: one per available core), with the
    /// [chosen](CpuKernel::chosen) kernel: the best this CPU supports, or the one
    /// `GEMMA_CYBER_CPU_KERNEL` names.
    pub fn new(model: &Model, threads: usize) -> Result<CpuBackend> {
        CpuBackend::with_kernel(model, threads, CpuKernel::chosen()?)
    }

    /// A cpu backend with a given kernel; BACKEND_UNAVAILABLE if this CPU lacks its instructions.
    pub fn with_kernel(model: &Model, threads: usize, kernel: CpuKernel) -> Result<CpuBackend> {
        if !kernel.is_supported() {
            return Err(Error::backend_unavailable(format!(
                "the {} cpu kernel needs instructions this CPU lacks",
                kernel.name()
            )));
        }
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let device_name = format!(
            "cpu: {} ({}), {} thread{}",
            std::env::consts::ARCH,
            kernel.name(),
            threads,
            if threads == 1 { "" } else { "s" }
        );
        let widest = model.layers().iter().map(|layer| layer.outputs).max();
        let row_bytes = (model.input_dim() + widest.unwrap_or(0)) * size_of::<f32>();
        let block_rows = block_rows(l2_cache_bytes(), row_bytes);
        Ok(CpuBackend {
            input_dim: model.input_dim(),
            layer_norm_eps: model.layer_norm_eps(),
            layers: model
                .layers()
                .iter()
                .map(PackedDense::new)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::backend_unavailable(
                        "not enough memory to lay out the model's weights for the cpu backend",
                    )
                })?,
            kernel,
            threads,
            device_name,
            block_rows,
            chunk_rows: (block_rows / 2).max(SHARED_CHUNK_ROWS),
            pool: Mutex::new(None),
        })
    }

    /// Probabilities for `output.len()` rows of `input`, block by block, on this thread. With
    /// `unusual`, each row is first checked to be [ordinary](is_ordinary): at the first that is
    /// not, `unusual` is set and the call stops there, as it does at its next block once another
    /// thread has set it.
    fn forward(&self, input: &[f32], output: &mut [f32], unusual: Option<&AtomicBool>) {
        let mut run = |(activations, next): &mut (Vec<f32>, Vec<f32>)| {
            self.forward_with(input, output, activations, next, unusual)
        };
        // A C caller may call from its thread's teardown, when the scratch buffers are gone:
        // then the call uses buffers of its own.
        if SCRATCH
            .try_with(|scratch| run(&mut scratch.borrow_mut()))
            .is_err()
        {
            run(&mut (Vec::new(), Vec::new()));
        }
    }

    /// Rows in each block of a call of `rows` rows: as few blocks as [`block_rows`] allows, of
    /// equal size in whole tiles (the last takes what is left). Only the first block's input is
    /// read with nothing to hide behind (the others' are prefetched during the block before, at
    /// a rate in step with that block's rows). One thread on the AVX-512 Xeon, best calls of four
    /// alternating runs: +0.7 % at 256 rows (blocks of 132 and 124 rather than 204 and 52) and
    /// +1.2 % at 1,024 (180 rather than 204).
    fn equal_block_rows(&self, rows: usize) -> usize {
        let blocks = rows.div_ceil(self.block_rows).max(1);
        rows.div_ceil(blocks)
            .next_multiple_of(self.kernel.tile_rows(usize::MAX))
            .clamp(1, self.block_rows)
    }

    fn forward_with(
        &self,
        input: &[f32],
        output: &mut [f32],
        activations: &mut Vec<f32>,
        next: &mut Vec<f32>,
        unusual: Option<&AtomicBool>,
    ) {
        let dim = self.input_dim;
        let block_rows = self.equal_block_rows(output.len());
        let block_len = block_rows * dim;
        let mut following_blocks = input.chunks(block_len).skip(1);
        for (block, out) in input.chunks(block_len).zip(output.chunks_mut(block_rows)) {
            // Each row is checked just before LayerNorm reads it: the check brings the row into
            // cache for LayerNorm, where a check of the whole input first reads a large batch
            // from memory twice, and on one thread while the others wait.
            let check = unusual.is_some();
            if unusual.is_some_and(|unusual| unusual.load(Ordering::Relaxed))
                || !layer_norm(
                    self.kernel,
                    block,
                    dim,
                    self.layer_norm_eps,
                    activations,
                    check,
                )
            {
                if let Some(unusual) = unusual {
                    unusual.store(true, Ordering::Relaxed);
                }
                return;
            }
            // The next block's input is asked into L2 during this block's layers after the first,
            // so that its LayerNorm finds it there. The first layer still reads this block's
            // input, which needs the room. One thread on the AVX-512 Xeon, medians of three
            // alternating runs: +2 % at 4,096 rows and +3 % at 65,536; LayerNorm went from 6.1 %
            // of a call to 3.6 %, and the second layer's share rose by 0.7 points.
            let following = following_blocks.next().unwrap_or_default();
            let mut prefetch = Prefetch::none();
            for (l, layer) in self.layers.iter().enumerate() {
                if l == 1 {
                    prefetch = Prefetch::of(following);
                }
                // Every output is written by the layer, so the buffer is only grown, never
                // cleared: zeroing a block's activations took ~2 % of a call.
                let len = out.len() * layer.outputs();
                if next.len() < len {
                    next.resize(len, 0.0);
                }
                let input = &activations[..out.len() * layer.inputs()];
                layer.forward(self.kernel, input, &mut next[..len], &mut prefetch);
                std::mem::swap(activations, next);
            }
            for (p, &logit) in out.iter_mut().zip(activations.iter()) {
                *p = sigmoid(logit);
            }
        }
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn device_name(&self) -> &str {
        &self.device_name
    }

    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        self.classify_into(embeddings, rows, probabilities, None);
        Ok(())
    }

    fn classify_unchecked(
        &self,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<bool> {
        self.classify_checking(embeddings, rows, probabilities)
    }
}

/// Probabilities a thread's `STAGED` keeps room for between calls: a larger call frees its room
/// when it ends, so a thread that once staged a million rows does not hold 4 MB for good (64
/// threads that each had made one such call kept 300 MB).
const STAGED_KEPT_ROWS: usize = 1 << 16;

impl CpuBackend {
    /// [`classify_unchecked`](Backend::classify_unchecked): false, with nothing written, if some
    /// value is not [ordinary](is_ordinary). Each row is checked as LayerNorm reads it, and the
    /// probabilities wait in this thread's `STAGED` until every row has passed.
    fn classify_checking(
        &self,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<bool> {
        let mut staged_run = |staged: &mut Vec<f32>| {
            // Fallibly: a call of hundreds of millions of rows must fail, not abort the process.
            staged.clear();
            staged.try_reserve_exact(rows).map_err(|_| {
                Error::backend_failure(format!(
                    "not enough memory to hold {rows} probabilities while the input is checked; \
                     pass fewer rows at a time"
                ))
            })?;
            staged.resize(rows, 0.0);
            let unusual = AtomicBool::new(false);
            self.classify_into(embeddings, rows, &mut staged[..rows], Some(&unusual));
            let ordinary = !unusual.load(Ordering::Relaxed);
            if ordinary {
                probabilities.copy_from_slice(&staged[..rows]);
            }
            if staged.capacity() > STAGED_KEPT_ROWS {
                *staged = Vec::new();
            }
            Ok(ordinary)
        };
        // In a thread's teardown, when `STAGED` is gone, the call uses a buffer of its own.
        STAGED
            .try_with(|staged| staged_run(&mut staged.borrow_mut()))
            .unwrap_or_else(|_| staged_run(&mut Vec::new()))
    }

    /// Probabilities for `rows` rows of `embeddings` into `output`, on this thread or shared out
    /// among the workers; with `unusual`, as [`forward`](Self::forward) checks them.
    fn classify_into(
        &self,
        embeddings: &[f32],
        rows: usize,
        output: &mut [f32],
        unusual: Option<&AtomicBool>,
    ) {
        // A thread in teardown (its thread-locals gone) works alone: starting the workers relies
        // on std's thread-locals of the calling thread, and such a call is a last flush anyway.
        let tearing_down = SCRATCH.try_with(|_| ()).is_err();
        if self.threads == 1 || rows == 0 || tearing_down {
            self.forward(embeddings, output, unusual);
            return;
        }
        // One call at a time has the workers; a concurrent call runs on its own thread, which is
        // all the cores can give it while the first call keeps them busy.
        let mut pool = match self.pool.try_lock() {
            Ok(pool) => pool,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                self.forward(embeddings, output, unusual);
                return;
            }
        };
        if pool.as_ref().is_some_and(|p| !p.workers.belong_here()) {
            // A child forked after the workers started: they exist only in the parent.
            *pool = None;
        }
        let pool = pool.get_or_insert_with(|| Pool {
            workers: Workers::start(self.threads - 1),
            activations: Vec::new(),
            pointers: Vec::new(),
            progress: Vec::new(),
            last_end: None,
        });
        if pool.workers.len() == 0 {
            self.forward(embeddings, output, unusual);
            return;
        }
        let panicked = if rows < SPLIT_BY_OUTPUTS_BELOW {
            self.classify_by_outputs(pool, embeddings, rows, output, unusual)
        } else {
            self.classify_by_rows(&mut pool.workers, embeddings, rows, output, unusual)
        };
        if panicked {
            panic!("a cpu worker thread panicked");
        }
    }

    /// Equal chunks of rows, each run through every layer by whichever thread takes it (each
    /// checked first, with `unusual`, as in [`forward`](Self::forward)); true if a worker
    /// panicked.
    fn classify_by_rows(
        &self,
        workers: &mut Workers,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
        unusual: Option<&AtomicBool>,
    ) -> bool {
        // Equal chunks of at most `chunk_rows`, as many as a multiple of the thread count, so each
        // thread gets the same share on idle cores; taken from a shared counter, so a thread whose
        // core is busy with other work simply takes fewer of them.
        let threads = workers.len() + 1;
        let count = rows.div_ceil(self.chunk_rows).next_multiple_of(threads);
        let chunk = rows.div_ceil(count);
        let chunks = rows.div_ceil(chunk);
        let output = SharedPtr(probabilities.as_mut_ptr());
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= chunks {
                break;
            }
            let range = i * chunk..((i + 1) * chunk).min(rows);
            let input = &embeddings[range.start * self.input_dim..range.end * self.input_dim];
            // SAFETY: chunk `i` is taken by one thread only, chunks do not overlap, and `range`
            // lies within `probabilities`, borrowed exclusively for this call.
            let output = unsafe {
                std::slice::from_raw_parts_mut(output.get().add(range.start), range.len())
            };
            self.forward(input, output, unusual);
        };
        // Chunks of rows are work enough to be worth waking sleeping workers for.
        workers.run(chunks - 1, true, &work)
    }

    /// Every layer's outputs shared out in units of panels, all threads finishing a layer before
    /// any starts the next; true if a worker panicked. For small batches, where rows are too few
    /// to share. With `unusual`, as in [`forward`](Self::forward), but the rows are all checked
    /// before any work is shared out.
    fn classify_by_outputs(
        &self,
        pool: &mut Pool,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
        unusual: Option<&AtomicBool>,
    ) -> bool {
        let Pool {
            workers,
            activations,
            pointers,
            progress,
            last_end,
        } = pool;
        activations.resize_with(self.layers.len() + 1, Vec::new);
        // The whole (small) input is normalised, and with `unusual` checked, before the layers
        // are shared out.
        if !layer_norm(
            self.kernel,
            embeddings,
            self.input_dim,
            self.layer_norm_eps,
            &mut activations[0],
            unusual.is_some(),
        ) {
            if let Some(unusual) = unusual {
                unusual.store(true, Ordering::Relaxed);
            }
            return false;
        }
        for (buffer, layer) in activations[1..].iter_mut().zip(&self.layers) {
            buffer.resize(rows * layer.outputs(), 0.0);
        }
        pointers.clear();
        pointers.extend(activations.iter_mut().map(|a| SharedPtr(a.as_mut_ptr())));
        progress.resize_with(self.layers.len(), Default::default);
        for (taken, finished) in progress.iter_mut() {
            *taken.get_mut() = 0;
            *finished.get_mut() = 0;
        }
        let failed = AtomicBool::new(false);
        let (pointers, progress) = (&pointers[..], &progress[..]);
        // Threads past the first layer's units would only wait at the layers' ends.
        let units = self.layers.first().map_or(0, |layer| {
            layer.panels().div_ceil(self.kernel.panel_group(rows))
        });
        let helpers = units.saturating_sub(1);
        // Sleeping workers are woken only when calls come back to back (this one starts within
        // a worker's spin of the last one's end); then the next calls find them awake. A lone
        // call does better alone: waking a thread on another core takes tens of microseconds and
        // its cold cache makes its share late (one row every millisecond ran ~40 µs slower on two
        // threads than on one when each call woke them). The unit tests always wake them, so
        // that helpers take part however slowly a test runs (under Miri, any two calls are far
        // apart).
        let back_to_back = last_end.is_some_and(|end| end.elapsed() < pool::SPIN);
        let panicked = workers.run(helpers, back_to_back || cfg!(test), &|| {
            self.run_split(rows, pointers, progress, &failed)
        });
        *last_end = Some(Instant::now());
        if !panicked {
            let logits = activations.last().map_or(&[][..], Vec::as_slice);
            for (p, &logit) in probabilities.iter_mut().zip(logits) {
                *p = sigmoid(logit);
            }
        }
        panicked
    }

    /// One thread's part of [`classify_by_outputs`](Self::classify_by_outputs): units of each
    /// layer taken from a shared counter, then a wait for the layer's last unit.
    fn run_split(
        &self,
        rows: usize,
        pointers: &[SharedPtr],
        progress: &[(AtomicUsize, AtomicUsize)],
        failed: &AtomicBool,
    ) {
        let group = self.kernel.panel_group(rows);
        for (l, layer) in self.layers.iter().enumerate() {
            let panels = layer.panels();
            let units = panels.div_ceil(group);
            let (taken, finished) = &progress[l];
            // SAFETY: this layer's input is complete (written before the call was shared out, or
            // by the previous layer, waited for below) and nobody writes it during this layer.
            let input =
                unsafe { std::slice::from_raw_parts(pointers[l].get(), rows * layer.inputs()) };
            loop {
                let unit = taken.fetch_add(1, Ordering::Relaxed);
                if unit >= units {
                    break;
                }
                let failure = FailOnUnwind(failed);
                // SAFETY: `pointers[l + 1]` holds rows × outputs floats (sized by the caller);
                // this unit's panels are taken by this thread only, and the layer's output is
                // read only once every unit is finished.
                unsafe {
                    let panels = unit * group..((unit + 1) * group).min(panels);
                    layer.forward_panels(
                        self.kernel,
                        input,
                        pointers[l + 1].get(),
                        panels,
                        &mut Prefetch::none(),
                    );
                }
                std::mem::forget(failure);
                finished.fetch_add(1, Ordering::Release);
            }
            let mut spins = 0u32;
            while finished.load(Ordering::Acquire) < units {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                // Another thread holds the last unit, normally for a few microseconds; if its core
                // was taken away, let it have this one.
                spins = spins.saturating_add(1);
                if spins < 4096 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Marks a shared call failed when a thread's part unwinds, so that the others stop waiting for it.
struct FailOnUnwind<'a>(&'a AtomicBool);

impl Drop for FailOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// LayerNorm without affine (folded into the first layer), biased variance as in PyTorch; written
/// with AVX2 where the kernel is AVX2 or AVX-512 (both are only selected on CPUs with AVX2). The
/// same operations in the same order give the same bits as the portable build. With `check`,
/// each row is first checked to be [ordinary](is_ordinary), and the first that is not stops it:
/// false.
///
/// A row whose mean lies further from zero than its spread ([`is_far_from_zero`]) is summed again,
/// every value taken relative to the row's first: LayerNorm ignores a shift, and a narrow row far
/// from zero (10,000 ± 0.01, or a constant row) keeps its small differences exact that way, where
/// float32 sums of the raw values lost them (a constant row of 12,345.678 gave 1.9e-4 against
/// 1.1e-4 exactly; 10,000 ± 0.01 was 0.017 off). Only such rows pay for the second summing:
/// always summing relative to the first value cost 0.5 % of a call (embeddings are centred near
/// zero, so they never take it).
fn layer_norm(
    kernel: CpuKernel,
    input: &[f32],
    dim: usize,
    eps: f32,
    output: &mut Vec<f32>,
    check: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if kernel != CpuKernel::Portable {
        // SAFETY: a backend's kernel passed `is_supported` at create, and every kernel but the
        // portable one requires AVX2.
        return unsafe { layer_norm_avx2(input, dim, eps, output, check) };
    }
    let _ = kernel; // only x86-64 has a second build
    normalize_rows(input, dim, eps, output, check)
}

/// Rows ahead of the one being normalized whose input [`layer_norm_avx2`] asks the cache for. The
/// first read of a block's input, from L3 or memory, is most of LayerNorm's time, and LayerNorm
/// was 6.5 % of a call of 4,096 rows on the AVX-512 Xeon. With the AVX-512 kernel, a call's
/// blocks after the first find their input in L2 already ([`Prefetch`]); this serves the first,
/// and every block of the other kernels.
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS_AHEAD: usize = 2;

/// [`normalize_rows`] in AVX2 registers, bit for bit: each 8-lane register holds 8 of its 16
/// partial sums, and the check is fused into the pass that sums the row. The compiler's own
/// vectorisation of the check packed each comparison's lanes down before combining them: on rows
/// in L2, checking and normalising took 228 ns a row that way and 183 ns this way (the Xeon).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn layer_norm_avx2(
    input: &[f32],
    dim: usize,
    eps: f32,
    output: &mut Vec<f32>,
    check: bool,
) -> bool {
    use std::arch::x86_64::*;
    const LANES: usize = 8;
    const _: () = assert!(SUM_LANES == 2 * LANES);
    output.clear();
    output.reserve(input.len());
    let magnitude = _mm256_set1_epi32(0x7fff_ffff);
    // As in `is_ordinary`: magnitudes order as their bits do, NaN and infinity above all others.
    let below_large = _mm256_set1_epi32((LARGE.to_bits() - 1) as i32);
    let whole = dim - dim % SUM_LANES;
    let tails = |row: &[f32], f: &dyn Fn(f32) -> f32, sums: [__m256; 2]| {
        let mut lanes = [0.0f32; SUM_LANES];
        // SAFETY: `lanes` holds two registers' worth of floats.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), sums[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(LANES), sums[1]);
        }
        finish_lane_sum(&lanes, &row[whole..], f)
    };
    for (r, row) in input.chunks_exact(dim).enumerate() {
        let x = row.as_ptr();
        let ahead = r + PREFETCH_ROWS_AHEAD;
        if let Some(ahead) = input.get(ahead * dim..(ahead + 1) * dim) {
            for line in ahead.chunks(kernels::CACHE_LINE_FLOATS) {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
        // One pass over the row's lanes, adding `$term` of each 8 values `$v` into 16 sums.
        macro_rules! lane_pass {
            (|$v:ident| $term:expr) => {{
                let mut sums = [_mm256_setzero_ps(); 2];
                for i in (0..whole).step_by(SUM_LANES) {
                    for (half, sum) in sums.iter_mut().enumerate() {
                        // SAFETY: `i + half * LANES + LANES <= whole <= dim`, within the row.
                        let $v = unsafe { _mm256_loadu_ps(x.add(i + half * LANES)) };
                        *sum = _mm256_add_ps(*sum, $term);
                    }
                }
                sums
            }};
        }
        let mut large = _mm256_setzero_si256();
        let sums = lane_pass!(|v| {
            if check {
                let bits = _mm256_and_si256(_mm256_castps_si256(v), magnitude);
                large = _mm256_or_si256(large, _mm256_cmpgt_epi32(bits, below_large));
            }
            v
        });
        if check && (_mm256_testz_si256(large, large) == 0 || !is_ordinary(&row[whole..])) {
            return false;
        }
        let mean = tails(row, &|x| x, sums) / dim as f32;
        let m = _mm256_set1_ps(mean);
        let sums = lane_pass!(|v| {
            let d = _mm256_sub_ps(v, m);
            _mm256_mul_ps(d, d)
        });
        let variance = tails(row, &|x| (x - mean) * (x - mean), sums) / dim as f32;
        // A narrow row far from zero, again relative to its first value (see `layer_norm`).
        let shifted = is_far_from_zero(mean, variance);
        let (pivot, mean, variance) = if shifted {
            let pivot = row[0];
            let p = _mm256_set1_ps(pivot);
            let sums = lane_pass!(|v| _mm256_sub_ps(v, p));
            let mean = tails(row, &|x| x - pivot, sums) / dim as f32;
            let m = _mm256_set1_ps(mean);
            let sums = lane_pass!(|v| {
                let d = _mm256_sub_ps(_mm256_sub_ps(v, p), m);
                _mm256_mul_ps(d, d)
            });
            let variance =
                tails(row, &|x| (x - pivot - mean) * (x - pivot - mean), sums) / dim as f32;
            (pivot, mean, variance)
        } else {
            (0.0, mean, variance)
        };
        let (p, m) = (_mm256_set1_ps(pivot), _mm256_set1_ps(mean));
        let inv_std = 1.0 / (variance + eps).sqrt();
        let scale = _mm256_set1_ps(inv_std);
        let start = output.len();
        let out = output.spare_capacity_mut().as_mut_ptr().cast::<f32>();
        for i in (0..whole).step_by(LANES) {
            // SAFETY: as above, and `output` has room for this row (reserved above).
            unsafe {
                let v = _mm256_loadu_ps(x.add(i));
                let d = if shifted {
                    _mm256_sub_ps(_mm256_sub_ps(v, p), m)
                } else {
                    _mm256_sub_ps(v, m)
                };
                _mm256_storeu_ps(out.add(i), _mm256_mul_ps(d, scale));
            }
        }
        for (i, &value) in row.iter().enumerate().skip(whole) {
            let d = if shifted {
                value - pivot - mean
            } else {
                value - mean
            };
            // SAFETY: as above.
            unsafe { out.add(i).write(d * inv_std) };
        }
        // SAFETY: the row's `dim` outputs were all written just above.
        unsafe { output.set_len(start + dim) };
    }
    true
}

/// [`layer_norm`] in plain Rust, for the portable kernel.
fn normalize_rows(input: &[f32], dim: usize, eps: f32, output: &mut Vec<f32>, check: bool) -> bool {
    output.clear();
    for row in input.chunks_exact(dim) {
        if check && !is_ordinary(row) {
            return false;
        }
        let mean = lane_sum(row, |x| x) / dim as f32;
        let variance = lane_sum(row, |x| (x - mean) * (x - mean)) / dim as f32;
        if is_far_from_zero(mean, variance) {
            // Again relative to the row's first value ([`layer_norm`]).
            let pivot = row[0];
            let mean = lane_sum(row, |x| x - pivot) / dim as f32;
            let variance = lane_sum(row, |x| (x - pivot - mean) * (x - pivot - mean)) / dim as f32;
            let inv_std = 1.0 / (variance + eps).sqrt();
            output.extend(row.iter().map(|x| (x - pivot - mean) * inv_std));
        } else {
            let inv_std = 1.0 / (variance + eps).sqrt();
            output.extend(row.iter().map(|x| (x - mean) * inv_std));
        }
    }
    true
}

/// Sum of `f` over `values` in [`SUM_LANES`] interleaved partial sums. A single running sum is one
/// chain of dependent additions that no compiler may reorder (a tenth of all the time at batch
/// 1,024); independent lanes become SIMD registers. The order is fixed, so a row's result is the
/// same in every batch and on every thread.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; SUM_LANES];
    let chunks = values.chunks_exact(SUM_LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    finish_lane_sum(&lanes, rest, f)
}

/// The end of [`lane_sum`], shared with [`layer_norm_avx2`] so that both add the partial sums and
/// the values past the last whole group of lanes in the same order, and give the same bits.
#[inline(always)]
fn finish_lane_sum(lanes: &[f32; SUM_LANES], rest: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    lanes.iter().sum::<f32>() + rest.iter().map(|&x| f(x)).sum::<f32>()
}

/// Whether a row's float32 mean and variance, summed from its raw values, may have lost the row:
/// its mean further from zero than its spread, where the rounding of the sums (relative to the
/// mean's magnitude) is no longer small beside the spread. Embeddings, centred near zero, never
/// are; a narrow row far from zero always is.
#[inline(always)]
fn is_far_from_zero(mean: f32, variance: f32) -> bool {
    mean * mean > variance
}

/// Partial sums in [`lane_sum`]: four SSE or two AVX registers.
const SUM_LANES: usize = 16;

/// The logistic function, without overflow for large |x|.
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::model_bytes;

    /// Half the L2 in whole register tiles, within bounds; the default where the size is unknown.
    #[test]
    fn blocks_fill_half_the_l2() {
        let row_bytes = (768 + 512) * 4;
        assert_eq!(block_rows(Some(512 << 10), row_bytes), 48);
        assert_eq!(block_rows(Some(2 << 20), row_bytes), 204);
        assert_eq!(block_rows(Some(64 << 20), row_bytes), MAX_BLOCK_ROWS);
        assert_eq!(block_rows(Some(16 << 10), row_bytes), kernels::MR);
        assert_eq!(block_rows(Some(0), 0), kernels::MR);
        assert_eq!(block_rows(None, row_bytes), BLOCK_ROWS);
    }

    /// The AVX2 LayerNorm gives the portable one's bits (within Miri's last-bit `sqrt` error), and
    /// turns back the same rows: an unusual value anywhere in a row, in the registers' part or the
    /// tail past the last 16 values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_layer_norm_matches_the_portable_one() {
        if !CpuKernel::Avx2Fma.is_supported() {
            return;
        }
        let dims: &[usize] = if cfg!(miri) {
            &[7, 16, 37]
        } else {
            &[7, 16, 37, 768]
        };
        for &dim in dims {
            let rows = 5;
            let input: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.013 + (i / dim) as f32 * 3.0)
                .collect();
            let layer_norm_both = |input: &[f32], check: bool| {
                let (mut portable, mut avx2) = (vec![f32::NAN], vec![f32::NAN]);
                let portable_ok = normalize_rows(input, dim, 1e-5, &mut portable, check);
                // SAFETY: the CPU has AVX2 (checked above).
                let avx2_ok = unsafe { layer_norm_avx2(input, dim, 1e-5, &mut avx2, check) };
                (portable_ok, portable, avx2_ok, avx2)
            };
            let (portable_ok, portable, avx2_ok, avx2) = layer_norm_both(&input, true);
            assert!(portable_ok && avx2_ok);
            assert_eq!(portable.len(), rows * dim);
            if cfg!(miri) {
                for (a, b) in portable.iter().zip(&avx2) {
                    assert!((a - b).abs() <= 1e-5, "dim {dim}: {a} vs {b}");
                }
            } else {
                assert_eq!(portable, avx2, "dim {dim}");
            }
            let mut unusual = input.clone();
            unusual[3 * dim] = LARGE.next_down();
            assert!(
                layer_norm_both(&unusual, true).2,
                "dim {dim}: below LARGE is ordinary"
            );
            for value in [f32::NAN, f32::NEG_INFINITY, LARGE, -f32::MAX] {
                for at in [0, dim / 2, dim - 1, 2 * dim + dim / 3, rows * dim - 1] {
                    let mut unusual = input.clone();
                    unusual[at] = value;
                    let (portable_ok, _, avx2_ok, _) = layer_norm_both(&unusual, true);
                    assert!(!portable_ok && !avx2_ok, "dim {dim}: {value} at {at}");
                    // Unchecked, both normalise it as it is.
                    let (portable_ok, portable, avx2_ok, avx2) = layer_norm_both(&unusual, false);
                    assert!(portable_ok && avx2_ok);
                    if !cfg!(miri) {
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&portable), bits(&avx2), "dim {dim}: {value} at {at}");
                    }
                }
            }
        }
    }

    /// A call larger than [`STAGED_KEPT_ROWS`] frees the thread's staging room when it ends; a
    /// smaller one keeps it for the next call.
    #[test]
    fn staging_room_is_kept_only_up_to_its_bound() {
        let model = Model::from_bytes(&model_bytes(1, &[], &[])).unwrap();
        let backend = CpuBackend::with_kernel(&model, 1, CpuKernel::Portable).unwrap();
        let rows = if cfg!(miri) { 40 } else { STAGED_KEPT_ROWS + 1 };
        let capacity = || STAGED.with(|staged| staged.borrow().capacity());
        for (rows, kept) in [(rows, cfg!(miri)), (10, true)] {
            let input = vec![0.5f32; rows];
            let mut out = vec![0.0f32; rows];
            assert!(backend.classify_checking(&input, rows, &mut out).unwrap());
            assert_eq!(capacity() >= rows, kept, "{rows} rows");
        }
    }

    #[test]
    fn a_call_has_as_few_blocks_as_the_l2_allows_of_equal_size() {
        let model = Model::from_bytes(&model_bytes(8, &[4], &[])).unwrap();
        for kernel in CpuKernel::all().into_iter().filter(|k| k.is_supported()) {
            let mut backend = CpuBackend::with_kernel(&model, 1, kernel).unwrap();
            let tile = kernel.tile_rows(usize::MAX);
            for most in [kernels::MR, 48, 204] {
                backend.block_rows = most;
                assert_eq!(backend.equal_block_rows(0), 1);
                for rows in 1..1000 {
                    let block = backend.equal_block_rows(rows);
                    let blocks = rows.div_ceil(block);
                    assert!(block <= most, "{kernel:?} {rows} rows: {block}");
                    assert_eq!(blocks, rows.div_ceil(most), "{kernel:?} {rows} rows");
                    // Whole tiles, unless the largest block is not; the last block may be short.
                    assert!(
                        block.is_multiple_of(tile) || block == most,
                        "{kernel:?} {rows}: {block}"
                    );
                }
            }
            if kernel == CpuKernel::Avx512 {
                backend.block_rows = 204;
                let sizes: Vec<_> = [256, 1024, 4096]
                    .map(|rows| backend.equal_block_rows(rows))
                    .into();
                assert_eq!(sizes, [132, 180, 204]);
            }
        }
    }

    /// A row's probability does not depend on the block it is in.
    #[test]
    fn block_size_changes_no_bit() {
        let dim = if cfg!(miri) { 4 } else { 32 };
        let rows = if cfg!(miri) { 13 } else { 100 };
        let model = Model::from_bytes(&model_bytes(dim, &[20, 9], &[])).unwrap();
        let input: Vec<f32> = (0..rows * dim)
            .map(|i| ((i * 7 % 31) as f32 - 15.0) / 4.0)
            .collect();
        let mut kernels = vec![CpuKernel::Portable, CpuKernel::detect()];
        kernels.dedup();
        for kernel in kernels {
            let mut backend = CpuBackend::with_kernel(&model, 1, kernel).unwrap();
            let mut results = Vec::new();
            for block in [kernels::MR, 12, 48, rows] {
                backend.block_rows = block;
                let mut got = vec![f32::NAN; rows];
                backend.classify(&input, rows, &mut got).unwrap();
                results.push(got);
            }
            for pair in results.windows(2) {
                if cfg!(miri) {
                    // Miri gives `exp` and `sqrt` a random last-bit error on every call.
                    for (a, b) in pair[0].iter().zip(&pair[1]) {
                        assert!((a - b).abs() <= 1e-6, "{kernel:?}: {a} vs {b}");
                    }
                } else {
                    assert_eq!(pair[0], pair[1], "{kernel:?}");
                }
            }
        }
    }

    /// Shared out by outputs (small batches) and by rows, on a pool started by the first call and
    /// reused by the next, with the input checked first or as it goes, every row gets exactly what
    /// one thread gives it alone.
    #[test]
    fn shared_calls_match_one_thread_bit_for_bit() {
        // Hidden widths of several panels, so that every layer's units are shared out; under Miri,
        // which interprets every instruction, narrower inputs and fewer cases.
        let (dim, hidden, batches, thread_counts): (usize, &[usize], &[usize], &[usize]) =
            if cfg!(miri) {
                (2, &[17], &[1, 3, 128], &[2, 3])
            } else {
                (24, &[40, 20], &[1, 2, 3, 7, 127, 128, 129, 500], &[2, 3, 8])
            };
        let model = Model::from_bytes(&model_bytes(dim, hidden, &[])).unwrap();
        let most = batches.iter().copied().max().unwrap_or(0);
        let input: Vec<f32> = (0..most * dim)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
            .collect();
        let mut kernels = vec![CpuKernel::Portable, CpuKernel::detect()];
        kernels.dedup();
        for kernel in kernels {
            let alone = CpuBackend::with_kernel(&model, 1, kernel).unwrap();
            let mut expected = vec![f32::NAN; most];
            alone.classify(&input, most, &mut expected).unwrap();
            for &threads in thread_counts {
                let backend = CpuBackend::with_kernel(&model, threads, kernel).unwrap();
                for round in 0..2 {
                    for &rows in batches {
                        let mut got = vec![f32::NAN; rows];
                        let input = &input[..rows * dim];
                        // The second round checks the input as it goes.
                        if round == 0 {
                            backend.classify(input, rows, &mut got).unwrap();
                        } else {
                            assert!(backend.classify_unchecked(input, rows, &mut got).unwrap());
                        }
                        let case =
                            format!("{kernel:?}, {threads} threads, {rows} rows, round {round}");
                        if cfg!(miri) {
                            // Miri gives `exp` and `sqrt` a random last-bit error on every call.
                            for (g, e) in got.iter().zip(&expected) {
                                assert!((g - e).abs() <= 1e-6, "{case}: {g} vs {e}");
                            }
                        } else {
                            assert_eq!(got, expected[..rows], "{case}");
                        }
                    }
                }
            }
        }
    }
}
