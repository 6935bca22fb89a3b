//! BatchNorm folding: the validated tensors, read through `format`, turned into the float32 dense
//! layers every backend runs, with the overflow checks that folding makes necessary. Kept apart
//! from the file parsing because it is the one place that does arithmetic on the weights.

use std::collections::BTreeMap;

use super::format::{decode, non_finite, out_of_memory, read_vector, tensor_data, File, Layout};
use super::settings::Settings;
use super::{Dense, Model, NormOrder};
use crate::error::{Error, Result};

/// Largest `layer_norm_eps` a model may have: far below the variance of any row the core scales
/// (see the check in [`fold`]).
const MAX_LAYER_NORM_EPS: f64 = 1e10;

/// Folds LayerNorm's affine and every BatchNorm into the dense layers, in float64, one weight row
/// at a time.
///
/// An affine map `x ↦ scale ⊙ x + shift` on a layer's *input* folds into its columns:
/// `W (s ⊙ x + t) + b = (W diag s) x + (W t + b)`. On its *output* it folds into its rows:
/// `s ⊙ (W x + b) + t = (diag s W) x + (s ⊙ b + t)`. BatchNorm before ReLU is the second case;
/// BatchNorm after ReLU, like the LayerNorm affine, is the first case for the next layer.
///
/// Both cases change each weight row on its own, so rows are widened, folded and narrowed one at
/// a time: besides the file, the load holds the float32 model and one row in float64, never the
/// whole model in float64 (which would be twice a float32 file again). The float32 buffers are
/// reserved fallibly, so a model too large for the memory available is an error, not an abort.
///
/// Every folded value must be finite in float32, the precision the backends run in: finite
/// stored values can still overflow once multiplied (a BatchNorm weight of 1e30 over a variance of
/// 1e-30), and such a model is refused here, naming the tensor.
pub(super) fn fold(
    file: &File<'_>,
    layout: &Layout,
    settings: Settings,
    metadata: BTreeMap<String, String>,
) -> Result<Model> {
    let input_dim = layout.input_dim;
    let mut pending_input_affine = Some((
        read_vector(file, "input_norm.weight", input_dim)?,
        read_vector(file, "input_norm.bias", input_dim)?,
    ));
    let mut parameter_count = 2 * input_dim;
    let mut layers = Vec::with_capacity(layout.widths.len() + 1);
    let mut inputs = input_dim;
    for (i, &outputs) in layout.widths.iter().enumerate() {
        let vector = |part: &str| read_vector(file, &format!("hidden.{i}.{part}"), outputs);
        let bias = vector("linear.bias")?;
        let norm_weight = vector("norm.weight")?;
        let norm_bias = vector("norm.bias")?;
        let running_mean = vector("norm.running_mean")?;
        let running_var = vector("norm.running_var")?;
        if let Some(v) = running_var.iter().find(|v| **v < 0.0) {
            return Err(Error::model_invalid(format!(
                "tensor \"hidden.{i}.norm.running_var\" holds a negative variance ({v})"
            )));
        }
        let norm_name = format!("hidden.{i}.norm.weight");
        let mut scale = reserved(outputs, &norm_name, outputs)?;
        let mut shift = reserved(outputs, &norm_name, outputs)?;
        for o in 0..outputs {
            let s = norm_weight[o] / (running_var[o] + settings.batch_norm_eps).sqrt();
            scale.push(s);
            shift.push(norm_bias[o] - s * running_mean[o]);
        }
        let output_affine = match settings.norm_order {
            NormOrder::LinearBnRelu => Some((&scale[..], &shift[..])),
            NormOrder::LinearReluBn => None,
        };
        let prefix = format!("hidden.{i}.linear");
        layers.push(fold_layer(
            file,
            &prefix,
            (inputs, outputs),
            bias,
            pending_input_affine.take(),
            output_affine,
            true,
        )?);
        parameter_count += outputs * inputs + 3 * outputs;
        if settings.norm_order == NormOrder::LinearReluBn {
            pending_input_affine = Some((scale, shift));
        }
        inputs = outputs;
    }
    let bias = read_vector(file, "output.bias", 1)?;
    layers.push(fold_layer(
        file,
        "output",
        (inputs, 1),
        bias,
        pending_input_affine,
        None,
        false,
    )?);
    parameter_count += inputs + 1;
    check_activation_bound(input_dim, &layers)?;

    // A positive eps below float32's smallest value (or above its largest) would make the
    // LayerNorm divide by zero (or by infinity) on a constant row.
    let layer_norm_eps = settings.layer_norm_eps as f32;
    if !(layer_norm_eps.is_finite() && layer_norm_eps > 0.0) {
        return Err(Error::model_invalid(format!(
            "metadata layer_norm_eps is {}, which is {layer_norm_eps} in float32; expected a \
             positive number float32 can hold",
            settings.layer_norm_eps
        )));
    }
    // The core scales a row whose spread exceeds 2^40 down by a power of two before any backend
    // sees it, which leaves its LayerNorm as it was only while eps is negligible beside the
    // scaled row's variance (at least about 2^78 / input_dim): an eps of 1e24 moved such rows'
    // probabilities by up to 0.23. Trained models use 1e-12 to 1e-3.
    if f64::from(layer_norm_eps) > MAX_LAYER_NORM_EPS {
        return Err(Error::model_invalid(format!(
            "metadata layer_norm_eps is {:e}; at most {MAX_LAYER_NORM_EPS:e} is supported",
            settings.layer_norm_eps
        )));
    }
    Ok(Model {
        input_dim,
        layer_norm_eps,
        layers,
        hidden_sizes: layout.widths.clone(),
        norm_order: settings.norm_order,
        batch_norm_eps: settings.batch_norm_eps,
        threshold: settings.threshold,
        metadata,
        parameter_count,
    })
}

/// An affine map `x ↦ scale ⊙ x + shift`, as (scale, shift).
type Affine<T> = (T, T);

/// One dense layer `<prefix>.weight` / `bias`, folded row by row with the affine map on its input
/// (into its columns) and the one on its output (into its rows), narrowed to float32.
fn fold_layer(
    file: &File<'_>,
    prefix: &str,
    (inputs, outputs): (usize, usize),
    mut bias: Vec<f64>,
    input_affine: Option<Affine<Vec<f64>>>,
    output_affine: Option<Affine<&[f64]>>,
    relu: bool,
) -> Result<Dense> {
    let weight_name = format!("{prefix}.weight");
    let (dtype, data) = tensor_data(file, &weight_name, &[outputs, inputs])?;
    let element = data.len() / (outputs * inputs).max(1);
    let mut weight = Vec::new();
    weight
        .try_reserve_exact(outputs * inputs)
        .map_err(|_| out_of_memory(&weight_name, outputs * inputs * 4))?;
    let mut row = reserved(inputs, &weight_name, outputs * inputs)?;
    for (o, stored) in data.chunks_exact(inputs * element).enumerate() {
        row.clear();
        decode(dtype, stored, &mut row);
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(non_finite(&weight_name, o * inputs + j));
        }
        if let Some((scale, shift)) = &input_affine {
            bias[o] += row.iter().zip(shift).map(|(w, t)| w * t).sum::<f64>();
            row.iter_mut().zip(scale).for_each(|(w, s)| *w *= s);
        }
        if let Some((scale, shift)) = output_affine {
            row.iter_mut().for_each(|w| *w *= scale[o]);
            bias[o] = scale[o] * bias[o] + shift[o];
        }
        for (j, &w) in row.iter().enumerate() {
            let narrowed = w as f32;
            if !narrowed.is_finite() {
                return Err(overflows(&weight_name, o * inputs + j, w));
            }
            weight.push(narrowed);
        }
    }
    let bias_name = format!("{prefix}.bias");
    let mut narrowed_bias = reserved(outputs, &bias_name, outputs)?;
    for (o, &b) in bias.iter().enumerate() {
        let narrowed = b as f32;
        if !narrowed.is_finite() {
            return Err(overflows(&bias_name, o, b));
        }
        narrowed_bias.push(narrowed);
    }
    Ok(Dense {
        inputs,
        outputs,
        weight,
        bias: narrowed_bias,
        relu,
    })
}

/// An empty vector with room for `len` values, reserved fallibly: the widths come from the file,
/// so a model too large for the memory available is an error naming `tensor` (of `elements`
/// values), not an abort.
fn reserved<T>(len: usize, tensor: &str, elements: usize) -> Result<Vec<T>> {
    let mut values = Vec::new();
    values
        .try_reserve_exact(len)
        .map_err(|_| out_of_memory(tensor, elements.saturating_mul(4)))?;
    Ok(values)
}

fn overflows(name: &str, index: usize, value: f64) -> Error {
    Error::model_invalid(format!(
        "tensor {name:?} is {value} at index {index} once the normalization layers are folded \
         into it, which float32 cannot hold: its stored values (or those of the BatchNorm or \
         LayerNorm folded into it) are too large"
    ))
}

/// Largest activation bound accepted (2^100, about 1.3e30): far above any trained model's, far
/// enough below float32's largest value (about 3.4e38) that no sum of a layer's products can
/// overflow, whatever the order a backend adds them in.
const MAX_ACTIVATION_BOUND: f64 = 1.2676506002282294e30;

/// Refuses a model whose layers could overflow float32 on some input. The normalized input has
/// |x_i| <= sqrt(input_dim) (a LayerNorm output's largest value is sqrt(n - 1)); each layer's
/// outputs are then at most sum_i |W_oi| * bound + |b_o|, and ReLU only shrinks them. If the
/// bound stays below [`MAX_ACTIVATION_BOUND`] through every layer, every finite input gives a
/// finite logit on every backend.
fn check_activation_bound(input_dim: usize, layers: &[Dense]) -> Result<()> {
    let mut bound = (input_dim as f64).sqrt();
    for (i, layer) in layers.iter().enumerate() {
        let mut largest = 0.0f64;
        for (row, &b) in layer.weight.chunks_exact(layer.inputs).zip(&layer.bias) {
            let sum: f64 = row.iter().map(|w| f64::from(w.abs())).sum::<f64>() * bound;
            largest = largest.max(sum + f64::from(b.abs()));
        }
        if largest.is_nan() || largest > MAX_ACTIVATION_BOUND {
            let name = if i + 1 == layers.len() {
                "output".to_owned()
            } else {
                format!("hidden.{i}.linear")
            };
            return Err(Error::model_invalid(format!(
                "layer {name:?} can reach {largest:e} once the normalization layers are folded \
                 into it; the limit is {MAX_ACTIVATION_BOUND:e}, so that float32 never \
                 overflows: its weights (or those of the BatchNorm or LayerNorm folded into it) \
                 are too large"
            )));
        }
        bound = largest;
    }
    Ok(())
}
