//! `gemma-cyber`: classify embeddings from .npy or JSON lines, describe the model and backend,
//! evaluate it and choose its threshold, measure the backends, and convert a PyTorch checkpoint
//! into a model file.

mod bench;
mod convert;
mod evaluate;
mod input;
mod output;
mod parquet;
mod plugins;
mod shard_reader;
mod terminal;

// The same graph the onnxruntime plugin runs; its constants serve the plugin only.
#[path = "../../../plugins/onnxruntime/src/graph.rs"]
#[allow(dead_code)]
mod onnx_graph;

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gemma_cyber::{BackendKind, Classifier, ModelSource, Options, MAX_THREADS};

use input::{Embeddings, JsonLines};
use terminal::escape;

/// Classifies text embeddings as cyber-related or not with the gemma_cyber model.
///
/// Exit codes: 0 success, 1 output could not be written, 2 bad command line, 3 input file
/// unreadable or malformed, 4 no threshold reaches the target, 10 + the library's status otherwise (12 dimension mismatch,
/// 13 non-finite input, 14 model not found, 15 model invalid, 16 backend unavailable,
/// 17 backend failure).
#[derive(Parser)]
#[command(name = "gemma-cyber", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print one probability and label per embedding.
    ///
    /// Labels are `cyber` / `not-cyber` in text output and 1 / 0 in csv and jsonl (1 = cyber,
    /// as in the C API and in evaluate's LABELS).
    Classify {
        /// Embeddings: a 2-D .npy file (float32, float16 or float64) or JSON lines (one array of
        /// numbers, or one object with an "embedding" array, per line); `-` or nothing reads
        /// standard input, answering each line as it arrives. Parquet: a file, a directory of
        /// shards or a quoted glob (`'shards/part-*.parquet'`), written to Parquet with -o.
        input: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        setup: Setup,
        #[command(flatten)]
        shards: parquet::ShardArgs,
    },
    /// Print the model's shape and provenance, and the backend and device it runs on.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        format: ReportFormat,
        #[command(flatten)]
        setup: Setup,
    },
    /// Measure rows/s and latency of backends by batch size.
    Bench(bench::BenchArgs),
    /// List the backend plugins found: path, name, version, ABI, usable or why not.
    Plugins(plugins::PluginsArgs),
    /// Write the ONNX graph the onnxruntime backend runs (same weights, BatchNorm folded).
    ExportOnnx {
        /// Where to write the .onnx file.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Convert a PyTorch checkpoint (model.pt) into a .safetensors model, without Python and
    /// without executing anything from the file.
    Convert(convert::Convert),
    /// Score labelled embeddings: accuracy, precision, recall, F1, AUC, confusion matrix.
    Evaluate(evaluate::EvaluateArgs),
    /// Pick a threshold on labelled validation embeddings; optionally write it into the model.
    Threshold(evaluate::ThresholdArgs),
}

/// The classifier a command runs: backend, plugin, model and threads.
#[derive(Args)]
pub(crate) struct Runner {
    /// Backend: auto, cpu, onnxruntime, wgpu, or plugin (with --plugin NAME).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendKind,
    /// Run the plugin libgemma_cyber_NAME.so (implies --backend plugin).
    #[arg(long, value_name = "NAME")]
    plugin: Option<String>,
    #[command(flatten)]
    plugins: plugins::PluginArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Threads per call, at most 1024; 0 lets the library decide.
    #[arg(long, alias = "threads", default_value_t = 0, value_parser = num_threads_parser())]
    num_threads: usize,
}

/// The model a command loads, and the pin it is held to.
#[derive(Args)]
pub(crate) struct ModelArgs {
    /// Model file (.safetensors); the built-in model when left out.
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// Refuse the model unless its file has this SHA-256 (64 hex digits).
    #[arg(long, alias = "sha256", value_parser = parse_model_sha256)]
    pub(crate) model_sha256: Option<[u8; 32]>,
}

impl ModelArgs {
    pub(crate) fn source(&self) -> ModelSource {
        self.model
            .clone()
            .map_or(ModelSource::Builtin, ModelSource::Path)
    }
}

/// A [`Runner`] labelling at a threshold.
#[derive(Args)]
struct Setup {
    #[command(flatten)]
    runner: Runner,
    /// Label threshold, from 0 to 1; the model's own when left out.
    #[arg(long, value_parser = parse_threshold)]
    threshold: Option<f32>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Aligned columns: row, probability, label.
    Text,
    /// Comma-separated with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Output format of the reports (`info`, `evaluate`, `threshold`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ReportFormat {
    /// Aligned text for people.
    Text,
    /// One JSON object on one line.
    Json,
}

/// A failure of the tool: what to print and which exit code to end with.
pub(crate) struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn input(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 3,
        }
    }
}

impl From<gemma_cyber::Error> for Failure {
    fn from(error: gemma_cyber::Error) -> Self {
        // The library's INVALID_ARGUMENT can only come from what the command line set (a plugin
        // name or setting, a backend): a bad command line, exit 2, as the README's table says.
        let code = match error.status() {
            gemma_cyber::Status::InvalidArgument => 2,
            status => 10 + status as u8,
        };
        Failure {
            message: error.message().to_owned(),
            code,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure {
            message: format!("cannot write output: {error}"),
            code: 1,
        }
    }
}

fn main() -> ExitCode {
    let result = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(error) if error.use_stderr() => error.exit(),
        Err(help_or_version) => print_help_or_version(&help_or_version),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(failure) if failure.code == 1 && failure.message.contains("Broken pipe") => {
            ExitCode::SUCCESS
        }
        Err(failure) => {
            // Messages quote file names, model metadata and tensor names: data, never commands.
            eprintln!("gemma-cyber: error: {}", escape(&failure.message));
            ExitCode::from(failure.code)
        }
    }
}

/// `--help` and `--version`: their output is output like any other, so a failure to write it
/// is exit 1 (clap's own printing ignores it and exits 0).
fn print_help_or_version(text: &clap::Error) -> Result<(), Failure> {
    text.print()?;
    io::stdout().flush()?;
    Ok(())
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Classify {
            input,
            format,
            setup,
            shards,
        } => match input.as_deref() {
            Some(input) if parquet::is_parquet_input(input) => {
                parquet::refuse_unreplaceable_output(input, &shards)
                    .and_then(|()| open_classifier(&setup))
                    .and_then(|c| parquet::classify(input, &shards, &c))
            }
            input if shards.given() => Err(parquet::not_parquet(input)),
            _ => classify(input.as_deref(), format, &setup),
        },
        Command::Info { format, setup } => info(&setup, format),
        Command::Bench(args) => bench::run(&args),
        Command::Plugins(args) => plugins::run(&args),
        Command::ExportOnnx { output, model } => export_onnx(&output, &model),
        Command::Convert(args) => convert::run(&args),
        Command::Evaluate(args) => evaluate::evaluate(&args),
        Command::Threshold(args) => evaluate::threshold(&args),
    }
}

fn parse_model_sha256(text: &str) -> Result<[u8; 32], String> {
    let digits = text.trim();
    if digits.len() != 64 || !digits.is_ascii() {
        return Err("expected 64 hexadecimal digits".into());
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).expect("ASCII");
        *byte = u8::from_str_radix(pair, 16).map_err(|_| format!("{pair:?} is not hexadecimal"))?;
    }
    Ok(hash)
}

pub(crate) fn parse_backend(name: &str) -> Result<BackendKind, String> {
    BackendKind::from_name(name).ok_or_else(|| {
        format!("unknown backend {name:?}; expected auto, cpu, onnxruntime, wgpu or plugin")
    })
}

/// A number from 0 to 1 (a probability, precision or recall); NaN is not one.
pub(crate) fn parse_unit_interval(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

/// `--threshold`: from 0 to 1. Leaving the flag out, not NaN, selects the model's own.
fn parse_threshold(text: &str) -> Result<f32, String> {
    parse_unit_interval(text)
        .map(|value| value as f32)
        .map_err(|e| format!("{e}; leave --threshold out for the model's own"))
}

/// `--num-threads`: 0 to the library's limit.
pub(crate) fn num_threads_parser() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(0..=MAX_THREADS as u64)
}

fn open_classifier(setup: &Setup) -> Result<Classifier, Failure> {
    open_runner(&setup.runner, setup.threshold)
}

/// The classifier `runner` names, labelling at `threshold` (the model's own when `None`).
pub(crate) fn open_runner(runner: &Runner, threshold: Option<f32>) -> Result<Classifier, Failure> {
    let options = Options {
        backend: if runner.plugin.is_some() {
            BackendKind::Plugin
        } else {
            runner.backend
        },
        model: runner.model.source(),
        threshold,
        num_threads: runner.num_threads,
        model_sha256: runner.model.model_sha256,
        plugin_name: runner.plugin.clone(),
        plugin_dir: runner.plugins.plugin_dir.clone(),
        plugin_install_dir: plugins::installed_lib_dir(),
        plugin_settings: runner.plugins.plugin_settings.clone(),
    };
    Ok(start_classifier(&options)?)
}

/// `Classifier::new`; AUTO's probing of GPU drivers stays off standard error (a backend the user
/// names keeps its drivers' messages).
pub(crate) fn start_classifier(options: &Options) -> gemma_cyber::Result<Classifier> {
    if options.backend == BackendKind::Auto {
        terminal::without_driver_noise(|| Classifier::new(options))
    } else {
        Classifier::new(options)
    }
}

/// Rows on standard input answered in one call at most; a batch also ends whenever no more input
/// is waiting, so a line written into a pipe is answered without waiting for the next.
const STREAM_BATCH_ROWS: usize = 4096;

const STANDARD_INPUT: &str = "standard input";

fn classify(input: Option<&Path>, format: Format, setup: &Setup) -> Result<(), Failure> {
    let path = input.filter(|path| *path != Path::new("-"));
    let Some(path) = path else {
        return classify_standard_input(format, setup);
    };
    // A file is read and checked whole first: a bad file writes nothing.
    let embeddings = read_embeddings(Some(path))?;
    let classifier = open_classifier(setup)?;
    let mut writer = RowWriter::new(format);
    writer.write_batch(&classifier, &embeddings.values, embeddings.dim)
}

/// Standard input: JSON lines answered batch by batch as they arrive (a `.npy` there is read whole).
fn classify_standard_input(format: Format, setup: &Setup) -> Result<(), Failure> {
    let name = STANDARD_INPUT;
    let in_input = |message: String| Failure::input(format!("{name}: {message}"));
    let stdin = BufReader::with_capacity(1 << 20, io::stdin().lock());
    let (is_npy, reader) =
        input::sniff_npy(stdin).map_err(|e| in_input(format!("cannot read: {e}")))?;
    if is_npy {
        let embeddings = input::read_npy(reader, None).map_err(in_input)?;
        check_finite(name, &embeddings.values, embeddings.dim, 0)?;
        let classifier = open_classifier(setup)?;
        let mut writer = RowWriter::new(format);
        return writer.write_batch(&classifier, &embeddings.values, embeddings.dim);
    }
    let classifier = open_classifier(setup)?;
    let mut writer = RowWriter::new(format);
    let mut lines = JsonLines::new(reader);
    let mut dim = None;
    let mut batch = Embeddings {
        values: Vec::new(),
        dim: 0,
    };
    loop {
        let first_row = writer.rows_written + batch.rows();
        let row = match next_stream_row(&mut lines, &mut dim, &classifier, first_row) {
            Ok(row) => row,
            // The lines before a bad one are answered whether or not they arrived in the same
            // read as it: what is printed must not depend on how the writer's pipe split them.
            Err(failure) => {
                if batch.rows() > 0 {
                    writer.write_batch(&classifier, &batch.values, batch.dim)?;
                }
                return Err(failure);
            }
        };
        let end = row.is_none();
        if let Some(row) = row {
            batch.dim = row.len();
            batch.values.extend(row);
        }
        let rows = batch.rows();
        if rows > 0 && (end || !lines.has_buffered_input() || rows >= STREAM_BATCH_ROWS) {
            writer.write_batch(&classifier, &batch.values, batch.dim)?;
            batch.values.clear();
        }
        if end {
            break;
        }
    }
    if writer.rows_written == 0 {
        return Err(in_input("no embeddings (the input is empty)".into()));
    }
    Ok(())
}

/// The next row on standard input, numbered `row`, checked as far as it can be alone: JSON, the
/// width of the rows before it and, on the first row, the model's, and finite values.
fn next_stream_row<R: BufRead>(
    lines: &mut JsonLines<R>,
    dim: &mut Option<usize>,
    classifier: &Classifier,
    row: usize,
) -> Result<Option<Vec<f32>>, Failure> {
    let in_input = |message: String| Failure::input(format!("{STANDARD_INPUT}: {message}"));
    let Some(values) = lines.next_row().map_err(in_input)? else {
        return Ok(None);
    };
    let first = dim.is_none();
    let width = input::check_width(dim, values.len(), lines.line_number()).map_err(in_input)?;
    // Every row has the first row's width, so the first is checked against the model's as soon
    // as it is parsed: rows of the wrong width would otherwise be buffered up to a whole batch
    // (gigabytes of very wide rows) before the classifier refused them.
    if first {
        classifier.check_dim(width)?;
    }
    check_finite(STANDARD_INPUT, &values, width, row)?;
    Ok(Some(values))
}

/// Writes rows in the chosen format, numbering them across batches, and flushes after each batch.
struct RowWriter {
    out: BufWriter<io::StdoutLock<'static>>,
    format: Format,
    rows_written: usize,
}

impl RowWriter {
    fn new(format: Format) -> Self {
        RowWriter {
            out: BufWriter::new(io::stdout().lock()),
            format,
            rows_written: 0,
        }
    }

    fn write_batch(
        &mut self,
        classifier: &Classifier,
        embeddings: &[f32],
        dim: usize,
    ) -> Result<(), Failure> {
        let rows = embeddings.len().checked_div(dim).unwrap_or(0);
        let mut probabilities = vec![0.0f32; rows];
        let mut labels = vec![0u8; rows];
        classifier.classify(embeddings, dim, &mut probabilities, Some(&mut labels))?;
        let out = &mut self.out;
        if self.rows_written == 0 {
            match self.format {
                Format::Text => writeln!(out, "{:>6}  {:>11}  label", "row", "probability")?,
                Format::Csv => writeln!(out, "row,probability,label")?,
                Format::Jsonl => {}
            }
        }
        for (index, (p, label)) in probabilities.iter().zip(&labels).enumerate() {
            let row = self.rows_written + index;
            match self.format {
                Format::Text => {
                    let name = if *label == 1 { "cyber" } else { "not-cyber" };
                    writeln!(out, "{row:>6}  {p:>11.6}  {name}")?
                }
                Format::Csv => writeln!(out, "{row},{p},{label}")?,
                Format::Jsonl => writeln!(
                    out,
                    "{{\"row\":{row},\"probability\":{p},\"label\":{label}}}"
                )?,
            }
        }
        self.rows_written += rows;
        out.flush()?;
        Ok(())
    }
}

/// NaN and infinities are refused with their row (counted from `first_row`) and column, whatever
/// the input format (JSON lines' NaN / Infinity tokens and out-of-range numbers included).
fn check_finite(name: &str, values: &[f32], dim: usize, first_row: usize) -> Result<(), Failure> {
    match input::first_non_finite(values) {
        None => Ok(()),
        Some(index) => Err(Failure {
            message: format!(
                "{name}: row {} column {} is {}; every value must be finite",
                first_row + index / dim,
                index % dim,
                values[index]
            ),
            code: 10 + gemma_cyber::Status::NonFiniteInput as u8,
        }),
    }
}

fn export_onnx(output: &Path, model: &ModelArgs) -> Result<(), Failure> {
    if let Some(path) = &model.model {
        convert::refuse_output_over_input(output, path, "the model")?;
    }
    crate::output::refuse_unreplaceable_output(output)?;
    let model = gemma_cyber::Model::load(&model.source(), model.model_sha256.as_ref())?;
    let graph = onnx_graph::onnx_model(&model.plugin_view()?);
    convert::write_atomically(output, &graph)?;
    writeln!(
        io::stdout().lock(),
        "wrote: {}",
        escape(&output.display().to_string())
    )?;
    Ok(())
}

/// A float as JSON through its own shortest decimal (0.5 for 0.5f32, not 0.5000000000000001).
pub(crate) fn json_float(value: f32) -> serde_json::Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn info(setup: &Setup, format: ReportFormat) -> Result<(), Failure> {
    let classifier = open_classifier(setup)?;
    let model = classifier.model();
    let widths: Vec<usize> = std::iter::once(model.input_dim())
        .chain(model.layers().iter().map(|layer| layer.outputs))
        .collect();
    let source = setup
        .runner
        .model
        .model
        .as_ref()
        .map_or("built-in".to_owned(), |p| p.display().to_string());
    let mut out = io::stdout().lock();
    if let ReportFormat::Json = format {
        let metadata: serde_json::Map<String, serde_json::Value> = model
            .metadata()
            .iter()
            .map(|(key, value)| (key.clone(), value.clone().into()))
            .collect();
        let report = serde_json::json!({
            "model": source,
            "layers": widths,
            "input_dim": model.input_dim(),
            "hidden_blocks": model.hidden_sizes().len(),
            "parameters": model.parameter_count(),
            "norm_order": model.norm_order().as_str(),
            "layer_norm_eps": json_float(model.layer_norm_eps()),
            "batch_norm_eps": model.batch_norm_eps(),
            "threshold": json_float(classifier.threshold()),
            "model_threshold": json_float(model.threshold()),
            "backend": classifier.backend().name(),
            "device": classifier.device_name(),
            "skipped": classifier
                .skipped_backends()
                .iter()
                .map(|s| serde_json::json!({"backend": s.backend, "reason": s.reason.message()}))
                .collect::<Vec<_>>(),
            "metadata": metadata,
        });
        writeln!(out, "{}", terminal::json(&report))?;
        return Ok(());
    }
    let widths: Vec<String> = widths.iter().map(ToString::to_string).collect();
    writeln!(out, "model:       {}", escape(&source))?;
    writeln!(
        out,
        "layers:      {} (LayerNorm, {} hidden blocks, sigmoid)",
        widths.join(" -> "),
        model.hidden_sizes().len()
    )?;
    writeln!(out, "input dim:   {}", model.input_dim())?;
    writeln!(out, "parameters:  {}", model.parameter_count())?;
    writeln!(out, "norm order:  {}", model.norm_order().as_str())?;
    writeln!(
        out,
        "eps:         layer norm {}, batch norm {}",
        model.layer_norm_eps(),
        model.batch_norm_eps()
    )?;
    writeln!(
        out,
        "threshold:   {} (model's own: {})",
        classifier.threshold(),
        model.threshold()
    )?;
    writeln!(out, "backend:     {}", classifier.backend().name())?;
    writeln!(out, "device:      {}", escape(classifier.device_name()))?;
    for skipped in classifier.skipped_backends() {
        writeln!(
            out,
            "skipped:     {}: {}",
            skipped.backend,
            escape(skipped.reason.message())
        )?;
    }
    writeln!(out, "metadata:")?;
    for (key, value) in model.metadata() {
        writeln!(out, "  {}: {}", escape(key), escape(value))?;
    }
    Ok(())
}

/// Reads a whole input of embeddings and refuses NaN and infinities. A stream's format is told by
/// its first bytes (`.npy`'s magic, else JSON lines); a format that needs the file itself (random
/// access, such as a columnar one) is one more branch on the path's extension before `File::open`.
pub(crate) fn read_embeddings(input: Option<&Path>) -> Result<Embeddings, Failure> {
    let path = input.filter(|path| *path != Path::new("-"));
    let name = path.map_or("standard input".to_owned(), |p| p.display().to_string());
    let in_input = |message: String| Failure::input(format!("{name}: {message}"));
    let embeddings = match path {
        None => read_from(BufReader::with_capacity(1 << 20, io::stdin().lock()), None),
        Some(path) => {
            let cannot_read =
                |e: io::Error| Failure::input(format!("cannot read {}: {e}", path.display()));
            let file = File::open(path).map_err(cannot_read)?;
            let metadata = file.metadata().map_err(cannot_read)?;
            if metadata.is_dir() {
                return Err(in_input("is a directory".into()));
            }
            // A FIFO or device has no length to check the array against.
            let length = metadata.is_file().then_some(metadata.len());
            read_from(BufReader::with_capacity(1 << 20, file), length)
        }
    }
    .map_err(in_input)?;
    check_finite(&name, &embeddings.values, embeddings.dim, 0)?;
    Ok(embeddings)
}

fn read_from(reader: impl BufRead, length: Option<u64>) -> Result<Embeddings, String> {
    let (is_npy, reader) = input::sniff_npy(reader).map_err(|e| format!("cannot read: {e}"))?;
    if is_npy {
        input::read_npy(reader, length)
    } else {
        input::read_json_lines(reader)
    }
}
