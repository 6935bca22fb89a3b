//! One call: its rows split in pieces, each uploaded, run and read back, two in flight at once.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gemma_cyber_plugin::{Error, Result};

use super::errors::ErrorScopes;
use super::pipelines::{VECTOR_ROWS, VECTOR_THREADS};
use super::workspace::{Workspace, WorkspaceLease};
use super::{WgpuBackend, MIN_PIECE_ROWS};

/// A piece on its way through the device: its submission and the mapping of its results.
struct Submitted {
    index: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    count: usize,
}

impl WgpuBackend {
    pub(super) fn run(
        &self,
        embeddings: &[f32],
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<()> {
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
        let mut results = std::mem::take(&mut leases[0].probabilities);
        results.clear();
        results.resize(rows, 0.0);
        let scopes = ErrorScopes::push(&self.device);
        let outcome = self.run_pieces(&mut leases, embeddings, piece, &mut results);
        // An error a scope caught (at submit, say) is the cause of any failure that followed.
        match scopes.check("running the model").and(outcome) {
            Ok(()) => {
                probabilities.copy_from_slice(&results);
                leases[0].probabilities = results;
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
        let mut in_flight = VecDeque::with_capacity(leases.len());
        let (mut next, mut slot) = (0, 0);
        loop {
            if next < rows && in_flight.len() < leases.len() {
                let count = piece.min(rows - next);
                let input = &embeddings[next * self.input_dim..(next + count) * self.input_dim];
                let submitted = self.submit_piece(&mut leases[slot], input, count);
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
            self.finish_piece(&leases[done], submitted, &mut results[first..first + count])?;
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
    pub(super) fn encode_kernels(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        workspace: &Workspace,
        rows: usize,
    ) {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&self.norm);
        pass.set_bind_group(0, &workspace.norm_bind_group, &[]);
        let (x, y) = self.grid(rows as u64);
        pass.dispatch_workgroups(x, y, 1);
        for (layer, bind_group) in self.layers.iter().zip(&workspace.layer_bind_groups) {
            pass.set_bind_group(0, bind_group, &[]);
            pass.set_pipeline(&layer.pipeline);
            pass.dispatch_workgroups(
                (layer.outputs as u32).div_ceil(VECTOR_THREADS),
                rows.div_ceil(VECTOR_ROWS) as u32,
                1,
            );
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
    pub(super) fn wait(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(self.timeout),
            })
            .map(|_| ())
            .map_err(|e| Error::backend_failure(format!("wgpu: waiting for the device: {e}")))
    }
}
