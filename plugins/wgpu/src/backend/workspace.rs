//! The pool of workspaces: the buffers and bind groups of the calls in flight.

use gemma_cyber_plugin::{Lease, OnDrop, Pool, Result};

use super::errors::ErrorScopes;
use super::WgpuBackend;

/// Workspaces alive at once; more concurrent calls wait for one to come back.
const MAX_WORKSPACES: usize = 4;

/// Buffers and bind groups of one call in flight, for up to `capacity` rows.
pub(super) struct Workspace {
    pub(super) capacity: usize,
    pub(super) params: wgpu::Buffer,
    pub(super) input: wgpu::Buffer,
    /// Inputs of one chunk, padded to the input stride (only when the width is not a multiple of 4).
    pub(super) padded: Vec<f32>,
    pub(super) output: wgpu::Buffer,
    pub(super) readback: wgpu::Buffer,
    /// Probabilities of the whole call (kept by the call's first workspace), copied out only when
    /// every piece succeeded.
    pub(super) probabilities: Vec<f32>,
    pub(super) norm_bind_group: wgpu::BindGroup,
    pub(super) layer_bind_groups: Vec<wgpu::BindGroup>,
}

/// A workspace leased by one call. [`Lease::give_back`] returns it for reuse; dropping the lease
/// instead (a failure, a panic) retires the workspace, since the device may still be using its
/// buffers, and frees its slot, so none is ever lost.
pub(super) type WorkspaceLease<'a> = Lease<'a, Workspace>;

/// The pool of [`Workspace`]s, at most [`MAX_WORKSPACES`].
pub(super) fn workspace_pool() -> Pool<Workspace> {
    Pool::new(MAX_WORKSPACES, OnDrop::Retire)
}

impl WgpuBackend {
    /// A workspace for `rows` rows (up to a chunk): an idle one if one is big enough. Waits while
    /// every workspace is in a call (each call's waits are bounded).
    pub(super) fn workspace(&self, rows: usize) -> Result<WorkspaceLease<'_>> {
        self.workspaces.lease(|idle| self.fit_workspace(idle, rows))
    }

    /// Like [`WgpuBackend::workspace`], but `None` instead of waiting.
    pub(super) fn try_workspace(&self, rows: usize) -> Result<Option<WorkspaceLease<'_>>> {
        self.workspaces
            .try_lease(|idle| self.fit_workspace(idle, rows))
    }

    /// `idle` if it holds `rows` rows, else a new workspace in its place.
    fn fit_workspace(&self, idle: Option<Workspace>, rows: usize) -> Result<Workspace> {
        let wanted = rows.clamp(1, self.chunk_rows);
        match idle {
            Some(workspace) if workspace.capacity >= wanted => Ok(workspace),
            _ => {
                // Grow in powers of two so a series of slightly larger batches reallocates rarely.
                let capacity = wanted.next_power_of_two().max(64).min(self.chunk_rows);
                self.new_workspace(capacity)
            }
        }
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

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}
