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

// The very graph the onnxruntime plugin runs, for ONNX Runtime's Python API.
#[path = "../plugins/onnxruntime/src/graph.rs"]
#[allow(dead_code)]
mod onnx_graph;

const BATCHES: [usize; 2] = [1024, 5000];
const LATENCY_ITERATIONS: usize = 2000;
const SECONDS_PER_BATCH: f64 = 2.0;
/// Threads classifying at once on one classifier, for the pool measurement.
const CONCURRENT_CALLERS: usize = 6;

struct Classifier(*mut gemma_cyber_classifier);

// SAFETY: the C ABI documents classify and the accessors as safe to call from many threads at
// once on one classifier.
unsafe impl Send for Classifier {}
// SAFETY: as above.
unsafe impl Sync for Classifier {}

impl Drop for Classifier {
    fn drop(&mut self) {
        // SAFETY: a classifier from gemma_cyber_create, destroyed only here, once.
        unsafe { gemma_cyber_destroy(self.0) }
    }
}

impl Classifier {
    fn new(backend: BackendKind, model: &Path, library: &Path, threads: u32) -> Classifier {
        let model = CString::new(model.to_str().unwrap()).unwrap();
        let library = CString::new(library.to_str().unwrap()).unwrap();
        // SAFETY: zeroed bytes are valid options (NULL pointers, AUTO backend), which options_init
        // then fills; the strings outlive the call; handle is writable; the last error is the
        // library's own NUL-terminated string.
        unsafe {
            let mut options = std::mem::zeroed::<gemma_cyber_options>();
            gemma_cyber_options_init(&mut options, std::mem::size_of::<gemma_cyber_options>());
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
        assert!(probabilities.len() >= embeddings.len() / dim);
        // SAFETY: a live classifier; the input holds the rows passed, the output a value for each.
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
        // SAFETY: a live classifier's device name, a NUL-terminated string it owns.
        unsafe { CStr::from_ptr(gemma_cyber_device_name(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// Batch-1 latency and rows/s at each of `BATCHES`, in wall-clock and this thread's CPU time.
    fn measure(&self, inputs: &[f32], dim: usize) -> Measurement {
        let row = &inputs[..dim];
        let mut probability = [0.0f32];
        for _ in 0..200 {
            self.classify(row, dim, &mut probability);
        }
        let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) = (0..LATENCY_ITERATIONS)
            .map(|_| {
                let (start, start_cpu) = (Instant::now(), thread_cpu_seconds());
                self.classify(row, dim, &mut probability);
                (
                    start.elapsed().as_secs_f64() * 1e6,
                    (thread_cpu_seconds() - start_cpu) * 1e6,
                )
            })
            .unzip();
        wall.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let mut measurement = Measurement {
            latency_us: [
                wall[wall.len() / 2],
                wall[wall.len() * 99 / 100],
                cpu[cpu.len() / 2],
            ],
            ..Measurement::default()
        };
        for rows in BATCHES {
            let batch = &inputs[..rows * dim];
            let mut probabilities = vec![0.0f32; rows];
            self.classify(batch, dim, &mut probabilities);
            let (start, start_cpu, mut runs) = (Instant::now(), thread_cpu_seconds(), 0usize);
            loop {
                self.classify(batch, dim, &mut probabilities);
                runs += 1;
                let elapsed = start.elapsed().as_secs_f64();
                if elapsed >= SECONDS_PER_BATCH {
                    let cpu = thread_cpu_seconds() - start_cpu;
                    measurement.rows_per_s.push((runs * rows) as f64 / elapsed);
                    measurement.rows_per_cpu_s.push((runs * rows) as f64 / cpu);
                    break;
                }
            }
        }
        measurement
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

/// One side's results; see `Measurement::best` for how rounds combine.
#[derive(Clone, Debug, Default)]
struct Measurement {
    /// Batch-1 latency in µs: wall-clock median, wall-clock p99, CPU-time median.
    latency_us: [f64; 3],
    /// Wall-clock rows/s at each of `BATCHES`.
    rows_per_s: Vec<f64>,
    /// Rows per second of the calling thread's CPU time at each of `BATCHES`: with one intra-op
    /// thread all the work runs on the calling thread, and this hardly moves when other processes
    /// compete for the cores.
    rows_per_cpu_s: Vec<f64>,
}

impl Measurement {
    /// The best of several rounds, figure by figure (the rounds least disturbed by neighbours).
    fn best(rounds: &[Measurement]) -> Measurement {
        let min =
            |f: &dyn Fn(&Measurement) -> f64| rounds.iter().map(f).fold(f64::INFINITY, f64::min);
        let max = |f: &dyn Fn(&Measurement) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
        Measurement {
            latency_us: [
                min(&|m| m.latency_us[0]),
                min(&|m| m.latency_us[1]),
                min(&|m| m.latency_us[2]),
            ],
            rows_per_s: (0..BATCHES.len())
                .map(|i| max(&|m| m.rows_per_s[i]))
                .collect(),
            rows_per_cpu_s: (0..BATCHES.len())
                .map(|i| max(&|m| m.rows_per_cpu_s[i]))
                .collect(),
        }
    }

    fn from_json(json: &str) -> Measurement {
        Measurement {
            latency_us: [
                json_number(json, "median"),
                json_number(json, "p99"),
                json_number(json, "cpu_median"),
            ],
            rows_per_s: BATCHES
                .iter()
                .map(|b| json_number(json, &b.to_string()))
                .collect(),
            rows_per_cpu_s: BATCHES
                .iter()
                .map(|b| json_number(json, &format!("cpu_{b}")))
                .collect(),
        }
    }
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock exists on every Linux and macOS.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
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

// A benchmark's script, its steps in the order they run and print: clearer whole than split.
#[allow(clippy::too_many_lines)]
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
    std::fs::write(
        &graph,
        onnx_graph::onnx_model(&model.plugin_view().unwrap()),
    )
    .unwrap();
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

    // Rounds alternate between the sides so that a noisy neighbour hits them alike.
    let (mut ours, mut theirs, mut cpu_results) = (Vec::new(), Vec::new(), Vec::new());
    let mut python_version = String::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        ours.push(onnxruntime.measure(&inputs, dim));
        let json = python_round(&graph, &inputs_path, dim, threads);
        theirs.push(Measurement::from_json(&json));
        python_version = json
            .split("\"version\": \"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("?")
            .to_owned();
        cpu_results.push(cpu.measure(&inputs, dim));
    }
    let concurrent: Vec<(usize, f64)> = [1, 64]
        .into_iter()
        .map(|rows| (rows, onnxruntime.concurrent_rows_per_s(&inputs, rows, dim)))
        .collect();
    let (ours, theirs, cpu_results) = (
        Measurement::best(&ours),
        Measurement::best(&theirs),
        Measurement::best(&cpu_results),
    );

    println!(
        "\n{threads} intra-op thread(s), best of {rounds} alternating rounds; ONNX Runtime {python_version} on both sides.\n"
    );
    let numbers = |values: &[f64]| {
        values
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let wall: Vec<String> = BATCHES.iter().map(|b| format!("rows/s @ {b}")).collect();
    let cpu_time: Vec<String> = BATCHES
        .iter()
        .map(|b| format!("rows/CPU-s @ {b}"))
        .collect();
    println!(
        "| | batch-1 median µs | batch-1 p99 µs | batch-1 CPU µs | {} | {} |",
        wall.join(" | "),
        cpu_time.join(" | ")
    );
    println!("|---|---|---|---|{}", "---|".repeat(2 * BATCHES.len()));
    for (name, m) in [
        ("gemma-cyber onnxruntime (C API)", &ours),
        ("ONNX Runtime Python API, same graph", &theirs),
        ("gemma-cyber cpu (C API), for reference", &cpu_results),
    ] {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {} | {} |",
            m.latency_us[0],
            m.latency_us[1],
            m.latency_us[2],
            numbers(&m.rows_per_s),
            numbers(&m.rows_per_cpu_s)
        );
    }
    let percent = |ratio: f64| format!("{:+.1}%", (ratio - 1.0) * 100.0);
    let mut overheads = vec![
        format!(
            "batch-1 latency {}",
            percent(ours.latency_us[0] / theirs.latency_us[0])
        ),
        format!(
            "batch-1 CPU time {}",
            percent(ours.latency_us[2] / theirs.latency_us[2])
        ),
    ];
    for (i, b) in BATCHES.iter().enumerate() {
        overheads.push(format!(
            "rows/s @ {b} {}",
            percent(theirs.rows_per_s[i] / ours.rows_per_s[i])
        ));
        overheads.push(format!(
            "rows/CPU-s @ {b} {}",
            percent(theirs.rows_per_cpu_s[i] / ours.rows_per_cpu_s[i])
        ));
    }
    println!(
        "\nOverhead of gemma-cyber over ONNX Runtime's Python API (positive: gemma-cyber slower): {}",
        overheads.join(", ")
    );
    for (rows, rate) in concurrent {
        println!(
            "{CONCURRENT_CALLERS} threads at once on one classifier, {rows}-row batches: {rate:.0} rows/s"
        );
    }
}
