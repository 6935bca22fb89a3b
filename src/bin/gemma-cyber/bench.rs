//! `gemma-cyber bench`: rows/s and per-call latency of each backend by batch size, through the
//! same `Classifier::classify` every caller uses (input checks included).

use std::io::{self, Write};
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::Args;
use gemma_cyber::{BackendKind, Classifier, Options};

use crate::Failure;

#[derive(Args)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated (auto, cpu, onnxruntime, wgpu, plugin).
    #[arg(long, value_delimiter = ',', default_value = "cpu", value_parser = crate::parse_backend)]
    backends: Vec<BackendKind>,
    /// Measure the plugin libgemma_cyber_NAME.so too: the backend `plugin` in --backends.
    #[arg(long, value_name = "NAME")]
    plugin: Option<String>,
    #[command(flatten)]
    plugins: crate::plugins::PluginArgs,
    /// Batch sizes (rows per call, 1 to 262144), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256,4096,65536",
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64))]
    batches: Vec<usize>,
    /// Time spent measuring each batch size, in seconds, at most 3600 (at least 5 calls are
    /// always made).
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Threads per call, at most 1024; 0 lets the library decide.
    #[arg(long, alias = "threads", default_value_t = 0, value_parser = crate::num_threads_parser())]
    num_threads: usize,
    #[command(flatten)]
    model: crate::ModelArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Largest batch measured: 262,144 rows of 768 floats are 768 MiB of input.
const MAX_BATCH: usize = 1 << 18;

/// Most input values a call is measured with, whatever the model: the largest batch of the
/// default model's width. A `--model` with wider rows takes fewer of them.
const MAX_INPUT_VALUES: usize = MAX_BATCH * 768;

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 3600.0 => Ok(seconds),
        _ => Err("expected a number of seconds above 0, at most 3600".into()),
    }
}

/// Timings of one backend at one batch size.
struct Measurement {
    backend: BackendKind,
    device: String,
    batch: usize,
    calls: usize,
    min: Duration,
    median: Duration,
    max: Duration,
}

impl Measurement {
    fn rows_per_second(&self, latency: Duration) -> f64 {
        self.batch as f64 / latency.as_secs_f64()
    }
}

pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    // Checked before anything is printed, with the model's width.
    let dim = gemma_cyber::Model::load(&args.model.source(), args.model.model_sha256.as_ref())?
        .input_dim();
    if let Some(&batch) = args
        .batches
        .iter()
        .find(|&&batch| batch.saturating_mul(dim) > MAX_INPUT_VALUES)
    {
        // A bad command line: the input would not fit the bound every call is measured under.
        return Err(Failure {
            message: format!(
                "--batches {batch}: with the model's {dim} inputs a row, a call would take {} MiB \
                 of input; the limit is {} MiB ({} rows of this model)",
                ((batch as u64).saturating_mul(dim as u64) * 4) >> 20,
                (MAX_INPUT_VALUES * 4) >> 20,
                MAX_INPUT_VALUES / dim
            ),
            code: 2,
        });
    }
    let mut backends = args.backends.clone();
    if args.plugin.is_some() && !backends.contains(&BackendKind::Plugin) {
        backends.push(BackendKind::Plugin);
    }
    if backends.contains(&BackendKind::Plugin) && args.plugin.is_none() {
        return Err(Failure {
            message: "--backends plugin needs --plugin NAME, the plugin to measure".into(),
            code: 2,
        });
    }
    // Every backend is started before anything is printed or measured: one that cannot start
    // fails the command at once, not after the others' minutes of measuring.
    let mut classifiers = Vec::with_capacity(backends.len());
    for &backend in &backends {
        classifiers.push(crate::start_classifier(&Options {
            backend,
            model: args.model.source(),
            num_threads: args.num_threads,
            model_sha256: args.model.model_sha256,
            plugin_name: args
                .plugin
                .clone()
                .filter(|_| backend == BackendKind::Plugin),
            plugin_dir: args.plugins.plugin_dir.clone(),
            plugin_install_dir: crate::plugins::installed_lib_dir(),
            plugin_settings: args.plugins.plugin_settings.clone(),
            ..Options::default()
        })?);
    }
    let mut out = io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<12} {:>7} {:>7} {:>12} {:>12} {:>12} {:>14} {:>14}",
            "backend", "batch", "calls", "min", "median", "max", "rows/s median", "rows/s best"
        )?;
    }
    for classifier in &classifiers {
        if !args.json {
            writeln!(
                out,
                "# {}: {}",
                classifier.backend().name(),
                crate::terminal::escape(classifier.device_name())
            )?;
        }
        for &batch in &args.batches {
            let m = measure(classifier, batch, Duration::from_secs_f64(args.seconds))?;
            if args.json {
                let line = serde_json::json!({
                    "backend": m.backend.name(),
                    "device": m.device,
                    "batch": m.batch,
                    "calls": m.calls,
                    "min_s": m.min.as_secs_f64(),
                    "median_s": m.median.as_secs_f64(),
                    "max_s": m.max.as_secs_f64(),
                    "rows_per_s": m.rows_per_second(m.median),
                });
                writeln!(out, "{}", crate::terminal::json(&line))?;
            } else {
                writeln!(
                    out,
                    "{:<12} {:>7} {:>7} {:>12} {:>12} {:>12} {:>14.0} {:>14.0}",
                    m.backend.name(),
                    m.batch,
                    m.calls,
                    format_duration(m.min),
                    format_duration(m.median),
                    format_duration(m.max),
                    m.rows_per_second(m.median),
                    m.rows_per_second(m.min)
                )?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

fn measure(
    classifier: &Classifier,
    batch: usize,
    budget: Duration,
) -> Result<Measurement, Failure> {
    let dim = classifier.input_dim();
    let embeddings = unit_rows(batch, dim);
    let mut probabilities = vec![0.0f32; batch];
    // One untimed call: first-use costs (thread start, device warm-up, caches) are not throughput.
    classifier.classify(&embeddings, dim, &mut probabilities, None)?;
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed() < budget {
        let call = Instant::now();
        classifier.classify(&embeddings, dim, &mut probabilities, None)?;
        times.push(call.elapsed());
    }
    times.sort();
    Ok(Measurement {
        backend: classifier.backend(),
        device: classifier.device_name().to_owned(),
        batch,
        calls: times.len(),
        min: times[0],
        median: times[times.len() / 2],
        max: times[times.len() - 1],
    })
}

/// Deterministic unit-length rows, shaped like sentence embeddings.
fn unit_rows(rows: usize, dim: usize) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut values: Vec<f32> = (0..rows * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    for row in values.chunks_exact_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}
