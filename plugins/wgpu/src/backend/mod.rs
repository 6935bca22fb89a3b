//! The wgpu backend: the folded model as WGSL compute shaders (`shaders/`) on Vulkan, Metal or DX12.
//!
//! Weights are uploaded once at create. Each call borrows a workspace (its buffers and bind
//! groups) from a small pool, so concurrent calls never share buffers and a later call reuses them;
//! batches larger than the device's binding or dispatch limits run in chunks.
//!
//! Kernels: LayerNorm in place (one workgroup per row); each dense layer without workgroup memory,
//! one output column of 4 rows per invocation in vec4 steps (`dense_vector.wgsl`, the one-output
//! last layer fused with the sigmoid). Weights are stored transposed (inputs × outputs), so
//! neighbouring invocations read neighbouring addresses.
//!
//! One file per job: `settings` what the backend is told, `adapter` which device runs it,
//! `pipelines` the kernels and weights, `workspace` the buffers of the calls in flight, `run`
//! one call, `errors` how device errors reach a call.

mod adapter;
mod errors;
#[cfg(feature = "bench-hooks")]
mod hooks;
mod pipelines;
mod run;
mod settings;
mod workspace;

use std::ffi::{CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use gemma_cyber_plugin::{Backend, Error, Model, Pool, Result, Settings};

use adapter::{choose_adapter, describe, keep_instance, kept_instance};
use errors::{panic_failure, DeviceEvents, ErrorScopes};
use pipelines::{Layer, Setup, VECTOR_ROWS};
pub use settings::{WgpuSettings, ADAPTER_ENV, BACKENDS_ENV};
use workspace::Workspace;

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
    timeout: Duration,
    events: Arc<DeviceEvents>,
    workspaces: Pool<Workspace>,
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

    fn start(model: &Model<'_>, settings: &WgpuSettings) -> Result<WgpuBackend> {
        let backends = settings::parse_backends(settings.backends.as_deref())?;
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
        let events = DeviceEvents::watch(&device);

        check_weights_bind(model, &limits, &info.name)?;
        let scopes = ErrorScopes::push(&device);
        let setup = Setup::new(&device, model)?;
        scopes.check("compiling the kernels and uploading the weights")?;

        let input_stride = model.input_dim().next_multiple_of(4);
        let hidden_width = setup.layers[..setup.layers.len() - 1]
            .iter()
            .map(|layer| layer.outputs)
            .max()
            .unwrap_or(1);
        let requested = match settings.max_chunk_rows {
            0 if software => SOFTWARE_MAX_CHUNK_ROWS,
            0 => DEFAULT_MAX_CHUNK_ROWS,
            n => n,
        };
        let widest = input_stride.max(hidden_width);
        let chunk_rows = chunk_rows(requested, widest, &limits, &info.name)?;

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
            max_groups: limits.max_compute_workgroups_per_dimension.max(1),
            timeout: settings.timeout,
            events,
            workspaces: workspace::workspace_pool(),
            _trim: TrimHeapOnDrop,
        })
    }
}

impl Backend for WgpuBackend {
    const NAME: &'static CStr = c"wgpu";
    const VERSION: &'static CStr = gemma_cyber_plugin::package_version!();

    /// Picks an adapter as the settings and the environment say (see [`WgpuSettings`]) and
    /// uploads the model.
    fn create(model: &Model<'_>, settings: Settings) -> Result<Self> {
        let settings = WgpuSettings::from_settings(settings)?.with_env();
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

/// BACKEND_UNAVAILABLE unless every layer's weights, as uploaded (inputs and hidden outputs padded
/// to a multiple of 4), fit one binding of the device: otherwise create would succeed and every
/// call fail when it binds them.
fn check_weights_bind(model: &Model<'_>, limits: &wgpu::Limits, adapter: &str) -> Result<()> {
    let max_binding = max_binding(limits);
    let layers = model.layers();
    for (index, layer) in layers.iter().enumerate() {
        let outputs = if index + 1 == layers.len() {
            layer.outputs
        } else {
            layer.outputs.next_multiple_of(4)
        };
        let bytes = (layer.inputs.next_multiple_of(4) as u64)
            .saturating_mul(outputs as u64)
            .saturating_mul(4);
        if bytes > max_binding {
            return Err(Error::backend_unavailable(format!(
                "wgpu: layer {index}'s weights take {bytes} bytes; {adapter} binds at most \
                 {max_binding} bytes in one buffer"
            )));
        }
    }
    Ok(())
}

/// Bytes the device lets one storage buffer be and bind.
fn max_binding(limits: &wgpu::Limits) -> u64 {
    limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size)
}

/// Rows one chunk holds at most: `requested`, lowered to what the device's limits allow for rows
/// of `widest` values; none is BACKEND_UNAVAILABLE.
fn chunk_rows(
    requested: usize,
    widest: usize,
    limits: &wgpu::Limits,
    adapter: &str,
) -> Result<usize> {
    let widest = widest as u64 * 4;
    let max_binding = max_binding(limits);
    let by_binding = (max_binding / widest) as usize;
    // The dense kernel runs one workgroup row per VECTOR_ROWS rows; LayerNorm's one workgroup per
    // row spills into y.
    let by_dispatch = limits.max_compute_workgroups_per_dimension.max(1) as usize * VECTOR_ROWS;
    // Row indices times widths stay below 2^32 in the shaders' u32 arithmetic.
    let by_index = (u32::MAX as u64 / (widest / 4)) as usize;
    match requested.min(by_binding).min(by_dispatch).min(by_index) {
        0 => Err(Error::backend_unavailable(format!(
            "wgpu: {adapter} binds at most {max_binding} bytes, less than one row of this model"
        ))),
        rows => Ok(rows),
    }
}

#[cfg(test)]
mod tests {
    use super::check_weights_bind;
    use gemma_cyber_plugin::Status;

    #[test]
    fn weights_larger_than_one_binding_are_refused_at_create() {
        let model = gemma_cyber::Model::builtin().unwrap();
        let view = model.plugin_view().unwrap();
        // The first layer, 768 x 512 float32, is the largest: 1,572,864 bytes.
        let limits = |bytes: u64| wgpu::Limits {
            max_storage_buffer_binding_size: bytes,
            ..wgpu::Limits::default()
        };
        let error = check_weights_bind(&view, &limits(1_572_863), "a small device").unwrap_err();
        assert_eq!(error.status(), Status::BackendUnavailable, "{error}");
        assert!(
            error
                .message()
                .contains("layer 0's weights take 1572864 bytes; a small device binds at most"),
            "{error}"
        );
        check_weights_bind(&view, &limits(1_572_864), "a device").unwrap();
    }
}
