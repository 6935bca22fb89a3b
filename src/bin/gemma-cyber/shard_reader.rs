//! Batches of a Parquet shard: the columns to carry through as Arrow record batches, and the
//! embedding column as one contiguous `f32` buffer, checked row by row.
//!
//! A float32 embedding column (`List<float32>` or `FixedSizeList<float32>`, what pyarrow, pandas
//! and Spark write) is decoded page by page ([`pages`]) straight into a buffer that the
//! classifying thread hands back for reuse. Arrow's list reader would rebuild every batch from
//! empty, growing it page by page (each growth a copy of all values so far), and then compute list
//! offsets from every value's levels: about 8 % of the command's CPU time at one classify thread;
//! parquet's column reader, used instead until then, still zero-filled, copied and decoded every
//! value's levels into buffers (memset 3.1 %, memmove 2.8 % with Snappy's own, levels 3.4 %;
//! docs/BENCHMARKS.md). Rows with a problem, and pages in encodings the page decoder leaves alone,
//! go through parquet's column reader. Float16 columns, rarer and half the bytes, go through Arrow
//! and are widened here.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float16Type;
use arrow_array::{Array, RecordBatch};
use gemma_cyber::Status;
use half::slice::HalfFloatSliceExt;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::column::reader::{get_typed_column_reader, ColumnReaderImpl};
use parquet::data_type::FloatType;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::Failure;

mod hybrid;
mod pages;

use pages::{Fallback, Pages};

/// Where a shard's embeddings come from.
pub(crate) enum Embeddings {
    /// A float32 column decoded by [`FloatColumn`]; the record batches hold the kept columns only.
    Float32(Box<FloatColumn>),
    /// A float16 `FixedSizeList` column, inside the record batches next to the kept columns.
    Float16 { column: String },
}

/// The columns of a shard that its batches carry: the kept ones, and a float16 embedding.
pub(crate) struct Projection {
    /// A handle on the shard, cloned for each row group's reader.
    pub(crate) file: File,
    pub(crate) metadata: ArrowReaderMetadata,
    pub(crate) mask: ProjectionMask,
    pub(crate) batch_rows: usize,
}

/// A shard read batch by batch: each [`ShardReader::next_batch`] gives the kept columns of the
/// next rows and fills the caller's buffer with their embeddings.
///
/// Row groups are read one at a time, each column required to give exactly the row group's rows:
/// every column is decoded on its own, so a corrupt page that gives one column fewer or more rows
/// would otherwise pair each row's other columns with another row's embedding, and score it
/// without a word.
pub(crate) struct ShardReader<'a> {
    shard: &'a Path,
    dim: usize,
    projection: Projection,
    next_row_group: usize,
    group: Option<RowGroup>,
    embeddings: Embeddings,
    /// Rows of the shard read so far: error messages number rows from the shard's start.
    first_row: usize,
}

/// The row group being read.
struct RowGroup {
    index: usize,
    /// Its rows, as the file's metadata gives them.
    rows: usize,
    /// Rows its batches gave so far.
    read: usize,
    batches: ParquetRecordBatchReader,
}

impl<'a> ShardReader<'a> {
    pub(crate) fn new(
        shard: &'a Path,
        dim: usize,
        projection: Projection,
        embeddings: Embeddings,
    ) -> ShardReader<'a> {
        ShardReader {
            shard,
            dim,
            projection,
            next_row_group: 0,
            group: None,
            embeddings,
            first_row: 0,
        }
    }

    /// The next batch with its embeddings in `values` (replacing what was there), or `None` at the
    /// end of the shard.
    pub(crate) fn next_batch(
        &mut self,
        values: &mut Vec<f32>,
    ) -> Option<Result<RecordBatch, Failure>> {
        loop {
            let group = match &mut self.group {
                Some(group) => group,
                None => {
                    let row_groups = self.projection.metadata.metadata().num_row_groups();
                    if self.next_row_group == row_groups {
                        return None;
                    }
                    match self.open_row_group(self.next_row_group) {
                        Ok(group) => self.group.insert(group),
                        Err(failure) => return Some(Err(failure)),
                    }
                }
            };
            let (index, expected) = (group.index, group.rows);
            let batch = match group.batches.next() {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    return Some(Err(self.failure(format!("row group {index}: {e}"))));
                }
                None => {
                    let read = group.read;
                    if read != expected {
                        return Some(Err(self.miscounted(index, read, expected)));
                    }
                    // The embedding column must end with the row group too.
                    if let Embeddings::Float32(column) = &mut self.embeddings
                        && let Err(problem) = column.finish_row_group()
                    {
                        return Some(Err(problem.into_failure(
                            self.shard,
                            self.first_row,
                            self.dim,
                        )));
                    }
                    self.group = None;
                    continue;
                }
            };
            let rows = batch.num_rows();
            group.read += rows;
            if group.read > expected {
                let read = group.read;
                return Some(Err(self.miscounted(index, read, expected)));
            }
            let filled = match &mut self.embeddings {
                Embeddings::Float32(column) => column.read(rows, values),
                Embeddings::Float16 { column } => widen(&batch, column, self.dim, values),
            };
            let filled = filled
                .map_err(|problem| problem.into_failure(self.shard, self.first_row, self.dim));
            self.first_row += rows;
            return Some(filled.map(|()| batch));
        }
    }

    /// The reader of row group `index` alone, its batches ending where it ends.
    fn open_row_group(&mut self, index: usize) -> Result<RowGroup, Failure> {
        self.next_row_group = index + 1;
        let projection = &self.projection;
        let rows = projection.metadata.metadata().row_group(index).num_rows();
        let rows = usize::try_from(rows)
            .map_err(|_| self.failure(format!("row group {index} claims {rows} rows")))?;
        let file = projection
            .file
            .try_clone()
            .map_err(|e| self.failure(format!("cannot read: {e}")))?;
        let batches =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, projection.metadata.clone())
                .with_projection(projection.mask.clone())
                .with_batch_size(projection.batch_rows)
                .with_row_groups(vec![index])
                .build()
                .map_err(|e| self.failure(format!("row group {index}: {e}")))?;
        if let Embeddings::Float32(column) = &mut self.embeddings {
            column
                .start_row_group(index)
                .map_err(|problem| problem.into_failure(self.shard, self.first_row, self.dim))?;
        }
        Ok(RowGroup {
            index,
            rows,
            read: 0,
            batches,
        })
    }

    fn miscounted(&self, index: usize, read: usize, expected: usize) -> Failure {
        self.failure(format!(
            "row group {index}: its columns give {read} rows where the row group has {expected}; the file is corrupt"
        ))
    }

    fn failure(&self, e: impl std::fmt::Display) -> Failure {
        Failure::input(format!("{}: {e}", self.shard.display()))
    }
}

/// What is wrong with a batch's embeddings, by row within the batch.
#[derive(Debug, PartialEq)]
pub(crate) enum Problem {
    NullEmbedding {
        row: usize,
    },
    NullValue {
        row: usize,
        index: usize,
    },
    WrongLength {
        row: usize,
        values: usize,
    },
    /// The column ended before the other columns did, or parquet could not decode it.
    Unreadable(String),
}

impl Problem {
    fn into_failure(self, shard: &Path, first_row: usize, dim: usize) -> Failure {
        let at = |row: usize| format!("{} row {}", shard.display(), first_row + row);
        match self {
            Problem::NullEmbedding { row } => {
                Failure::input(format!("{}: the embedding is null", at(row)))
            }
            Problem::NullValue { row, index } => Failure::input(format!(
                "{}: value {index} of the embedding is null",
                at(row)
            )),
            Problem::WrongLength { row, values } => Failure {
                message: format!(
                    "{}: the embedding has {values} values but the model expects {dim}",
                    at(row)
                ),
                code: 10 + Status::DimensionMismatch as u8,
            },
            Problem::Unreadable(e) => Failure::input(format!("{}: {e}", shard.display())),
        }
    }
}

/// The float16 embeddings of `batch`, widened into `values`.
fn widen(
    batch: &RecordBatch,
    column: &str,
    dim: usize,
    values: &mut Vec<f32>,
) -> Result<(), Problem> {
    let list = batch
        .column_by_name(column)
        .expect("the embedding column is projected")
        .as_fixed_size_list();
    if let Some(row) = (0..list.len()).find(|&r| list.is_null(r)) {
        return Err(Problem::NullEmbedding { row });
    }
    let items = list.values();
    if items.null_count() > 0 {
        let at = (0..items.len()).find(|&i| items.is_null(i)).unwrap_or(0);
        return Err(Problem::NullValue {
            row: at / dim,
            index: at % dim,
        });
    }
    // A FixedSizeListArray's values are sliced with it: row 0 starts at value 0.
    let halves = &items.as_primitive::<Float16Type>().values()[..list.len() * dim];
    values.resize(halves.len(), 0.0);
    halves.convert_to_f32_slice(values);
    Ok(())
}

/// A float32 list column read across row groups, page by page with [`Pages`]; a chunk with pages
/// that it cannot decode, or with rows that have a problem, is read again from the batch's first
/// row in it with parquet's column reader, one level per value: a row starts where the
/// repetition level is 0, and a value is present where the definition level is the column's
/// maximum. Problems are thus always found and reported by the same checks, whichever reader met
/// them first.
pub(crate) struct FloatColumn {
    file: Arc<SerializedFileReader<File>>,
    /// The column's index among the file's leaf columns.
    leaf: usize,
    /// The chunk of the row group being read.
    chunk: Option<Chunk>,
    levels: Levels,
}

/// The column chunk of one row group, being read.
struct Chunk {
    row_group: usize,
    /// Rows read from it so far.
    rows: usize,
    source: Source,
}

enum Source {
    Pages(Box<Pages>),
    Reader(Box<ColumnReaderImpl<FloatType>>),
}

impl FloatColumn {
    /// The reader of leaf column `leaf`, a float32 list of the usual three-level shape (optional
    /// or required list, repeated group, optional or required float); `None` for any other shape.
    pub(crate) fn new(
        file: File,
        leaf: usize,
        dim: usize,
    ) -> parquet::errors::Result<Option<Self>> {
        let file = Arc::new(SerializedFileReader::new(file)?);
        let column = file.metadata().file_metadata().schema_descr().column(leaf);
        let value_optional = column.self_type().is_optional();
        let max_definition = column.max_def_level();
        let empty_list = max_definition - 1 - i16::from(value_optional);
        if column.max_rep_level() != 1 || empty_list < 0 {
            return Ok(None);
        }
        Ok(Some(FloatColumn {
            file,
            leaf,
            chunk: None,
            levels: Levels {
                dim,
                max_definition,
                empty_list,
                definition: Vec::new(),
                repetition: Vec::new(),
            },
        }))
    }

    /// Starts reading the column's chunk in row group `row_group`.
    fn start_row_group(&mut self, row_group: usize) -> Result<(), Problem> {
        let pages = self
            .file
            .get_row_group(row_group)
            .and_then(|group| group.get_column_page_reader(self.leaf))
            .map_err(unreadable)?;
        let pages = Pages::new(pages, self.levels.dim, self.levels.max_definition);
        self.chunk = Some(Chunk {
            row_group,
            rows: 0,
            source: Source::Pages(Box::new(pages)),
        });
        Ok(())
    }

    /// Reads the next `rows` rows of the row group into `values` (replacing what was there):
    /// `rows × dim` values, or the first problem found.
    fn read(&mut self, rows: usize, values: &mut Vec<f32>) -> Result<(), Problem> {
        values.clear();
        let mut chunk = self.chunk.take().expect("a row group is started");
        let mut done = 0;
        while done < rows {
            let records = self.read_chunk(&mut chunk, rows - done, done, values)?;
            if records == 0 {
                return Err(self.miscounted(&chunk, format!("ends after {} rows", chunk.rows)));
            }
            done += records;
        }
        self.chunk = Some(chunk);
        Ok(())
    }

    /// Checks that the row group's chunk has no rows left once its other columns have ended.
    fn finish_row_group(&mut self) -> Result<(), Problem> {
        let Some(mut chunk) = self.chunk.take() else {
            return Ok(());
        };
        let mut rest = Vec::new();
        if self.read_chunk(&mut chunk, 1, 0, &mut rest)? > 0 {
            return Err(self.miscounted(&chunk, "has more rows".into()));
        }
        Ok(())
    }

    fn miscounted(&self, chunk: &Chunk, what: String) -> Problem {
        let rows = self.file.metadata().row_group(chunk.row_group).num_rows();
        Problem::Unreadable(format!(
            "row group {}: the embedding column {what} where the row group has {rows}; the file is corrupt",
            chunk.row_group
        ))
    }

    /// Reads up to `rows` rows of `chunk` into `values`, the rows after `first_row` rows of the
    /// batch; gives the number read, 0 at the chunk's end.
    fn read_chunk(
        &mut self,
        chunk: &mut Chunk,
        rows: usize,
        first_row: usize,
        values: &mut Vec<f32>,
    ) -> Result<usize, Problem> {
        let start = values.len();
        if let Source::Pages(pages) = &mut chunk.source {
            match pages.read(rows, values) {
                Ok(records) => {
                    chunk.rows += records;
                    return Ok(records);
                }
                Err(Fallback) => {
                    // From here on parquet's column reader, from this batch's first row in the
                    // chunk: it finds and reports a problem as it always has, and decodes what
                    // the pages cannot. Once per chunk at most.
                    values.truncate(start);
                    let column = self
                        .file
                        .get_row_group(chunk.row_group)
                        .and_then(|row_group| row_group.get_column_reader(self.leaf))
                        .map_err(unreadable)?;
                    let mut reader = get_typed_column_reader::<FloatType>(column);
                    let skipped = reader.skip_records(chunk.rows).map_err(unreadable)?;
                    if skipped != chunk.rows {
                        return Err(Problem::Unreadable(format!(
                            "the embedding column has {skipped} rows where its pages had {}",
                            chunk.rows
                        )));
                    }
                    chunk.source = Source::Reader(Box::new(reader));
                }
            }
        }
        let Source::Reader(reader) = &mut chunk.source else {
            unreachable!("pages fall back to the column reader above")
        };
        let levels = &mut self.levels;
        levels.definition.clear();
        levels.repetition.clear();
        let (records, _, _) = reader
            .read_records(
                rows,
                Some(&mut levels.definition),
                Some(&mut levels.repetition),
                values,
            )
            .map_err(unreadable)?;
        if records > 0 {
            levels.check(first_row, records, values.len() - start)?;
        }
        chunk.rows += records;
        Ok(records)
    }
}

fn unreadable(e: parquet::errors::ParquetError) -> Problem {
    Problem::Unreadable(e.to_string())
}

/// The levels of rows read with parquet's column reader, one per value, and their checks.
struct Levels {
    dim: usize,
    /// Definition level of a present value.
    max_definition: i16,
    /// Definition level of a present but empty list; below it the list itself is null.
    empty_list: i16,
    definition: Vec<i16>,
    repetition: Vec<i16>,
}

impl Levels {
    /// Checks the levels of `records` rows just read, which brought `values` values and follow
    /// `first_row` rows of the batch.
    fn check(&self, first_row: usize, records: usize, values: usize) -> Result<(), Problem> {
        let dim = self.dim;
        let levels = self.repetition.len();
        // The common case in one pass each: every row exactly `dim` present values.
        let max = self.max_definition;
        // In chunks without an early exit inside, so that the comparison is vectorised.
        let all_present = values == levels
            && self
                .definition
                .chunks(256)
                .all(|chunk| chunk.iter().fold(true, |present, &d| present & (d == max)));
        if all_present
            && levels == records * dim
            && self.repetition.iter().step_by(dim).all(|&r| r == 0)
            && self.repetition.iter().filter(|&&r| r == 0).count() == records
        {
            return Ok(());
        }
        self.find_problem(first_row)
    }

    /// The first problem among the levels just read (rows counted from `first_row`), looking for
    /// null embeddings first, then wrong lengths, then null values: the order in which a caller
    /// would fix them.
    fn find_problem(&self, first_row: usize) -> Result<(), Problem> {
        let mut starts: Vec<usize> = (0..self.repetition.len())
            .filter(|&i| self.repetition[i] == 0)
            .collect();
        let levels = self.repetition.len();
        starts.push(levels);
        let rows = starts.windows(2).map(|w| (w[0], w[1]));
        let rows = (first_row..).zip(rows);
        for (row, (start, _)) in rows.clone() {
            if self.definition[start] < self.empty_list {
                return Err(Problem::NullEmbedding { row });
            }
        }
        for (row, (start, end)) in rows.clone() {
            let values = if self.definition[start] == self.empty_list {
                0
            } else {
                end - start
            };
            if values != self.dim {
                return Err(Problem::WrongLength { row, values });
            }
        }
        for (row, (start, end)) in rows {
            if let Some(index) = (start..end).find(|&i| self.definition[i] < self.max_definition) {
                return Err(Problem::NullValue {
                    row,
                    index: index - start,
                });
            }
        }
        Err(Problem::Unreadable(
            "the embedding column's levels and values disagree".into(),
        ))
    }
}
