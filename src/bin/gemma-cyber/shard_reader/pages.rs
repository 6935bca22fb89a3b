//! A float32 list column chunk decoded page by page, straight into the batch buffer.
//!
//! parquet's column reader zero-fills room for each read's values, copies them in, and decodes
//! every value's repetition and definition level into buffers that are then checked: about 8 % of
//! `classify`'s CPU time on shards, with Snappy's own copying 9 % (docs/BENCHMARKS.md). Here the
//! decompressed pages from parquet's page reader are read directly: levels are checked run by run
//! (a row of `dim` present values is one packed group and one repeated run of repetition levels; a
//! page of present values one repeated run of definition levels), and values are copied once, from
//! the page into the batch buffer.
//!
//! Only the shape of a valid embedding column is decoded here: every row exactly `dim` present
//! values, in PLAIN or dictionary-encoded (RLE_DICTIONARY, PLAIN_DICTIONARY) pages, V1 or V2, with
//! RLE levels. Anything else — a null, a row of the wrong length, another encoding
//! (BYTE_STREAM_SPLIT…), a page parquet cannot decode — is a [`Fallback`]: the caller reads the
//! rows again with parquet's column reader, which decodes every encoding and whose levels locate
//! the problem exactly as before.

use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};

use super::hybrid::{Hybrid, Run};

/// These pages cannot be decoded here (see the module's description).
#[derive(Debug)]
pub(super) struct Fallback;

/// The pages of one column chunk.
pub(super) struct Pages {
    pages: Box<dyn PageReader>,
    /// The data page being read; `None` before the first and after the last.
    page: Option<DataPage>,
    /// The chunk's dictionary (values of its dictionary page), for dictionary-encoded pages.
    dictionary: Vec<f32>,
    dim: usize,
    /// Definition level of a present value, and its width in bits.
    max_definition: u32,
    definition_width: u32,
}

impl Pages {
    pub(super) fn new(pages: Box<dyn PageReader>, dim: usize, max_definition: i16) -> Pages {
        let max_definition = u32::try_from(max_definition).expect("levels are not negative");
        Pages {
            pages,
            page: None,
            dictionary: Vec::new(),
            dim,
            max_definition,
            definition_width: u32::BITS - max_definition.leading_zeros(),
        }
    }

    /// Appends the next `rows` rows' values to `values`, or as many rows as the chunk has left;
    /// gives the number of rows read.
    ///
    /// On a [`Fallback`], `values` may hold some of the rows; the pages are then past them, and the
    /// caller reads the chunk again.
    pub(super) fn read(&mut self, rows: usize, values: &mut Vec<f32>) -> Result<usize, Fallback> {
        let wanted = rows * self.dim;
        let mut read = 0;
        while read < wanted && self.next_page()? {
            let page = self.page.as_mut().expect("next_page found one");
            let levels = (wanted - read).min(page.levels);
            page.check_levels(levels, self.dim, self.max_definition, read % self.dim)?;
            page.copy_values(levels, &self.dictionary, values)?;
            page.levels -= levels;
            read += levels;
        }
        if read % self.dim != 0 {
            // The chunk ended inside a row: too short.
            return Err(Fallback);
        }
        // The last row is complete only if no more of its values follow: the next level must
        // start a row, or there must be none.
        if read == wanted && self.next_page()? {
            let page = self.page.as_mut().expect("next_page found one");
            if !page.starts_row()? {
                return Err(Fallback);
            }
        }
        Ok(read / self.dim)
    }

    /// Makes `page` a data page with levels left to read, loading pages (and the dictionary) as
    /// needed; false at the end of the chunk.
    fn next_page(&mut self) -> Result<bool, Fallback> {
        while self.page.as_ref().is_none_or(|page| page.levels == 0) {
            let page = match self.pages.get_next_page() {
                Ok(Some(page)) => page,
                Ok(None) => {
                    self.page = None;
                    return Ok(false);
                }
                Err(_) => return Err(Fallback),
            };
            if let Page::DictionaryPage {
                buf,
                num_values,
                encoding,
                ..
            } = &page
            {
                if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) {
                    return Err(Fallback);
                }
                let bytes = buf.get(..*num_values as usize * 4).ok_or(Fallback)?;
                self.dictionary.clear();
                self.dictionary.extend(floats(bytes));
                continue;
            }
            self.page = Some(DataPage::new(page, self.definition_width)?);
        }
        Ok(true)
    }
}

/// The little-endian floats of `bytes`, a multiple of 4 long.
fn floats(bytes: &[u8]) -> impl ExactSizeIterator<Item = f32> + '_ {
    // An exact-size iterator of plain loads: `extend` reserves once and the loop compiles to
    // straight copies, with no zero-fill first.
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("chunks of 4")))
}

/// A data page being read: cursors in its levels and values.
struct DataPage {
    /// Owns the buffer the cursors point into.
    page: Page,
    /// Levels not read yet.
    levels: usize,
    repetition: Hybrid,
    definition: Hybrid,
    values: Values,
}

enum Values {
    /// PLAIN: the next value's bytes start at `pos`.
    Plain { pos: usize },
    /// RLE_DICTIONARY (or its older name PLAIN_DICTIONARY): indices into the dictionary.
    Dictionary(Hybrid),
}

impl DataPage {
    fn new(page: Page, definition_width: u32) -> Result<DataPage, Fallback> {
        let buf = page.buffer();
        // Repetition levels, then definition levels, then values. A V1 page prefixes each level
        // stream with its length; a V2 page has the lengths in its header.
        let (levels, repetition, definition, encoding) = match &page {
            Page::DataPage {
                num_values,
                encoding,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                ..
            } => {
                let length = |at: usize| -> Result<usize, Fallback> {
                    let bytes = buf.get(at..at + 4).ok_or(Fallback)?;
                    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
                };
                let repetition = 4..4 + length(0)?;
                let definition = repetition.end + 4..repetition.end + 4 + length(repetition.end)?;
                (*num_values, repetition, definition, *encoding)
            }
            Page::DataPageV2 {
                num_values,
                encoding,
                def_levels_byte_len,
                rep_levels_byte_len,
                ..
            } => {
                let repetition = 0..*rep_levels_byte_len as usize;
                let definition = repetition.end..repetition.end + *def_levels_byte_len as usize;
                (*num_values, repetition, definition, *encoding)
            }
            _ => return Err(Fallback),
        };
        let start = definition.end;
        if start > buf.len() {
            return Err(Fallback);
        }
        let values = match encoding {
            Encoding::PLAIN => Values::Plain { pos: start },
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let width = *buf.get(start).ok_or(Fallback)?;
                Values::Dictionary(
                    Hybrid::new(start + 1, buf.len(), u32::from(width)).ok_or(Fallback)?,
                )
            }
            _ => return Err(Fallback),
        };
        Ok(DataPage {
            levels: levels as usize,
            repetition: Hybrid::new(repetition.start, repetition.end, 1).ok_or(Fallback)?,
            definition: Hybrid::new(definition.start, definition.end, definition_width)
                .ok_or(Fallback)?,
            values,
            page,
        })
    }

    /// Checks the next `levels` levels: every value present (definition level `max`), and a row
    /// starting (repetition level 0) exactly every `dim` values, the first of them `in_row`
    /// values into a row.
    fn check_levels(
        &mut self,
        mut levels: usize,
        dim: usize,
        max: u32,
        mut in_row: usize,
    ) -> Result<(), Fallback> {
        let buf = self.page.buffer();
        while levels > 0 {
            let repetition = self.repetition.run(buf).ok_or(Fallback)?;
            let definition = self.definition.run(buf).ok_or(Fallback)?;
            let mut span = levels.min(repetition.left()).min(definition.left());
            match repetition {
                // A row starts here: one level of the run (more only for rows of one value).
                Run::Repeat { value: 0, .. } if in_row == 0 => span = 1,
                // Inside a row: up to its end.
                Run::Repeat { value: 1, .. } if in_row > 0 => span = span.min(dim - in_row),
                Run::Repeat { .. } => return Err(Fallback),
                Run::Packed { .. } => {
                    let wrong = (0..span).any(|k| {
                        let starts_row = (in_row + k).is_multiple_of(dim);
                        self.repetition.packed(buf, k) != u32::from(!starts_row)
                    });
                    if wrong {
                        return Err(Fallback);
                    }
                }
            }
            let present = match definition {
                Run::Repeat { value, .. } => value == max,
                Run::Packed { .. } => (0..span).all(|k| self.definition.packed(buf, k) == max),
            };
            if !present {
                return Err(Fallback);
            }
            self.repetition.advance(span);
            self.definition.advance(span);
            in_row = (in_row + span) % dim;
            levels -= span;
        }
        Ok(())
    }

    /// Appends the next `count` values to `values` (all present: one per level).
    fn copy_values(
        &mut self,
        count: usize,
        dictionary: &[f32],
        values: &mut Vec<f32>,
    ) -> Result<(), Fallback> {
        let buf = self.page.buffer();
        match &mut self.values {
            Values::Plain { pos } => {
                let bytes = buf.get(*pos..*pos + count * 4).ok_or(Fallback)?;
                values.extend(floats(bytes));
                *pos += count * 4;
            }
            Values::Dictionary(indices) => {
                let mut count = count;
                while count > 0 {
                    let run = indices.run(buf).ok_or(Fallback)?;
                    let n = count.min(run.left());
                    match run {
                        Run::Repeat { value, .. } => {
                            let value = *dictionary.get(value as usize).ok_or(Fallback)?;
                            values.extend(std::iter::repeat_n(value, n));
                        }
                        Run::Packed { .. } => {
                            for k in 0..n {
                                let index = indices.packed(buf, k) as usize;
                                values.push(*dictionary.get(index).ok_or(Fallback)?);
                            }
                        }
                    }
                    indices.advance(n);
                    count -= n;
                }
            }
        }
        Ok(())
    }

    /// True when the next level starts a row.
    fn starts_row(&mut self) -> Result<bool, Fallback> {
        let buf = self.page.buffer();
        let first = match self.repetition.run(buf).ok_or(Fallback)? {
            Run::Repeat { value, .. } => value,
            Run::Packed { .. } => self.repetition.packed(buf, 0),
        };
        Ok(first == 0)
    }
}

#[cfg(test)]
mod tests {
    //! Pages built by hand: pyarrow and parquet-rs end every page at a row's end, but other
    //! writers (older parquet-cpp, V1 pages) split rows across pages.

    use parquet::basic::Encoding;
    use parquet::column::page::{Page, PageMetadata, PageReader};

    use super::{Fallback, Pages};

    const DIM: usize = 4;
    /// Nullable lists of nullable floats: definition level 3 for a present value.
    const MAX_DEFINITION: i16 = 3;

    struct Handmade(std::vec::IntoIter<Page>);

    impl Iterator for Handmade {
        type Item = parquet::errors::Result<Page>;
        fn next(&mut self) -> Option<Self::Item> {
            self.0.next().map(Ok)
        }
    }

    impl PageReader for Handmade {
        fn get_next_page(&mut self) -> parquet::errors::Result<Option<Page>> {
            Ok(self.0.next())
        }
        fn peek_next_page(&mut self) -> parquet::errors::Result<Option<PageMetadata>> {
            unimplemented!("the page decoder reads pages in order")
        }
        fn skip_next_page(&mut self) -> parquet::errors::Result<()> {
            unimplemented!("the page decoder reads pages in order")
        }
    }

    fn pages(pages: Vec<Page>) -> Pages {
        Pages::new(Box::new(Handmade(pages.into_iter())), DIM, MAX_DEFINITION)
    }

    /// `levels` in the hybrid encoding: one bit-packed run, or repeated runs (short ones: the
    /// headers and values here are one byte each).
    fn hybrid(levels: &[u32], width: u32, packed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if packed {
            let groups = levels.len().div_ceil(8);
            out.push((groups << 1 | 1) as u8);
            let mut bytes = vec![0u8; groups * width as usize];
            for (i, &level) in levels.iter().enumerate() {
                for b in 0..width as usize {
                    let bit = i * width as usize + b;
                    bytes[bit / 8] |= ((level >> b & 1) as u8) << (bit % 8);
                }
            }
            out.extend(bytes);
        } else {
            for run in levels.chunk_by(|a, b| a == b) {
                out.extend([(run.len() << 1) as u8, run[0] as u8]);
            }
        }
        out
    }

    /// Repetition and definition levels of values `range` of a column of `DIM`-value rows.
    fn levels(range: std::ops::Range<usize>) -> (Vec<u32>, Vec<u32>) {
        let repetition = range.clone().map(|i| u32::from(i % DIM != 0)).collect();
        (repetition, vec![3; range.len()])
    }

    fn plain(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn v1(levels: (Vec<u32>, Vec<u32>), values: Vec<u8>, encoding: Encoding, packed: bool) -> Page {
        let mut buf = Vec::new();
        for (levels, width) in [(&levels.0, 1), (&levels.1, 2)] {
            let bytes = hybrid(levels, width, packed);
            buf.extend((bytes.len() as u32).to_le_bytes());
            buf.extend(bytes);
        }
        buf.extend(values);
        Page::DataPage {
            buf: buf.into(),
            num_values: levels.0.len() as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        }
    }

    fn v2(levels: (Vec<u32>, Vec<u32>), values: Vec<u8>, encoding: Encoding) -> Page {
        let repetition = hybrid(&levels.0, 1, false);
        let definition = hybrid(&levels.1, 2, false);
        Page::DataPageV2 {
            num_values: levels.0.len() as u32,
            encoding,
            num_nulls: 0,
            num_rows: levels.0.iter().filter(|&&r| r == 0).count() as u32,
            def_levels_byte_len: definition.len() as u32,
            rep_levels_byte_len: repetition.len() as u32,
            is_compressed: false,
            statistics: None,
            buf: [repetition, definition, values].concat().into(),
        }
    }

    #[test]
    fn rows_span_pages_of_either_version() {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut column = pages(vec![
            v1(levels(0..5), plain(&values[0..5]), Encoding::PLAIN, true),
            v2(levels(5..10), plain(&values[5..10]), Encoding::PLAIN),
            v1(
                levels(10..12),
                plain(&values[10..12]),
                Encoding::PLAIN,
                false,
            ),
        ]);
        let mut out = Vec::new();
        assert_eq!(column.read(2, &mut out).unwrap(), 2);
        assert_eq!(out, values[..8]);
        assert_eq!(
            column.read(5, &mut out).unwrap(),
            1,
            "the chunk has one row left"
        );
        assert_eq!(out, values);
        assert_eq!(column.read(5, &mut out).unwrap(), 0);
    }

    #[test]
    fn dictionary_pages_then_plain_pages() {
        let dictionary = Page::DictionaryPage {
            buf: plain(&[10.0, 20.0, 30.0]).into(),
            num_values: 3,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let indices = [2, 2, 2, 2, 0, 1, 2, 1];
        let packed = [vec![2], hybrid(&indices, 2, true)].concat();
        let repeated = [vec![2], hybrid(&indices, 2, false)].concat();
        let mut column = pages(vec![
            dictionary,
            v1(levels(0..8), packed, Encoding::RLE_DICTIONARY, false),
            v2(levels(8..16), repeated, Encoding::PLAIN_DICTIONARY),
            v1(
                levels(16..20),
                plain(&[1.0, 2.0, 3.0, 4.0]),
                Encoding::PLAIN,
                false,
            ),
        ]);
        let mut out = Vec::new();
        assert_eq!(column.read(8, &mut out).unwrap(), 5);
        let rows = [30.0, 30.0, 30.0, 30.0, 10.0, 20.0, 30.0, 20.0];
        assert_eq!(out, [&rows[..], &rows, &[1.0, 2.0, 3.0, 4.0]].concat());
    }

    #[test]
    fn anything_but_whole_rows_of_present_values_falls_back() {
        let fails = |page: Page, rows: usize| {
            let mut out = Vec::new();
            matches!(pages(vec![page]).read(rows, &mut out), Err(Fallback))
        };
        let page = |levels| v1(levels, plain(&[0.0; 8]), Encoding::PLAIN, false);
        // A first row of 5 values: found reading it alone (its fifth value follows the fourth)
        // or with the next.
        let long = (vec![0, 1, 1, 1, 1, 0, 1, 1, 1], vec![3; 9]);
        assert!(fails(page(long.clone()), 1));
        assert!(fails(page(long), 2));
        // The chunk ends inside a row.
        assert!(fails(page(levels(0..7)), 2));
        // A null value, and a null list (one level, no value).
        let (repetition, mut definition) = levels(0..8);
        definition[6] = 2;
        assert!(fails(page((repetition, definition)), 2));
        assert!(fails(page((vec![0, 0, 1, 1, 1], vec![0, 3, 3, 3, 3])), 2));
        // Another encoding of the values.
        let split = v1(
            levels(0..8),
            plain(&[0.0; 8]),
            Encoding::BYTE_STREAM_SPLIT,
            false,
        );
        assert!(fails(split, 2));
        // Whole rows of present values pass.
        assert!(!fails(page(levels(0..8)), 2));
    }
}
