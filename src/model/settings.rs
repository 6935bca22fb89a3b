//! The model file's metadata entries that change the math (`norm_order`, the epsilons, the
//! threshold) and the checks on `format` and `format_version`, apart from the tensors: they are
//! text, with defaults of their own, and read before any tensor is touched.

use std::collections::BTreeMap;

use super::NormOrder;
use crate::error::{Error, Result};

/// Metadata defaults of the model format (README, "Model file"), for files that leave an entry out.
const DEFAULT_THRESHOLD: f32 = 0.5;
const DEFAULT_EPS: f64 = 1e-5;

/// The metadata entries that change the math, with the format's defaults applied.
pub(super) struct Settings {
    pub(super) norm_order: NormOrder,
    pub(super) layer_norm_eps: f64,
    pub(super) batch_norm_eps: f64,
    pub(super) threshold: f32,
}

impl Settings {
    pub(super) fn from_metadata(metadata: &BTreeMap<String, String>) -> Result<Settings> {
        if let Some(format) = metadata.get("format")
            && format != "gemma-cyber"
        {
            return Err(Error::model_invalid(format!(
                "metadata format is {format:?}; expected \"gemma-cyber\""
            )));
        }
        if let Some(version) = metadata.get("format_version")
            && version.trim() != "1"
        {
            return Err(Error::model_invalid(format!(
                "metadata format_version is {version:?}; this library reads version 1"
            )));
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
