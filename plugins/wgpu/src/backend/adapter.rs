//! Which adapter runs the model, and the instances kept for the process.

use std::sync::Mutex;

use gemma_cyber_plugin::{Error, Result};

use super::settings::{WgpuSettings, ADAPTER_ENV, BACKENDS_ENV};

/// Instances that have opened a device, one per set of graphics APIs, kept for the process.
///
/// An instance loads the drivers (Vulkan ICDs); dropping the last one unloads them. NVIDIA's
/// driver does not give back everything a load took: with an instance per classifier, resident
/// memory grew by about 0.7 MB per create/destroy on an H200. Kept instances load each driver once.
/// An instance that found no adapter to use (AUTO on a machine without a GPU) is not kept, so such
/// a process holds no driver state after create returns.
static KEPT_INSTANCES: Mutex<Vec<(wgpu::Backends, wgpu::Instance)>> = Mutex::new(Vec::new());

pub(super) fn kept_instance(backends: wgpu::Backends) -> Option<wgpu::Instance> {
    let kept = KEPT_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    kept.iter()
        .find(|(apis, _)| *apis == backends)
        .map(|(_, instance)| instance.clone())
}

pub(super) fn keep_instance(backends: wgpu::Backends, instance: &wgpu::Instance) {
    let mut kept = KEPT_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    if !kept.iter().any(|(apis, _)| *apis == backends) {
        kept.push((backends, instance.clone()));
    }
}

/// The best adapter the settings allow: by name if asked, real GPUs before software ones.
pub(super) fn choose_adapter(
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
pub(super) fn describe(info: &wgpu::AdapterInfo) -> String {
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
