//! `gemma-cyber classify` on Parquet: one file, or a directory or glob of shards into an output
//! directory, one output per shard.
//!
//! Shards stream by record batches (a few thousand rows), so memory stays flat whatever a shard's
//! size. Each output is written to a hidden temporary file in the output directory and renamed into
//! place once complete, and a shard whose output already exists is skipped: a killed run, started
//! again, does only the work that is left and never leaves a partial file under an output name.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use clap::Args;
use gemma_cyber::{Classifier, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{parquet_to_arrow_schema, ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ConvertedType, Type as PhysicalType};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::{SchemaDescriptor, Type as ParquetType, TypePtr};

use crate::output::{directory_of, not_a_file, remove_leftovers, PartialOutput};
use crate::shard_reader::{Embeddings, FloatColumn, Projection, ShardReader};
use crate::Failure;

/// Rows decoded and classified at a time: 2,048 rows of 768 float32 are 6 MiB (fits a 32 MiB L3
/// with room to spare; larger batches measured no faster and doubled the peak memory).
const BATCH_ROWS: usize = 2048;
/// Rows per output row group; the writer holds one row group of kept columns in memory.
const OUTPUT_ROW_GROUP_ROWS: usize = 64 * 1024;

/// `classify`'s options for Parquet input.
#[derive(Args)]
pub(crate) struct ShardArgs {
    /// Parquet output: a file for one input file; a directory (one output per shard, shards
    /// whose output exists are skipped) for a directory or quoted glob of shards.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Parquet: the embedding column, FixedSizeList<float32 or float16>[768] or List<float32>.
    #[arg(long, default_value = "embedding")]
    column: String,
    /// Parquet: input columns to carry into the output before probability and label, e.g. id,url.
    #[arg(long, value_delimiter = ',')]
    keep: Vec<String>,
}

impl ShardArgs {
    /// True when any Parquet-only option is on the command line.
    pub(crate) fn given(&self) -> bool {
        self.output.is_some() || self.column != "embedding" || !self.keep.is_empty()
    }
}

/// What to read and carry through.
struct Columns<'a> {
    embedding: &'a str,
    keep: &'a [String],
}

impl Columns<'_> {
    /// The top-level columns read from a shard: the embedding's, then the kept ones.
    fn read(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.embedding).chain(self.keep.iter().map(String::as_str))
    }
}

/// True when `input` is Parquet: a directory (of shards), a glob, or a regular file starting with
/// `PAR1`.
///
/// Only a regular file is opened to look: the bytes read from a pipe (a FIFO, `<(...)`) are gone
/// for the reader that comes next, and a FIFO opened a second time waits for a writer that has
/// already left. Parquet needs random access anyway, which a pipe does not give.
pub(crate) fn is_parquet_input(input: &Path) -> bool {
    if input.is_dir() || is_glob(input) {
        return true;
    }
    if !fs::metadata(input).is_ok_and(|metadata| metadata.is_file()) {
        return false;
    }
    let mut magic = [0u8; 4];
    File::open(input)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1"
}

/// Whether `path` is a glob of shards: `*` or `?` in its file name, and no file of that very
/// name (which is read as the file it is, whatever its name holds).
fn is_glob(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(['*', '?']))
        && fs::symlink_metadata(path).is_err()
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 2,
    }
}

fn output_failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

/// The failure for Parquet-only options given with an input that is not Parquet.
pub(crate) fn not_parquet(input: Option<&Path>) -> Failure {
    let Some(path) = input else {
        return usage("--output, --column and --keep apply to Parquet input");
    };
    // Looked at, not opened: opening a FIFO waits for a writer.
    match fs::metadata(path) {
        Err(e) => Failure::input(format!("cannot read {}: {e}", path.display())),
        Ok(metadata) if !metadata.is_file() => usage(format!(
            "--output, --column and --keep apply to Parquet input, and {} is not a regular file (Parquet is read from a file, a directory or a glob, never from a pipe)",
            path.display()
        )),
        Ok(_) => match File::open(path) {
            Err(e) => Failure::input(format!("cannot read {}: {e}", path.display())),
            // Named as Parquet, so meant as Parquet: a malformed input, not a misused option.
            Ok(_) if has_parquet_extension(path) => Failure::input(format!(
                "{} is not a Parquet file: it does not start with PAR1",
                path.display()
            )),
            Ok(_) => usage("--output, --column and --keep apply to Parquet input"),
        },
    }
}

fn has_parquet_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("parquet"))
}

/// Exit 1 when `-o` names something that is neither what the output is written as (a file for
/// one input file, a directory for shards) nor a directory: a FIFO, a socket, a device, or a link
/// to one, which the rename that puts an output in place would replace. Checked before the
/// classifier is started; a directory, whatever the input, is [`classify`]'s to judge.
pub(crate) fn refuse_unreplaceable_output(input: &Path, args: &ShardArgs) -> Result<(), Failure> {
    let Some(output) = args.output.as_deref() else {
        return Ok(());
    };
    match not_a_file(output) {
        Some("a directory") | None => Ok(()),
        Some(what) => {
            let wanted = if input.is_dir() || is_glob(input) {
                "a directory"
            } else {
                "a regular file"
            };
            Err(output_failure(format!(
                "cannot write {}: it is {what}, not {wanted}",
                output.display()
            )))
        }
    }
}

/// Where one input file's output goes: `output` itself, or the input's name under `output` when
/// that is a directory; refused when it would replace the input or is no file to write.
fn single_target(input: &Path, output: &Path) -> Result<PathBuf, Failure> {
    // `-o scored/` names a directory even before it exists: made, as for shards.
    let names_a_directory = output.as_os_str().to_string_lossy().ends_with('/');
    if names_a_directory && !output.is_dir() {
        fs::create_dir_all(output)
            .map_err(|e| output_failure(format!("cannot create {}: {e}", output.display())))?;
    }
    let target = if output.is_dir() {
        let name = input
            .file_name()
            .ok_or_else(|| usage(format!("{} names no file", input.display())))?;
        output.join(name)
    } else {
        output.to_owned()
    };
    // `-o .` beside the input names the input itself once joined: checked on the path that
    // is written, or the output would replace the input.
    if crate::convert::same_file(input, &target) {
        return Err(usage(format!(
            "the output {} must not be the input file",
            target.display()
        )));
    }
    // The temporary output is made beside the target under a name from the target's; a
    // path that ends in `..` under a directory that does not exist (so it is not a directory
    // either) names no file to write.
    if target.file_name().is_none() {
        return Err(usage(format!(
            "-o {}: names no output file; give OUT.parquet or an existing directory",
            output.display()
        )));
    }
    // Refused before any shard is read (`-o DIR` joined with the input's name may name one
    // too); the rename would put the output file in its place.
    crate::output::refuse_unreplaceable_output(&target)?;
    Ok(target)
}

/// Classifies Parquet `input` into Parquet `output` (see the module's description).
pub(crate) fn classify(
    input: &Path,
    args: &ShardArgs,
    classifier: &Classifier,
) -> Result<(), Failure> {
    let columns = &Columns {
        embedding: &args.column,
        keep: &args.keep,
    };
    keep_freed_memory();
    let Some(output) = args.output.as_deref() else {
        return Err(usage(
            "Parquet input needs an output: -o OUT.parquet for a file, -o DIR for a directory or glob of shards",
        ));
    };
    for (i, name) in columns.keep.iter().enumerate() {
        if name == "probability" || name == "label" || name == columns.embedding {
            return Err(usage(format!(
                "--keep {name}: the output's own columns are probability and label, and the embedding is not carried through"
            )));
        }
        // Two columns of one name make a file that Arrow readers refuse to look columns up in.
        if columns.keep[..i].contains(name) {
            return Err(usage(format!("--keep {name}: named more than once")));
        }
    }
    let many = input.is_dir() || is_glob(input);
    let jobs: Vec<(PathBuf, PathBuf)> = if many {
        if output.is_file() {
            return Err(usage(format!(
                "{} is a file; a directory or glob of shards needs an output directory",
                output.display()
            )));
        }
        // A bare glob (`part-*.parquet`) has an empty parent: the working directory.
        let input_dir = if input.is_dir() {
            input
        } else {
            directory_of(input)
        };
        if crate::convert::same_file(input_dir, output) {
            return Err(usage(
                "the output directory must not be the input directory",
            ));
        }
        let shards = list_shards(input)?;
        fs::create_dir_all(output)
            .map_err(|e| output_failure(format!("cannot create {}: {e}", output.display())))?;
        // Once for the whole directory, not once a shard: killed runs' temporaries.
        remove_leftovers(output, None);
        let mut jobs = Vec::with_capacity(shards.len());
        for shard in shards {
            let target = output.join(shard.file_name().expect("a listed file"));
            // Outputs only ever appear complete, by rename, and only as regular files: a FIFO,
            // device or directory under an output's name was put there by something else, and
            // is neither taken for a finished output nor replaced.
            crate::output::refuse_unreplaceable_output(&target)?;
            // Resume: a shard whose output exists was finished by an earlier run.
            if !target.exists() {
                jobs.push((shard, target));
            }
        }
        jobs
    } else {
        let target = single_target(input, output)?;
        remove_leftovers(directory_of(&target), Some(&target));
        vec![(input.to_owned(), target)]
    };

    // Every shard is checked readable, and its rows counted for the progress bar, before any
    // output is written; each is opened again when its turn comes, so that a run over thousands
    // of shards holds one open at a time, not one file descriptor per shard.
    let mut total_rows = 0u64;
    for (shard, _) in &jobs {
        total_rows += open_shard(shard, columns)?.1;
    }
    let progress = progress_bar(total_rows);
    for (shard, target) in jobs {
        let (builder, _) = open_shard(&shard, columns)?;
        classify_shard(&shard, builder, &target, columns, classifier, &progress)?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Keeps memory freed by one batch for the next instead of handing it back to the kernel.
///
/// Every batch frees and allocates the same large buffers again (Parquet pages, columns, output
/// arrays). glibc returns blocks over 128 KiB to the kernel when they are freed, and trims the top
/// of its heap, so each batch paid for fresh zeroed pages and their page faults: 5 % of the CPU
/// time of `classify` on shards (system time 0.35 s → 0.14 s on 200,000 rows). With the thresholds
/// raised, resident memory stays at its peak, which in a loop over equal batches is where it
/// stays anyway (62 → 68 MB).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets two of the allocator's thresholds; it takes the allocator's own
    // locks, and no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// The shards of a directory (its `*.parquet` files, not hidden ones nor Spark's `_` files) or of
/// a glob on file names (`dir/part-*.parquet`), sorted by name.
fn list_shards(input: &Path) -> Result<Vec<PathBuf>, Failure> {
    let (dir, pattern) = if input.is_dir() {
        (input.to_owned(), "*.parquet".to_owned())
    } else {
        let dir = input.parent().filter(|p| !p.as_os_str().is_empty());
        let pattern = input.file_name().and_then(|n| n.to_str()).unwrap_or("*");
        (dir.unwrap_or(Path::new(".")).to_owned(), pattern.to_owned())
    };
    let entries = fs::read_dir(&dir)
        .map_err(|e| Failure::input(format!("cannot read directory {}: {e}", dir.display())))?;
    let mut shards = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| Failure::input(format!("cannot read directory {}: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(['.', '_']) || !wildcard_match(&pattern, name) {
            continue;
        }
        if entry.path().is_file() {
            shards.push(entry.path());
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(Failure::input(format!(
            "no Parquet shards match {} (looked for {pattern} in {})",
            input.display(),
            dir.display()
        )));
    }
    Ok(shards)
}

/// `*` matches any run of characters, `?` any one character.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn open_shard(
    shard: &Path,
    columns: &Columns,
) -> Result<(ParquetRecordBatchReaderBuilder<File>, u64), Failure> {
    let file = File::open(shard)
        .map_err(|e| Failure::input(format!("cannot read {}: {e}", shard.display())))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
        Failure::input(format!(
            "{}: not a readable Parquet file: {e}",
            shard.display()
        ))
    })?;
    // The codec of every column chunk read (the embedding's and the kept columns'), before any
    // shard is read: a codec this build lacks would otherwise surface mid-run as "Disabled
    // feature at compile time", naming a Rust crate. Columns not read may be in any codec.
    let read = |column: &&parquet::file::metadata::ColumnChunkMetaData| {
        let root = column.column_path().parts()[0].as_str();
        columns.read().any(|name| name == root)
    };
    for row_group in builder.metadata().row_groups() {
        for column in row_group.columns().iter().filter(read) {
            let codec = match column.compression() {
                Compression::UNCOMPRESSED
                | Compression::SNAPPY
                | Compression::GZIP(_)
                | Compression::LZ4
                | Compression::LZ4_RAW
                | Compression::ZSTD(_) => continue,
                Compression::BROTLI(_) => "Brotli".to_owned(),
                other => format!("{other:?}"),
            };
            return Err(Failure::input(format!(
                "{}: column {} is compressed with {codec}, which gemma-cyber does not read \
                 (it reads uncompressed, Snappy, gzip, LZ4 and Zstandard Parquet)",
                shard.display(),
                column.column_path()
            )));
        }
    }
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    Ok((builder, rows))
}

/// The embedding column's layout, checked against the model before anything is written.
#[derive(Clone, Copy)]
enum Layout {
    /// `FixedSizeList<float32>` or `List<float32>`: both are Parquet lists of floats.
    Float32,
    /// `FixedSizeList<float16>`.
    FixedFloat16,
}

fn embedding_layout(
    shard: &Path,
    schema: &Schema,
    column: &str,
    dim: usize,
) -> Result<Layout, Failure> {
    let field = schema.field_with_name(column).map_err(|_| {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        Failure::input(format!(
            "{}: no column {column:?} (columns: {}); name it with --column",
            shard.display(),
            names.join(", ")
        ))
    })?;
    let unsupported = || {
        Failure::input(format!(
            "{}: column {column:?} is {}; expected FixedSizeList<float32 or float16>[{dim}] or List<float32>",
            shard.display(),
            field.data_type()
        ))
    };
    match field.data_type() {
        DataType::FixedSizeList(item, size) => {
            let layout = match item.data_type() {
                DataType::Float32 => Layout::Float32,
                DataType::Float16 => Layout::FixedFloat16,
                _ => return Err(unsupported()),
            };
            if usize::try_from(*size).ok() != Some(dim) {
                return Err(Failure {
                    message: format!(
                        "{}: column {column:?} has {size} values per row but the model expects {dim}",
                        shard.display()
                    ),
                    code: 10 + Status::DimensionMismatch as u8,
                });
            }
            Ok(layout)
        }
        DataType::List(item) if item.data_type() == &DataType::Float32 => Ok(Layout::Float32),
        _ => Err(unsupported()),
    }
}

/// The Arrow schema to read `builder`'s file with: its own, but INT96 timestamps (Spark's and
/// Hive's) as microseconds, where Arrow's default, nanoseconds, wraps every date outside
/// 1677-2262 (`0001-01-01` and `9999-12-31` are common sentinels) without an error. Spark itself
/// reads them as microseconds. `None` when the file has no INT96 column.
fn int96_as_micros(
    builder: &ParquetRecordBatchReaderBuilder<File>,
) -> Result<Option<SchemaRef>, String> {
    let parquet = builder.parquet_schema();
    let has_int96 = parquet
        .columns()
        .iter()
        .any(|column| column.physical_type() == PhysicalType::INT96);
    if !has_int96 {
        return Ok(None);
    }
    // Any failure here is refused: read as nanoseconds, the dates would wrap without a word.
    let failed = |e: &dyn std::fmt::Display| format!("cannot read its INT96 timestamps: {e}");
    // The same conversion run on the file's schema and on a copy with INT96 leaves made INT64
    // microsecond timestamps: the leaves where the two differ are the INT96 ones, found in the
    // file's own Arrow schema (which may carry more, e.g. from an embedded Arrow schema) by walking
    // the three together.
    let as_nanos = parquet_to_arrow_schema(parquet, None).map_err(|e| failed(&e))?;
    let micros_tree = int96_leaves_as_micros(&parquet.root_schema_ptr()).map_err(|e| failed(&e))?;
    let as_micros = parquet_to_arrow_schema(&SchemaDescriptor::new(micros_tree), None)
        .map_err(|e| failed(&e))?;
    let own = builder.schema();
    if own.fields().len() != as_nanos.fields().len() {
        return Err(failed(
            &"its Arrow schema does not match its Parquet schema",
        ));
    }
    let fields: Vec<Field> = own
        .fields()
        .iter()
        .zip(as_nanos.fields().iter().zip(as_micros.fields()))
        .map(|(field, (nanos, micros))| {
            field.as_ref().clone().with_data_type(micros_where_int96(
                field.data_type(),
                nanos.data_type(),
                micros.data_type(),
            ))
        })
        .collect();
    Ok(Some(Arc::new(Schema::new_with_metadata(
        fields,
        own.metadata().clone(),
    ))))
}

/// `tree` with every INT96 leaf replaced by an INT64 microsecond timestamp.
fn int96_leaves_as_micros(tree: &TypePtr) -> parquet::errors::Result<TypePtr> {
    let info = tree.get_basic_info();
    if tree.is_primitive() {
        if tree.get_physical_type() != PhysicalType::INT96 {
            return Ok(tree.clone());
        }
        let leaf = ParquetType::primitive_type_builder(info.name(), PhysicalType::INT64)
            .with_converted_type(ConvertedType::TIMESTAMP_MICROS)
            .with_repetition(info.repetition())
            .build()?;
        return Ok(Arc::new(leaf));
    }
    let children = tree
        .get_fields()
        .iter()
        .map(int96_leaves_as_micros)
        .collect::<parquet::errors::Result<Vec<_>>>()?;
    let mut group = ParquetType::group_type_builder(info.name())
        .with_fields(children)
        .with_converted_type(info.converted_type())
        .with_logical_type(info.logical_type_ref().cloned());
    if info.has_repetition() {
        group = group.with_repetition(info.repetition());
    }
    if info.has_id() {
        group = group.with_id(Some(info.id()));
    }
    Ok(Arc::new(group.build()?))
}

/// `own` with each timestamp that is nanoseconds in `nanos` and microseconds in `micros` (an INT96
/// leaf) made microseconds, its time zone kept.
fn micros_where_int96(own: &DataType, nanos: &DataType, micros: &DataType) -> DataType {
    use arrow_schema::TimeUnit;
    let child = |own: &Arc<Field>, nanos: &Arc<Field>, micros: &Arc<Field>| {
        Arc::new(own.as_ref().clone().with_data_type(micros_where_int96(
            own.data_type(),
            nanos.data_type(),
            micros.data_type(),
        )))
    };
    match (own, nanos, micros) {
        (
            DataType::Timestamp(TimeUnit::Nanosecond, zone),
            DataType::Timestamp(TimeUnit::Nanosecond, _),
            DataType::Timestamp(TimeUnit::Microsecond, _),
        ) => DataType::Timestamp(TimeUnit::Microsecond, zone.clone()),
        (DataType::Struct(own), DataType::Struct(nanos), DataType::Struct(micros))
            if own.len() == nanos.len() && own.len() == micros.len() =>
        {
            DataType::Struct(
                own.iter()
                    .zip(nanos.iter().zip(micros.iter()))
                    .map(|(o, (n, m))| child(o, n, m))
                    .collect(),
            )
        }
        (DataType::List(o), DataType::List(n), DataType::List(m)) => DataType::List(child(o, n, m)),
        (DataType::LargeList(o), DataType::List(n), DataType::List(m)) => {
            DataType::LargeList(child(o, n, m))
        }
        (DataType::FixedSizeList(o, size), DataType::List(n), DataType::List(m)) => {
            DataType::FixedSizeList(child(o, n, m), *size)
        }
        (DataType::Map(o, sorted), DataType::Map(n, _), DataType::Map(m, _)) => {
            DataType::Map(child(o, n, m), *sorted)
        }
        _ => own.clone(),
    }
}

fn classify_shard(
    shard: &Path,
    builder: ParquetRecordBatchReaderBuilder<File>,
    target: &Path,
    columns: &Columns,
    classifier: &Classifier,
    progress: &ProgressBar,
) -> Result<(), Failure> {
    let dim = classifier.input_dim();
    let int96_hint = int96_as_micros(&builder)
        .map_err(|e| Failure::input(format!("{}: {e}", shard.display())))?;
    let schema = int96_hint
        .clone()
        .unwrap_or_else(|| builder.schema().clone());
    // A name two columns share would be read as the first of them, silently: which one was meant
    // cannot be known.
    for name in columns.read() {
        let count = schema.fields().iter().filter(|f| f.name() == name).count();
        if count > 1 {
            return Err(Failure::input(format!(
                "{}: {count} columns are named {name:?}; which one is meant cannot be told",
                shard.display()
            )));
        }
    }
    let layout = embedding_layout(shard, &schema, columns.embedding, dim)?;
    let embedding_root = schema.index_of(columns.embedding).expect("checked above");
    let mut kept = Vec::with_capacity(columns.keep.len());
    let mut roots = Vec::with_capacity(columns.keep.len() + 1);
    for name in columns.keep {
        let index = schema.index_of(name).map_err(|_| {
            Failure::input(format!("{}: no column {name:?} to keep", shard.display()))
        })?;
        roots.push(index);
        kept.push(Arc::new(schema.field(index).clone()));
    }
    let embeddings = match layout {
        Layout::Float32 => {
            Embeddings::Float32(float_column(shard, &builder, columns.embedding, dim)?)
        }
        Layout::FixedFloat16 => {
            roots.push(embedding_root);
            Embeddings::Float16 {
                column: columns.embedding.to_owned(),
            }
        }
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let options = match int96_hint {
        Some(hint) => ArrowReaderOptions::new().with_schema(hint),
        None => ArrowReaderOptions::new(),
    };
    let metadata = ArrowReaderMetadata::try_new(builder.metadata().clone(), options)
        .map_err(|e| Failure::input(format!("{}: {e}", shard.display())))?;
    let file = File::open(shard)
        .map_err(|e| Failure::input(format!("cannot read {}: {e}", shard.display())))?;
    let projection = Projection {
        file,
        metadata,
        mask,
        batch_rows: BATCH_ROWS,
    };
    let reader = ShardReader::new(shard, dim, projection, embeddings);

    let mut fields: Vec<Arc<Field>> = kept;
    fields.push(Arc::new(Field::new(
        "probability",
        DataType::Float32,
        false,
    )));
    fields.push(Arc::new(Field::new("label", DataType::Boolean, false)));
    let out_schema: SchemaRef = Arc::new(Schema::new(fields));

    let partial = PartialOutput::create(target)
        .map_err(|e| output_failure(format!("cannot write {}: {e}", target.display())))?;
    let cannot_write = |e: &dyn std::fmt::Display| {
        output_failure(format!("cannot write {}: {e}", partial.path().display()))
    };
    // Coerced to Parquet's own types, as pyarrow writes them: a Date64 kept as it is would be a
    // bare INT64 that pyarrow, Spark and DuckDB read as integers, not dates.
    let properties = WriterProperties::builder()
        .set_coerce_types(true)
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(OUTPUT_ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(partial.file(), out_schema.clone(), Some(properties))
        .map_err(|e| cannot_write(&e))?;
    let job = ShardJob {
        shard,
        columns,
        classifier,
        out_schema: &out_schema,
        progress,
    };
    write_rows(&job, reader, &mut writer)?;
    writer.close().map_err(|e| cannot_write(&e))?;
    partial.sync().map_err(|e| cannot_write(&e))?;
    let temporary = partial.path().to_owned();
    partial.rename_to(target).map_err(|e| {
        output_failure(format!(
            "cannot rename {} to {}: {e}",
            temporary.display(),
            target.display()
        ))
    })
}

/// What scoring one shard needs besides its batches and the writer.
struct ShardJob<'a> {
    shard: &'a Path,
    columns: &'a Columns<'a>,
    classifier: &'a Classifier,
    out_schema: &'a SchemaRef,
    progress: &'a ProgressBar,
}

fn write_rows(
    job: &ShardJob<'_>,
    mut reader: ShardReader<'_>,
    writer: &mut ArrowWriter<&File>,
) -> Result<(), Failure> {
    // Decoding runs one batch ahead on its own thread, so reading and converting Parquet overlaps
    // classification instead of adding to it. The channel holds one batch and embedding buffers
    // come back for reuse, so memory stays flat: at most three batches exist at once.
    let shard = job.shard;
    std::thread::scope(|scope| {
        let (sender, decoded) = std::sync::mpsc::sync_channel(1);
        let (recycle, spare) = std::sync::mpsc::channel::<Vec<f32>>();
        let decoder = move || {
            loop {
                let mut values = spare.try_recv().unwrap_or_default();
                let Some(next) = decode_without_panic(shard, || reader.next_batch(&mut values))
                else {
                    break;
                };
                let failed = next.is_err();
                // A send fails when the consumer failed and stopped listening.
                if sender.send(next.map(|batch| (batch, values))).is_err() || failed {
                    break;
                }
            }
        };
        std::thread::Builder::new()
            .name(DECODER_THREAD.into())
            .spawn_scoped(scope, decoder)
            .map_err(|e| {
                Failure::input(format!("cannot start decoding {}: {e}", shard.display()))
            })?;
        classify_batches(job, decoded.into_iter(), &recycle, writer)
    })
}

/// The name of the thread that decodes shards, whose panics [`decode_without_panic`] reports.
const DECODER_THREAD: &str = "parquet decoder";

/// `decode()`, with a panic in it turned into the failure of a bad input.
///
/// The parquet crate panics, rather than failing, on some corrupt pages (an out-of-range
/// dictionary index in a float16 column, for one). The panic is caught where it happens and the
/// decoder stops, so the run ends like any bad shard (exit 3, one line, the partial output
/// removed) instead of exit 101 with a backtrace hint; the default panic message is kept off
/// standard error for this thread only.
fn decode_without_panic<T>(
    shard: &Path,
    decode: impl FnOnce() -> Option<Result<T, Failure>>,
) -> Option<Result<T, Failure>> {
    static QUIET_DECODER: std::sync::Once = std::sync::Once::new();
    QUIET_DECODER.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(DECODER_THREAD) {
                default(info);
            }
        }));
    });
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no reason given".into());
        // The reason is the parquet crate's text, not ours.
        let reason = crate::terminal::one_line(&reason);
        Some(Err(Failure::input(format!(
            "{}: cannot decode the shard, which is corrupt (the Parquet decoder failed: {reason})",
            shard.display()
        ))))
    })
}

fn classify_batches(
    job: &ShardJob<'_>,
    batches: impl Iterator<Item = Result<(RecordBatch, Vec<f32>), Failure>>,
    recycle: &std::sync::mpsc::Sender<Vec<f32>>,
    writer: &mut ArrowWriter<&File>,
) -> Result<(), Failure> {
    let (shard, columns, classifier) = (job.shard, job.columns, job.classifier);
    let dim = classifier.input_dim();
    let mut first_row = 0usize;
    for decoded in batches {
        let (batch, values) = decoded?;
        let rows = batch.num_rows();
        let mut probabilities = vec![0.0f32; rows];
        let mut labels = vec![0u8; rows];
        classifier
            .classify(&values, dim, &mut probabilities, Some(&mut labels))
            .map_err(|e| {
                // The library counts rows within the batch; the shard's own numbers say where.
                match crate::input::first_non_finite(&values) {
                    Some(index) if e.status() == Status::NonFiniteInput => Failure {
                        message: format!(
                            "{}: row {} column {} is {}; every value must be finite",
                            shard.display(),
                            first_row + index / dim,
                            index % dim,
                            values[index]
                        ),
                        code: 10 + Status::NonFiniteInput as u8,
                    },
                    _ => Failure::from(e.context(format!(
                        "{} rows from {}",
                        shard.display(),
                        first_row
                    ))),
                }
            })?;
        // The decoding thread may have finished: then the buffer is simply dropped.
        let _ = recycle.send(values);

        let mut out: Vec<ArrayRef> = columns
            .keep
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .expect("projected column")
                    .clone()
            })
            .collect();
        out.push(Arc::new(Float32Array::from(probabilities)));
        out.push(Arc::new(BooleanArray::from_iter(
            labels.iter().map(|&l| Some(l == 1)),
        )));
        let out = RecordBatch::try_new(job.out_schema.clone(), out)
            .map_err(|e| output_failure(format!("{}: {e}", shard.display())))?;
        writer.write(&out).map_err(|e| {
            output_failure(format!("cannot write output for {}: {e}", shard.display()))
        })?;
        first_row += rows;
        job.progress.inc(rows as u64);
    }
    Ok(())
}

/// The reader of a float32 embedding column, whose leaf column is the one under `name`.
fn float_column(
    shard: &Path,
    builder: &ParquetRecordBatchReaderBuilder<File>,
    name: &str,
    dim: usize,
) -> Result<Box<FloatColumn>, Failure> {
    let leaf = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|column| column.path().parts().first().map(String::as_str) == Some(name))
        .expect("the Arrow schema's column has a Parquet leaf");
    let unreadable =
        |e: &dyn std::fmt::Display| Failure::input(format!("{}: {e}", shard.display()));
    let file = File::open(shard)
        .map_err(|e| Failure::input(format!("cannot read {}: {e}", shard.display())))?;
    FloatColumn::new(file, leaf, dim)
        .map_err(|e| unreadable(&e))?
        .ok_or_else(|| {
            unreadable(&format!(
                "column {name:?} is nested in a way this reader does not know"
            ))
        })
        .map(Box::new)
}

/// Rows, rows/s and ETA on standard error, only when it is a terminal.
fn progress_bar(total_rows: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{wide_bar} {human_pos}/{human_len} rows  {per_sec}  ETA {eta}",
        )
        .expect("a valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::wildcard_match;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("*.parquet", "part-00001.parquet"));
        assert!(wildcard_match("part-?????.parquet", "part-00001.parquet"));
        assert!(wildcard_match("part-*-c*.parquet", "part-1-c000.parquet"));
        assert!(!wildcard_match("*.parquet", "part-00001.parquet.crc"));
        assert!(!wildcard_match("part-?.parquet", "part-10.parquet"));
    }
}
