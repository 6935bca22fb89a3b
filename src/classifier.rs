//! The Rust API: options, backend selection and input validation. The C ABI is a thin layer over it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{plugin, Backend, BackendKind, CpuBackend, PluginBackend};
use crate::error::{Error, Result, Status};
use crate::log::{self, LogLevel};
use crate::model::Model;
pub use crate::model::ModelSource;

/// Most threads accepted in `num_threads`; more is a mistake, not a machine.
pub const MAX_THREADS: usize = 1024;

/// How to build a [`Classifier`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which backend; `Auto` lets the library choose.
    pub backend: BackendKind,
    /// The model to load.
    pub model: ModelSource,
    /// label = probability >= threshold; `None` uses the model's own threshold.
    pub threshold: Option<f32>,
    /// Threads a backend may use per call; 0 lets the library decide. Plugins get it as their
    /// `num_threads` setting.
    pub num_threads: usize,
    /// The SHA-256 the model file must have; a mismatch is MODEL_INVALID and loads nothing.
    pub model_sha256: Option<[u8; 32]>,
    /// Searched first for plugin libraries, before `GEMMA_CYBER_PLUGIN_DIR` and the directory of
    /// the core library itself.
    pub plugin_dir: Option<PathBuf>,
    /// Searched last for plugin libraries, in place of the directory of the file the library is
    /// in: for a program that links the library in and is installed apart from its plugins (the
    /// installed `gemma-cyber` program gives its prefix's `lib/`).
    pub plugin_install_dir: Option<PathBuf>,
    /// The plugin to run when `backend` is [`BackendKind::Plugin`], e.g. `"mydevice"` for
    /// `libgemma_cyber_mydevice.so`.
    pub plugin_name: Option<String>,
    /// `key=value` settings for plugins, e.g. `wgpu.adapter=NVIDIA` or
    /// `onnxruntime.library=/opt/ort/libonnxruntime.so`: a key prefixed with a plugin's name and a
    /// dot reaches only that plugin (without the prefix); any other key reaches every plugin
    /// started.
    pub plugin_settings: Vec<String>,
}

/// A backend AUTO tried and passed over, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// The backend's name, e.g. `wgpu`.
    pub backend: String,
    /// Why it was not used.
    pub reason: Error,
}

/// A model bound to a backend. `classify` takes `&self` and may be called from many threads at once.
pub struct Classifier {
    model: Arc<Model>,
    backend: Box<dyn Backend>,
    threshold: f32,
    skipped: Vec<Skipped>,
}

impl Classifier {
    /// Loads the model and starts the backend the options ask for.
    pub fn new(options: &Options) -> Result<Classifier> {
        if let Some(threshold) = options.threshold
            && !(0.0..=1.0).contains(&threshold)
        {
            return Err(Error::invalid_argument(format!(
                    "threshold is {threshold}; expected a number in [0, 1] (or NaN for the model's own)"
                )));
        }
        if options.num_threads > MAX_THREADS {
            return Err(Error::invalid_argument(format!(
                "num_threads is {}; the limit is {MAX_THREADS} (0 lets the library decide)",
                options.num_threads
            )));
        }
        let model = Arc::new(Model::load(&options.model, options.model_sha256.as_ref())?);
        check_plugin_options(options)?;
        let mut skipped = Vec::new();
        let backend = start_backend(options, &model, &mut skipped)?;
        log::emit(
            LogLevel::Info,
            &format!(
                "{} backend started on {}",
                backend.kind().name(),
                backend.device_name()
            ),
        );
        let threshold = options.threshold.unwrap_or(model.threshold());
        Ok(Classifier {
            model,
            backend,
            threshold,
            skipped,
        })
    }

    /// Probabilities (and optionally labels) for `embeddings`, row-major with `dim` values a row.
    ///
    /// `probabilities` (and `labels`, when given) must hold one value per row. On failure nothing
    /// is written.
    pub fn classify(
        &self,
        embeddings: &[f32],
        dim: usize,
        probabilities: &mut [f32],
        labels: Option<&mut [u8]>,
    ) -> Result<()> {
        let rows = probabilities.len();
        if rows == 0 && embeddings.is_empty() {
            return Ok(());
        }
        self.check_dim(dim)?;
        if embeddings.len() / dim != rows || !embeddings.len().is_multiple_of(dim) {
            return Err(Error::invalid_argument(format!(
                "{} embedding values are not {rows} rows of {dim}",
                embeddings.len()
            )));
        }
        if let Some(labels) = &labels
            && labels.len() != rows
        {
            return Err(Error::invalid_argument(format!(
                "labels hold {} values for {rows} rows",
                labels.len()
            )));
        }
        if !self
            .backend
            .classify_unchecked(embeddings, rows, probabilities)?
        {
            // Some value is non-finite or large: the slow path finds which.
            self.classify_unusual(embeddings, dim, rows, probabilities)?;
        }
        if let Some(labels) = labels {
            for (label, &p) in labels.iter_mut().zip(probabilities.iter()) {
                *label = u8::from(p >= self.threshold);
            }
        }
        Ok(())
    }

    /// Classifies input with a non-finite value (an error naming the first) or a large one (its
    /// rows conditioned first, see [`condition_large_rows`]).
    fn classify_unusual(
        &self,
        embeddings: &[f32],
        dim: usize,
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<()> {
        match scan(embeddings) {
            Err(index) => Err(Error::new(
                Status::NonFiniteInput,
                format!(
                    "embeddings row {} column {} is {}; every value must be finite",
                    index / dim,
                    index % dim,
                    embeddings[index]
                ),
            )),
            Ok(Scan::Ordinary) => self.backend.classify(embeddings, rows, probabilities),
            Ok(Scan::HasLarge) => self.classify_conditioned(embeddings, dim, rows, probabilities),
        }
    }

    /// Classifies input with some value of at least [`LARGE`]: a part of [`CONDITIONED_ROWS`] rows
    /// at a time, each copied and conditioned ([`condition_large_rows`]) only where it has such a
    /// row, so the extra memory is one part, not a copy of the whole batch (one large value in a
    /// batch of 878 MB made it 1.8 GB). The probabilities wait in a buffer of their own until every
    /// part is done: a failing part leaves the caller's untouched.
    fn classify_conditioned(
        &self,
        embeddings: &[f32],
        dim: usize,
        rows: usize,
        probabilities: &mut [f32],
    ) -> Result<()> {
        let mut staged = Vec::new();
        staged.try_reserve_exact(rows).map_err(|_| {
            Error::backend_failure(format!(
                "not enough memory to hold {rows} probabilities; pass fewer rows at a time"
            ))
        })?;
        staged.resize(rows, 0.0f32);
        for (part, output) in embeddings
            .chunks(CONDITIONED_ROWS * dim)
            .zip(staged.chunks_mut(CONDITIONED_ROWS))
        {
            if is_ordinary(part) {
                self.backend.classify(part, output.len(), output)?;
            } else {
                let conditioned = condition_large_rows(part, dim)?;
                self.backend.classify(&conditioned, output.len(), output)?;
            }
        }
        probabilities.copy_from_slice(&staged);
        Ok(())
    }

    /// The backend actually running (never `Auto`).
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The device the backend runs on, for people.
    pub fn device_name(&self) -> &str {
        self.backend.device_name()
    }

    /// Width of one embedding.
    pub fn input_dim(&self) -> usize {
        self.model.input_dim()
    }

    /// DIMENSION_MISMATCH unless `dim` is the model's input dimension (never 0).
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        let input_dim = self.model.input_dim();
        if dim == input_dim {
            Ok(())
        } else {
            Err(Error::new(
                Status::DimensionMismatch,
                format!("embeddings have dim {dim} but the model expects {input_dim}"),
            ))
        }
    }

    /// The threshold in force: the options' one, else the model's.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// The loaded model: shapes and metadata.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The backends AUTO tried before the one running, and why each was passed over (empty when
    /// a backend was asked for by name).
    pub fn skipped_backends(&self) -> &[Skipped] {
        &self.skipped
    }
}

/// What one pass over the input found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Every value is finite and below [`LARGE`] in magnitude.
    Ordinary,
    /// Every value is finite, and some reach [`LARGE`].
    HasLarge,
}

/// Magnitude from which a row is conditioned before any backend sees it (2^16): far above what
/// embeddings hold, so ordinary rows reach the backends untouched.
pub(crate) const LARGE: f32 = 65536.0;

/// Whether every value is finite and below [`LARGE`] in magnitude: what every backend is given.
///
/// Every call checks all its input, so this runs at memory speed: a branch-free OR of one signed
/// comparison of each magnitude's bits (magnitudes order as their bit patterns do, infinity and
/// NaN above every finite value), which compiles to SIMD even for baseline x86-64, like the
/// exponent test it replaced (`position(|x| !x.is_finite())` alone cost a GPU call of 4,096 rows
/// over a millisecond).
#[inline]
pub(crate) fn is_ordinary(values: &[f32]) -> bool {
    const MAGNITUDE: u32 = 0x7fff_ffff;
    // Below the smallest bit pattern that is large: a strict comparison then flags it.
    let below_large = (LARGE.to_bits() - 1) as i32;
    !values.iter().fold(false, |any, x| {
        any | ((x.to_bits() & MAGNITUDE) as i32 > below_large)
    })
}

/// Checks every value is finite (`Err` gives the first NaN or infinity) and notes whether any
/// reaches [`LARGE`]: blocks are tested with [`is_ordinary`], and only a block that is not is
/// searched value by value.
fn scan(values: &[f32]) -> Result<Scan, usize> {
    const BLOCK: usize = 256;
    let mut found = Scan::Ordinary;
    for (index, block) in values.chunks(BLOCK).enumerate() {
        if !is_ordinary(block) {
            if let Some(within) = block.iter().position(|x| !x.is_finite()) {
                return Err(index * BLOCK + within);
            }
            found = Scan::HasLarge;
        }
    }
    Ok(found)
}

/// Rows conditioned at a time ([`Classifier::classify_conditioned`]): 12 MiB of the default
/// model's rows.
const CONDITIONED_ROWS: usize = 4096;

/// Largest magnitude a conditioned row keeps (2^40): every backend's float32 LayerNorm (sums of
/// squares of up to 2^28 values) stays far from overflow, and the row's variance stays so far
/// above any sane eps that adding eps changes nothing in float32.
const CONDITIONED_MAX: f64 = 1_099_511_627_776.0;

/// A copy of the input whose rows with a value of at least [`LARGE`] are centred (their mean
/// subtracted, in float64) and, if their spread still exceeds [`CONDITIONED_MAX`], scaled by a
/// power of two to below it. LayerNorm ignores a shift exactly, and a scale up to eps, which is
/// negligible beside such a row's variance; what changes is that float32 neither overflows on
/// values near its largest nor loses a near-constant row to rounding, so every backend computes
/// the same finite LayerNorm. Other rows are copied unchanged.
fn condition_large_rows(embeddings: &[f32], dim: usize) -> Result<Vec<f32>> {
    let mut copy = Vec::new();
    copy.try_reserve_exact(embeddings.len()).map_err(|_| {
        Error::backend_failure(format!(
            "not enough memory for a copy of {} embedding values with some of magnitude 2^16 or \
             more; pass fewer rows at a time",
            embeddings.len()
        ))
    })?;
    copy.extend_from_slice(embeddings);
    for row in copy.chunks_exact_mut(dim) {
        if row.iter().all(|x| x.abs() < LARGE) {
            continue;
        }
        let mean = row.iter().map(|&x| f64::from(x)).sum::<f64>() / dim as f64;
        let spread = row
            .iter()
            .map(|&x| (f64::from(x) - mean).abs())
            .fold(0.0, f64::max);
        // A power of two, so that scaling adds no rounding of its own.
        let mut scale = 1.0f64;
        while spread * scale >= CONDITIONED_MAX {
            scale *= 0.5;
        }
        for x in row.iter_mut() {
            *x = ((f64::from(*x) - mean) * scale) as f32;
        }
    }
    Ok(copy)
}

/// Settings the core gives every plugin itself; a caller's setting may not override them.
const CORE_SETTINGS: [&str; 2] = ["num_threads", "auto"];

/// The plugin names AUTO tries before cpu, best first: a real GPU through wgpu (never a software
/// adapter), then ONNX Runtime.
pub const AUTO_PLUGINS: [&str; 2] = ["wgpu", "onnxruntime"];

/// Checks the plugin fields of `options`: a mistake there is the caller's to fix.
fn check_plugin_options(options: &Options) -> Result<()> {
    match (&options.plugin_name, options.backend) {
        (None, BackendKind::Plugin) => {
            return Err(Error::invalid_argument(
                "backend is PLUGIN but plugin_name is not set; name the plugin, e.g. \"wgpu\"",
            ))
        }
        (Some(name), BackendKind::Plugin) if !plugin::loader::is_valid_name(name) => {
            return Err(Error::invalid_argument(format!(
                "plugin_name {name:?} is not [a-z0-9_]+ (the <name> of libgemma_cyber_<name>.so)"
            )))
        }
        (Some(name), backend) if backend != BackendKind::Plugin => {
            return Err(Error::invalid_argument(format!(
                "plugin_name is {name:?} but backend is {}; set backend to PLUGIN",
                backend.name()
            )))
        }
        _ => {}
    }
    for pair in &options.plugin_settings {
        let Some((key, _)) = pair
            .split_once('=')
            .filter(|(key, _)| !key.trim().is_empty())
        else {
            return Err(Error::invalid_argument(format!(
                "plugin setting {pair:?} is not key=value"
            )));
        };
        if let Some((plugin, _)) = key.split_once('.') {
            check_setting_plugin(pair, plugin.trim(), options)?;
        }
        let bare = key.rsplit_once('.').map_or(key, |(_, bare)| bare).trim();
        if CORE_SETTINGS.contains(&bare) {
            return Err(Error::invalid_argument(format!(
                "plugin setting {pair:?}: {bare} is the library's to set (num_threads comes from \
                 the options, auto from AUTO)"
            )));
        }
    }
    Ok(())
}

/// A setting addressed to `plugin` (`plugin.key=value`) must name a plugin that could be started:
/// one AUTO tries, the one the options name, one compiled in, or one whose file is in the search
/// directories. Any other name is most likely misspelt, and the setting would reach nobody.
fn check_setting_plugin(pair: &str, plugin: &str, options: &Options) -> Result<()> {
    if !plugin::loader::is_valid_name(plugin) {
        return Err(Error::invalid_argument(format!(
            "plugin setting {pair:?}: {plugin:?} is not a plugin name ([a-z0-9_]+)"
        )));
    }
    let dirs = plugin::loader::search_dirs(
        options.plugin_dir.as_deref(),
        options.plugin_install_dir.as_deref(),
    );
    let known = AUTO_PLUGINS.contains(&plugin)
        || options.plugin_name.as_deref() == Some(plugin)
        || plugin::builtin().iter().any(|found| found.name == plugin)
        || dirs.iter().any(|(dir, _)| {
            std::fs::symlink_metadata(dir.join(plugin::loader::file_name(plugin))).is_ok()
        });
    if known {
        return Ok(());
    }
    Err(Error::invalid_argument(format!(
        "plugin setting {pair:?} is for plugin {plugin:?}, which is not a backend of this library \
         and not in the plugin directories ({}); is its name misspelt?",
        dirs.iter()
            .map(|(dir, _)| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Starts the backend the options name; AUTO tries each of [`AUTO_PLUGINS`] in order, keeping
/// why each was skipped in `skipped`, and falls back to cpu.
fn start_backend(
    options: &Options,
    model: &Arc<Model>,
    skipped: &mut Vec<Skipped>,
) -> Result<Box<dyn Backend>> {
    let named = match options.backend {
        BackendKind::Cpu => return Ok(Box::new(cpu(options, model)?)),
        BackendKind::Plugin => options.plugin_name.as_deref().unwrap_or_default(),
        BackendKind::Auto => {
            for name in AUTO_PLUGINS {
                // A plugin that is not installed, or that finds no device or runtime, is a
                // backend this machine lacks (info); a plugin file that is there but cannot be
                // loaded is a broken installation (a warning).
                let started = match find_plugin(name, options) {
                    Ok(plugin) => start_found_plugin(plugin, name, options, model, true)
                        .map_err(|e| (e, LogLevel::Info)),
                    Err(e) => {
                        let dirs = (
                            options.plugin_dir.as_deref(),
                            options.plugin_install_dir.as_deref(),
                        );
                        let level = match plugin::is_present(name, dirs.0, dirs.1) {
                            true => LogLevel::Warning,
                            false => LogLevel::Info,
                        };
                        Err((e, level))
                    }
                };
                match started {
                    Ok(backend) => return Ok(backend),
                    // A mistake in the options is the caller's to fix, not a reason to move on.
                    Err((error, _)) if error.status() == Status::InvalidArgument => {
                        return Err(error)
                    }
                    Err((reason, level)) => {
                        log::emit(
                            level,
                            &format!("AUTO skipped the {name} backend: {}", reason.message()),
                        );
                        skipped.push(Skipped {
                            backend: name.to_owned(),
                            reason,
                        });
                    }
                }
            }
            return Ok(Box::new(cpu(options, model)?));
        }
        kind => kind.plugin_name().expect("every other kind is a plugin"),
    };
    start_plugin(named, options, model, false)
}

/// Loads the plugin called `name` and makes an instance with its settings.
fn start_plugin(
    name: &str,
    options: &Options,
    model: &Arc<Model>,
    auto: bool,
) -> Result<Box<dyn Backend>> {
    start_found_plugin(find_plugin(name, options)?, name, options, model, auto)
}

/// The plugin called `name`, where `options` say to look.
fn find_plugin(name: &str, options: &Options) -> Result<Arc<plugin::Plugin>> {
    plugin::find(
        name,
        options.plugin_dir.as_deref(),
        options.plugin_install_dir.as_deref(),
    )
}

/// An instance of the loaded plugin `name`, with its settings.
fn start_found_plugin(
    plugin: Arc<plugin::Plugin>,
    name: &str,
    options: &Options,
    model: &Arc<Model>,
    auto: bool,
) -> Result<Box<dyn Backend>> {
    let settings = plugin_settings(name, options, auto);
    Ok(Box::new(PluginBackend::new(plugin, model, &settings)?))
}

/// The settings plugin `name` gets: the core's (`num_threads`, and `auto=1` when AUTO is
/// choosing), then the caller's that are addressed to it or to no plugin in particular. Keys and
/// values come trimmed, one pair per key (a later setting of a key replaces an earlier one), so a
/// plugin in C reads them as the Rust SDK's `Settings` does.
fn plugin_settings(name: &str, options: &Options, auto: bool) -> Vec<String> {
    let mut settings = vec![format!("num_threads={}", options.num_threads)];
    if auto {
        settings.push("auto=1".to_owned());
    }
    let mut users: Vec<(&str, &str)> = Vec::new();
    for pair in &options.plugin_settings {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Spaces around a key's parts are not part of it, as `check_plugin_options` reads it.
        let key = match key.split_once('.') {
            Some((plugin, key)) if plugin.trim() == name => key.trim(),
            Some(_) => continue,
            None => key.trim(),
        };
        users.retain(|(earlier, _)| *earlier != key);
        users.push((key, value.trim()));
    }
    settings.extend(users.iter().map(|(key, value)| format!("{key}={value}")));
    settings
}

fn cpu(options: &Options, model: &Model) -> Result<CpuBackend> {
    CpuBackend::new(model, options.num_threads)
}

#[cfg(test)]
mod tests {
    use super::{condition_large_rows, plugin_settings, scan, Options, Scan, LARGE};

    #[test]
    fn a_plugin_gets_its_settings_trimmed_one_per_key_the_last_winning() {
        let options = Options {
            num_threads: 3,
            plugin_settings: [
                " mode = fast ",
                "example.k=1",
                "k = 2 ",
                "other.k=9",
                " example .m= x",
            ]
            .map(str::to_owned)
            .to_vec(),
            ..Options::default()
        };
        assert_eq!(
            plugin_settings("example", &options, true),
            ["num_threads=3", "auto=1", "mode=fast", "k=2", "m=x"]
        );
        assert_eq!(
            plugin_settings("other", &options, false),
            ["num_threads=3", "mode=fast", "k=9"]
        );
    }

    #[test]
    fn scan_finds_the_first_nan_or_infinity_at_any_position() {
        let finite = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::from_bits(LARGE.to_bits() - 1),
            -f32::from_bits(LARGE.to_bits() - 1),
        ];
        let values: Vec<f32> = (0..1000).map(|i| finite[i % finite.len()]).collect();
        assert_eq!(scan(&values), Ok(Scan::Ordinary));
        assert_eq!(scan(&[]), Ok(Scan::Ordinary));
        for large in [LARGE, -LARGE, f32::MAX, f32::MIN] {
            let mut with_large = values.clone();
            with_large[600] = large;
            assert_eq!(scan(&with_large), Ok(Scan::HasLarge), "{large}");
        }
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            // Either side of a block boundary, the first and the last value.
            for position in [0, 1, 255, 256, 257, 511, 999] {
                let mut with_bad = values.clone();
                with_bad[position] = bad;
                assert_eq!(scan(&with_bad), Err(position), "{bad} at {position}");
                // A later one does not hide an earlier one, nor does a large value before it.
                with_bad[999] = f32::NAN;
                with_bad[position.saturating_sub(1)] = f32::MAX;
                if position > 0 {
                    assert_eq!(scan(&with_bad), Err(position), "{bad} at {position}");
                }
            }
        }
        // A NaN with a payload (exponent all ones, any mantissa) counts.
        assert_eq!(scan(&[1.0, f32::from_bits(0x7f80_0001)]), Err(1));
    }

    #[test]
    fn only_rows_with_large_values_are_conditioned() {
        let ordinary = [0.5f32, -1.0, 2.0, 0.25];
        let mut input = ordinary.to_vec();
        input.extend([f32::MAX, f32::MAX, 0.0, f32::MIN]);
        input.extend([1e30f32; 4]);
        let conditioned = condition_large_rows(&input, 4).unwrap();
        assert_eq!(
            conditioned[..4],
            ordinary,
            "an ordinary row is copied bit for bit"
        );
        let spread = &conditioned[4..8];
        assert!(
            spread.iter().all(|x| x.is_finite() && x.abs() < 2e12),
            "{spread:?}"
        );
        assert!(spread[0] == spread[1] && spread[0] > 0.0 && spread[3] < 0.0);
        assert_eq!(
            conditioned[8..],
            [0.0; 4],
            "a constant row centres to zeros"
        );
    }
}
