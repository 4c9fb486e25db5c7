//! The idx format of (Fashion-)MNIST, unsigned-byte variant: magic `0x0000_08NN` (type 0x08 =
//! u8, NN = number of dimensions), NN big-endian u32 sizes, then the values in row-major order.

use crate::error::Problem;

const UBYTE: u32 = 0x08;

/// Magic number of an unsigned-byte idx array with `dims` dimensions.
pub(crate) fn magic(dims: usize) -> u32 {
    (UBYTE << 8) | (dims as u32 & 0xff)
}

/// Decodes an unsigned-byte idx array with exactly `DIMS` dimensions: its sizes and values.
pub(crate) fn decode<const DIMS: usize>(bytes: &[u8]) -> Result<([usize; DIMS], &[u8]), Problem> {
    let header_len = 4 * (1 + DIMS);
    let head = bytes.get(..header_len).ok_or(Problem::WrongSize {
        expected: header_len as u64,
        actual: bytes.len() as u64,
    })?;
    let word = |i: usize| {
        let mut be = [0; 4];
        be.copy_from_slice(&head[4 * i..4 * i + 4]);
        u32::from_be_bytes(be)
    };
    let expected_magic = magic(DIMS);
    if word(0) != expected_magic {
        return Err(Problem::BadMagic {
            expected: expected_magic,
            found: word(0),
        });
    }
    let mut sizes = [0; DIMS];
    for (d, size) in sizes.iter_mut().enumerate() {
        *size = word(d + 1) as usize;
    }
    let values = &bytes[header_len..];
    // u128: the product of up to three u32 sizes fits, so a lying header cannot wrap around.
    let expected = sizes.iter().map(|&s| s as u128).product::<u128>();
    if expected != values.len() as u128 {
        return Err(Problem::WrongSize {
            expected: u64::try_from(header_len as u128 + expected).unwrap_or(u64::MAX),
            actual: bytes.len() as u64,
        });
    }
    Ok((sizes, values))
}

/// Encodes `values` as an unsigned-byte idx array of the given sizes; `None` if a size does not
/// fit the format's u32 or the sizes do not multiply to `values.len()`.
pub(crate) fn encode(sizes: &[usize], values: &[u8]) -> Option<Vec<u8>> {
    let count = sizes.iter().try_fold(1usize, |n, &s| n.checked_mul(s))?;
    if count != values.len() {
        return None;
    }
    let mut out = Vec::with_capacity(4 * (1 + sizes.len()) + values.len());
    out.extend_from_slice(&magic(sizes.len()).to_be_bytes());
    for &s in sizes {
        out.extend_from_slice(&u32::try_from(s).ok()?.to_be_bytes());
    }
    out.extend_from_slice(values);
    Some(out)
}
