//! Reading and validating the safetensors model file: the size envelope, the optional SHA-256, the
//! tensor names and shapes, and each tensor's values widened to float64.
//!
//! What the file's bytes mean stops here: the metadata entries are read in `settings`, and turning
//! the tensors into the folded dense layers every backend runs is `fold`'s job, so this file never
//! does arithmetic on the weights.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::fold::fold;
use super::settings::Settings;
use super::{Model, ModelSource};
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
pub(super) struct File<'a> {
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

/// The file's layout, checked for names and shapes; values are read while folding.
pub(super) struct Layout {
    pub(super) input_dim: usize,
    /// Outputs of each hidden block.
    pub(super) widths: Vec<usize>,
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

pub(super) fn non_finite(name: &str, index: usize) -> Error {
    Error::model_invalid(format!(
        "tensor {name:?} holds a non-finite value at index {index}"
    ))
}

pub(super) fn out_of_memory(name: &str, bytes: usize) -> Error {
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

/// A tensor's dtype and bytes, checked for shape and dtype.
pub(super) fn tensor_data<'f>(
    file: &File<'f>,
    name: &str,
    shape: &[usize],
) -> Result<(Dtype, &'f [u8])> {
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
pub(super) fn decode(dtype: Dtype, data: &[u8], out: &mut Vec<f64>) {
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
pub(super) fn read_vector(file: &File<'_>, name: &str, len: usize) -> Result<Vec<f64>> {
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
    use crate::model::NormOrder;
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
