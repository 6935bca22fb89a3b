//! Parquet's RLE / bit-packed hybrid encoding (repetition and definition levels, dictionary
//! indices), read run by run.
//!
//! The stream is a sequence of runs, each behind a ULEB128 header: an even header `count << 1` is
//! followed by one value repeated `count` times (in `ceil(bit_width / 8)` little-endian bytes), an
//! odd header `groups << 1 | 1` by `groups × 8` values bit-packed least significant bit first.
//! Handing out whole runs lets a caller check a repeated run (the common case: 760 repetition
//! levels of 1 inside a 768-value row, or a page of definition levels all at the maximum) with one
//! comparison instead of one per value.

/// One run of a [`Hybrid`] stream: what is left of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Run {
    /// `left` more copies of `value`.
    Repeat { value: u32, left: usize },
    /// `left` more bit-packed values, read with [`Hybrid::packed`].
    Packed { left: usize },
}

impl Run {
    pub(super) fn left(self) -> usize {
        match self {
            Run::Repeat { left, .. } | Run::Packed { left } => left,
        }
    }
}

/// A cursor in an RLE / bit-packed hybrid stream lying in `buf[pos..end]` of a page buffer, which
/// is passed to each call (the cursor lives next to the page that owns the buffer).
#[derive(Debug)]
pub(super) struct Hybrid {
    /// The next run's header.
    pos: usize,
    end: usize,
    bit_width: u32,
    run: Run,
    /// For a packed run: where its bits start, and how many of its values were read already.
    packed_at: usize,
    packed_read: usize,
}

impl Hybrid {
    /// The stream in `start..end` of values `bit_width` bits wide; `None` for a width over 32,
    /// which no level or dictionary index has.
    pub(super) fn new(start: usize, end: usize, bit_width: u32) -> Option<Hybrid> {
        (bit_width <= 32 && start <= end).then_some(Hybrid {
            pos: start,
            end,
            bit_width,
            run: Run::Repeat { value: 0, left: 0 },
            packed_at: 0,
            packed_read: 0,
        })
    }

    /// The current run, reading the next run's header once the current one is used up; `None` at
    /// the end of the stream or where it is malformed.
    pub(super) fn run(&mut self, buf: &[u8]) -> Option<Run> {
        while self.run.left() == 0 {
            let header = self.varint(buf)?;
            let count = usize::try_from(header >> 1).ok()?;
            if header & 1 == 0 {
                let bytes = self.bit_width.div_ceil(8) as usize;
                let raw = buf.get(self.pos..self.pos + bytes)?;
                if self.pos + bytes > self.end {
                    return None;
                }
                let value = raw
                    .iter()
                    .rev()
                    .fold(0u32, |value, &byte| value << 8 | u32::from(byte));
                self.pos += bytes;
                self.run = Run::Repeat { value, left: count };
            } else {
                // Writers pad the last group to 8 values, but a stream cut short after its last
                // needed value is still readable: the run ends where the bytes do.
                let bytes = count.checked_mul(self.bit_width as usize)?;
                let available = bytes.min(self.end - self.pos);
                let values = match self.bit_width {
                    0 => count * 8,
                    width => (available * 8 / width as usize).min(count * 8),
                };
                self.packed_at = self.pos;
                self.packed_read = 0;
                self.pos += available;
                self.run = Run::Packed { left: values };
            }
        }
        Some(self.run)
    }

    /// Value `k` after those read of the current run, which is a packed run with more than `k`
    /// values left.
    pub(super) fn packed(&self, buf: &[u8], k: usize) -> u32 {
        debug_assert!(matches!(self.run, Run::Packed { left } if k < left));
        let width = self.bit_width as usize;
        if width == 0 {
            return 0;
        }
        let bit = (self.packed_read + k) * width;
        let at = self.packed_at + bit / 8;
        // At most 32 bits starting at any of 8 bit offsets fit in the 8 bytes from `at`; past the
        // stream's end they read as zeros (never part of a value, which `run` bounds).
        let mut word = [0u8; 8];
        let bytes = &buf[at..self.end.min(at + 8)];
        word[..bytes.len()].copy_from_slice(bytes);
        let word = u64::from_le_bytes(word) >> (bit % 8);
        (word & ((1u64 << width) - 1)) as u32
    }

    /// Moves past `n` values of the current run, which has at least `n` left.
    pub(super) fn advance(&mut self, n: usize) {
        match &mut self.run {
            Run::Repeat { left, .. } => *left -= n,
            Run::Packed { left } => {
                *left -= n;
                self.packed_read += n;
            }
        }
    }

    /// The ULEB128 number at `pos` (a run header: 32 bits at most).
    fn varint(&mut self, buf: &[u8]) -> Option<u32> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            if self.pos >= self.end {
                return None;
            }
            let byte = *buf.get(self.pos)?;
            self.pos += 1;
            value |= u32::from(byte & 0x7f).checked_shl(shift)?;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{Hybrid, Run};

    /// Every value of the stream, run by run.
    fn decode(buf: &[u8], bit_width: u32) -> Vec<u32> {
        let mut stream = Hybrid::new(0, buf.len(), bit_width).unwrap();
        let mut values = Vec::new();
        while let Some(run) = stream.run(buf) {
            match run {
                Run::Repeat { value, left } => values.extend(std::iter::repeat_n(value, left)),
                Run::Packed { left } => values.extend((0..left).map(|k| stream.packed(buf, k))),
            }
            stream.advance(run.left());
        }
        values
    }

    #[test]
    fn repeated_and_packed_runs() {
        // A packed group of 8 one-bit values (0, 1 × 7), then 760 ones repeated: one row of
        // repetition levels as pyarrow writes them.
        let buf = [0b11, 0b1111_1110, 0xf0, 0x0b, 1];
        let mut expected = vec![0];
        expected.extend([1; 767]);
        assert_eq!(decode(&buf, 1), expected);
        // Three-bit values 0..8 packed (from the low bits up: 000 001 0|10 011 100 1|01 110 111),
        // then 5 repeated three times.
        let buf = [0b11, 0b1000_1000, 0b1100_0110, 0b1111_1010, 6, 5];
        assert_eq!(decode(&buf, 3), [0, 1, 2, 3, 4, 5, 6, 7, 5, 5, 5]);
        // Wide dictionary indices: 17 bits, repeated in three bytes.
        assert_eq!(decode(&[4, 0x01, 0x00, 0x01], 17), [65537, 65537]);
    }

    #[test]
    fn truncated_streams_end_where_their_bytes_do() {
        // A header announcing two packed groups of 2-bit values with only one byte behind it.
        assert_eq!(decode(&[0b101, 0b11_10_01_00], 2), [0, 1, 2, 3]);
        // A repeated run without its value, and a header cut inside its varint.
        assert_eq!(decode(&[4], 8), Vec::<u32>::new());
        assert_eq!(decode(&[0x80], 1), Vec::<u32>::new());
        assert!(Hybrid::new(0, 1, 33).is_none());
    }
}
