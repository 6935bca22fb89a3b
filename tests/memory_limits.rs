//! A big valid model (256 MiB, made here in a temporary folder) loads within a stated multiple of
//! its size, and under an address-space limit (`ulimit -v`, i.e. RLIMIT_AS) too small for it the
//! load ends in MODEL_INVALID with a one-line message, never in an abort.
#![cfg(all(unix, feature = "cli"))]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Input width of the big model (the real model's).
const DIM: usize = 768;
/// Hidden width: 768 × 87,000 float32 weights, about 256 MiB.
const WIDTH: usize = 87_000;

/// Writes a valid model `768 → WIDTH → 1` of small float32 values, streaming, and returns its size.
fn write_big_model(path: &Path) -> u64 {
    let tensors: [(&str, Vec<usize>, f32); 10] = [
        ("input_norm.weight", vec![DIM], 1.0),
        ("input_norm.bias", vec![DIM], 0.0),
        ("hidden.0.linear.weight", vec![WIDTH, DIM], 0.001),
        ("hidden.0.linear.bias", vec![WIDTH], 0.0),
        ("hidden.0.norm.weight", vec![WIDTH], 1.0),
        ("hidden.0.norm.bias", vec![WIDTH], 0.0),
        ("hidden.0.norm.running_mean", vec![WIDTH], 0.0),
        ("hidden.0.norm.running_var", vec![WIDTH], 1.0),
        ("output.weight", vec![1, WIDTH], 0.001),
        ("output.bias", vec![1], 0.0),
    ];
    let mut entries =
        vec![r#""__metadata__":{"format":"gemma-cyber","format_version":"1"}"#.to_owned()];
    let mut offset = 0;
    for (name, shape, _) in &tensors {
        let end = offset + shape.iter().product::<usize>() * 4;
        entries.push(format!(
            r#""{name}":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{offset},{end}]}}"#
        ));
        offset = end;
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut file = BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&(header.len() as u64).to_le_bytes())
        .unwrap();
    file.write_all(header.as_bytes()).unwrap();
    for (_, shape, value) in &tensors {
        let chunk = value.to_le_bytes().repeat(1 << 16);
        let mut left = shape.iter().product::<usize>() * 4;
        while left > 0 {
            let n = left.min(chunk.len());
            file.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    }
    file.flush().unwrap();
    (8 + header.len() + offset) as u64
}

/// `gemma-cyber info --backend cpu --model <model>` with an address-space limit, if any.
fn info(model: &Path, limit_bytes: Option<u64>) -> Output {
    let binary = env!("CARGO_BIN_EXE_gemma-cyber");
    let limit = limit_bytes.map_or("unlimited".to_owned(), |b| (b / 1024).to_string());
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {limit} && exec \"$0\" info --backend cpu --model \"$1\""
        ))
        .arg(binary)
        .arg(model)
        .output()
        .unwrap()
}

/// Largest resident size of any child this process has waited for, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given.
    let usage = unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init()
    };
    // Linux reports kilobytes.
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn a_big_model_loads_in_bounded_memory_and_fails_cleanly_under_an_address_space_limit() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("gemma-cyber-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("big.safetensors");
    let size = write_big_model(&model);

    let unlimited = info(&model, None);
    assert!(
        unlimited.status.success(),
        "{}",
        String::from_utf8_lossy(&unlimited.stderr)
    );
    // The file, the float32 model and (once the file is freed) the cpu backend's packed copy:
    // two times a float32 file, plus the program itself. Documented in docs/HARDENING.md.
    let peak = children_peak_rss();
    assert!(
        peak <= 2 * size + (96 << 20),
        "peak resident memory {peak} bytes for a {size}-byte model"
    );

    // From far too little to plenty: every run either loads or says it ran out of memory.
    let mut refused = 0;
    for tenths in [5, 10, 15, 20, 25, 30, 40] {
        let limit = size * tenths / 10;
        let output = info(&model, Some(limit));
        let stderr = String::from_utf8_lossy(&output.stderr);
        match output.status.code() {
            Some(0) => {}
            Some(15) => {
                refused += 1;
                assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
                assert!(
                    stderr.contains("not enough memory"),
                    "limit {limit}: {stderr}"
                );
            }
            _ => panic!(
                "limit {limit} bytes: {:?} (an abort is a failure)\n{stderr}",
                output.status
            ),
        }
    }
    assert!(refused > 0, "no limit was small enough to refuse the model");
    std::fs::remove_dir_all(&dir).unwrap();
}
