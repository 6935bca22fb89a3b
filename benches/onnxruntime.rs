//! Benchmark, not a test: the onnxruntime backend through the C API next to ONNX Runtime's own
//! Python API on the same graph, in the same run, with the same inputs and thread settings.
//!
//! Run: `GEMMA_CYBER_ONNXRUNTIME_LIB=$PWD/$(cat .ort/LIBRARY_PATH) cargo bench --bench onnxruntime`
//! (optionally `-- --threads N --rounds N`). The Python side needs onnxruntime and numpy
//! (`pip install -r tools/requirements.txt`); `PYTHON` picks the interpreter (default: `.ort/venv`'s
//! if there is one, else `python3`). Prints a Markdown table for docs/BENCHMARKS.md.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::time::Instant;

use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Model, Status};

const BATCHES: [usize; 2] = [1024, 5000];
const LATENCY_ITERATIONS: usize = 2000;
const SECONDS_PER_BATCH: f64 = 2.0;
/// Threads classifying at once on one classifier, for the pool measurement.
const CONCURRENT_CALLERS: usize = 6;

struct Classifier(*mut ClassifierHandle);

unsafe impl Send for Classifier {}
unsafe impl Sync for Classifier {}

impl Drop for Classifier {
    fn drop(&mut self) {
        unsafe { gemma_cyber_destroy(self.0) }
    }
}

impl Classifier {
    fn new(backend: BackendKind, model: &Path, library: &Path, threads: u32) -> Classifier {
        let model = CString::new(model.to_str().unwrap()).unwrap();
        let library = CString::new(library.to_str().unwrap()).unwrap();
        unsafe {
            let mut options = std::mem::zeroed::<COptions>();
            gemma_cyber_options_init(&mut options, std::mem::size_of::<COptions>());
            options.backend = backend;
            options.model_path = model.as_ptr();
            options.onnxruntime_library = library.as_ptr();
            options.num_threads = threads;
            let mut handle = ptr::null_mut();
            let status = gemma_cyber_create(&options, &mut handle);
            assert_eq!(
                status,
                Status::Ok,
                "{:?}",
                CStr::from_ptr(gemma_cyber_last_error())
            );
            Classifier(handle)
        }
    }

    fn classify(&self, embeddings: &[f32], dim: usize, probabilities: &mut [f32]) {
        let status = unsafe {
            gemma_cyber_classify(
                self.0,
                embeddings.as_ptr(),
                embeddings.len() / dim,
                dim,
                probabilities.as_mut_ptr(),
                ptr::null_mut(),
            )
        };
        assert_eq!(status, Status::Ok);
    }

    fn device_name(&self) -> String {
        unsafe { CStr::from_ptr(gemma_cyber_device_name(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Median and p99 batch-1 latency in µs.
    fn latency_us(&self, row: &[f32]) -> (f64, f64) {
        let mut probability = [0.0f32];
        for _ in 0..200 {
            self.classify(row, row.len(), &mut probability);
        }
        let mut times: Vec<f64> = (0..LATENCY_ITERATIONS)
            .map(|_| {
                let start = Instant::now();
                self.classify(row, row.len(), &mut probability);
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (times[times.len() / 2], times[times.len() * 99 / 100])
    }

    fn rows_per_s(&self, batch: &[f32], dim: usize) -> f64 {
        let mut probabilities = vec![0.0f32; batch.len() / dim];
        self.classify(batch, dim, &mut probabilities);
        let (start, mut runs) = (Instant::now(), 0usize);
        loop {
            self.classify(batch, dim, &mut probabilities);
            runs += 1;
            let elapsed = start.elapsed().as_secs_f64();
            if elapsed >= SECONDS_PER_BATCH {
                return (runs * probabilities.len()) as f64 / elapsed;
            }
        }
    }

    /// Rows/s of `CONCURRENT_CALLERS` threads classifying `rows`-row batches at once.
    fn concurrent_rows_per_s(&self, inputs: &[f32], rows: usize, dim: usize) -> f64 {
        let start = Instant::now();
        let total: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..CONCURRENT_CALLERS)
                .map(|_| {
                    scope.spawn(|| {
                        let batch = &inputs[..rows * dim];
                        let mut probabilities = vec![0.0f32; rows];
                        let mut done = 0;
                        while start.elapsed().as_secs_f64() < SECONDS_PER_BATCH {
                            self.classify(batch, dim, &mut probabilities);
                            done += rows;
                        }
                        done
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        total as f64 / start.elapsed().as_secs_f64()
    }
}

/// Fixed-seed N(0, 1)-ish rows (sum of uniforms).
fn random_rows(rows: usize, dim: usize) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows * dim)
        .map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) as f32 * 1.7)
        .collect()
}

fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort/venv/bin/python");
        if venv.exists() {
            venv.to_string_lossy().into_owned()
        } else {
            "python3".into()
        }
    })
}

/// Runs tools/bench_onnxruntime.py once; its JSON answer.
fn python_round(graph: &Path, inputs: &Path, dim: usize, threads: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/bench_onnxruntime.py");
    let batches: Vec<String> = BATCHES.iter().map(usize::to_string).collect();
    let output = Command::new(python())
        .arg(script)
        .args(["--model", graph.to_str().unwrap()])
        .args(["--inputs", inputs.to_str().unwrap()])
        .args(["--dim", &dim.to_string()])
        .args(["--threads", &threads.max(1).to_string()])
        .args(["--iterations", &LATENCY_ITERATIONS.to_string()])
        .args(["--seconds", &SECONDS_PER_BATCH.to_string()])
        .args(["--batches", &batches.join(",")])
        .output()
        .expect("python runs (set PYTHON)");
    assert!(
        output.status.success(),
        "tools/bench_onnxruntime.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The number after `"key": ` in `json` (the script's output is flat enough for this).
fn json_number(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\": ")).expect(key) + key.len() + 4;
    let end = json[at..].find([',', '}']).map_or(json.len(), |e| at + e);
    json[at..end].trim().parse().expect(key)
}

fn best(values: impl Iterator<Item = f64>, higher_is_better: bool) -> f64 {
    values
        .reduce(|a, b| if (a > b) == higher_is_better { a } else { b })
        .unwrap()
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without `--bench`: timing is no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benches/onnxruntime: a benchmark; run it with `cargo bench --bench onnxruntime`");
        return;
    }
    let library = PathBuf::from(std::env::var_os("GEMMA_CYBER_ONNXRUNTIME_LIB").expect(
        "GEMMA_CYBER_ONNXRUNTIME_LIB is unset: run tools/fetch_onnxruntime.sh and set it to \
         $PWD/$(cat .ort/LIBRARY_PATH)",
    ));
    let threads = argument("--threads", 1);
    let rounds = argument("--rounds", 3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_path = root.join("models/default.safetensors");
    let model = Model::from_path(&model_path).expect("default model loads");
    let dim = model.input_dim();

    let dir = root.join("target/bench-onnxruntime");
    std::fs::create_dir_all(&dir).unwrap();
    let graph = dir.join("gemma_cyber.onnx");
    std::fs::write(&graph, gemma_cyber::backend::onnx_model(&model)).unwrap();
    let inputs = random_rows(*BATCHES.iter().max().unwrap(), dim);
    let inputs_path = dir.join("inputs.f32");
    let bytes: Vec<u8> = inputs.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&inputs_path, bytes).unwrap();

    let onnxruntime = Classifier::new(
        BackendKind::Onnxruntime,
        &model_path,
        &library,
        threads as u32,
    );
    let cpu = Classifier::new(BackendKind::Cpu, &model_path, &library, threads as u32);
    eprintln!("onnxruntime: {}", onnxruntime.device_name());
    eprintln!("cpu: {}", cpu.device_name());

    // Rounds alternate between the two sides so that a noisy neighbour hits both alike; the best
    // round of each is reported.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut cpu_results = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let latency = onnxruntime.latency_us(&inputs[..dim]);
        let throughput: Vec<f64> = BATCHES
            .iter()
            .map(|&rows| onnxruntime.rows_per_s(&inputs[..rows * dim], dim))
            .collect();
        ours.push((latency, throughput));
        let json = python_round(&graph, &inputs_path, dim, threads);
        theirs.push((
            (json_number(&json, "median"), json_number(&json, "p99")),
            BATCHES
                .iter()
                .map(|rows| json_number(&json, &rows.to_string()))
                .collect::<Vec<_>>(),
            json,
        ));
        let latency = cpu.latency_us(&inputs[..dim]);
        let throughput: Vec<f64> = BATCHES
            .iter()
            .map(|&rows| cpu.rows_per_s(&inputs[..rows * dim], dim))
            .collect();
        cpu_results.push((latency, throughput));
    }
    let concurrent: Vec<(usize, f64)> = [1, 64]
        .into_iter()
        .map(|rows| (rows, onnxruntime.concurrent_rows_per_s(&inputs, rows, dim)))
        .collect();

    let python_version = theirs[0]
        .2
        .split("\"version\": \"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or("?")
        .to_owned();
    let row = |name: &str, latency: (f64, f64), throughput: Vec<f64>| {
        let throughput: Vec<String> = throughput.iter().map(|t| format!("{t:.0}")).collect();
        println!(
            "| {name} | {:.1} | {:.1} | {} |",
            latency.0,
            latency.1,
            throughput.join(" | ")
        );
    };
    let summarize = |results: &[((f64, f64), Vec<f64>)]| {
        (
            (
                best(results.iter().map(|r| r.0 .0), false),
                best(results.iter().map(|r| r.0 .1), false),
            ),
            (0..BATCHES.len())
                .map(|i| best(results.iter().map(|r| r.1[i]), true))
                .collect::<Vec<f64>>(),
        )
    };
    let theirs_plain: Vec<((f64, f64), Vec<f64>)> =
        theirs.iter().map(|t| (t.0, t.1.clone())).collect();
    let (ours_latency, ours_throughput) = summarize(&ours);
    let (their_latency, their_throughput) = summarize(&theirs_plain);
    let (cpu_latency, cpu_throughput) = summarize(&cpu_results);

    println!(
        "\n{threads} intra-op thread(s), best of {rounds} alternating rounds; ONNX Runtime {python_version} on both sides.\n"
    );
    let headers: Vec<String> = BATCHES.iter().map(|b| format!("rows/s @ {b}")).collect();
    println!(
        "| | batch-1 median µs | batch-1 p99 µs | {} |",
        headers.join(" | ")
    );
    println!("|---|---|---|{}", "---|".repeat(BATCHES.len()));
    row(
        "gemma-cyber onnxruntime (C API)",
        ours_latency,
        ours_throughput.clone(),
    );
    row(
        "ONNX Runtime Python API, same graph",
        their_latency,
        their_throughput.clone(),
    );
    row(
        "gemma-cyber cpu (C API), for reference",
        cpu_latency,
        cpu_throughput,
    );
    let overheads: Vec<String> = std::iter::once(ours_latency.0 / their_latency.0 - 1.0)
        .chain(
            their_throughput
                .iter()
                .zip(&ours_throughput)
                .map(|(t, o)| t / o - 1.0),
        )
        .map(|o| format!("{:+.1}%", o * 100.0))
        .collect();
    println!(
        "\nOverhead of gemma-cyber over ONNX Runtime's Python API (positive: slower): batch-1 latency {}, {}",
        overheads[0],
        BATCHES
            .iter()
            .zip(&overheads[1..])
            .map(|(b, o)| format!("rows/s @ {b} {o}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (rows, rate) in concurrent {
        println!(
            "{CONCURRENT_CALLERS} threads at once on one classifier, {rows}-row batches: {rate:.0} rows/s"
        );
    }
}
