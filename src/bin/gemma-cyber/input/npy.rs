//! `.npy` arrays: the header checked before anything it claims is allocated, then the data
//! converted to float32 a chunk at a time.

use std::io::{self, Read};

use super::Embeddings;

/// The first bytes of every `.npy` file.
pub(crate) const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Largest `.npy` header accepted; numpy writes a few hundred bytes.
const MAX_NPY_HEADER: u64 = 64 * 1024;

/// Deepest bracket nesting accepted in a `.npy` header. numpy's header is a flat dict holding a
/// tuple (`{'descr': '<f4', 'fortran_order': False, 'shape': (2, 768), }`, depth 2); a structured
/// dtype, refused later anyway, nests a few levels more.
const MAX_NPY_HEADER_NESTING: usize = 8;

/// Bytes converted per read while loading an array.
const CHUNK_BYTES: usize = 1 << 20;

/// Reads a 2-D `.npy` array from `reader`, converting to float32 as it goes, so the file's bytes
/// are never held next to the values. `data_len`, when known (a file), is the number of bytes after
/// the header, and must be exactly what the header's shape and dtype promise.
pub(crate) fn read_npy(reader: impl Read, data_len: Option<u64>) -> Result<Embeddings, String> {
    let (head, reader) = read_npy_header(reader)?;
    let data_len = data_len.map(|len| len.saturating_sub(head.len() as u64));
    let npy = npyz::NpyFile::new(io::Cursor::new(head).chain(reader)).map_err(not_valid_npy)?;
    let shape = npy.shape().to_vec();
    let [rows, dim] = shape[..] else {
        return Err(format!(
            "expected a 2-D array (rows × dim), found shape {shape:?}"
        ));
    };
    if npy.order() == npyz::Order::Fortran {
        return Err(
            "the array is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)".into(),
        );
    }
    let dtype = npy.dtype();
    let unsupported = || {
        format!(
            "dtype {} is not supported; expected float32, float16 or float64",
            dtype.descr()
        )
    };
    let npyz::DType::Plain(type_str) = &dtype else {
        return Err(unsupported());
    };
    let element = match (type_str.type_char(), type_str.size_field()) {
        (npyz::TypeChar::Float, 2) => Element::F16,
        (npyz::TypeChar::Float, 4) => Element::F32,
        (npyz::TypeChar::Float, 8) => Element::F64,
        _ => return Err(unsupported()),
    };
    let big_endian = type_str.endianness() == npyz::Endianness::Big;
    if dim == 0 {
        return Err(format!("the array is {rows} × 0: rows have no values"));
    }
    if rows == 0 {
        return Err(format!("the array is 0 × {dim}: no embeddings"));
    }
    let too_large = || format!("the header's shape {rows} × {dim} is too large");
    let count = rows.checked_mul(dim).ok_or_else(too_large)?;
    let bytes = count
        .checked_mul(element.size() as u64)
        .ok_or_else(too_large)?;
    if let Some(actual) = data_len
        && actual != bytes
    {
        return Err(format!(
                "the header promises {rows} × {dim} values ({bytes} bytes of data) but the file holds {actual}"
            ));
    }
    let count = usize::try_from(count).map_err(|_| too_large())?;
    let dim = usize::try_from(dim).map_err(|_| too_large())?;
    let mut reader = npy.into_inner();
    // Reserved fallibly: a file's length can be anything a sparse file claims (hundreds of GB that
    // take no disk), and that must be an error, not an abort. A stream's header may lie about its
    // length: there capacity grows, fallibly too, with the data actually read.
    let out_of_memory = || {
        format!(
            "not enough memory for the array's {rows} × {dim} values ({} bytes as float32)",
            (count as u64).saturating_mul(4)
        )
    };
    let mut values: Vec<f32> = Vec::new();
    values
        .try_reserve_exact(if data_len.is_some() {
            count
        } else {
            count.min(CHUNK_BYTES)
        })
        .map_err(|_| out_of_memory())?;
    let mut chunk = vec![0u8; CHUNK_BYTES];
    while values.len() < count {
        let want = ((count - values.len()) * element.size()).min(CHUNK_BYTES);
        let chunk = &mut chunk[..want];
        reader.read_exact(chunk).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                format!("the array data ends before its {count} values (header: {rows} × {dim})")
            }
            _ => format!("cannot read the array data: {e}"),
        })?;
        let more = want / element.size();
        values.try_reserve(more).map_err(|_| out_of_memory())?;
        element.extend(&mut values, chunk, big_endian);
    }
    if data_len.is_none()
        && reader
            .read(&mut [0u8])
            .map_err(|e| format!("cannot read: {e}"))?
            > 0
    {
        return Err(format!(
            "data continues after the {count} values the header promises ({rows} × {dim})"
        ));
    }
    Ok(Embeddings { values, dim })
}

/// npyz's error for a file it cannot parse, on one line: its header errors span several, with the
/// header text quoted in between.
pub(crate) fn not_valid_npy(error: io::Error) -> String {
    format!(
        "not a valid .npy file: {}",
        crate::terminal::one_line(&error.to_string())
    )
}

/// Reads the magic, version, length and header text of a `.npy` file, refusing what npyz must
/// not be given: a header longer than [`MAX_NPY_HEADER`] (a version 2 header may claim 4 GiB), or
/// one nested deeper than [`MAX_NPY_HEADER_NESTING`] (npyz's header parser takes time exponential
/// in the nesting, so a 6 KB file of brackets would hold it for hours). Returns those bytes, to be
/// handed to npyz in front of the rest of `reader`, and the reader.
pub(crate) fn read_npy_header<R: Read>(mut reader: R) -> Result<(Vec<u8>, R), String> {
    let short = |_| "not a valid .npy file: shorter than its header".to_owned();
    let mut prefix = [0u8; 12];
    reader.read_exact(&mut prefix[..10]).map_err(short)?;
    let (prefix_len, header_len) = match prefix[6] {
        1 => (10, u64::from(u16::from_le_bytes([prefix[8], prefix[9]]))),
        2 | 3 => {
            reader.read_exact(&mut prefix[10..12]).map_err(short)?;
            let len = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes"));
            (12, u64::from(len))
        }
        version => return Err(format!("not a valid .npy file: format version {version}")),
    };
    if header_len > MAX_NPY_HEADER {
        return Err(format!(
            "not a valid .npy file: its header claims {header_len} bytes; the limit is {MAX_NPY_HEADER}"
        ));
    }
    let mut head = prefix[..prefix_len].to_vec();
    head.resize(prefix_len + header_len as usize, 0);
    reader.read_exact(&mut head[prefix_len..]).map_err(short)?;
    let nesting = nesting_depth(&head[prefix_len..]);
    if nesting > MAX_NPY_HEADER_NESTING {
        return Err(format!(
            "not a valid .npy file: its header nests brackets {nesting} deep; the limit is {MAX_NPY_HEADER_NESTING}"
        ));
    }
    Ok((head, reader))
}

/// The deepest nesting of brackets in `header`, quotes ignored: a bracket inside a quoted name
/// counts too, which only makes the bound stricter for headers this reader refuses anyway.
fn nesting_depth(header: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0;
    for byte in header {
        match byte {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[derive(Clone, Copy)]
enum Element {
    F16,
    F32,
    F64,
}

impl Element {
    fn size(self) -> usize {
        match self {
            Element::F16 => 2,
            Element::F32 => 4,
            Element::F64 => 8,
        }
    }

    /// Appends `bytes` (whole elements) as float32. A float64 beyond float32's range becomes
    /// ±infinity, which the non-finite check then reports with its row and column.
    fn extend(self, values: &mut Vec<f32>, bytes: &[u8], big_endian: bool) {
        match self {
            Element::F16 => values.extend(bytes.chunks_exact(2).map(|b| {
                let b = [b[0], b[1]];
                let bits = if big_endian {
                    u16::from_be_bytes(b)
                } else {
                    u16::from_le_bytes(b)
                };
                f32::from(half::f16::from_bits(bits))
            })),
            Element::F32 => values.extend(bytes.chunks_exact(4).map(|b| {
                let b = b.try_into().expect("4 bytes");
                if big_endian {
                    f32::from_be_bytes(b)
                } else {
                    f32::from_le_bytes(b)
                }
            })),
            Element::F64 => values.extend(bytes.chunks_exact(8).map(|b| {
                let b = b.try_into().expect("8 bytes");
                let value = if big_endian {
                    f64::from_be_bytes(b)
                } else {
                    f64::from_le_bytes(b)
                };
                value as f32
            })),
        }
    }
}

/// A version 1 `.npy` file with `header` as its header text (padded as numpy pads it) and `data`
/// after it: for tests, whose headers may lie.
#[cfg(test)]
pub(crate) fn npy_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.to_owned();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::npy_file as npy;

    fn read(bytes: &[u8], known_length: bool) -> Result<Embeddings, String> {
        read_npy(bytes, known_length.then_some(bytes.len() as u64))
    }

    #[test]
    fn npy_dtypes_and_byte_orders() {
        let values = [1.5f64, -2.0, 0.25, 8.0];
        let f64le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f32be: Vec<u8> = values
            .iter()
            .flat_map(|v| (*v as f32).to_be_bytes())
            .collect();
        for (descr, data) in [("<f8", f64le), (">f4", f32be)] {
            let header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2, 2), }}");
            for known in [true, false] {
                let read = read(&npy(&header, &data), known).unwrap();
                assert_eq!(read.dim, 2);
                assert_eq!(read.values, [1.5, -2.0, 0.25, 8.0]);
            }
        }
    }

    #[test]
    fn npy_shapes_that_lie_are_refused() {
        let data = vec![0u8; 4 * 768 * 4];
        for (shape, needle) in [
            ("(72057594037927940, 768)", "too large"),
            ("(5, 768)", "promises"),
            ("(5, 0)", "rows have no values"),
            ("(0, 768)", "no embeddings"),
        ] {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            let error = read(&npy(&header, &data), true).err().unwrap();
            assert!(error.contains(needle), "{shape}: {error}");
        }
        // Without a known length, a stream that ends early is truncated, not padded.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 768), }";
        let error = read(&npy(header, &data), false).err().unwrap();
        assert!(error.contains("ends before"), "{error}");
    }

    #[test]
    fn deeply_nested_headers_are_refused_before_npyz_parses_them() {
        // npyz's parser is exponential in the nesting: 28 levels took hours before this check.
        let nested = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), 'x': {}{}, }}",
            "[".repeat(28),
            "]".repeat(28)
        );
        for known in [true, false] {
            let error = read(&npy(&nested, &[0; 4]), known).err().unwrap();
            assert!(error.contains("nests brackets 29 deep"), "{error}");
        }
        // numpy's own header, and a little nesting beyond it, still get to npyz.
        let plain = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }";
        assert_eq!(read(&npy(plain, &[0; 4]), true).unwrap().values, [0.0]);
        let extra = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), 'x': [[[]]], }";
        assert!(read_npy_header(&npy(extra, &[0; 4])[..]).is_ok());
    }

    #[test]
    fn an_array_too_large_to_reserve_is_an_error_not_an_abort() {
        // 2^40 × 768 float32 values, 3 PiB: more than any address space holds. The file's length
        // is only claimed, as a sparse file's would be.
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 768), }";
        let bytes = npy(header, &[]);
        let claimed = bytes.len() as u64 + (1u64 << 40) * 768 * 4;
        let error = read_npy(&bytes[..], Some(claimed)).err().unwrap();
        assert!(error.contains("not enough memory"), "{error}");
    }
}
