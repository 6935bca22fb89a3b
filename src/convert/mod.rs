//! Converts a PyTorch checkpoint (`model.pt`, the zip `torch.save` writes) into this library's
//! safetensors model file, without Python and without executing anything from the file.
//!
//! The pieces: [`archive`](crate::convert::archive) opens the zip (stored entries only, sizes
//! bounded), [`pickle`](crate::convert::pickle) reads `data.pkl` with a whitelist of the names a
//! tensor checkpoint needs, [`checkpoint`](crate::convert::checkpoint) finds the state dict and
//! gives each module a role from its tensors' names and shapes. What comes out is validated by
//! [`Model::from_bytes`] before it is returned, so a converted file always loads.

pub mod archive;
pub mod checkpoint;
pub mod pickle;
mod write;

use std::collections::BTreeMap;

use self::checkpoint::{Inferred, Layers};
use self::pickle::{Pickle, Value, ValueId};
use crate::error::{Error, Result};
use crate::model::{Model, NormOrder};

/// Most metadata entries taken from the checkpoint dict and `config.json` together.
const MAX_EXTRA_METADATA: usize = 256;
/// Longest metadata value kept; longer ones are left out and reported.
const MAX_METADATA_VALUE: usize = 4096;
/// Most bytes the kept extras take in the model's header, as JSON (escapes included): a quarter
/// of what a model's header may hold ([`crate::model::MAX_HEADER_BYTES`]), so that 256 entries of
/// long keys and values cannot make a model its own loader refuses.
const MAX_EXTRA_METADATA_BYTES: usize = 256 << 10;
/// Most values looked at while flattening extras into metadata.
const MAX_METADATA_VISITS: usize = 4096;
/// Longest metadata key (`a.b.c`) made; a longer one is left out and reported, shortened.
const MAX_METADATA_KEY: usize = 256;
/// How deep nested dicts of plain values are flattened into `a.b.c` keys.
const MAX_METADATA_DEPTH: usize = 4;
/// Largest `config.json` read.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// How to convert.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// The checkpoint's file name, for the `source` metadata.
    pub file_name: String,
    /// Forces the BatchNorm/ReLU order; wins over `config.json` and the nn.Sequential indices.
    pub norm_order: Option<NormOrder>,
    /// The contents of a `config.json` found next to the checkpoint: `norm_order`,
    /// `layer_norm_eps`, `batch_norm_eps`, `threshold` and `embedding_model` are used; every other
    /// plain value is kept as `config.<key>` metadata.
    pub config_json: Option<Vec<u8>>,
    /// What messages call that file (its path); `config.json` when empty.
    pub config_name: String,
}

/// A finished conversion.
#[derive(Clone, Debug)]
pub struct Conversion {
    /// The safetensors model file.
    pub safetensors: Vec<u8>,
    /// The BatchNorm/ReLU order written.
    pub norm_order: NormOrder,
    /// Lines for a person: what was found, inferred, used and ignored.
    pub report: Vec<String>,
    /// The converted model, as [`Model::from_bytes`] loads it.
    pub model: Model,
}

/// Converts the bytes of a `torch.save` checkpoint into a safetensors model file.
///
/// Every refusal (a name outside the whitelist, a malformed zip or pickle, a tensor outside its
/// storage, layers that are not this model's) is a `ModelInvalid` error and nothing is executed.
pub fn convert_checkpoint(bytes: &[u8], options: &ConvertOptions) -> Result<Conversion> {
    let mut archive = archive::Archive::open(bytes)?;
    let pickle = pickle::read(&archive.pickle(pickle::MAX_PICKLE_BYTES)?)?;
    let found = checkpoint::find_state_dict(&pickle)?;
    let (modules, ignored) = checkpoint::modules(&found.tensors)?;
    let layers = checkpoint::arrange(modules, ignored)?;

    let mut report = Vec::new();
    report.push(match found.under {
        None => format!(
            "state_dict: the whole checkpoint ({} tensors)",
            found.tensors.len()
        ),
        Some(key) => format!(
            "state_dict: checkpoint entry {key:?} ({} tensors)",
            found.tensors.len()
        ),
    });
    report.push(format!("layers: {layers}"));
    if !layers.ignored.is_empty() {
        report.push(format!(
            "ignored: num_batches_tracked of {}",
            layers.ignored.join(", ")
        ));
    }

    let config_name = match options.config_name.as_str() {
        "" => "config.json",
        name => name,
    };
    let config = Config::parse(options.config_json.as_deref(), config_name)?;
    let (norm_order, why) = choose_norm_order(options.norm_order, &config, &layers)?;
    report.push(format!("norm order: {} ({why})", norm_order.as_str()));

    let mut extras = Extras::default();
    for (key, value) in &config.extras {
        if let Some(key) = extras.child_key("config", key) {
            extras.add_json(&key, value, 0);
        }
    }
    for (key, id) in &found.extras {
        if let Some(key) = extras.child_key("checkpoint", key) {
            extras.add_pickle(&pickle, &key, *id, 0);
        }
    }
    extras.report(&mut report);
    let mut metadata = metadata(norm_order, &config, &options.file_name);
    metadata.extend(extras.kept);

    let safetensors = write::write(&mut archive, &layers, metadata)?;
    let model = Model::from_bytes(&safetensors)
        .map_err(|e| e.context("the converted model does not load"))?;
    report.push(format!(
        "model: {} inputs, hidden {:?}, {} parameters, threshold {}, eps {} / {}",
        model.input_dim(),
        model.hidden_sizes(),
        model.parameter_count(),
        model.threshold(),
        model.layer_norm_eps(),
        model.batch_norm_eps()
    ));
    Ok(Conversion {
        safetensors,
        norm_order,
        report,
        model,
    })
}

/// The metadata the model format defines, with config.json's values or the defaults.
fn metadata(norm_order: NormOrder, config: &Config, file_name: &str) -> BTreeMap<String, String> {
    let number =
        |value: Option<f64>, default: &str| value.map_or(default.to_owned(), |v| v.to_string());
    let mut metadata = BTreeMap::from([
        ("format".to_owned(), "gemma-cyber".to_owned()),
        ("format_version".to_owned(), "1".to_owned()),
        ("norm_order".to_owned(), norm_order.as_str().to_owned()),
        (
            "layer_norm_eps".to_owned(),
            number(config.layer_norm_eps, "1e-5"),
        ),
        (
            "batch_norm_eps".to_owned(),
            number(config.batch_norm_eps, "1e-5"),
        ),
        ("threshold".to_owned(), number(config.threshold, "0.5")),
        (
            "source".to_owned(),
            format!("converted from {file_name} by gemma-cyber convert"),
        ),
    ]);
    if let Some(embedding_model) = &config.embedding_model {
        metadata.insert("embedding_model".to_owned(), embedding_model.clone());
    }
    metadata
}

/// Precedence: the caller's flag, then `config.json`, then nn.Sequential indices, then
/// The model format's default.
fn choose_norm_order(
    forced: Option<NormOrder>,
    config: &Config,
    layers: &Layers<'_>,
) -> Result<(NormOrder, String)> {
    let inferred = checkpoint::infer_norm_order(layers);
    let also = match &inferred {
        Inferred::Order(order, why) => {
            format!("; the layer indices say {} ({why})", order.as_str())
        }
        Inferred::Conflict(why) => format!("; the layer indices disagree: {why}"),
        Inferred::Unknown => String::new(),
    };
    if let Some(order) = forced {
        return Ok((order, format!("forced by the caller{also}")));
    }
    if let Some(order) = config.norm_order {
        return Ok((order, format!("from config.json{also}")));
    }
    match inferred {
        Inferred::Order(order, why) => Ok((order, format!("inferred: {why}"))),
        Inferred::Conflict(why) => Err(Error::model_invalid(format!(
            "the blocks disagree on the BatchNorm/ReLU order ({why}); say which with \
             --norm-order or norm_order in config.json"
        ))),
        Inferred::Unknown => Ok((
            NormOrder::LinearBnRelu,
            "assumed: the module names carry no nn.Sequential indices to infer it from; \
             force it with --norm-order if the model applies ReLU before BatchNorm"
                .to_owned(),
        )),
    }
}

/// The entries of `config.json` this conversion uses, checked, and the rest.
#[derive(Default)]
struct Config {
    norm_order: Option<NormOrder>,
    layer_norm_eps: Option<f64>,
    batch_norm_eps: Option<f64>,
    threshold: Option<f64>,
    embedding_model: Option<String>,
    extras: Vec<(String, serde_json::Value)>,
}

impl Config {
    fn parse(bytes: Option<&[u8]>, name: &str) -> Result<Config> {
        let Some(bytes) = bytes else {
            return Ok(Config::default());
        };
        let bad = |why: String| Error::model_invalid(format!("{name}: {why}"));
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(bad(format!(
                "{} bytes; the limit is {MAX_CONFIG_BYTES}",
                bytes.len()
            )));
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let mut config = Config::default();
        for (key, value) in object {
            let positive = |value: &serde_json::Value| match value.as_f64() {
                Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                _ => Err(bad(format!("{key} is {value}; expected a positive number"))),
            };
            match key.as_str() {
                "norm_order" => {
                    config.norm_order = Some(match value.as_str() {
                        Some("linear_bn_relu") => NormOrder::LinearBnRelu,
                        Some("linear_relu_bn") => NormOrder::LinearReluBn,
                        _ => {
                            return Err(bad(format!(
                                "norm_order is {value}; expected \"linear_bn_relu\" or \
                                 \"linear_relu_bn\""
                            )))
                        }
                    })
                }
                "layer_norm_eps" => config.layer_norm_eps = Some(positive(&value)?),
                "batch_norm_eps" => config.batch_norm_eps = Some(positive(&value)?),
                "threshold" => match value.as_f64() {
                    Some(v) if (0.0..=1.0).contains(&v) => config.threshold = Some(v),
                    _ => return Err(bad(format!("threshold is {value}; expected 0 to 1"))),
                },
                "embedding_model" => match value.as_str() {
                    Some(name) => config.embedding_model = Some(name.to_owned()),
                    None => return Err(bad(format!("embedding_model is {value}; expected text"))),
                },
                _ => config.extras.push((key, value)),
            }
        }
        Ok(config)
    }
}

/// Plain values of the checkpoint dict and config.json, flattened into metadata strings.
struct Extras {
    kept: Vec<(String, String)>,
    /// What `kept` takes in the header, as JSON.
    kept_bytes: usize,
    skipped: Vec<String>,
    /// Where the walk stopped for want of budget, if it did.
    exhausted: Option<String>,
    /// Values still allowed to be looked at. The pickle's containers may share entries or even
    /// contain themselves, so a walk bounded only by depth could still take forever.
    budget: usize,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            kept: Vec::new(),
            kept_bytes: 0,
            skipped: Vec::new(),
            exhausted: None,
            budget: MAX_METADATA_VISITS,
        }
    }
}

impl Extras {
    /// Lines for the conversion report: what was kept and what was left out (the first few).
    fn report(&self, report: &mut Vec<String>) {
        const SHOWN: usize = 20;
        for skipped in self.skipped.iter().take(SHOWN) {
            report.push(format!("not kept as metadata: {skipped}"));
        }
        if self.skipped.len() > SHOWN {
            report.push(format!(
                "not kept as metadata: {} more entries",
                self.skipped.len() - SHOWN
            ));
        }
        if let Some(stopped) = &self.exhausted {
            report.push(format!("not kept as metadata: {stopped}"));
        }
        if !self.kept.is_empty() {
            let keys: Vec<&str> = self.kept.iter().map(|(k, _)| k.as_str()).collect();
            report.push(format!("kept as metadata: {}", keys.join(", ")));
        }
    }

    /// Spends one visit; false once the budget is gone (noted once).
    fn visit(&mut self, key: &str) -> bool {
        match self.budget {
            0 => false,
            1 => {
                self.budget = 0;
                self.exhausted = Some(format!(
                    "{key} and everything after it (more than {MAX_METADATA_VISITS} values to look at)"
                ));
                false
            }
            _ => {
                self.budget -= 1;
                true
            }
        }
    }

    /// `key.k`, or `None` (reported) when it would be longer than [`MAX_METADATA_KEY`].
    /// Once the visits are spent, `None` without a word (the report says where the walk
    /// stopped).
    fn child_key(&mut self, key: &str, k: &str) -> Option<String> {
        if self.budget == 0 {
            return None;
        }
        if key.len() + 1 + k.len() <= MAX_METADATA_KEY {
            return Some(format!("{key}.{k}"));
        }
        // Counted as a visit: a dict may have a great many long keys.
        let shown: String = key.chars().chain(['.']).chain(k.chars()).take(64).collect();
        if self.visit(&shown) {
            self.skipped.push(format!(
                "{shown}... (a key longer than {MAX_METADATA_KEY} characters)"
            ));
        }
        None
    }

    fn keep(&mut self, key: &str, value: String) {
        if self.kept.len() >= MAX_EXTRA_METADATA {
            self.skipped
                .push(format!("{key} (more than {MAX_EXTRA_METADATA} entries)"));
        } else if value.len() > MAX_METADATA_VALUE {
            self.skipped
                .push(format!("{key} ({} characters)", value.len()));
        } else {
            let as_json = |text: &str| serde_json::Value::from(text).to_string().len();
            let bytes = as_json(key) + as_json(&value) + 2; // the colon and the comma
            if self.kept_bytes + bytes > MAX_EXTRA_METADATA_BYTES {
                self.skipped.push(format!(
                    "{key} (the kept entries would take more than {MAX_EXTRA_METADATA_BYTES} bytes)"
                ));
            } else {
                self.kept_bytes += bytes;
                self.kept.push((key.to_owned(), value));
            }
        }
    }

    fn add_json(&mut self, key: &str, value: &serde_json::Value, depth: usize) {
        if !self.visit(key) {
            return;
        }
        match value {
            serde_json::Value::String(s) => self.keep(key, s.clone()),
            serde_json::Value::Object(object) if depth < MAX_METADATA_DEPTH => {
                for (k, v) in object {
                    if let Some(child) = self.child_key(key, k) {
                        self.add_json(&child, v, depth + 1);
                    }
                }
            }
            other => self.keep(key, other.to_string()),
        }
    }

    fn add_pickle(&mut self, pickle: &Pickle, key: &str, id: ValueId, depth: usize) {
        if !self.visit(key) {
            return;
        }
        if let Value::Str(s) = pickle.get(id) {
            if s.len() > MAX_METADATA_VALUE {
                return self.skipped.push(format!("{key} ({} characters)", s.len()));
            }
            return self.keep(key, s.clone());
        }
        match plain_json(pickle, id) {
            Plain::Json(text) => return self.keep(key, text),
            Plain::TooLong => {
                return self.skipped.push(format!(
                    "{key} (longer than {MAX_METADATA_VALUE} characters)"
                ))
            }
            Plain::No => {}
        }
        // Entries are taken one at a time, as the budget allows: one large dict may be named
        // many times in a pickle, and collecting it whole each time would cost more than the
        // visits do.
        let dict = match pickle.get(id) {
            Value::Dict(entries) if depth < MAX_METADATA_DEPTH => Some(entries),
            _ => None,
        };
        match dict {
            Some(entries) => {
                for (k, v) in entries {
                    if self.budget == 0 {
                        break;
                    }
                    let Some(k) = pickle.str(*k) else {
                        if self.visit(key) {
                            self.skipped.push(format!("{key} (a key that is not text)"));
                        }
                        continue;
                    };
                    if let Some(child) = self.child_key(key, k) {
                        self.add_pickle(pickle, &child, *v, depth + 1);
                    }
                }
            }
            None => self.skipped.push(format!(
                "{key} (holds tensors or other values that are not plain data)"
            )),
        }
    }
}

/// What [`plain_json`] makes of a value.
enum Plain {
    /// A scalar, or a list/tuple of scalars, as JSON text.
    Json(String),
    /// Plain data, but its text would exceed [`MAX_METADATA_VALUE`].
    TooLong,
    /// Not plain data.
    No,
}

/// A scalar, or a list/tuple of scalars, as JSON text of at most [`MAX_METADATA_VALUE`]
/// characters. The text is built only up to that length: a list may hold the same long string a
/// thousand times through the memo.
fn plain_json(pickle: &Pickle, id: ValueId) -> Plain {
    fn scalar(value: &Value) -> Option<String> {
        Some(match value {
            Value::None => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_finite() => f.to_string(),
            Value::Str(s) if s.len() <= MAX_METADATA_VALUE => {
                serde_json::Value::String(s.clone()).to_string()
            }
            _ => return None,
        })
    }
    let items = match pickle.get(id) {
        Value::List(items) | Value::Tuple(items) if items.len() <= 1024 => items,
        Value::Str(s) if s.len() > MAX_METADATA_VALUE => return Plain::TooLong,
        value => return scalar(value).map_or(Plain::No, Plain::Json),
    };
    let mut text = "[".to_owned();
    for (i, item) in items.iter().enumerate() {
        let item = pickle.get(*item);
        if matches!(item, Value::Str(s) if s.len() > MAX_METADATA_VALUE) {
            return Plain::TooLong;
        }
        let Some(part) = scalar(item) else {
            return Plain::No;
        };
        if i > 0 {
            text.push(',');
        }
        text.push_str(&part);
        if text.len() > MAX_METADATA_VALUE {
            return Plain::TooLong;
        }
    }
    text.push(']');
    Plain::Json(text)
}
