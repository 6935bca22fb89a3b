//! The wgpu backend: the folded model as WGSL compute shaders (`shaders/`) on Vulkan, Metal or DX12.
//!
//! Weights are uploaded once at create. Each call borrows a workspace (its buffers and bind
//! groups) from a small pool, so concurrent calls never share buffers and a later call reuses them;
//! batches larger than the device's binding or dispatch limits run in chunks.
//!
//! Kernels: LayerNorm in place (one workgroup per row); each dense layer without workgroup memory,
//! one output column of 4 rows per invocation in vec4 steps (`dense_vector.wgsl`, also the
//! one-output last layer fused with the sigmoid), or, when asked for, as a tiled matrix product in
//! workgroup memory (`dense_tiled.wgsl`), which measured slower at every batch size both on
//! lavapipe and on an NVIDIA H200. Weights are stored transposed (inputs × outputs) for both, so
//! neighbouring invocations read neighbouring addresses.

use std::ffi::{CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wgpu::util::DeviceExt;

use gemma_cyber_plugin::{panic_message, Backend, Error, Model, Result, Settings};

/// Environment variable: use an adapter whose name contains this (case-insensitive).
pub const ADAPTER_ENV: &str = "GEMMA_CYBER_WGPU_ADAPTER";
/// Environment variable: comma-separated graphics APIs to try (`vulkan`, `metal`, `dx12`, `gl`).
pub const BACKENDS_ENV: &str = "GEMMA_CYBER_WGPU_BACKENDS";
/// Environment variable: force the dense kernel (`tiled`, `vector` or `auto`).
pub const KERNEL_ENV: &str = "GEMMA_CYBER_WGPU_KERNEL";

/// Rows a chunk holds at most unless the settings say otherwise: large enough to keep a GPU busy,
/// small enough that a workspace stays near 100 MiB for the default model.
pub const DEFAULT_MAX_CHUNK_ROWS: usize = 16384;

/// The same on a software adapter, which gains nothing from larger chunks: it keeps each wait on
/// the device to seconds, well inside the timeout, even on a busy machine.
pub const SOFTWARE_MAX_CHUNK_ROWS: usize = 4096;

/// Rows per submission at most when a call is split so that uploads overlap the device's work,
/// unless the settings say otherwise.
pub const DEFAULT_PIECE_ROWS: usize = 4096;

/// Rows per submission at least when a call is split: smaller pieces cost more in submissions and
/// waits than the overlap saves.
pub const MIN_PIECE_ROWS: usize = 1024;

/// Workspaces alive at once; more concurrent calls wait for one to come back.
const MAX_WORKSPACES: usize = 4;

/// Invocations per workgroup of the LayerNorm and vector kernels (as in the shaders).
const VECTOR_THREADS: u32 = 64;
/// Rows each invocation of the vector kernel computes (as in the shader).
const VECTOR_ROWS: usize = 4;
/// Rows and columns of one tile of the tiled kernel (as in the shader).
const TILE: u32 = 64;

const LAYER_NORM_WGSL: &str = include_str!("../../../shaders/layer_norm.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../../shaders/activation.wgsl");
const DENSE_VECTOR_WGSL: &str = include_str!("../../../shaders/dense_vector.wgsl");
const DENSE_TILED_WGSL: &str = include_str!("../../../shaders/dense_tiled.wgsl");

/// Values of `ACTIVATION` in `activation.wgsl`.
const ACTIVATION_NONE: f64 = 0.0;
const ACTIVATION_RELU: f64 = 1.0;
const ACTIVATION_SIGMOID: f64 = 2.0;

/// Which kernel runs the dense layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernel {
    /// The kernel that measured fastest: vector, on every adapter and batch size measured (lavapipe
    /// and an NVIDIA H200, 1 to 65,536 rows; see docs/BENCHMARKS.md).
    #[default]
    Auto,
    /// Always the tiled kernel (but for the one-output last layer).
    Tiled,
    /// Always the vector kernel.
    Vector,
}

impl Kernel {
    /// The kernel called `name`: `auto`, `tiled` or `vector`.
    pub fn from_name(name: &str) -> Option<Kernel> {
        match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Kernel::Auto),
            "tiled" => Some(Kernel::Tiled),
            "vector" => Some(Kernel::Vector),
            _ => None,
        }
    }
}

/// How the wgpu backend picks its adapter and runs; the plugin's settings
/// ([`WgpuSettings::from_settings`]) plus [`WgpuSettings::with_env`] are what a classifier uses.
#[derive(Clone, Debug)]
pub struct WgpuSettings {
    /// Use an adapter whose name contains this, ignoring case (the best-ranked if several);
    /// `None`: the best adapter.
    pub adapter: Option<String>,
    /// Graphics APIs to try, comma-separated (`vulkan`, `metal`, `dx12`, `gl`); `None`: all built in.
    pub backends: Option<String>,
    /// Whether a software adapter (device type CPU, e.g. lavapipe) may be chosen. AUTO says no.
    pub allow_software: bool,
    /// Which dense kernel runs.
    pub kernel: Kernel,
    /// Rows per chunk at most (the device's limits may lower it); 0: [`DEFAULT_MAX_CHUNK_ROWS`],
    /// or [`SOFTWARE_MAX_CHUNK_ROWS`] on a software adapter.
    pub max_chunk_rows: usize,
    /// Rows per submission at most when a call is split in pieces so that copying one piece in
    /// overlaps the device's work on the previous one; 0: [`DEFAULT_PIECE_ROWS`]. Calls of fewer
    /// than 2 × [`MIN_PIECE_ROWS`] rows run as one piece.
    pub piece_rows: usize,
    /// Longest wait for the device to finish one chunk before the call fails.
    pub timeout: Duration,
}

impl Default for WgpuSettings {
    fn default() -> Self {
        WgpuSettings {
            adapter: None,
            backends: None,
            allow_software: true,
            kernel: Kernel::Auto,
            max_chunk_rows: 0,
            piece_rows: 0,
            timeout: Duration::from_secs(60),
        }
    }
}

impl WgpuSettings {
    /// The plugin settings `adapter`, `backends`, `kernel`, `max_chunk_rows`, `piece_rows` and
    /// `timeout_ms`; with `auto=1` (AUTO is choosing) a software adapter is never taken.
    pub fn from_settings(mut settings: Settings) -> Result<WgpuSettings> {
        let defaults = WgpuSettings::default();
        let kernel = match settings.take("kernel") {
            Some(name) => Kernel::from_name(&name).ok_or_else(|| {
                Error::backend_unavailable(format!(
                    "setting kernel={name:?}; expected tiled, vector or auto"
                ))
            })?,
            None => Kernel::Auto,
        };
        let parsed = WgpuSettings {
            adapter: settings.take("adapter"),
            backends: settings.take("backends"),
            allow_software: !settings.auto()?,
            kernel,
            max_chunk_rows: settings.take_parsed("max_chunk_rows")?.unwrap_or(0),
            piece_rows: settings.take_parsed("piece_rows")?.unwrap_or(0),
            timeout: settings
                .take_parsed("timeout_ms")?
                .map_or(defaults.timeout, Duration::from_millis),
        };
        // The core's thread count is for CPU backends; the device runs its own.
        settings.num_threads()?;
        settings.finish()?;
        Ok(parsed)
    }

    /// These settings with [`ADAPTER_ENV`], [`BACKENDS_ENV`] and [`KERNEL_ENV`] filling the
    /// fields not already set.
    pub fn with_env(mut self) -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if self.adapter.is_none() {
            self.adapter = var(ADAPTER_ENV);
        }
        if self.backends.is_none() {
            self.backends = var(BACKENDS_ENV);
        }
        if self.kernel == Kernel::Auto {
            if let Some(name) = var(KERNEL_ENV) {
                self.kernel = Kernel::from_name(&name).ok_or_else(|| {
                    Error::backend_unavailable(format!(
                        "{KERNEL_ENV} is {name:?}; expected tiled, vector or auto"
                    ))
                })?;
            }
        }
        Ok(self)
    }
}

/// One dense layer on the device, padded so every row is a whole number of vec4s.
struct Layer {
    /// Outputs per row, padded to a multiple of 4 except for the last layer.
    outputs: usize,
    vector: wgpu::ComputePipeline,
    /// Present only when the tiled kernel was asked for, and never on the last layer.
    tiled: Option<wgpu::ComputePipeline>,
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
}

/// Buffers and bind groups of one call in flight, for up to `capacity` rows.
struct Workspace {
    capacity: usize,
    params: wgpu::Buffer,
    input: wgpu::Buffer,
    /// Inputs of one chunk, padded to the input stride (only when the width is not a multiple of 4).
    padded: Vec<f32>,
    output: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Probabilities of the whole call (kept by the call's first workspace), copied out only when
    /// every piece succeeded.
    probabilities: Vec<f32>,
    norm_bind_group: wgpu::BindGroup,
    layer_bind_groups: Vec<wgpu::BindGroup>,
}

/// A piece on its way through the device: its submission and the mapping of its results.
struct Submitted {
    index: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    count: usize,
}

/// Idle workspaces, and how many are live in all (idle or lent out).
#[derive(Default)]
struct WorkspacePool {
    idle: Vec<Workspace>,
    live: usize,
}

/// A workspace borrowed from the pool by one call. [`WorkspaceLease::give_back`] returns the
/// workspace for reuse; dropping the lease instead (a failure, a panic) retires the workspace,
/// since the device may still be using its buffers, and frees its slot, so none is ever lost.
struct WorkspaceLease<'a> {
    backend: &'a WgpuBackend,
    /// `None` only while the workspace is being made.
    workspace: Option<Workspace>,
    /// Whether the slot is still this lease's to return.
    held: bool,
}

impl WorkspaceLease<'_> {
    fn get(&self) -> &Workspace {
        self.workspace
            .as_ref()
            .expect("a lease holds its workspace")
    }

    fn get_mut(&mut self) -> &mut Workspace {
        self.workspace
            .as_mut()
            .expect("a lease holds its workspace")
    }

    fn give_back(mut self) {
        self.held = false;
        self.backend.return_workspace(self.workspace.take());
    }
}

impl Drop for WorkspaceLease<'_> {
    fn drop(&mut self) {
        if self.held {
            self.workspace = None;
            self.backend.return_workspace(None);
        }
    }
}

/// Failures reported by wgpu outside any call: device loss, errors outside an error scope.
#[derive(Default)]
struct DeviceEvents {
    lost: Mutex<Option<String>>,
    /// An error wgpu reported outside every error scope; the next call fails with it.
    uncaptured: Mutex<Option<String>>,
}

/// Runs the folded model on a wgpu adapter. `classify` may be called from many threads at once.
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    device_name: CString,
    software: bool,
    input_dim: usize,
    /// Values per input row on the device (`input_dim` rounded up to 4).
    input_stride: usize,
    /// Widest padded hidden activation.
    hidden_width: usize,
    layers: Vec<Layer>,
    norm: wgpu::ComputePipeline,
    norm_layout: wgpu::BindGroupLayout,
    dense_layout: wgpu::BindGroupLayout,
    chunk_rows: usize,
    /// Rows per piece at most (see [`WgpuSettings::piece_rows`]).
    piece_rows: usize,
    max_groups: u32,
    kernel: Kernel,
    timeout: Duration,
    events: Arc<DeviceEvents>,
    pool: Mutex<WorkspacePool>,
    returned: Condvar,
    /// Last, so it runs after the device and everything on it are dropped.
    _trim: TrimHeapOnDrop,
}

/// Hands freed heap back to the system once a backend is gone. Creating a device and compiling
/// its pipelines allocates tens of MiB in the driver (lavapipe: LLVM); freed from several threads
/// at once, glibc keeps it in per-thread arenas, and a process that creates and destroys
/// classifiers concurrently grew by ~150 MiB over 72 of them without this (flat with it).
///
/// Kept on rather than opt-in: without it that growth is what every long-running host creating
/// classifiers from several threads gets, and the call is cheap next to what it follows (it runs
/// once per destroyed wgpu backend, never in a classify call). It is process-wide, but it only
/// returns free pages; it changes no allocation of the host. glibc only (the growth measured is
/// glibc's arenas; other C libraries have no `malloc_trim`): elsewhere this does nothing.
struct TrimHeapOnDrop;

impl Drop for TrimHeapOnDrop {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

impl fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("device_name", &self.device_name)
            .field("chunk_rows", &self.chunk_rows)
            .finish_non_exhaustive()
    }
}

impl WgpuBackend {
    /// Picks an adapter as `settings` say, compiles the kernels and uploads the weights.
    ///
    /// No suitable adapter is BACKEND_UNAVAILABLE (the message says what was tried); a device
    /// that fails while setting up is BACKEND_FAILURE.
    pub fn new(model: &Model<'_>, settings: &WgpuSettings) -> Result<WgpuBackend> {
        catch_unwind(AssertUnwindSafe(|| Self::start(model, settings)))
            .unwrap_or_else(|payload| Err(panic_failure("starting the wgpu backend", payload)))
    }

    /// Whether the adapter is a software one (device type CPU, e.g. lavapipe or llvmpipe).
    pub fn is_software(&self) -> bool {
        self.software
    }

    /// Rows one chunk holds at most on this device.
    pub fn chunk_rows(&self) -> usize {
        self.chunk_rows
    }

    /// Whether the hidden layers run on the tiled kernel (only when asked for by name).
    pub fn uses_tiled_kernel(&self) -> bool {
        self.kernel == Kernel::Tiled
    }

    /// Seconds the device spends on the kernels alone for one chunk of `rows` rows (at most
    /// [`WgpuBackend::chunk_rows`]), averaged over `repeats` runs: no upload, no read-back. For
    /// benchmarks; the inputs are whatever the workspace holds.
    #[doc(hidden)]
    pub fn device_seconds(&self, rows: usize, repeats: usize) -> Result<f64> {
        let rows = rows.clamp(1, self.chunk_rows);
        let lease = self.workspace(rows)?;
        let workspace = lease.get();
        let params: [u32; 4] = [rows as u32, 0, 0, 0];
        self.queue
            .write_buffer(&workspace.params, 0, bytemuck::cast_slice(&params));
        // One untimed run first: pipelines and memory warm up.
        let mut elapsed = 0.0;
        for run in 0..=repeats.max(1) {
            let mut encoder = self.device.create_command_encoder(&Default::default());
            self.encode_kernels(&mut encoder, workspace, rows);
            let start = Instant::now();
            let index = self.queue.submit([encoder.finish()]);
            self.wait(index)?;
            if run > 0 {
                elapsed += start.elapsed().as_secs_f64();
            }
        }
        lease.give_back();
        Ok(elapsed / repeats.max(1) as f64)
    }

    /// Destroys the device as a driver failure would lose it, so tests can check that later
    /// calls fail cleanly.
    #[doc(hidden)]
    pub fn lose_device_for_tests(&self) {
        self.device.destroy();
    }

    fn start(model: &Model<'_>, settings: &WgpuSettings) -> Result<WgpuBackend> {
        let backends = parse_backends(settings.backends.as_deref())?;
        let instance = kept_instance(backends).unwrap_or_else(|| {
            wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            })
        });
        let adapter = choose_adapter(&instance, backends, settings)?;
        let info = adapter.get_info();
        let software = info.device_type == wgpu::DeviceType::Cpu;
        // Everything the adapter offers: real GPUs bind far more than the default 128 MiB.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("gemma-cyber"),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| {
            Error::backend_failure(format!("wgpu: cannot open a device on {}: {e}", info.name))
        })?;
        keep_instance(backends, &instance);

        let events = Arc::new(DeviceEvents::default());
        let lost = Arc::clone(&events);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = lost.lost.lock() {
                *slot = Some(format!("{reason:?}: {message}"));
            }
        });
        // wgpu's default handler panics; every call runs inside error scopes, so an error that
        // still arrives here belongs to no call: the next call reports it (a library never
        // writes to stderr).
        let uncaptured = Arc::clone(&events);
        device.on_uncaptured_error(Arc::new(move |error| {
            if let Ok(mut slot) = uncaptured.uncaptured.lock() {
                slot.get_or_insert_with(|| error.to_string());
            }
        }));

        let scopes = ErrorScopes::push(&device);
        let setup = Setup::new(&device, model, settings.kernel)?;
        scopes.check("compiling the kernels and uploading the weights")?;

        let input_stride = model.input_dim().next_multiple_of(4);
        let hidden_width = setup.layers[..setup.layers.len() - 1]
            .iter()
            .map(|layer| layer.outputs)
            .max()
            .unwrap_or(1);
        let widest = input_stride.max(hidden_width) as u64 * 4;
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let max_groups = limits.max_compute_workgroups_per_dimension.max(1);
        let by_binding = (max_binding / widest) as usize;
        // The dense kernels run one workgroup row per 64 (tiled) or 4 (vector) rows; LayerNorm's
        // one workgroup per row spills into y.
        let by_dispatch = max_groups as usize * VECTOR_ROWS;
        // Row indices times widths stay below 2^32 in the shaders' u32 arithmetic.
        let by_index = (u32::MAX as u64 / (widest / 4)) as usize;
        let requested = match settings.max_chunk_rows {
            0 if software => SOFTWARE_MAX_CHUNK_ROWS,
            0 => DEFAULT_MAX_CHUNK_ROWS,
            n => n,
        };
        let chunk_rows = requested.min(by_binding).min(by_dispatch).min(by_index);
        if chunk_rows == 0 {
            return Err(Error::backend_unavailable(format!(
                "wgpu: {} binds at most {max_binding} bytes, less than one row of this model",
                info.name
            )));
        }

        Ok(WgpuBackend {
            device_name: CString::new(describe(&info).replace('\0', " "))
                .expect("NULs were replaced"),
            device,
            queue,
            software,
            input_dim: model.input_dim(),
            input_stride,
            hidden_width,
            layers: setup.layers,
            norm: setup.norm,
            norm_layout: setup.norm_layout,
            dense_layout: setup.dense_layout,
            chunk_rows,
            piece_rows: match settings.piece_rows {
                0 => DEFAULT_PIECE_ROWS,
                n => n,
            },
            max_groups,
            kernel: settings.kernel,
            timeout: settings.timeout,
            events,
            pool: Mutex::new(WorkspacePool::default()),
            returned: Condvar::new(),
            _trim: TrimHeapOnDrop,
        })
    }

    fn run(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        if let Some(lost) = self.device_lost() {
            return Err(lost);
        }
        let uncaptured = self
            .events
            .uncaptured
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(error) = uncaptured {
            return Err(Error::backend_failure(format!(
                "wgpu reported an error outside any call: {error}"
            )));
        }
        let piece = self.piece_rows_for(rows);
        let mut leases = vec![self.workspace(piece)?];
        if rows > piece {
            // A second workspace lets one piece's upload overlap the device's work on the other.
            // Never wait for it: two calls each holding one and waiting for another would deadlock.
            // Without it (none free, or no memory for one) the pieces simply take turns in one.
            if let Ok(Some(second)) = self.try_workspace(piece) {
                leases.push(second);
            }
        }
        let mut results = std::mem::take(&mut leases[0].get_mut().probabilities);
        results.clear();
        results.resize(rows, 0.0);
        let scopes = ErrorScopes::push(&self.device);
        let outcome = self.run_pieces(&mut leases, embeddings, piece, &mut results);
        // An error a scope caught (at submit, say) is the cause of any failure that followed.
        match scopes.check("running the model").and(outcome) {
            Ok(()) => {
                probabilities.copy_from_slice(&results);
                leases[0].get_mut().probabilities = results;
                for lease in leases {
                    lease.give_back();
                }
                Ok(())
            }
            Err(error) => {
                // Dropping the leases retires the workspaces: the device may still use their
                // buffers, and wgpu frees them once it is done. A lost device makes later steps
                // fail with less telling messages; a poll lets wgpu report the loss first.
                drop(leases);
                let _ = self.device.poll(wgpu::PollType::Poll);
                Err(self.device_lost().unwrap_or(error))
            }
        }
    }

    /// Rows per submission for a call of `rows` rows: calls of more than two minimum pieces are
    /// split in at least two, so that copying one piece in overlaps the device's work on the other.
    fn piece_rows_for(&self, rows: usize) -> usize {
        if rows < 2 * MIN_PIECE_ROWS {
            return rows.clamp(1, self.chunk_rows);
        }
        rows.div_ceil(2)
            .clamp(MIN_PIECE_ROWS, self.piece_rows.max(MIN_PIECE_ROWS))
            .min(self.chunk_rows)
    }

    /// Runs every piece of `embeddings` into `results`, keeping one piece in flight per workspace:
    /// while the device works on one, the next is copied into the other's upload buffer.
    fn run_pieces(
        &self,
        leases: &mut [WorkspaceLease<'_>],
        embeddings: &[f32],
        piece: usize,
        results: &mut [f32],
    ) -> Result<()> {
        let rows = results.len();
        let mut in_flight = std::collections::VecDeque::with_capacity(leases.len());
        let (mut next, mut slot) = (0, 0);
        loop {
            if next < rows && in_flight.len() < leases.len() {
                let count = piece.min(rows - next);
                let input = &embeddings[next * self.input_dim..(next + count) * self.input_dim];
                let submitted = self.submit_piece(leases[slot].get_mut(), input, count);
                in_flight.push_back((slot, next, submitted));
                next += count;
                slot = (slot + 1) % leases.len();
                continue;
            }
            // Oldest first: the workspace it frees is the next one `slot` names.
            let Some((done, first, submitted)) = in_flight.pop_front() else {
                return Ok(());
            };
            let count = submitted.count;
            self.finish_piece(
                leases[done].get(),
                submitted,
                &mut results[first..first + count],
            )?;
        }
    }

    /// BACKEND_FAILURE saying why, once the device is lost.
    fn device_lost(&self) -> Option<Error> {
        let reason = self.events.lost.lock().ok()?.clone()?;
        Some(Error::backend_failure(format!(
            "wgpu: the device was lost ({reason}); create the classifier again"
        )))
    }

    /// Uploads `count` rows into the workspace, runs every kernel and asks for the probabilities
    /// to be mapped for reading; [`WgpuBackend::finish_piece`] waits for them.
    fn submit_piece(&self, workspace: &mut Workspace, input: &[f32], count: usize) -> Submitted {
        let params: [u32; 4] = [count as u32, 0, 0, 0];
        self.queue
            .write_buffer(&workspace.params, 0, bytemuck::cast_slice(&params));
        if self.input_stride == self.input_dim {
            self.queue
                .write_buffer(&workspace.input, 0, bytemuck::cast_slice(input));
        } else {
            workspace.padded.clear();
            workspace.padded.resize(count * self.input_stride, 0.0);
            for (padded, row) in workspace
                .padded
                .chunks_exact_mut(self.input_stride)
                .zip(input.chunks_exact(self.input_dim))
            {
                padded[..self.input_dim].copy_from_slice(row);
            }
            self.queue
                .write_buffer(&workspace.input, 0, bytemuck::cast_slice(&workspace.padded));
        }

        let mut encoder = self.device.create_command_encoder(&Default::default());
        self.encode_kernels(&mut encoder, workspace, count);
        let bytes = (count * 4) as u64;
        encoder.copy_buffer_to_buffer(&workspace.output, 0, &workspace.readback, 0, bytes);
        let index = self.queue.submit([encoder.finish()]);

        let (sender, mapped) = mpsc::channel();
        workspace
            .readback
            .map_async(wgpu::MapMode::Read, ..bytes, move |result| {
                let _ = sender.send(result);
            });
        Submitted {
            index,
            mapped,
            count,
        }
    }

    /// Waits, boundedly, for a submitted piece and copies its probabilities into `results`.
    fn finish_piece(
        &self,
        workspace: &Workspace,
        submitted: Submitted,
        results: &mut [f32],
    ) -> Result<()> {
        self.wait(submitted.index)?;
        // Another thread's poll may be the one that runs the callback: wait for it, boundedly.
        let deadline = Instant::now() + self.timeout;
        let mapped = loop {
            match submitted.mapped.recv_timeout(Duration::from_millis(1)) {
                Ok(result) => break result,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    let _ = self.device.poll(wgpu::PollType::Poll);
                }
                Err(_) => {
                    return Err(Error::backend_failure(format!(
                        "wgpu: the read-back buffer was not mapped within {:?}",
                        self.timeout
                    )))
                }
            }
        };
        mapped.map_err(|e| Error::backend_failure(format!("wgpu: reading results back: {e}")))?;
        let bytes = (submitted.count * 4) as u64;
        {
            let view = workspace
                .readback
                .get_mapped_range(..bytes)
                .map_err(|e| Error::backend_failure(format!("wgpu: reading results back: {e}")))?;
            results.copy_from_slice(bytemuck::cast_slice(&view));
        }
        workspace.readback.unmap();
        Ok(())
    }

    /// LayerNorm, then every dense layer, for `rows` rows already in the workspace.
    fn encode_kernels(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        workspace: &Workspace,
        rows: usize,
    ) {
        let tiled = self.uses_tiled_kernel();
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&self.norm);
        pass.set_bind_group(0, &workspace.norm_bind_group, &[]);
        let (x, y) = self.grid(rows as u64);
        pass.dispatch_workgroups(x, y, 1);
        for (layer, bind_group) in self.layers.iter().zip(&workspace.layer_bind_groups) {
            pass.set_bind_group(0, bind_group, &[]);
            match layer.tiled.as_ref().filter(|_| tiled) {
                Some(pipeline) => {
                    pass.set_pipeline(pipeline);
                    pass.dispatch_workgroups(
                        (layer.outputs as u32).div_ceil(TILE),
                        (rows as u32).div_ceil(TILE),
                        1,
                    );
                }
                None => {
                    pass.set_pipeline(&layer.vector);
                    pass.dispatch_workgroups(
                        (layer.outputs as u32).div_ceil(VECTOR_THREADS),
                        rows.div_ceil(VECTOR_ROWS) as u32,
                        1,
                    );
                }
            }
        }
    }

    /// `groups` workgroups as an x × y grid within the per-dimension limit.
    fn grid(&self, groups: u64) -> (u32, u32) {
        let max = self.max_groups as u64;
        if groups <= max {
            (groups as u32, 1)
        } else {
            (max as u32, groups.div_ceil(max) as u32)
        }
    }

    /// Waits, at most the timeout, for submission `index` to finish.
    fn wait(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(self.timeout),
            })
            .map(|_| ())
            .map_err(|e| Error::backend_failure(format!("wgpu: waiting for the device: {e}")))
    }

    /// A workspace for `rows` rows (up to a chunk): an idle one if one is big enough. Waits while
    /// every workspace is in a call.
    fn workspace(&self, rows: usize) -> Result<WorkspaceLease<'_>> {
        self.lease(rows, true)
            .map(|lease| lease.expect("a waiting lease always gets a workspace"))
    }

    /// Like [`WgpuBackend::workspace`], but `None` instead of waiting.
    fn try_workspace(&self, rows: usize) -> Result<Option<WorkspaceLease<'_>>> {
        self.lease(rows, false)
    }

    fn lease(&self, rows: usize, wait: bool) -> Result<Option<WorkspaceLease<'_>>> {
        let wanted = rows.clamp(1, self.chunk_rows);
        let reused = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(workspace) = pool.idle.pop() {
                    break Some(workspace);
                }
                if pool.live < MAX_WORKSPACES {
                    pool.live += 1;
                    break None;
                }
                if !wait {
                    return Ok(None);
                }
                // Every workspace is in a call, and each call's waits are bounded.
                pool = self.returned.wait(pool).unwrap_or_else(|e| e.into_inner());
            }
        };
        // From here the slot is this call's: the lease gives it back however the call ends.
        let mut lease = WorkspaceLease {
            backend: self,
            workspace: None,
            held: true,
        };
        lease.workspace = match reused {
            Some(workspace) if workspace.capacity >= wanted => Some(workspace),
            _ => {
                // Grow in powers of two so a series of slightly larger batches reallocates rarely.
                let capacity = wanted.next_power_of_two().max(64).min(self.chunk_rows);
                Some(self.new_workspace(capacity)?)
            }
        };
        Ok(Some(lease))
    }

    /// Puts a workspace back in the pool; `None` retires one (after a failure).
    fn return_workspace(&self, workspace: Option<Workspace>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        match workspace {
            Some(workspace) => pool.idle.push(workspace),
            None => pool.live -= 1,
        }
        self.returned.notify_one();
    }

    fn new_workspace(&self, capacity: usize) -> Result<Workspace> {
        let scopes = ErrorScopes::push(&self.device);
        let storage = |label: &str, values: usize, usage: wgpu::BufferUsages| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (values.max(4) * 4) as u64,
                usage: wgpu::BufferUsages::STORAGE | usage,
                mapped_at_creation: false,
            })
        };
        let params = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let input = storage(
            "input",
            capacity * self.input_stride,
            wgpu::BufferUsages::COPY_DST,
        );
        let hidden = [
            storage(
                "hidden 0",
                capacity * self.hidden_width,
                wgpu::BufferUsages::empty(),
            ),
            storage(
                "hidden 1",
                capacity * self.hidden_width,
                wgpu::BufferUsages::empty(),
            ),
        ];
        let output = storage("output", capacity, wgpu::BufferUsages::COPY_SRC);
        let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (capacity.max(4) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let norm_bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("layer norm"),
            layout: &self.norm_layout,
            entries: &[entry(0, &params), entry(1, &input)],
        });
        let last = self.layers.len() - 1;
        let layer_bind_groups = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let from = if i == 0 { &input } else { &hidden[(i - 1) % 2] };
                let to = if i == last { &output } else { &hidden[i % 2] };
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("dense"),
                    layout: &self.dense_layout,
                    entries: &[
                        entry(0, &params),
                        entry(1, from),
                        entry(2, &layer.weight),
                        entry(3, &layer.bias),
                        entry(4, to),
                    ],
                })
            })
            .collect();
        scopes.check("allocating buffers")?;
        Ok(Workspace {
            capacity,
            params,
            input,
            padded: Vec::new(),
            output,
            readback,
            probabilities: Vec::new(),
            norm_bind_group,
            layer_bind_groups,
        })
    }
}

impl Backend for WgpuBackend {
    const NAME: &'static CStr = c"wgpu";
    const VERSION: &'static CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(version) => version,
            Err(_) => panic!("the package version has no NUL"),
        };

    /// Picks an adapter as the settings and the environment say (see [`WgpuSettings`]) and
    /// uploads the model.
    fn create(model: &Model<'_>, settings: Settings) -> Result<Self> {
        let settings = WgpuSettings::from_settings(settings)?.with_env()?;
        WgpuBackend::new(model, &settings)
    }

    fn device_name(&self) -> &CStr {
        &self.device_name
    }

    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        catch_unwind(AssertUnwindSafe(|| {
            self.run(embeddings, rows, probabilities)
        }))
        .unwrap_or_else(|payload| Err(panic_failure("running the model", payload)))
    }
}

/// The pipelines and weights, made once at create.
struct Setup {
    norm: wgpu::ComputePipeline,
    norm_layout: wgpu::BindGroupLayout,
    dense_layout: wgpu::BindGroupLayout,
    layers: Vec<Layer>,
}

impl Setup {
    // Layouts, pipelines and per-layer buffers built in the order the device needs them; to be
    // split with the rest of this file.
    #[allow(clippy::too_many_lines)]
    fn new(device: &wgpu::Device, model: &Model<'_>, kernel: Kernel) -> Result<Setup> {
        let norm_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("layer norm"),
            entries: &[
                layout_entry(0, wgpu::BufferBindingType::Uniform),
                layout_entry(1, storage_type(false)),
            ],
        });
        let dense_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("dense"),
            entries: &[
                layout_entry(0, wgpu::BufferBindingType::Uniform),
                layout_entry(1, storage_type(true)),
                layout_entry(2, storage_type(true)),
                layout_entry(3, storage_type(true)),
                layout_entry(4, storage_type(false)),
            ],
        });
        let pipeline_layout = |layout: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(layout)],
                immediate_size: 0,
            })
        };
        let norm_pipeline_layout = pipeline_layout(&norm_layout);
        let dense_pipeline_layout = pipeline_layout(&dense_layout);
        let module = |label: &str, source: String| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let norm_module = module("layer_norm.wgsl", LAYER_NORM_WGSL.to_owned());
        let vector_module = module(
            "dense_vector.wgsl",
            format!("{ACTIVATION_WGSL}\n{DENSE_VECTOR_WGSL}"),
        );
        let tiled_module = module(
            "dense_tiled.wgsl",
            format!("{ACTIVATION_WGSL}\n{DENSE_TILED_WGSL}"),
        );
        let pipeline = |label: &str,
                        layout: &wgpu::PipelineLayout,
                        module: &wgpu::ShaderModule,
                        constants: &[(&str, f64)]| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(layout),
                module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        };

        let dim = model.input_dim();
        let norm = pipeline(
            "layer norm",
            &norm_pipeline_layout,
            &norm_module,
            &[
                ("DIM", dim as f64),
                ("STRIDE", dim.next_multiple_of(4) as f64),
                ("EPS", f64::from(model.layer_norm_eps())),
            ],
        );
        let want_tiled = kernel == Kernel::Tiled;
        let dense = model.layers();
        if dense.last().map(|layer| layer.outputs) != Some(1) {
            return Err(Error::backend_unavailable(
                "wgpu: the model's last layer must have exactly one output",
            ));
        }
        let layers = dense
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let last = i + 1 == dense.len();
                let inputs = layer.inputs.next_multiple_of(4);
                let outputs = if last {
                    layer.outputs
                } else {
                    layer.outputs.next_multiple_of(4)
                };
                // Transposed (inputs × outputs) so neighbouring invocations, which compute
                // neighbouring columns, read neighbouring addresses. Zero padding: padded outputs
                // come out as activate(0) = 0, which the next layer's padded inputs expect.
                let mut weight = vec![0.0f32; inputs * outputs];
                for (col, row) in layer.weight.chunks_exact(layer.inputs).enumerate() {
                    for (k, &w) in row.iter().enumerate() {
                        weight[k * outputs + col] = w;
                    }
                }
                let mut bias = layer.bias.to_vec();
                bias.resize(outputs, 0.0);
                let activation = if last {
                    ACTIVATION_SIGMOID
                } else if layer.relu {
                    ACTIVATION_RELU
                } else {
                    ACTIVATION_NONE
                };
                let upload = |label: &str, values: &[f32]| {
                    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some(label),
                        contents: bytemuck::cast_slice(values),
                        usage: wgpu::BufferUsages::STORAGE,
                    })
                };
                // The one-output last layer would fill 1 of a tile's 64 columns: vector only.
                let tiled = (want_tiled && !last).then(|| {
                    pipeline(
                        "dense tiled",
                        &dense_pipeline_layout,
                        &tiled_module,
                        &[
                            ("K", inputs as f64),
                            ("N", outputs as f64),
                            ("ACTIVATION", activation),
                        ],
                    )
                });
                Layer {
                    outputs,
                    vector: pipeline(
                        "dense vector",
                        &dense_pipeline_layout,
                        &vector_module,
                        &[
                            ("K4", (inputs / 4) as f64),
                            ("N", outputs as f64),
                            ("ACTIVATION", activation),
                        ],
                    ),
                    tiled,
                    weight: upload("weight", &weight),
                    bias: upload("bias", &bias),
                }
            })
            .collect();
        Ok(Setup {
            norm,
            norm_layout,
            dense_layout,
            layers,
        })
    }
}

/// Validation, out-of-memory and internal error scopes around some device work (this thread's).
struct ErrorScopes {
    scopes: [wgpu::ErrorScopeGuard; 3],
}

impl ErrorScopes {
    fn push(device: &wgpu::Device) -> ErrorScopes {
        ErrorScopes {
            scopes: [
                device.push_error_scope(wgpu::ErrorFilter::Validation),
                device.push_error_scope(wgpu::ErrorFilter::OutOfMemory),
                device.push_error_scope(wgpu::ErrorFilter::Internal),
            ],
        }
    }

    /// Pops the scopes (innermost first); any error they caught is BACKEND_FAILURE.
    fn check(self, doing: &str) -> Result<()> {
        let mut first = None;
        for scope in self.scopes.into_iter().rev() {
            // On native backends the future is ready at once.
            if let Some(error) = pollster::block_on(scope.pop()) {
                first.get_or_insert(error);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => Err(Error::backend_failure(format!("wgpu: {doing}: {error}"))),
        }
    }
}

fn panic_failure(doing: &str, payload: Box<dyn std::any::Any + Send>) -> Error {
    Error::backend_failure(format!(
        "wgpu panicked while {doing}: {}",
        panic_message(payload.as_ref())
    ))
}

/// The graphics APIs named in `names` (comma-separated); `None`: every one built in.
fn parse_backends(names: Option<&str>) -> Result<wgpu::Backends> {
    let Some(names) = names else {
        return Ok(wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12);
    };
    let mut backends = wgpu::Backends::empty();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        backends |= match name.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            _ => {
                return Err(Error::backend_unavailable(format!(
                    "wgpu backends {names:?}: unknown name {name:?}; expected vulkan, metal, dx12 or gl"
                )))
            }
        };
    }
    if backends.is_empty() {
        return Err(Error::backend_unavailable(format!(
            "wgpu backends {names:?} names no graphics API; expected vulkan, metal, dx12 or gl"
        )));
    }
    Ok(backends)
}

/// Instances that have opened a device, one per set of graphics APIs, kept for the process.
///
/// An instance loads the drivers (Vulkan ICDs); dropping the last one unloads them. NVIDIA's
/// driver does not give back everything a load took: with an instance per classifier, resident
/// memory grew by about 0.7 MB per create/destroy on an H200. Kept instances load each driver once.
/// An instance that found no adapter to use (AUTO on a machine without a GPU) is not kept, so such
/// a process holds no driver state after create returns.
static KEPT_INSTANCES: Mutex<Vec<(wgpu::Backends, wgpu::Instance)>> = Mutex::new(Vec::new());

fn kept_instance(backends: wgpu::Backends) -> Option<wgpu::Instance> {
    let kept = KEPT_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    kept.iter()
        .find(|(apis, _)| *apis == backends)
        .map(|(_, instance)| instance.clone())
}

fn keep_instance(backends: wgpu::Backends, instance: &wgpu::Instance) {
    let mut kept = KEPT_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    if !kept.iter().any(|(apis, _)| *apis == backends) {
        kept.push((backends, instance.clone()));
    }
}

/// The best adapter the settings allow: by name if asked, real GPUs before software ones.
fn choose_adapter(
    instance: &wgpu::Instance,
    backends: wgpu::Backends,
    settings: &WgpuSettings,
) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let wanted = settings.adapter.as_deref().map(str::to_lowercase);
    let mut seen = Vec::new();
    let mut candidates = Vec::new();
    for adapter in adapters {
        let info = adapter.get_info();
        let reason = if wanted
            .as_deref()
            .is_some_and(|w| !info.name.to_lowercase().contains(w))
        {
            Some("name does not match")
        } else if info.device_type == wgpu::DeviceType::Cpu && !settings.allow_software {
            Some("software adapter, which AUTO never picks")
        } else if !adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            Some("no compute shaders")
        } else {
            None
        };
        match reason {
            Some(reason) => seen.push(format!("{} ({reason})", describe(&info))),
            None => candidates.push((rank(info.device_type), adapter)),
        }
    }
    candidates.sort_by_key(|(rank, _)| *rank);
    if let Some((_, adapter)) = candidates.into_iter().next() {
        return Ok(adapter);
    }
    let filter = match &settings.adapter {
        Some(name) => format!(" named like {name:?}"),
        None => String::new(),
    };
    let found = if seen.is_empty() {
        "none found".to_owned()
    } else {
        format!("found {}", seen.join("; "))
    };
    Err(Error::backend_unavailable(format!(
        "wgpu: no usable adapter{filter} among backends {backends:?} ({found}); install a \
         Vulkan driver (on Debian: mesa-vulkan-drivers) or set {ADAPTER_ENV} / {BACKENDS_ENV}"
    )))
}

/// Lower is better: discrete GPUs first, software adapters last.
fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// e.g. `wgpu: llvmpipe (LLVM 19.1.7, 256 bits), Vulkan, software adapter (CPU), llvmpipe Mesa 25.0.7`.
fn describe(info: &wgpu::AdapterInfo) -> String {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "software adapter (CPU)",
        wgpu::DeviceType::Other => "other adapter",
    };
    let driver = [info.driver.as_str(), info.driver_info.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let mut text = format!("wgpu: {}, {}, {kind}", info.name, info.backend);
    if !driver.is_empty() {
        text.push_str(", ");
        text.push_str(&driver);
    }
    text
}

fn storage_type(read_only: bool) -> wgpu::BufferBindingType {
    wgpu::BufferBindingType::Storage { read_only }
}

fn layout_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}
