//! What the wgpu backend is told: the plugin's settings, the environment, the graphics APIs.

use std::time::Duration;

use gemma_cyber_plugin::{Error, Result, Settings};

/// Environment variable: use an adapter whose name contains this (case-insensitive).
pub const ADAPTER_ENV: &str = "GEMMA_CYBER_WGPU_ADAPTER";
/// Environment variable: comma-separated graphics APIs to try (`vulkan`, `metal`, `dx12`, `gl`).
pub const BACKENDS_ENV: &str = "GEMMA_CYBER_WGPU_BACKENDS";

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
    /// Rows per chunk at most (the device's limits may lower it); 0: [`DEFAULT_MAX_CHUNK_ROWS`](super::DEFAULT_MAX_CHUNK_ROWS),
    /// or [`SOFTWARE_MAX_CHUNK_ROWS`](super::SOFTWARE_MAX_CHUNK_ROWS) on a software adapter.
    pub max_chunk_rows: usize,
    /// Rows per submission at most when a call is split in pieces so that copying one piece in
    /// overlaps the device's work on the previous one; 0: [`DEFAULT_PIECE_ROWS`](super::DEFAULT_PIECE_ROWS). Calls of fewer
    /// than 2 × [`MIN_PIECE_ROWS`](super::MIN_PIECE_ROWS) rows run as one piece.
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
            max_chunk_rows: 0,
            piece_rows: 0,
            timeout: Duration::from_secs(60),
        }
    }
}

impl WgpuSettings {
    /// The plugin settings `adapter`, `backends`, `max_chunk_rows`, `piece_rows` and
    /// `timeout_ms`; with `auto=1` (AUTO is choosing) a software adapter is never taken.
    pub fn from_settings(mut settings: Settings) -> Result<WgpuSettings> {
        let defaults = WgpuSettings::default();
        let parsed = WgpuSettings {
            adapter: settings.take("adapter"),
            backends: settings.take("backends"),
            allow_software: !settings.auto()?,
            max_chunk_rows: settings.take_parsed("max_chunk_rows")?.unwrap_or(0),
            piece_rows: settings.take_parsed("piece_rows")?.unwrap_or(0),
            timeout: match settings.take_parsed("timeout_ms")? {
                // No device answers in no time: every call would fail after create succeeded.
                Some(0) => {
                    return Err(Error::backend_unavailable(
                        "setting timeout_ms=\"0\": every call would time out; give at least 1",
                    ))
                }
                milliseconds => milliseconds.map_or(defaults.timeout, Duration::from_millis),
            },
        };
        // The core's thread count is for CPU backends; the device runs its own.
        settings.num_threads()?;
        settings.finish()?;
        Ok(parsed)
    }

    /// These settings with [`ADAPTER_ENV`] and [`BACKENDS_ENV`] filling the fields not already set.
    pub fn with_env(mut self) -> Self {
        // Trimmed as the settings are: " llvmpipe" from a shell script names llvmpipe.
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if self.adapter.is_none() {
            self.adapter = var(ADAPTER_ENV);
        }
        if self.backends.is_none() {
            self.backends = var(BACKENDS_ENV);
        }
        self
    }
}

/// The graphics APIs named in `names` (comma-separated); `None`: every one built in.
pub(super) fn parse_backends(names: Option<&str>) -> Result<wgpu::Backends> {
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
