//! Rust-only hooks for this crate's benchmark and tests (feature `bench-hooks`): not part of the
//! plugin.

use std::time::Instant;

use gemma_cyber_plugin::Result;

use super::WgpuBackend;

impl WgpuBackend {
    /// Seconds the device spends on the kernels alone for one chunk of `rows` rows (at most
    /// [`WgpuBackend::chunk_rows`]), averaged over `repeats` runs: no upload, no read-back. For
    /// benchmarks; the inputs are whatever the workspace holds.
    pub fn device_seconds(&self, rows: usize, repeats: usize) -> Result<f64> {
        let rows = rows.clamp(1, self.chunk_rows);
        let lease = self.workspace(rows)?;
        let workspace = &*lease;
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
    pub fn lose_device_for_tests(&self) {
        self.device.destroy();
    }
}
