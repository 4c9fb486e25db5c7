//! smartcore's `.xy` dataset format: little-endian u64 number of features, u64 number of
//! samples, then the samples' features as f32 (row-major) and one f32 target per sample.

use crate::error::Problem;

const HEADER_LEN: usize = 16;

/// A decoded `.xy` file.
pub(crate) struct Xy {
    pub features: usize,
    pub samples: usize,
    /// `samples × features`, row-major.
    pub x: Vec<f32>,
    pub y: Vec<f32>,
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Xy, Problem> {
    let wrong_size = |expected: u64| Problem::WrongSize {
        expected,
        actual: bytes.len() as u64,
    };
    let head = bytes
        .get(..HEADER_LEN)
        .ok_or_else(|| wrong_size(HEADER_LEN as u64))?;
    let word = |i: usize| {
        let mut le = [0; 8];
        le.copy_from_slice(&head[8 * i..8 * i + 8]);
        u64::from_le_bytes(le)
    };
    let (features, samples) = (word(0), word(1));
    // Checked: a lying header must not wrap around into a plausible size.
    let expected = samples
        .checked_mul(features)
        .and_then(|x| x.checked_add(samples))
        .and_then(|values| values.checked_mul(4))
        .and_then(|len| len.checked_add(HEADER_LEN as u64));
    if expected != Some(bytes.len() as u64) {
        return Err(wrong_size(expected.unwrap_or(u64::MAX)));
    }
    // The size check bounds both counts by the file length, so they fit in usize.
    let (features, samples) = (features as usize, samples as usize);
    let x_end = HEADER_LEN + 4 * samples * features;
    Ok(Xy {
        features,
        samples,
        x: f32s(&bytes[HEADER_LEN..x_end]),
        y: f32s(&bytes[x_end..]),
    })
}

pub(crate) fn encode(features: usize, x: &[f32], y: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 * (x.len() + y.len()));
    out.extend_from_slice(&(features as u64).to_le_bytes());
    out.extend_from_slice(&(y.len() as u64).to_le_bytes());
    for v in x.iter().chain(y) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
