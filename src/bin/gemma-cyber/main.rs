//! `gemma-cyber`: classify embeddings from .npy or JSON lines, describe the model and backend,
//! evaluate it and choose its threshold, measure the backends, and convert a PyTorch checkpoint
//! into a model file.

mod bench;
mod convert;
mod evaluate;
mod parquet;

use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gemma_cyber::{BackendKind, Classifier, ModelSource, Options};

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
    Classify {
        /// Embeddings: a 2-D .npy file (f32 or f16) or JSON lines (one array per line); `-` or
        /// nothing reads JSON lines from standard input. Parquet: a file, a directory of shards
        /// or a quoted glob (`'shards/part-*.parquet'`), written to Parquet with -o.
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
        #[command(flatten)]
        setup: Setup,
    },
    /// Measure rows/s and latency of backends by batch size.
    Bench(bench::BenchArgs),
    /// Write the ONNX graph the onnxruntime backend runs (same weights, BatchNorm folded).
    #[cfg(feature = "onnxruntime")]
    ExportOnnx {
        /// Where to write the .onnx file.
        #[arg(short, long)]
        output: PathBuf,
        /// Model file (.safetensors); the built-in model when left out.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Convert a PyTorch checkpoint (model.pt) into a .safetensors model, without Python and
    /// without executing anything from the file.
    Convert(convert::Convert),
    /// Score labelled embeddings: accuracy, precision, recall, F1, AUC, confusion matrix.
    Evaluate(evaluate::EvaluateArgs),
    /// Pick a threshold on labelled validation embeddings; optionally write it into the model.
    Threshold(evaluate::ThresholdArgs),
}

#[derive(Args)]
struct Setup {
    /// Backend: auto, cpu, onnxruntime or wgpu.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: BackendKind,
    /// Model file (.safetensors); the built-in model when left out.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Label threshold in [0, 1]; the model's own when left out.
    #[arg(long)]
    threshold: Option<f32>,
    /// Threads per call; 0 lets the library decide.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Refuse the model unless its file has this SHA-256 (64 hex digits).
    #[arg(long, value_parser = parse_sha256)]
    sha256: Option<[u8; 32]>,
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
        Failure {
            message: error.message().to_owned(),
            code: 10 + error.status() as u8,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify {
            input,
            format,
            setup,
            shards,
        } => match input.as_deref() {
            Some(input) if parquet::is_parquet_input(input) => {
                open_classifier(&setup).and_then(|c| parquet::classify(input, &shards, &c))
            }
            input if shards.given() => Err(parquet::not_parquet(input)),
            _ => classify(input.as_deref(), format, &setup),
        },
        Command::Info { setup } => info(&setup),
        Command::Bench(args) => bench::run(&args),
        #[cfg(feature = "onnxruntime")]
        Command::ExportOnnx { output, model } => export_onnx(&output, model.as_deref()),
        Command::Convert(args) => convert::run(&args),
        Command::Evaluate(args) => evaluate::evaluate(&args),
        Command::Threshold(args) => evaluate::threshold(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(failure) if failure.code == 1 && failure.message.contains("Broken pipe") => {
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("gemma-cyber: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
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
    BackendKind::from_name(name)
        .ok_or_else(|| format!("unknown backend {name:?}; expected auto, cpu, onnxruntime or wgpu"))
}

fn open_classifier(setup: &Setup) -> Result<Classifier, Failure> {
    let options = Options {
        backend: setup.backend,
        model: setup
            .model
            .clone()
            .map_or(ModelSource::Builtin, ModelSource::Path),
        threshold: setup.threshold,
        num_threads: setup.threads,
        onnxruntime_library: None,
        expected_sha256: setup.sha256,
        ..Options::default()
    };
    Ok(Classifier::new(&options)?)
}

fn classify(input: Option<&Path>, format: Format, setup: &Setup) -> Result<(), Failure> {
    let (embeddings, dim) = read_embeddings(input)?;
    let classifier = open_classifier(setup)?;
    let rows = embeddings.len().checked_div(dim).unwrap_or(0);
    let mut probabilities = vec![0.0f32; rows];
    let mut labels = vec![0u8; rows];
    classifier.classify(&embeddings, dim, &mut probabilities, Some(&mut labels))?;

    let mut out = BufWriter::new(io::stdout().lock());
    match format {
        Format::Text => writeln!(out, "{:>6}  {:>11}  label", "row", "probability")?,
        Format::Csv => writeln!(out, "row,probability,label")?,
        Format::Jsonl => {}
    }
    for (row, (p, label)) in probabilities.iter().zip(&labels).enumerate() {
        match format {
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
    out.flush()?;
    Ok(())
}

#[cfg(feature = "onnxruntime")]
fn export_onnx(output: &Path, model: Option<&Path>) -> Result<(), Failure> {
    let model = match model {
        Some(path) => gemma_cyber::Model::from_path(path)?,
        None => gemma_cyber::Model::builtin()?,
    };
    std::fs::write(output, gemma_cyber::backend::onnx_model(&model)).map_err(|e| Failure {
        message: format!("cannot write {}: {e}", output.display()),
        code: 1,
    })
}

fn info(setup: &Setup) -> Result<(), Failure> {
    let classifier = open_classifier(setup)?;
    let model = classifier.model();
    let widths: Vec<String> = std::iter::once(model.input_dim())
        .chain(model.layers().iter().map(|layer| layer.outputs))
        .map(|w| w.to_string())
        .collect();
    let source = setup
        .model
        .as_ref()
        .map_or("built-in".to_owned(), |p| p.display().to_string());
    let mut out = io::stdout().lock();
    writeln!(out, "model:       {source}")?;
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
    writeln!(out, "device:      {}", classifier.device_name())?;
    writeln!(out, "metadata:")?;
    for (key, value) in model.metadata() {
        writeln!(out, "  {key}: {value}")?;
    }
    Ok(())
}

/// Reads a whole input: `.npy` (by its magic bytes) or JSON lines. Returns values and row width.
fn read_embeddings(input: Option<&Path>) -> Result<(Vec<f32>, usize), Failure> {
    let (name, bytes) = match input {
        None => ("standard input".to_owned(), read_stdin()?),
        Some(path) if path == Path::new("-") => ("standard input".to_owned(), read_stdin()?),
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::input(format!("cannot read {}: {e}", path.display())))?;
            (path.display().to_string(), bytes)
        }
    };
    let parsed = if bytes.starts_with(b"\x93NUMPY") {
        read_npy(&bytes)
    } else {
        read_json_lines(&bytes)
    };
    parsed.map_err(|message| Failure::input(format!("{name}: {message}")))
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::input(format!("cannot read standard input: {e}")))?;
    Ok(bytes)
}

fn read_npy(bytes: &[u8]) -> Result<(Vec<f32>, usize), String> {
    let npy = npyz::NpyFile::new(bytes).map_err(|e| format!("not a valid .npy file: {e}"))?;
    let shape = npy.shape().to_vec();
    let [_, dim] = shape[..] else {
        return Err(format!(
            "expected a 2-D array (rows × dim), found shape {shape:?}"
        ));
    };
    if npy.order() == npyz::Order::Fortran {
        return Err(
            "the array is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)".into(),
        );
    }
    let dtype = npy.dtype();
    let npyz::DType::Plain(type_str) = &dtype else {
        return Err(format!(
            "dtype {} is not supported; expected float32 or float16",
            dtype.descr()
        ));
    };
    let bad_data = |e: io::Error| format!("cannot read the array data: {e}");
    let values = match (type_str.type_char(), type_str.size_field()) {
        (npyz::TypeChar::Float, 4) => npy.into_vec::<f32>().map_err(bad_data)?,
        (npyz::TypeChar::Float, 2) => npy
            .into_vec::<half::f16>()
            .map_err(bad_data)?
            .into_iter()
            .map(f32::from)
            .collect(),
        _ => {
            return Err(format!(
                "dtype {type_str} is not supported; expected float32 or float16"
            ))
        }
    };
    let dim = usize::try_from(dim).map_err(|_| format!("dimension {dim} is too large"))?;
    Ok((values, dim))
}

fn read_json_lines(bytes: &[u8]) -> Result<(Vec<f32>, usize), String> {
    let mut values = Vec::new();
    let mut dim = None;
    for (index, line) in bytes.lines().enumerate() {
        let line = line.map_err(|e| format!("line {}: {e}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Vec<f32> = serde_json::from_str(&line)
            .map_err(|e| format!("line {}: expected a JSON array of numbers: {e}", index + 1))?;
        match dim {
            None => dim = Some(row.len()),
            Some(d) if d != row.len() => {
                return Err(format!(
                    "line {} has {} values; earlier lines have {d}",
                    index + 1,
                    row.len()
                ))
            }
            Some(_) => {}
        }
        values.extend(row);
    }
    Ok((values, dim.unwrap_or(0)))
}
