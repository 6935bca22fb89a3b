//! The folded model as slices, and the storage the core hands to plugins.

use std::mem::size_of;
use std::ptr::NonNull;

use crate::abi::{gemma_cyber_plugin_layer, gemma_cyber_plugin_model};
use crate::error::{Error, Result};

/// One dense layer: `y = weight · x + bias`, then ReLU when `relu`.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// Width of the input.
    pub inputs: usize,
    /// Width of the output.
    pub outputs: usize,
    /// `outputs × inputs`, row-major.
    pub weight: &'a [f32],
    /// `outputs` values.
    pub bias: &'a [f32],
    /// ReLU follows (every layer but the last; the last is followed by the sigmoid).
    pub relu: bool,
}

/// The folded model a plugin runs: a LayerNorm without affine, the dense layers, a sigmoid.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    input_dim: usize,
    layer_norm_eps: f32,
    layers: Vec<Layer<'a>>,
}

impl<'a> Model<'a> {
    /// A model from its parts, checked: widths chain from `input_dim` to one output, every array
    /// has its size, `layer_norm_eps` is positive and finite.
    pub fn new(input_dim: usize, layer_norm_eps: f32, layers: Vec<Layer<'a>>) -> Result<Model<'a>> {
        let bad = |why: String| Err(Error::backend_failure(format!("malformed model: {why}")));
        if !(layer_norm_eps > 0.0 && layer_norm_eps.is_finite()) {
            return bad(format!("layer_norm_eps is {layer_norm_eps}"));
        }
        let mut width = input_dim;
        for (index, layer) in layers.iter().enumerate() {
            if layer.inputs != width || layer.inputs == 0 || layer.outputs == 0 {
                return bad(format!(
                    "layer {index} is {}x{} after a width of {width}",
                    layer.outputs, layer.inputs
                ));
            }
            if Some(layer.weight.len()) != layer.outputs.checked_mul(layer.inputs)
                || layer.bias.len() != layer.outputs
            {
                return bad(format!("layer {index}'s arrays do not match its shape"));
            }
            if layer.relu == (index + 1 == layers.len()) {
                return bad(format!("layer {index} has relu = {}", layer.relu));
            }
            width = layer.outputs;
        }
        if layers.is_empty() || width != 1 {
            return bad(format!("{} layers ending in width {width}", layers.len()));
        }
        Ok(Model {
            input_dim,
            layer_norm_eps,
            layers,
        })
    }

    /// Reads the model the core passed to `create`.
    ///
    /// # Safety
    /// `raw` must be NULL or point to a `gemma_cyber_plugin_model` whose arrays are valid for
    /// `'a`, as the core guarantees until the instance is destroyed.
    pub unsafe fn from_raw(raw: *const gemma_cyber_plugin_model) -> Result<Model<'a>> {
        let bad = |why: &str| Err(Error::backend_failure(format!("malformed model: {why}")));
        if raw.is_null() {
            return bad("NULL");
        }
        // SAFETY: non-NULL, and the caller guarantees it points to a model struct.
        let raw = unsafe { &*raw };
        if (raw.struct_size as usize) < size_of::<gemma_cyber_plugin_model>() {
            return bad("struct_size smaller than version 1's");
        }
        if raw.layers.is_null() || raw.num_layers == 0 {
            return bad("no layers");
        }
        // SAFETY: the core passes `num_layers` layers, valid for the instance's life.
        let raw_layers = unsafe { std::slice::from_raw_parts(raw.layers, raw.num_layers) };
        let mut layers = Vec::with_capacity(raw_layers.len());
        for layer in raw_layers {
            let Some(weights) = layer.outputs.checked_mul(layer.inputs) else {
                return bad("layer size overflows");
            };
            if layer.weight.is_null() || layer.bias.is_null() {
                return bad("NULL layer array");
            }
            layers.push(Layer {
                inputs: layer.inputs,
                outputs: layer.outputs,
                // SAFETY: the core passes arrays of these sizes, valid for the instance's life.
                weight: unsafe { std::slice::from_raw_parts(layer.weight, weights) },
                // SAFETY: as above.
                bias: unsafe { std::slice::from_raw_parts(layer.bias, layer.outputs) },
                relu: layer.relu != 0,
            });
        }
        Model::new(raw.input_dim, raw.layer_norm_eps, layers)
    }

    /// Width of one embedding.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// Epsilon of the input LayerNorm.
    pub fn layer_norm_eps(&self) -> f32 {
        self.layer_norm_eps
    }

    /// The dense layers, input first.
    pub fn layers(&self) -> &[Layer<'a>] {
        &self.layers
    }
}

/// A [`Model`] laid out as the C structs point at it: what the core hands to `create`. The
/// pointers stay valid as long as this value and the model's arrays do. Moving it is fine: the
/// struct and the layer array are heap allocations held by raw pointers, so the pointer `create`
/// was given (which a plugin may keep until destroy) neither moves with it nor is invalidated by
/// the move, as it would be under a `Box`'s claim of unique access.
#[derive(Debug)]
pub struct ModelStorage {
    /// From `Box::into_raw`; its `layers` points at `layers`.
    raw: NonNull<gemma_cyber_plugin_model>,
    /// From `Box::<[gemma_cyber_plugin_layer]>::into_raw`.
    layers: NonNull<[gemma_cyber_plugin_layer]>,
}

// SAFETY: the pointers only ever read immutable data that this value or the owner keeps alive.
unsafe impl Send for ModelStorage {}
// SAFETY: as above: shared reads of immutable data.
unsafe impl Sync for ModelStorage {}

impl ModelStorage {
    /// The C view of `model`. The caller keeps `model`'s arrays alive while it is used.
    pub fn new(model: &Model<'_>) -> ModelStorage {
        let layers: Box<[gemma_cyber_plugin_layer]> = model
            .layers()
            .iter()
            .map(|layer| gemma_cyber_plugin_layer {
                inputs: layer.inputs,
                outputs: layer.outputs,
                weight: layer.weight.as_ptr(),
                bias: layer.bias.as_ptr(),
                relu: u32::from(layer.relu),
            })
            .collect();
        let num_layers = layers.len();
        let layers = NonNull::from(Box::leak(layers));
        let raw = NonNull::from(Box::leak(Box::new(gemma_cyber_plugin_model {
            struct_size: size_of::<gemma_cyber_plugin_model>() as u32,
            input_dim: model.input_dim(),
            layer_norm_eps: model.layer_norm_eps(),
            num_layers,
            layers: layers.as_ptr().cast_const().cast(),
        })));
        ModelStorage { raw, layers }
    }

    /// The struct to pass to `create`.
    pub fn as_raw(&self) -> *const gemma_cyber_plugin_model {
        self.raw.as_ptr().cast_const()
    }
}

impl Drop for ModelStorage {
    fn drop(&mut self) {
        // SAFETY: both came from `Box::leak` in `new` and are freed only here, once.
        unsafe {
            drop(Box::from_raw(self.raw.as_ptr()));
            drop(Box::from_raw(self.layers.as_ptr()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_handed_to_create_does_not_move_with_its_storage() {
        let (weight, bias) = ([0.5f32, -0.25], [0.125f32]);
        let layer = Layer {
            inputs: 2,
            outputs: 1,
            weight: &weight,
            bias: &bias,
            relu: false,
        };
        let storage = ModelStorage::new(&Model::new(2, 1e-5, vec![layer]).unwrap());
        let handed = storage.as_raw();
        // Moved, as the core moves it into the backend after `create` returns.
        let moved = Box::new(storage);
        assert_eq!(moved.as_raw(), handed);
        // SAFETY: `moved` keeps the struct alive; the arrays are `weight` and `bias` above.
        let raw = unsafe { &*handed };
        assert_eq!((raw.input_dim, raw.num_layers), (2, 1));
        // SAFETY: as above: one layer, pointing at `weight`.
        assert_eq!(unsafe { (*raw.layers).weight }, weight.as_ptr());
    }
}
