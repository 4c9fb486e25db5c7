//! Fixed-size `f32` arrays for the policy weights, and a flat serde encoding for `f32` state.
//!
//! The array types give each weight tensor its shape and a row-major flat view (`as_flat`), which
//! is how the policy file and the trainer's export address them.
//!
//! serde implements arrays only up to 32 elements, and the generic big-array helpers are not
//! panic-free to decode. [`serialize_flat`] and [`deserialize_flat`] write and read any number of
//! `f32` as one tuple with no length prefix (in postcard: 4 little-endian bytes each, nothing
//! else), filling slots in order: no indexing, no panic. The LSTM state uses them.

use core::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};

/// Serialises `values` (exactly `len` of them) as one flat tuple of `f32`.
pub fn serialize_flat<'a, S: Serializer>(
    serializer: S,
    len: usize,
    values: impl Iterator<Item = &'a f32>,
) -> Result<S::Ok, S::Error> {
    let mut tuple = serializer.serialize_tuple(len)?;
    for v in values {
        tuple.serialize_element(v)?;
    }
    tuple.end()
}

/// Fills `slots` (exactly `len` of them) from one flat tuple of `f32`; a short input is an
/// error, never a panic.
pub fn deserialize_flat<'a, 'de, D: Deserializer<'de>>(
    deserializer: D,
    len: usize,
    slots: impl Iterator<Item = &'a mut f32>,
) -> Result<(), D::Error> {
    deserializer.deserialize_tuple(len, FlatVisitor { slots, len })
}

struct FlatVisitor<I> {
    slots: I,
    len: usize,
}

impl<'a, 'de, I: Iterator<Item = &'a mut f32>> Visitor<'de> for FlatVisitor<I> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} f32 values", self.len)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for (i, slot) in self.slots.enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &"a fixed-size f32 array"))?;
        }
        Ok(())
    }
}

/// A vector of `N` values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vector<const N: usize>(pub [f32; N]);

impl<const N: usize> Vector<N> {
    /// All zeros.
    pub const fn zeroed() -> Self {
        Self([0.0; N])
    }

    /// Every element set to `x`.
    pub const fn splat(x: f32) -> Self {
        Self([x; N])
    }

    /// The elements.
    pub fn as_flat(&self) -> &[f32] {
        &self.0
    }

    /// The elements, mutably.
    pub fn as_flat_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

/// A row-major `R × C` matrix, `[out][in]` like a torch `nn.Linear.weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<const R: usize, const C: usize>(pub [[f32; C]; R]);

impl<const R: usize, const C: usize> Matrix<R, C> {
    /// All zeros.
    pub const fn zeroed() -> Self {
        Self([[0.0; C]; R])
    }

    /// Every element set to `x`.
    pub const fn splat(x: f32) -> Self {
        Self([[x; C]; R])
    }

    /// The elements in row-major order.
    pub fn as_flat(&self) -> &[f32] {
        self.0.as_flattened()
    }

    /// The elements in row-major order, mutably.
    pub fn as_flat_mut(&mut self) -> &mut [f32] {
        self.0.as_flattened_mut()
    }
}

/// The four stacked gate blocks `[4H][C]` of an LSTM weight, in gate order i, f, g, o (the
/// same bytes as a row-major `4H × C` matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct GateMatrix<const H: usize, const C: usize>(pub [[[f32; C]; H]; 4]);

impl<const H: usize, const C: usize> GateMatrix<H, C> {
    /// All zeros.
    pub const fn zeroed() -> Self {
        Self([[[0.0; C]; H]; 4])
    }

    /// The elements in row-major `4H × C` order.
    pub fn as_flat(&self) -> &[f32] {
        self.0.as_flattened().as_flattened()
    }

    /// The elements in row-major `4H × C` order, mutably.
    pub fn as_flat_mut(&mut self) -> &mut [f32] {
        self.0.as_flattened_mut().as_flattened_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_views_are_row_major() {
        let m = Matrix([[1.0_f32, 2.0], [3.0, 4.0]]);
        assert_eq!(m.as_flat(), &[1.0, 2.0, 3.0, 4.0]);
        let mut g = GateMatrix::<3, 2>::zeroed();
        for (i, x) in g.as_flat_mut().iter_mut().enumerate() {
            *x = i as f32;
        }
        // Gate f starts at row H = 3 of the 4H × C matrix.
        assert_eq!(g.0[1][0], [6.0, 7.0]);
        assert_eq!(Vector::<3>::splat(2.0).as_flat(), &[2.0; 3]);
    }
}
