//! Reading and validating the safetensors model file, and folding it into [`Model`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::{Dense, Model, ModelSource, NormOrder};
use crate::error::{Error, Result, Status};
use crate::fs::ReadError;

/// Largest model file accepted. The real model is 2.2 MB; this leaves room for much wider layers
/// while refusing to pull an absurd file into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Largest safetensors JSON header accepted, checked before the header is parsed. A model has a
/// few dozen tensors and some provenance text, a few KiB in all.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// Most hidden blocks accepted; the deepest sane MLP head is far below this.
const MAX_HIDDEN_LAYERS: usize = 64;

/// The model compiled into the library, used when neither a path nor bytes are given.
static BUILTIN_MODEL: &[u8] = include_bytes!("../../models/default.safetensors");

/// Metadata defaults of DESIGN.md, for files that leave an entry out.
const DEFAULT_THRESHOLD: f32 = 0.5;
const DEFAULT_EPS: f64 = 1e-5;

impl Model {
    /// The model compiled into the library.
    pub fn builtin() -> Result<Model> {
        Model::load(&ModelSource::Builtin, None)
    }

    /// The bytes of the built-in model's safetensors file, e.g. to write a modified copy.
    pub fn builtin_bytes() -> &'static [u8] {
        BUILTIN_MODEL
    }

    /// Reads and validates the model file at `path`.
    ///
    /// A file that cannot be opened is `ModelNotFound`; a file that opens but is not a valid model
    /// is `ModelInvalid`.
    pub fn from_path(path: &Path) -> Result<Model> {
        Model::load(&ModelSource::Path(path.to_path_buf()), None)
    }

    /// Loads a model from any source. With `model_sha256`, the file's bytes must hash to it
    /// (checked before anything is parsed), else `ModelInvalid`.
    pub fn load(source: &ModelSource, model_sha256: Option<&[u8; 32]>) -> Result<Model> {
        let (bytes, name): (Cow<'_, [u8]>, Cow<'_, str>) = match source {
            ModelSource::Builtin => (Cow::Borrowed(BUILTIN_MODEL), "built-in model".into()),
            ModelSource::Path(path) => (
                read_file(path)?.into(),
                format!("model file {}", path.display()).into(),
            ),
            ModelSource::Bytes(bytes) => (Cow::Borrowed(bytes), "model data".into()),
        };
        let verified = || -> Result<Model> {
            if let Some(expected) = model_sha256 {
                let actual: [u8; 32] = Sha256::digest(&bytes).into();
                if &actual != expected {
                    return Err(Error::model_invalid(format!(
                        "SHA-256 is {} but {} was expected",
                        hex(&actual),
                        hex(expected)
                    )));
                }
            }
            Model::from_bytes(&bytes)
        };
        verified().map_err(|e| e.context(name))
    }

    /// Validates a whole safetensors file held in memory and folds it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        check_envelope(bytes)?;
        // read_metadata checks every offset, dtype size and shape product against the buffer.
        let (header_len, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::model_invalid(format!("not a valid safetensors file: {e}")))?;
        let file = File {
            header: &header,
            data: &bytes[8 + header_len..],
        };
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let settings = Settings::from_metadata(&metadata)?;
        let layout = Layout::read(&file)?;
        fold(&file, &layout, settings, metadata)
    }
}

/// The whole file at `path`: a regular file of at most [`MAX_FILE_BYTES`], read through that cap.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    crate::fs::read_regular_file(path, MAX_FILE_BYTES).map_err(|e| {
        let status = match e {
            ReadError::Open(_) | ReadError::Read(_) => Status::ModelNotFound,
            ReadError::TooLarge { .. } | ReadError::OutOfMemory(_) => Status::ModelInvalid,
        };
        Error::new(
            status,
            format!("cannot read model file {}: {e}", path.display()),
        )
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A parsed, offset-checked safetensors file: its header and the byte buffer after it.
struct File<'a> {
    header: &'a Metadata,
    data: &'a [u8],
}

impl File<'_> {
    fn names(&self) -> Vec<String> {
        self.header.tensors().into_keys().collect()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.header
            .info(name)
            .ok_or_else(|| Error::model_invalid(format!("missing tensor {name:?}")))
    }
}

/// Size checks made before any JSON is parsed, so a hostile length never drives an allocation.
fn check_envelope(bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::model_invalid(format!(
            "model is {} bytes; the limit is {MAX_FILE_BYTES}",
            bytes.len()
        )));
    }
    let Some(prefix) = bytes.get(..8) else {
        return Err(Error::model_invalid(format!(
            "not a safetensors file: {} bytes is shorter than the 8-byte header length",
            bytes.len()
        )));
    };
    let header_len = u64::from_le_bytes(prefix.try_into().expect("slice of 8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::model_invalid(format!(
            "safetensors header claims {header_len} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    if header_len > bytes.len() as u64 - 8 {
        return Err(Error::model_invalid(format!(
            "safetensors header claims {header_len} bytes but the file has only {} after the length",
            bytes.len() - 8
        )));
    }
    Ok(())
}

/// The metadata entries that change the math, with DESIGN.md's defaults applied.
struct Settings {
    norm_order: NormOrder,
    layer_norm_eps: f64,
    batch_norm_eps: f64,
    threshold: f32,
}

impl Settings {
    fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Settings> {
        if let Some(format) = metadata.get("format") {
            if format != "gemma-cyber" {
                return Err(Error::model_invalid(format!(
                    "metadata format is {format:?}; expected \"gemma-cyber\""
                )));
            }
        }
        if let Some(version) = metadata.get("format_version") {
            if version.trim() != "1" {
                return Err(Error::model_invalid(format!(
                    "metadata format_version is {version:?}; this library reads version 1"
                )));
            }
        }
        let norm_order = match metadata.get("norm_order").map(String::as_str) {
            None | Some("linear_bn_relu") => NormOrder::LinearBnRelu,
            Some("linear_relu_bn") => NormOrder::LinearReluBn,
            Some(other) => {
                return Err(Error::model_invalid(format!(
                    "metadata norm_order is {other:?}; expected \"linear_bn_relu\" or \"linear_relu_bn\""
                )))
            }
        };
        let eps = |key: &str| -> Result<f64> {
            let Some(text) = metadata.get(key) else {
                return Ok(DEFAULT_EPS);
            };
            match text.trim().parse::<f64>() {
                Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
                _ => Err(Error::model_invalid(format!(
                    "metadata {key} is {text:?}; expected a positive finite number"
                ))),
            }
        };
        let threshold = match metadata.get("threshold") {
            None => DEFAULT_THRESHOLD,
            Some(text) => match text.trim().parse::<f32>() {
                Ok(value) if (0.0..=1.0).contains(&value) => value,
                _ => {
                    return Err(Error::model_invalid(format!(
                        "metadata threshold is {text:?}; expected a number in [0, 1]"
                    )))
                }
            },
        };
        Ok(Settings {
            norm_order,
            layer_norm_eps: eps("layer_norm_eps")?,
            batch_norm_eps: eps("batch_norm_eps")?,
            threshold,
        })
    }
}

/// The file's layout, checked for names and shapes; values are read while folding.
struct Layout {
    input_dim: usize,
    /// Outputs of each hidden block.
    widths: Vec<usize>,
}

impl Layout {
    fn read(file: &File<'_>) -> Result<Layout> {
        let names = file.names();
        // Checked before the names are searched: an absurd count is refused in one step.
        let most = expected_names(MAX_HIDDEN_LAYERS).len();
        if names.len() > most {
            return Err(Error::model_invalid(format!(
                "model has {} tensors; a gemma-cyber model has at most {most}",
                names.len()
            )));
        }
        let hidden = (0..=MAX_HIDDEN_LAYERS)
            .take_while(|i| names.contains(&format!("hidden.{i}.linear.weight")))
            .count();
        if hidden > MAX_HIDDEN_LAYERS {
            return Err(Error::model_invalid(format!(
                "model has more than {MAX_HIDDEN_LAYERS} hidden layers"
            )));
        }
        let expected = expected_names(hidden);
        if let Some(name) = names.iter().find(|name| !expected.contains(name)) {
            return Err(Error::model_invalid(format!(
                "unexpected tensor {name:?} (a model with {hidden} hidden layers has: {})",
                expected.join(", ")
            )));
        }
        if let Some(name) = expected.iter().find(|e| !names.contains(e)) {
            return Err(Error::model_invalid(format!("missing tensor {name:?}")));
        }

        let input_dim = match file.info("input_norm.weight")?.shape[..] {
            [dim] if dim > 0 => dim,
            ref shape => {
                return Err(Error::model_invalid(format!(
                    "tensor \"input_norm.weight\" has shape {shape:?}; expected [input_dim] with input_dim > 0"
                )))
            }
        };
        let mut widths = Vec::with_capacity(hidden);
        let mut width = input_dim;
        for i in 0..hidden {
            let name = format!("hidden.{i}.linear.weight");
            let shape = &file.info(&name)?.shape;
            if shape.len() != 2 || shape[1] != width || shape[0] == 0 {
                return Err(Error::model_invalid(format!(
                    "tensor {name:?} has shape {shape:?}; expected [outputs, {width}] to follow the previous layer"
                )));
            }
            widths.push(shape[0]);
            width = shape[0];
        }
        Ok(Layout { input_dim, widths })
    }
}

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
fn fold(
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
        let (scale, shift): (Vec<f64>, Vec<f64>) = (0..outputs)
            .map(|o| {
                let s = norm_weight[o] / (running_var[o] + settings.batch_norm_eps).sqrt();
                (s, norm_bias[o] - s * running_mean[o])
            })
            .unzip();
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
    let mut row = Vec::with_capacity(inputs);
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
    let bias = bias
        .iter()
        .enumerate()
        .map(|(o, &b)| {
            let narrowed = b as f32;
            if narrowed.is_finite() {
                Ok(narrowed)
            } else {
                Err(overflows(&bias_name, o, b))
            }
        })
        .collect::<Result<Vec<f32>>>()?;
    Ok(Dense {
        inputs,
        outputs,
        weight,
        bias,
        relu,
    })
}

fn overflows(name: &str, index: usize, value: f64) -> Error {
    Error::model_invalid(format!(
        "tensor {name:?} is {value} at index {index} once the normalization layers are folded \
         into it, which float32 cannot hold: its stored values (or those of the BatchNorm or \
         LayerNorm folded into it) are too large"
    ))
}

fn non_finite(name: &str, index: usize) -> Error {
    Error::model_invalid(format!(
        "tensor {name:?} holds a non-finite value at index {index}"
    ))
}

fn out_of_memory(name: &str, bytes: usize) -> Error {
    Error::model_invalid(format!(
        "not enough memory to load tensor {name:?} ({bytes} bytes as float32)"
    ))
}

fn expected_names(hidden: usize) -> Vec<String> {
    let mut names = vec!["input_norm.weight".to_owned(), "input_norm.bias".to_owned()];
    for i in 0..hidden {
        for part in [
            "linear.weight",
            "linear.bias",
            "norm.weight",
            "norm.bias",
            "norm.running_mean",
            "norm.running_var",
        ] {
            names.push(format!("hidden.{i}.{part}"));
        }
    }
    names.extend(["output.weight".to_owned(), "output.bias".to_owned()]);
    names
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

/// A tensor's dtype and bytes, checked for shape and dtype.
fn tensor_data<'f>(file: &File<'f>, name: &str, shape: &[usize]) -> Result<(Dtype, &'f [u8])> {
    let info = file.info(name)?;
    if info.shape != shape {
        return Err(Error::model_invalid(format!(
            "tensor {name:?} has shape {:?}; expected {shape:?}",
            info.shape
        )));
    }
    if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(Error::model_invalid(format!(
            "tensor {name:?} has dtype {:?}; expected F32, F16 or BF16",
            info.dtype
        )));
    }
    let (start, end) = info.data_offsets;
    Ok((info.dtype, &file.data[start..end]))
}

/// Little-endian values of `dtype`, widened to float64 and appended to `out`.
fn decode(dtype: Dtype, data: &[u8], out: &mut Vec<f64>) {
    match dtype {
        Dtype::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64),
        ),
        Dtype::F16 => out.extend(
            data.chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64()),
        ),
        Dtype::BF16 => out.extend(
            data.chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64()),
        ),
        _ => unreachable!("tensor_data accepts only float dtypes"),
    }
}

/// A one-dimensional tensor of `len` values, checked for dtype, shape and finiteness, widened to
/// float64.
fn read_vector(file: &File<'_>, name: &str, len: usize) -> Result<Vec<f64>> {
    let (dtype, data) = tensor_data(file, name, &[len])?;
    let mut values = Vec::new();
    values
        .try_reserve_exact(len)
        .map_err(|_| out_of_memory(name, len * 4))?;
    decode(dtype, data, &mut values);
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(non_finite(name, index)),
        None => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny_model_bytes;

    #[test]
    fn tiny_model_loads_with_metadata_defaults_and_overrides() {
        let model = Model::from_bytes(&tiny_model_bytes(&[])).unwrap();
        assert_eq!((model.input_dim(), model.hidden_sizes()), (4, &[3][..]));
        assert_eq!(
            (model.threshold(), model.norm_order()),
            (0.5, NormOrder::LinearBnRelu)
        );
        let other = Model::from_bytes(&tiny_model_bytes(&[
            ("norm_order", "linear_relu_bn"),
            ("threshold", "0.25"),
        ]))
        .unwrap();
        assert_eq!(
            (other.threshold(), other.norm_order()),
            (0.25, NormOrder::LinearReluBn)
        );
        assert_ne!(
            model.layers(),
            other.layers(),
            "the BatchNorm order changes the folded weights"
        );
    }

    #[test]
    fn every_truncation_of_a_valid_file_is_refused() {
        let bytes = tiny_model_bytes(&[]);
        for len in (0..bytes.len()).step_by(7) {
            let error = Model::from_bytes(&bytes[..len]).unwrap_err();
            assert_eq!(error.status(), Status::ModelInvalid, "length {len}");
        }
    }

    #[test]
    fn sha256_mismatch_is_refused_before_parsing() {
        let bytes = tiny_model_bytes(&[]);
        let expected: [u8; 32] = Sha256::digest(&bytes).into();
        assert!(Model::load(&ModelSource::Bytes(bytes.clone()), Some(&expected)).is_ok());
        let junk = ModelSource::Bytes(b"not a model".to_vec());
        let error = Model::load(&junk, Some(&expected)).unwrap_err();
        assert!(error.message().contains("SHA-256 is "), "{error}");
    }
}
