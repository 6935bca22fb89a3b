//! JSON lines: a line-at-a-time reader (so `classify` can stream rows as a writer sends them)
//! and a small parser for one line, which accepts Python's `NaN` and `Infinity` tokens.

use std::io::{self, BufRead, Read};

use super::Embeddings;

/// Longest JSON line accepted: a 768-d embedding in full float64 precision is ~20 KB.
pub(crate) const MAX_LINE_BYTES: u64 = 16 << 20;

/// Nesting depth of JSON values skipped inside an object line.
const MAX_JSON_DEPTH: usize = 64;

/// Reads JSON lines one embedding at a time, numbering lines from 1.
pub(crate) struct JsonLines<R> {
    reader: R,
    line: Vec<u8>,
    line_number: usize,
}

impl<R: BufRead> JsonLines<R> {
    pub fn new(reader: R) -> Self {
        JsonLines {
            reader,
            line: Vec::new(),
            line_number: 0,
        }
    }

    /// The number of the line last read.
    pub fn line_number(&self) -> usize {
        self.line_number
    }

    /// Whether a line is already buffered; if not, the next read may wait for the writer.
    pub fn has_buffered_input(&self) -> bool
    where
        R: HasBuffer,
    {
        self.reader.has_buffer()
    }

    /// The next line's embedding; `None` at the end of the input.
    pub fn next_row(&mut self) -> Result<Option<Vec<f32>>, String> {
        self.line.clear();
        let read = (&mut self.reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut self.line)
            .map_err(|e| format!("cannot read line {}: {e}", self.line_number + 1))?;
        if read == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        let at = |message: String| format!("line {}: {message}", self.line_number);
        if self.line.len() as u64 > MAX_LINE_BYTES {
            return Err(at(format!("longer than {} MiB", MAX_LINE_BYTES >> 20)));
        }
        parse_line(&self.line).map(Some).map_err(at)
    }
}

/// The width of row `line`, which must be the width of every earlier row.
pub(crate) fn check_width(
    dim: &mut Option<usize>,
    width: usize,
    line: usize,
) -> Result<usize, String> {
    match *dim {
        Some(d) if d != width => Err(format!(
            "line {line} has {width} values; earlier lines have {d}"
        )),
        _ => Ok(*dim.insert(width)),
    }
}

/// A whole JSON lines input.
pub(crate) fn read_json_lines(reader: impl BufRead) -> Result<Embeddings, String> {
    let mut lines = JsonLines::new(reader);
    let mut values = Vec::new();
    let mut dim = None;
    while let Some(row) = lines.next_row()? {
        check_width(&mut dim, row.len(), lines.line_number())?;
        values.extend(row);
    }
    let dim = dim.ok_or("no embeddings (the input is empty)")?;
    Ok(Embeddings { values, dim })
}

/// Readers that can tell whether they hold unread bytes.
pub(crate) trait HasBuffer {
    fn has_buffer(&self) -> bool;
}

impl<R: Read> HasBuffer for io::BufReader<R> {
    fn has_buffer(&self) -> bool {
        !self.buffer().is_empty()
    }
}

impl<R: HasBuffer> HasBuffer for super::Sniffed<R> {
    fn has_buffer(&self) -> bool {
        let (head, rest) = self.get_ref();
        (head.position() as usize) < head.get_ref().len() || rest.has_buffer()
    }
}

/// One JSON line: `[numbers]` or `{"embedding": [numbers], ...}`. Besides JSON's numbers, the
/// tokens `NaN`, `Infinity` and `-Infinity` (what Python's json module writes) are read as the
/// values they name, and numbers beyond float32's range as ±infinity: they are non-finite
/// embeddings, refused later with their row and column, not syntax errors.
pub(crate) fn parse_line(line: &[u8]) -> Result<Vec<f32>, String> {
    let mut parser = Parser { text: line, at: 0 };
    parser.skip_space();
    let row =
        match parser.peek() {
            None => return Err("blank; every line must hold one embedding".into()),
            Some(b'[') => parser.numbers()?,
            Some(b'{') => parser.embedding_object()?,
            Some(b'0'..=b'9' | b'-' | b'+' | b'.') => return Err(
                "not JSON: CSV and other plain-text rows are not supported; give one JSON array \
                 of numbers a line (e.g. [0.12, -0.03, ...]) or a .npy file"
                    .into(),
            ),
            Some(_) => return Err(EXPECTED.into()),
        };
    parser.skip_space();
    if parser.peek().is_some() {
        return Err(format!(
            "unexpected characters after the embedding at byte {}",
            parser.at + 1
        ));
    }
    if row.is_empty() {
        return Err("the embedding is empty ([])".into());
    }
    Ok(row)
}

const EXPECTED: &str =
    "expected a JSON array of numbers, or an object with an \"embedding\" array of numbers";

/// A small JSON reader over one line: only what an embedding line needs, with NaN and Infinity.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        match self.peek() {
            Some(byte) if byte.is_ascii_graphic() => {
                format!("{what} at byte {}, found {:?}", self.at + 1, byte as char)
            }
            Some(_) => format!("{what} at byte {}", self.at + 1),
            None => format!("{what} at the end of the line"),
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        self.skip_space();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// `[n, n, ...]` as float32.
    fn numbers(&mut self) -> Result<Vec<f32>, String> {
        self.expect(b'[', EXPECTED)?;
        let mut values = Vec::new();
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(values);
        }
        loop {
            self.skip_space();
            values.push(self.number()?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(values);
                }
                _ => return Err(self.error("expected ',' or ']' in the array")),
            }
        }
    }

    /// A JSON number, or NaN / Infinity / -Infinity.
    fn number(&mut self) -> Result<f32, String> {
        let start = self.at;
        for (token, value) in [
            (&b"NaN"[..], f32::NAN),
            (b"Infinity", f32::INFINITY),
            (b"-Infinity", f32::NEG_INFINITY),
        ] {
            if self.text[start..].starts_with(token) {
                self.at += token.len();
                return Ok(value);
            }
        }
        // JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        let digits = |parser: &mut Self| {
            let from = parser.at;
            while let Some(b'0'..=b'9') = parser.peek() {
                parser.at += 1;
            }
            parser.at > from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        if !digits(self) || (self.text[int_start] == b'0' && self.at - int_start > 1) {
            self.at = start;
            return Err(self.error("expected a number"));
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(self.error("expected digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if !digits(self) {
                return Err(self.error("expected digits in the exponent"));
            }
        }
        let token = std::str::from_utf8(&self.text[start..self.at]).expect("ASCII digits");
        // Rust's parser rounds correctly and gives ±infinity past float32's range.
        Ok(token.parse().expect("a JSON number parses"))
    }

    /// `{"embedding": [...], ...}`: other members are skipped, whatever they hold.
    fn embedding_object(&mut self) -> Result<Vec<f32>, String> {
        self.expect(b'{', EXPECTED)?;
        let mut embedding = None;
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_space();
                let key = self.string()?;
                self.expect(b':', "expected ':' after the key")?;
                self.skip_space();
                if key == "embedding" {
                    if embedding.is_some() {
                        return Err("the object has two \"embedding\" members".into());
                    }
                    embedding = Some(self.numbers().map_err(|e| format!("\"embedding\": {e}"))?);
                } else {
                    self.skip_value(0)?;
                }
                self.skip_space();
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.error("expected ',' or '}' in the object")),
                }
            }
        }
        embedding.ok_or_else(|| "the object has no \"embedding\" array".into())
    }

    /// A string's decoded text (escapes resolved by serde_json, for keys that have them).
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        self.skip_string()?;
        let raw = &self.text[start..self.at];
        serde_json::from_slice(raw).map_err(|e| format!("bad string at byte {}: {e}", start + 1))
    }

    fn skip_string(&mut self) -> Result<(), String> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.at += 1;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(());
                }
                Some(b'\\') => self.at += 2,
                Some(_) => self.at += 1,
            }
        }
    }

    /// Any JSON value (and NaN / Infinity), checked for shape but not kept.
    fn skip_value(&mut self, depth: usize) -> Result<(), String> {
        self.skip_space();
        let (open, close) = match self.peek() {
            Some(b'"') => return self.skip_string(),
            Some(b'[') => (b'[', b']'),
            Some(b'{') => (b'{', b'}'),
            Some(b't') | Some(b'f') | Some(b'n') => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.text[self.at..].starts_with(word) {
                        self.at += word.len();
                        return Ok(());
                    }
                }
                return Err(self.error("expected a value"));
            }
            _ => return self.number().map(drop),
        };
        // `depth` arrays and objects hold this one: at most MAX_JSON_DEPTH in all, empty or not.
        if depth >= MAX_JSON_DEPTH {
            return Err(format!("values nested deeper than {MAX_JSON_DEPTH}"));
        }
        self.expect(open, "expected a value")?;
        self.skip_space();
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_space();
            if open == b'{' {
                self.skip_string()?;
                self.expect(b':', "expected ':' after the key")?;
            }
            self.skip_value(depth + 1)?;
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(byte) if byte == close => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or a closing bracket")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers_and_python_tokens() {
        let row = parse_line(b" [1, -0.5, 2e3, NaN, Infinity, -Infinity, 1e999] \n").unwrap();
        assert_eq!(row[..3], [1.0, -0.5, 2000.0]);
        assert!(row[3].is_nan());
        assert_eq!(row[4..], [f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY]);
    }

    #[test]
    fn objects_with_an_embedding_member() {
        let line = br#"{"id": "a\"b", "meta": {"x": [1, {"y": null}]}, "embedding": [0.25, 1]}"#;
        assert_eq!(parse_line(line).unwrap(), [0.25, 1.0]);
        assert!(parse_line(br#"{"vector": [1]}"#)
            .unwrap_err()
            .contains("no \"embedding\""));
        assert!(parse_line(br#"{"embedding": [1], "embedding": [2]}"#).is_err());
    }

    #[test]
    fn bad_lines_are_refused() {
        for (line, needle) in [
            (&b"\n"[..], "blank"),
            (b"  \r\n", "blank"),
            (b"[]", "empty"),
            (b"0.1,0.2,0.3", "CSV"),
            (b"[1, 2", "expected ',' or ']'"),
            (b"[1, 2] x", "unexpected characters"),
            (b"[01]", "expected a number"),
            (b"[1.]", "digits after"),
            (b"[inf]", "expected a number"),
            (b"[\"1\"]", "expected a number"),
            (b"\"text\"", "expected a JSON array"),
        ] {
            let error = parse_line(line).unwrap_err();
            assert!(error.contains(needle), "{line:?}: {error}");
        }
        // Arrays nested exactly MAX_JSON_DEPTH deep are read past, empty or not; one more is
        // refused.
        let nested = |levels: usize, inner: &str| {
            format!(
                "{{\"x\": {}{inner}{}, \"embedding\": [1]}}",
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        for inner in ["", "1"] {
            assert!(parse_line(nested(MAX_JSON_DEPTH, inner).as_bytes()).is_ok());
            for levels in [MAX_JSON_DEPTH + 1, 100] {
                let error = parse_line(nested(levels, inner).as_bytes()).unwrap_err();
                assert!(error.contains("nested deeper than 64"), "{error}");
            }
        }
    }
}
