//! `evaluate` and `threshold`: score a model against labelled embeddings, and pick its operating
//! point on validation data.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};
use gemma_cyber::metrics::{choose_threshold, Metrics, Target};
use gemma_cyber::{Classifier, Model, ModelSource};

use super::{
    json_float, open_classifier, open_runner, parse_unit_interval, read_embeddings, Failure,
    ReportFormat, Runner, Setup,
};
use crate::convert::{read_input, write_atomically};
use crate::input;
use crate::output::refuse_unreplaceable_output;
use crate::terminal::{self, escape};

/// `gemma-cyber evaluate`.
#[derive(Args)]
pub struct EvaluateArgs {
    /// Embeddings: a 2-D .npy file (float32, float16 or float64) or JSON lines.
    input: PathBuf,
    /// True labels, one per row: a 1-D .npy (bool or integer) or text with one 0 or 1 a line.
    #[arg(long)]
    labels: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    #[command(flatten)]
    setup: Setup,
}

/// `gemma-cyber threshold`.
#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct ThresholdArgs {
    /// Validation embeddings: a 2-D .npy file (float32, float16 or float64) or JSON lines.
    input: PathBuf,
    /// True labels, one per row: a 1-D .npy (bool or integer) or text with one 0 or 1 a line.
    #[arg(long)]
    labels: PathBuf,
    /// The lowest threshold whose precision is at least P, from 0 to 1 (the most recall at that
    /// precision).
    #[arg(long, value_name = "P", group = "target", value_parser = parse_unit_interval)]
    target_precision: Option<f64>,
    /// The highest threshold whose recall is at least R, from 0 to 1 (the fewest false positives
    /// at that recall).
    #[arg(long, value_name = "R", group = "target", value_parser = parse_unit_interval)]
    target_recall: Option<f64>,
    /// The threshold with the highest F1.
    #[arg(long, group = "target")]
    max_f1: bool,
    /// Write a copy of the model, tensors byte-identical, with this threshold as its default.
    #[arg(long, value_name = "OUT.safetensors")]
    write_model: Option<PathBuf>,
    #[command(flatten)]
    runner: Runner,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
}

/// Prints accuracy, precision, recall, F1, AUC and the confusion matrix.
pub fn evaluate(args: &EvaluateArgs) -> Result<(), Failure> {
    let classifier = open_classifier(&args.setup)?;
    let (probabilities, labels) = score(&classifier, &args.input, &args.labels)?;
    let metrics = Metrics::compute(&probabilities, &labels, classifier.threshold())
        .map_err(|e| Failure::input(e.message()))?;
    let mut out = io::stdout().lock();
    match args.format {
        ReportFormat::Text => write_report(&mut out, &metrics)?,
        ReportFormat::Json => writeln!(out, "{}", terminal::json(&report_json(&metrics)))?,
    }
    Ok(())
}

/// Picks a threshold on validation data and optionally writes it into a copy of the model.
pub fn threshold(args: &ThresholdArgs) -> Result<(), Failure> {
    // Before the scoring, which a FIFO or device given as the output would only waste.
    if let Some(path) = &args.write_model {
        refuse_unreplaceable_output(path)?;
    }
    let classifier = open_runner(&args.runner, None)?;
    let (probabilities, labels) = score(&classifier, &args.input, &args.labels)?;
    let (target, how, target_json) = match (args.target_precision, args.target_recall) {
        (Some(p), _) => (
            Target::Precision(p),
            format!("target precision {p}"),
            serde_json::json!({"precision": p}),
        ),
        (_, Some(r)) => (
            Target::Recall(r),
            format!("target recall {r}"),
            serde_json::json!({"recall": r}),
        ),
        _ => (
            Target::MaxF1,
            "max F1".to_owned(),
            serde_json::json!("max_f1"),
        ),
    };
    let chosen = choose_threshold(&probabilities, &labels, target)
        .map_err(|e| Failure::input(e.message()))?
        .ok_or_else(|| Failure {
            message: format!("no threshold reaches the {how} on this data"),
            code: 4,
        })?;
    let metrics = Metrics::compute(&probabilities, &labels, chosen)
        .map_err(|e| Failure::input(e.message()))?;

    // The model is written before anything is printed: a run whose write fails must not leave a
    // complete-looking report on standard output.
    if let Some(path) = &args.write_model {
        let original = match &args.runner.model.model {
            // A regular file of at most the model file limit, read through that cap.
            Some(model) => read_input(model, Some(gemma_cyber::model::MAX_FILE_BYTES))?,
            None => Model::builtin_bytes().to_vec(),
        };
        let original = held_to_classified(original, &args.runner, &classifier)?;
        let provenance = format!(
            "gemma-cyber threshold, {how}, on {} rows of {}",
            labels.len(),
            file_name(&args.input)
        );
        let bytes = with_threshold(&original, chosen, &provenance)?;
        // Through a temporary file and a rename: a failed write (a full disk) must not leave a
        // truncated model where a good one was, which is what writing in place would do.
        write_atomically(path, &bytes)?;
    }
    let mut out = io::stdout().lock();
    if let ReportFormat::Text = args.format {
        writeln!(out, "chosen:      {chosen} ({how})")?;
        write_report(&mut out, &metrics)?;
        if let Some(path) = &args.write_model {
            let path = path.display().to_string();
            writeln!(out, "wrote:       {} (threshold {chosen})", escape(&path))?;
        }
    }
    if let ReportFormat::Json = args.format {
        let mut report = report_json(&metrics);
        let object = report.as_object_mut().expect("report_json makes an object");
        object.insert("chosen".into(), json_float(chosen));
        object.insert("target".into(), target_json);
        object.insert(
            "wrote".into(),
            args.write_model
                .as_ref()
                .map(|p| p.display().to_string())
                .into(),
        );
        writeln!(out, "{}", terminal::json(&report))?;
    }
    Ok(())
}

/// The model file read again for the copy, held to what the classifier read: the pin, when
/// given, and the folded weights the threshold was chosen with (the file may have been replaced
/// between the two reads). One load checks both.
fn held_to_classified(
    bytes: Vec<u8>,
    runner: &Runner,
    classifier: &Classifier,
) -> Result<Vec<u8>, Failure> {
    const CHANGED: &str = "the model changed between its two reads (classifying, copying)";
    let source = ModelSource::Bytes(bytes);
    let copy = Model::load(&source, runner.model.model_sha256.as_ref())
        .map_err(|e| Failure::from(e.context(CHANGED)))?;
    if copy.layers() != classifier.model().layers() {
        return Err(Failure::input(format!("{CHANGED}; run again")));
    }
    let ModelSource::Bytes(bytes) = source else {
        unreachable!("made as Bytes above")
    };
    Ok(bytes)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Probabilities for the embeddings in `input`, with the labels in `labels_path`.
fn score(
    classifier: &Classifier,
    input: &Path,
    labels_path: &Path,
) -> Result<(Vec<f32>, Vec<u8>), Failure> {
    let embeddings = read_embeddings(Some(input))?;
    let rows = embeddings.rows();
    let labels = read_labels(labels_path, rows)?;
    if labels.len() != rows {
        return Err(Failure::input(format!(
            "{} has {} labels for {rows} embeddings",
            labels_path.display(),
            labels.len()
        )));
    }
    let mut probabilities = vec![0.0f32; rows];
    classifier.classify(&embeddings.values, embeddings.dim, &mut probabilities, None)?;
    Ok((probabilities, labels))
}

/// Bytes a label file may hold beyond [`MAX_LABEL_BYTES_PER_ROW`] a row: room for a `.npy`
/// header (at most 64 KiB), or blank lines and spaces in text.
const LABEL_FILE_SLACK: u64 = 1 << 20;

/// Bytes a label may take: an int64 in a `.npy` takes 8, a text line "1\r\n" 3; 64 leaves room for
/// padding with spaces without letting an endless file be read whole.
const MAX_LABEL_BYTES_PER_ROW: u64 = 64;

/// Reads the labels for `rows` embeddings: a 1-D `.npy` of bool or integers, else text with one 0
/// or 1 per line. Only a regular file is read (a FIFO or `/dev/zero` would never end), and only up
/// to a size that fits `rows` labels, so a wrong path cannot fill the memory.
pub fn read_labels(path: &Path, rows: usize) -> Result<Vec<u8>, Failure> {
    let name = path.display();
    let limit = (rows as u64)
        .saturating_mul(MAX_LABEL_BYTES_PER_ROW)
        .saturating_add(LABEL_FILE_SLACK);
    let bytes = gemma_cyber::fs::read_regular_file(path, limit).map_err(|e| {
        Failure::input(format!("cannot read {name} as labels for {rows} rows: {e}"))
    })?;
    let values: Vec<i64> = if bytes.starts_with(b"\x93NUMPY") {
        read_npy_labels(&bytes).map_err(|m| Failure::input(format!("{name}: {m}")))?
    } else {
        let text = String::from_utf8(bytes)
            .map_err(|_| Failure::input(format!("{name}: labels text is not UTF-8")))?;
        // Blank lines only at the end: one inside would shift every later label by a row.
        let mut values = Vec::new();
        let mut first_blank = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                first_blank.get_or_insert(index + 1);
                continue;
            }
            let at = |number: usize| format!("{name}: line {number}");
            if let Some(blank) = first_blank {
                return Err(Failure::input(format!(
                    "{} is blank; blank lines may only end the file",
                    at(blank)
                )));
            }
            values.push(match line {
                "0" => 0,
                "1" => 1,
                _ => {
                    return Err(Failure::input(format!(
                        "{}: {line:?} is not 0 or 1",
                        at(index + 1)
                    )))
                }
            });
        }
        values
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            0 | 1 => Ok(v as u8),
            _ => Err(Failure::input(format!(
                "{name}: label {i} is {v}; labels must be 0 or 1"
            ))),
        })
        .collect()
}

fn read_npy_labels(bytes: &[u8]) -> Result<Vec<i64>, String> {
    // The header's length and nesting are checked before npyz parses it.
    let (header, _) = input::read_npy_header(bytes)?;
    let npy = npyz::NpyFile::new(bytes).map_err(input::not_valid_npy)?;
    let &[count] = npy.shape() else {
        return Err(format!(
            "expected a 1-D array of labels, found shape {:?}",
            npy.shape()
        ));
    };
    let dtype = npy.dtype();
    let unsupported = |descr: &dyn std::fmt::Display| {
        format!("dtype {descr} is not supported for labels; expected bool or integers")
    };
    let npyz::DType::Plain(type_str) = &dtype else {
        return Err(unsupported(&dtype.descr()));
    };
    use npyz::TypeChar::{Bool, Int, Uint};
    // The reader is chosen before the size check: the item size of a string or object dtype is
    // not its size field.
    let read: ReadLabels = match (type_str.type_char(), type_str.size_field()) {
        (Bool, 1) => widened::<bool>,
        (Int, 1) => widened::<i8>,
        (Int, 2) => widened::<i16>,
        (Int, 4) => widened::<i32>,
        (Int, 8) => widened::<i64>,
        (Uint, 1) => widened::<u8>,
        (Uint, 2) => widened::<u16>,
        (Uint, 4) => widened::<u32>,
        (Uint, 8) => unsigned_64,
        _ => return Err(unsupported(type_str)),
    };
    // As for embeddings: data the header does not account for, too little or too much, means the
    // file is not what it says (npyz reads the values it promises and ignores the rest).
    let expected = count
        .checked_mul(type_str.size_field())
        .ok_or_else(|| format!("the header's shape ({count},) is too large"))?;
    let actual = (bytes.len() - header.len()) as u64;
    if expected != actual {
        return Err(format!(
            "the header promises {count} labels ({expected} bytes of data) but the file holds {actual}"
        ));
    }
    read(npy)
}

/// Reads a `.npy`'s labels as i64, for one dtype.
type ReadLabels = fn(npyz::NpyFile<&[u8]>) -> Result<Vec<i64>, String>;

fn cannot_read(e: io::Error) -> String {
    format!("cannot read the labels: {e}")
}

/// The labels as `T`, widened to i64 (each of these fits).
fn widened<T: npyz::Deserialize + Into<i64>>(
    npy: npyz::NpyFile<&[u8]>,
) -> Result<Vec<i64>, String> {
    Ok(npy
        .into_vec::<T>()
        .map_err(cannot_read)?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// uint64 labels, which need not fit i64: one above 1 is refused here, showing its value.
fn unsigned_64(npy: npyz::NpyFile<&[u8]>) -> Result<Vec<i64>, String> {
    let values = npy.into_vec::<u64>().map_err(cannot_read)?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v > 1) {
        return Err(format!("label {i} is {v}; labels must be 0 or 1"));
    }
    Ok(values.into_iter().map(|v| v as i64).collect())
}

/// The model card's layout: the seed card's five numbers, then the confusion matrix.
fn write_report(out: &mut impl Write, m: &Metrics) -> io::Result<()> {
    let c = &m.confusion;
    let positives = c.true_positives + c.false_negatives;
    let negatives = c.true_negatives + c.false_positives;
    writeln!(
        out,
        "rows:        {} ({positives} cyber, {negatives} not cyber)",
        c.total()
    )?;
    writeln!(out, "threshold:   {}", m.threshold)?;
    writeln!(out, "Accuracy:    {:.4}", m.accuracy)?;
    writeln!(out, "Precision:   {:.4}", m.precision)?;
    writeln!(out, "Recall:      {:.4}", m.recall)?;
    writeln!(out, "F1 Score:    {:.4}", m.f1)?;
    writeln!(out, "AUC:         {:.4}", m.auc)?;
    writeln!(out, "Confusion matrix (rows: actual, columns: predicted):")?;
    writeln!(out, "             {:>10} {:>10}", "not cyber", "cyber")?;
    writeln!(
        out,
        "  not cyber  {:>10} {:>10}",
        c.true_negatives, c.false_positives
    )?;
    writeln!(
        out,
        "  cyber      {:>10} {:>10}",
        c.false_negatives, c.true_positives
    )?;
    Ok(())
}

fn report_json(m: &Metrics) -> serde_json::Value {
    let c = &m.confusion;
    serde_json::json!({
        "rows": c.total(),
        // Through the f32's shortest decimal, so the JSON shows 0.8282044 rather than the f64
        // widening 0.8282043933868408; both parse back to the same f32.
        "threshold": json_float(m.threshold),
        "accuracy": m.accuracy,
        "precision": m.precision,
        "recall": m.recall,
        "f1": m.f1,
        "auc": m.auc,
        "confusion_matrix": {
            "true_negatives": c.true_negatives,
            "false_positives": c.false_positives,
            "false_negatives": c.false_negatives,
            "true_positives": c.true_positives,
        },
    })
}

/// A copy of the safetensors file `original` whose `threshold` metadata is `threshold`; the tensor
/// bytes are copied unchanged (their offsets are relative to the end of the header).
fn with_threshold(original: &[u8], threshold: f32, provenance: &str) -> Result<Vec<u8>, Failure> {
    let invalid = |message: String| Failure { message, code: 15 };
    // Validates the whole file first, so a bad model is refused rather than copied.
    Model::from_bytes(original)?;
    let header_len = u64::from_le_bytes(original[..8].try_into().expect("validated above"));
    let header_end = 8 + usize::try_from(header_len).expect("validated above");
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&original[8..header_end])
            .map_err(|e| invalid(format!("model header: {e}")))?;
    let metadata = header
        .entry("__metadata__")
        .or_insert_with(|| serde_json::Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| invalid("model __metadata__ is not an object".into()))?;
    metadata.insert("threshold".into(), threshold.to_string().into());
    metadata.insert("threshold_source".into(), provenance.into());
    let mut json = serde_json::to_vec(&header).expect("a JSON map serialises");
    // safetensors pads the header with spaces so the tensor data starts 8-byte aligned.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut bytes = Vec::with_capacity(8 + json.len() + original.len() - header_end);
    bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&original[header_end..]);
    let written = Model::from_bytes(&bytes)
        .map_err(|e| invalid(format!("the rewritten model does not load: {e}")))?;
    debug_assert_eq!(written.threshold(), threshold);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 `.npy` file of `count` uint8 labels followed by `data`.
    fn labels_npy(count: usize, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({count},), }}");
        input::npy_file(&header, data)
    }

    #[test]
    fn labels_must_fill_exactly_the_data_their_header_promises() {
        assert_eq!(
            read_npy_labels(&labels_npy(4, &[0, 1, 1, 0])),
            Ok(vec![0, 1, 1, 0])
        );
        for data in [&[0u8, 1, 1][..], &[0, 1, 1, 0, 1]] {
            let error = read_npy_labels(&labels_npy(4, data)).unwrap_err();
            assert!(
                error.contains("promises 4 labels (4 bytes of data)"),
                "{error}"
            );
        }
    }

    #[test]
    fn labels_of_an_unsupported_dtype_or_above_one_say_so() {
        // Strings and objects: the dtype is named, not taken for a file of the wrong size.
        for (descr, data) in [("<U1", &[b'1', 0, 0, 0][..]), ("|O", &[])] {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}");
            let error = read_npy_labels(&input::npy_file(&header, data)).unwrap_err();
            assert!(
                error.contains(&format!("dtype {descr} is not supported")),
                "{error}"
            );
        }
        let header = "{'descr': '<u8', 'fortran_order': False, 'shape': (2,), }";
        let data: Vec<u8> = [1u64, u64::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            read_npy_labels(&input::npy_file(header, &data)),
            Err(format!("label 1 is {}; labels must be 0 or 1", u64::MAX))
        );
    }

    #[test]
    fn text_labels_are_exactly_0_or_1_a_line_with_blank_lines_only_at_the_end() {
        let dir = std::env::temp_dir().join(format!("gemma-cyber-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("labels.txt");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            read_labels(&path, 3).map_err(|failure| failure.message)
        };
        assert_eq!(read("1\n0\r\n 1 \n\n\n"), Ok(vec![1, 0, 1]));
        for (text, says) in [
            (
                "1\n\n0\n1\n",
                "line 2 is blank; blank lines may only end the file",
            ),
            ("+1\n0\n1\n", "line 1: \"+1\" is not 0 or 1"),
            ("1\n00\n1\n", "line 2: \"00\" is not 0 or 1"),
        ] {
            let error = read(text).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rewritten_model_keeps_tensors_and_takes_the_threshold() {
        let original = Model::builtin_bytes();
        let bytes =
            with_threshold(original, 0.625, "test").unwrap_or_else(|f| panic!("{}", f.message));
        let model = Model::from_bytes(&bytes).unwrap();
        assert_eq!(model.threshold(), 0.625);
        assert_eq!(model.metadata()["threshold_source"], "test");
        let old_len = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        let new_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(&original[old_len..], &bytes[new_len..]);
        assert_eq!(new_len % 8, 0);
    }
}
