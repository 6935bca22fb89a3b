//! The built-in model against its committed held-out split and the out-of-distribution set: the
//! model card's numbers, the training script's numbers, and the `evaluate` and `threshold`
//! commands.

mod common;

use common::{cli, repo_path};
use gemma_cyber::metrics::{choose_threshold, Metrics, Target};
use gemma_cyber::{BackendKind, Classifier, Model, Options};

const TEST_EMBEDDINGS: &str = "models/heldout/test_embeddings.npy";
const TEST_LABELS: &str = "models/heldout/test_labels.npy";
const VALIDATION_EMBEDDINGS: &str = "models/heldout/validation_embeddings.npy";
const VALIDATION_LABELS: &str = "models/heldout/validation_labels.npy";

/// A 2-D float16 .npy file, widened: values and row width.
fn npy_f16(relative: &str) -> (Vec<f32>, usize) {
    let bytes = std::fs::read(repo_path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let file = npyz::NpyFile::new(&bytes[..]).expect("valid .npy");
    let dim = file.shape()[1] as usize;
    let values = file.into_vec::<half::f16>().expect("float16 data");
    (values.into_iter().map(f32::from).collect(), dim)
}

/// Probabilities of the built-in model, cpu backend, for a committed split.
fn probabilities(embeddings: &str) -> Vec<f32> {
    let classifier = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        ..Options::default()
    })
    .unwrap();
    let (x, dim) = npy_f16(embeddings);
    let mut p = vec![0.0; x.len() / dim];
    classifier.classify(&x, dim, &mut p, None).unwrap();
    p
}

/// One metrics row of the model card's table: `| split | threshold … | accuracy | precision |
/// recall | F1 | AUC | TN | FP | FN | TP |`.
struct CardRow {
    threshold: f32,
    ratios: [String; 5],
    counts: [u64; 4],
}

fn card_rows(split: &str) -> Vec<CardRow> {
    let card = std::fs::read_to_string(repo_path("models/MODEL_CARD.md")).unwrap();
    card.lines()
        .filter(|line| line.starts_with(&format!("| {split} |")))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 11, "card row {line:?}");
            CardRow {
                threshold: cells[1].split_whitespace().next().unwrap().parse().unwrap(),
                ratios: std::array::from_fn(|i| cells[2 + i].to_owned()),
                counts: std::array::from_fn(|i| cells[7 + i].parse().unwrap()),
            }
        })
        .collect()
}

fn check_row(row: &CardRow, m: &Metrics) {
    let c = &m.confusion;
    let actual = [m.accuracy, m.precision, m.recall, m.f1, m.auc].map(|v| format!("{v:.4}"));
    assert_eq!(actual, row.ratios, "threshold {}", row.threshold);
    assert_eq!(
        [
            c.true_negatives,
            c.false_positives,
            c.false_negatives,
            c.true_positives
        ],
        row.counts,
        "threshold {}",
        row.threshold
    );
}

/// Checks every card row of `split` against the probabilities `p` of its rows, and that the card
/// reports both 0.5 and the model's own threshold.
fn check_card_rows(split: &str, p: &[f32], labels: &[u8]) {
    assert_eq!(p.len(), labels.len(), "{split}");
    let rows = card_rows(split);
    let own = Model::builtin().unwrap().threshold();
    assert!(
        rows.iter().any(|r| r.threshold == 0.5),
        "{split}: a row at 0.5"
    );
    assert!(
        rows.iter().any(|r| r.threshold == own),
        "{split}: a row at the model's own threshold {own}"
    );
    for row in &rows {
        check_row(row, &Metrics::compute(p, labels, row.threshold).unwrap());
    }
}

#[test]
fn model_card_test_metrics_are_reproduced_exactly() {
    let labels = common::npy_u8(TEST_LABELS);
    check_card_rows("test", &probabilities(TEST_EMBEDDINGS), &labels);
}

#[test]
fn model_card_metrics_on_the_previous_test_split_are_reproduced_exactly() {
    // The model was trained keeping an earlier split's rows in place (train.py --keep-split):
    // the test rows among them come first in the test files, and the card reports them apart so
    // the model can be compared with its predecessor on the same texts.
    let text = std::fs::read_to_string(repo_path("models/heldout/split.json")).unwrap();
    let split: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kept_rows = split["kept_rows"]
        .as_u64()
        .expect("split.json records kept_rows");
    let test: Vec<u64> = split["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(test.windows(2).all(|w| w[0] < w[1]), "test rows are sorted");
    let previous = test.iter().filter(|&&row| row < kept_rows).count();
    let labels = common::npy_u8(TEST_LABELS);
    let p = probabilities(TEST_EMBEDDINGS);
    assert_eq!(p.len(), test.len());
    check_card_rows("test-previous", &p[..previous], &labels[..previous]);
}

#[test]
fn training_script_metrics_agree_with_the_library() {
    // train.py scored the same float16 rows with the float64 reference; the counts must match
    // and the ratios agree to the card's four decimals.
    let text = std::fs::read_to_string(repo_path("models/heldout/metrics.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let labels = common::npy_u8(TEST_LABELS);
    let m = Metrics::compute(&probabilities(TEST_EMBEDDINGS), &labels, 0.5).unwrap();
    let t = &json["test"];
    for (name, value) in [
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("f1", m.f1),
        ("auc", m.auc),
    ] {
        let python = t[name].as_f64().unwrap();
        assert!((python - value).abs() < 5e-5, "{name}: {python} vs {value}");
    }
    let cm = &t["confusion_matrix"];
    assert_eq!(cm["true_positives"], m.confusion.true_positives);
    assert_eq!(cm["false_positives"], m.confusion.false_positives);
    assert_eq!(cm["true_negatives"], m.confusion.true_negatives);
    assert_eq!(cm["false_negatives"], m.confusion.false_negatives);
}

#[test]
fn default_threshold_is_the_validation_choice_recorded_in_the_model() {
    let model = Model::builtin().unwrap();
    let source = &model.metadata()["threshold_source"];
    let target = if source.contains("max F1") {
        Target::MaxF1
    } else {
        panic!("update this test for threshold_source {source:?}")
    };
    let labels = common::npy_u8(VALIDATION_LABELS);
    let chosen = choose_threshold(&probabilities(VALIDATION_EMBEDDINGS), &labels, target)
        .unwrap()
        .unwrap();
    // The choice lies halfway between two validation scores, so it moves with the last bits of
    // the kernel that scored them (kernels agree to 1e-5, not bit for bit): equal up to that.
    assert!(
        (chosen - model.threshold()).abs() <= 1e-6,
        "chosen {chosen}, recorded {}",
        model.threshold()
    );
}

#[test]
fn evaluate_command_prints_the_card_numbers() {
    let output = cli(&[
        "evaluate",
        "--backend",
        "cpu",
        "--threshold",
        "0.5",
        TEST_EMBEDDINGS,
        "--labels",
        TEST_LABELS,
    ]);
    assert!(output.status.success(), "{:?}", output);
    let text = String::from_utf8(output.stdout).unwrap();
    let row = card_rows("test")
        .into_iter()
        .find(|r| r.threshold == 0.5)
        .unwrap();
    for (name, value) in ["Accuracy:", "Precision:", "Recall:", "F1 Score:", "AUC:"]
        .iter()
        .zip(&row.ratios)
    {
        let line = text.lines().find(|l| l.starts_with(name)).unwrap();
        assert_eq!(line.split_whitespace().last().unwrap(), value, "{text}");
    }
}

#[test]
fn labels_as_text_equal_labels_as_npy() {
    let labels = common::npy_u8(TEST_LABELS);
    let path = std::env::temp_dir().join(format!("gemma-cyber-labels-{}.txt", std::process::id()));
    let text: String = labels.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let args = |labels: &str| {
        cli(&[
            "evaluate",
            "--backend",
            "cpu",
            "--format",
            "json",
            TEST_EMBEDDINGS,
            "--labels",
            labels,
        ])
        .stdout
    };
    let from_text = args(path.to_str().unwrap());
    let _ = std::fs::remove_file(&path);
    assert!(!from_text.is_empty());
    assert_eq!(from_text, args(TEST_LABELS));
}

#[test]
fn threshold_command_writes_a_model_with_only_the_threshold_changed() {
    let out = std::env::temp_dir().join(format!(
        "gemma-cyber-thr-{}.safetensors",
        std::process::id()
    ));
    // The cpu backend, as `probabilities` uses: the threshold lies halfway between two validation
    // scores, and another backend's last bits (within 1e-5) could move it.
    let output = cli(&[
        "threshold",
        "--backend",
        "cpu",
        VALIDATION_EMBEDDINGS,
        "--labels",
        VALIDATION_LABELS,
        "--target-recall",
        "0.9",
        "--write-model",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{:?}", output);
    let written = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let model = Model::from_bytes(&written).unwrap();
    let chosen = choose_threshold(
        &probabilities(VALIDATION_EMBEDDINGS),
        &common::npy_u8(VALIDATION_LABELS),
        Target::Recall(0.9),
    )
    .unwrap()
    .unwrap();
    assert_eq!(model.threshold(), chosen);
    let builtin = Model::builtin().unwrap();
    assert_eq!(model.layers(), builtin.layers());
    let data = |bytes: &[u8]| {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        bytes[8 + n..].to_vec()
    };
    assert_eq!(data(&written), data(Model::builtin_bytes()));
    for (key, value) in builtin.metadata() {
        if key != "threshold" && key != "threshold_source" {
            assert_eq!(model.metadata().get(key), Some(value), "{key}");
        }
    }
}

/// A write that fails part way (here the file size limit, standing in for a full disk, and
/// effective as root where permission bits are not) leaves the model already at the path intact.
#[cfg(unix)]
#[test]
fn a_failed_write_model_leaves_the_old_model_in_place() {
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("gemma-cyber-thr-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("model.safetensors");
    let old = b"the model that was here";
    std::fs::write(&out, old).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gemma-cyber"));
    command.current_dir(repo_path("")).args([
        "threshold",
        "--backend",
        "cpu",
        VALIDATION_EMBEDDINGS,
        "--labels",
        VALIDATION_LABELS,
        "--max-f1",
        "--write-model",
        out.to_str().unwrap(),
    ]);
    // SAFETY: only async-signal-safe calls between fork and exec. With SIGXFSZ ignored (kept
    // across exec), a write past the limit fails with EFBIG instead of killing the process.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    let kept = std::fs::read(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert_eq!(kept, old, "the old model was overwritten");
    assert_eq!(
        left,
        ["model.safetensors"],
        "a temporary file was left behind"
    );
}

#[test]
fn mismatched_labels_and_a_missing_target_fail_cleanly() {
    let short = std::env::temp_dir().join(format!("gemma-cyber-short-{}.txt", std::process::id()));
    std::fs::write(&short, "0\n1\n1\n").unwrap();
    let output = cli(&[
        "threshold",
        VALIDATION_EMBEDDINGS,
        "--labels",
        short.to_str().unwrap(),
        "--max-f1",
    ]);
    let _ = std::fs::remove_file(&short);
    assert_eq!(output.status.code(), Some(3), "{:?}", output);
    assert!(String::from_utf8_lossy(&output.stderr).contains("3 labels for"));
    let output = cli(&[
        "threshold",
        VALIDATION_EMBEDDINGS,
        "--labels",
        VALIDATION_LABELS,
    ]);
    assert_eq!(output.status.code(), Some(2), "a target is required");
}

#[test]
fn demo_texts_are_labelled_as_their_sources_say() {
    let text = std::fs::read_to_string(repo_path("examples/data/sample_texts.jsonl")).unwrap();
    let expected: Vec<u8> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["label"].as_u64().unwrap() as u8
        })
        .collect();
    let (x, dim) = common::npy_f32("examples/data/sample.npy");
    let classifier = Classifier::new(&Options {
        backend: BackendKind::Cpu,
        ..Options::default()
    })
    .unwrap();
    let mut p = vec![0.0; x.len() / dim];
    let mut labels = vec![0; p.len()];
    classifier
        .classify(&x, dim, &mut p, Some(&mut labels))
        .unwrap();
    assert_eq!(labels, expected, "probabilities {p:?}");
}

const OOD_EMBEDDINGS: &str = "models/ood/embeddings.npy";
const OOD_LABELS: &str = "models/ood/labels.npy";

#[test]
fn model_card_out_of_distribution_metrics_are_reproduced_exactly() {
    let labels = common::npy_u8(OOD_LABELS);
    check_card_rows("ood", &probabilities(OOD_EMBEDDINGS), &labels);
}

#[test]
fn model_card_false_positive_rates_on_adjacent_negatives_are_reproduced() {
    let texts = std::fs::read_to_string(repo_path("models/ood/texts.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = texts
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let labels = common::npy_u8(OOD_LABELS);
    let p = probabilities(OOD_EMBEDDINGS);
    assert_eq!(rows.len(), p.len());
    // The texts file and the labels file describe the same rows.
    for (row, &label) in rows.iter().zip(&labels) {
        assert_eq!(row["label"].as_u64(), Some(u64::from(label)), "{row}");
    }
    let adjacent: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i]["adjacent"].as_bool() == Some(true))
        .collect();
    assert!(adjacent.iter().all(|&i| labels[i] == 0));
    let card = std::fs::read_to_string(repo_path("models/MODEL_CARD.md")).unwrap();
    let card_rows: Vec<Vec<&str>> = card
        .lines()
        .filter(|line| line.starts_with("| ood-adjacent |"))
        .map(|line| line.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(card_rows.len(), 2, "0.5 and the model's own threshold");
    for cells in card_rows {
        let threshold: f32 = cells[1].parse().unwrap();
        let false_positives = adjacent.iter().filter(|&&i| p[i] >= threshold).count();
        assert_eq!(cells[2], adjacent.len().to_string(), "{cells:?}");
        assert_eq!(cells[3], false_positives.to_string(), "{cells:?}");
        let rate = false_positives as f64 / adjacent.len() as f64;
        assert_eq!(cells[4], format!("{rate:.4}"), "{cells:?}");
    }
}
