//! The kernels and weights on the device, made once at create: bind group layouts, compiled
//! pipelines, and each dense layer's weights transposed and padded.

use wgpu::util::DeviceExt;

use gemma_cyber_plugin::{Error, Layer as ModelLayer, Model, Result};

/// Invocations per workgroup of the vector kernel (its `THREADS`).
pub(super) const VECTOR_THREADS: u32 = 64;
/// Rows each invocation of the vector kernel computes (its `ROWS`, a multiple of 4).
pub(super) const VECTOR_ROWS: usize = 4;

const LAYER_NORM_WGSL: &str = include_str!("../../../../shaders/layer_norm.wgsl");
const ACTIVATION_WGSL: &str = include_str!("../../../../shaders/activation.wgsl");
const DENSE_VECTOR_WGSL: &str = include_str!("../../../../shaders/dense_vector.wgsl");

/// One dense layer on the device, padded so every row is a whole number of vec4s.
pub(super) struct Layer {
    /// Outputs per row, padded to a multiple of 4 except for the last layer.
    pub(super) outputs: usize,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) weight: wgpu::Buffer,
    pub(super) bias: wgpu::Buffer,
}

/// The pipelines and weights, made once at create.
pub(super) struct Setup {
    pub(super) norm: wgpu::ComputePipeline,
    pub(super) norm_layout: wgpu::BindGroupLayout,
    pub(super) dense_layout: wgpu::BindGroupLayout,
    pub(super) layers: Vec<Layer>,
}

impl Setup {
    pub(super) fn new(device: &wgpu::Device, model: &Model<'_>) -> Result<Setup> {
        let dense = model.layers();
        if dense.last().map(|layer| layer.outputs) != Some(1) {
            return Err(Error::backend_unavailable(
                "wgpu: the model's last layer must have exactly one output",
            ));
        }
        let norm_layout = bind_group_layout(device, "layer norm", &[false]);
        let dense_layout = bind_group_layout(device, "dense", &[true, true, true, false]);
        let dim = model.input_dim();
        let norm = Program::new(device, "layer_norm.wgsl", &norm_layout, LAYER_NORM_WGSL).pipeline(
            device,
            "layer norm",
            &[
                ("DIM", dim as f64),
                ("STRIDE", dim.next_multiple_of(4) as f64),
                ("EPS", f64::from(model.layer_norm_eps())),
            ],
        );
        let vector = Program::new(
            device,
            "dense_vector.wgsl",
            &dense_layout,
            &format!("{ACTIVATION_WGSL}\n{DENSE_VECTOR_WGSL}"),
        );
        let layers = dense
            .iter()
            .enumerate()
            .map(|(i, layer)| upload_layer(device, &vector, layer, i + 1 == dense.len()))
            .collect();
        Ok(Setup {
            norm,
            norm_layout,
            dense_layout,
            layers,
        })
    }
}

/// A dense layer's pipeline and weights: transposed (inputs × outputs) so neighbouring
/// invocations, which compute neighbouring columns, read neighbouring addresses. Zero padding:
/// padded outputs come out as activate(0) = 0, which the next layer's padded inputs expect.
fn upload_layer(
    device: &wgpu::Device,
    vector: &Program,
    layer: &ModelLayer<'_>,
    last: bool,
) -> Layer {
    let inputs = layer.inputs.next_multiple_of(4);
    let outputs = if last {
        layer.outputs
    } else {
        layer.outputs.next_multiple_of(4)
    };
    let mut weight = vec![0.0f32; inputs * outputs];
    for (col, row) in layer.weight.chunks_exact(layer.inputs).enumerate() {
        for (k, &w) in row.iter().enumerate() {
            weight[k * outputs + col] = w;
        }
    }
    let mut bias = layer.bias.to_vec();
    bias.resize(outputs, 0.0);
    let upload = |label: &str, values: &[f32]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(values),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    Layer {
        outputs,
        pipeline: vector.pipeline(
            device,
            "dense vector",
            &[
                ("THREADS", f64::from(VECTOR_THREADS)),
                ("ROWS", VECTOR_ROWS as f64),
                ("K4", (inputs / 4) as f64),
                ("N", outputs as f64),
                ("RELU", f64::from(u8::from(layer.relu && !last))),
                ("SIGMOID", f64::from(u8::from(last))),
            ],
        ),
        weight: upload("weight", &weight),
        bias: upload("bias", &bias),
    }
}

/// A layout of a uniform (binding 0) then one storage buffer per entry of `read_only`.
fn bind_group_layout(
    device: &wgpu::Device,
    label: &str,
    read_only: &[bool],
) -> wgpu::BindGroupLayout {
    let buffer = |binding: usize, ty| wgpu::BindGroupLayoutEntry {
        binding: binding as u32,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let entries: Vec<_> =
        std::iter::once(buffer(0, wgpu::BufferBindingType::Uniform))
            .chain(read_only.iter().enumerate().map(|(i, &read_only)| {
                buffer(i + 1, wgpu::BufferBindingType::Storage { read_only })
            }))
            .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    })
}

/// A compiled WGSL module and the layout of its bindings, from which pipelines are made.
struct Program {
    module: wgpu::ShaderModule,
    layout: wgpu::PipelineLayout,
}

impl Program {
    fn new(
        device: &wgpu::Device,
        label: &str,
        bindings: &wgpu::BindGroupLayout,
        source: &str,
    ) -> Program {
        Program {
            module: device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            }),
            layout: device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(bindings)],
                immediate_size: 0,
            }),
        }
    }

    /// The pipeline of the module's `main` with its overridable constants set to `constants`.
    fn pipeline(
        &self,
        device: &wgpu::Device,
        label: &str,
        constants: &[(&str, f64)],
    ) -> wgpu::ComputePipeline {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&self.layout),
            module: &self.module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        })
    }
}
