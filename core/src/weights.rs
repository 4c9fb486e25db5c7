//! Fixed-size `f32` arrays for weights and recurrent state, with a flat serde encoding.
//!
//! serde implements arrays only up to 32 elements, and the generic big-array helpers are not
//! panic-free to decode. These types serialise as a tuple of their elements in row-major order,
//! with no length prefix (in postcard: 4 little-endian bytes per `f32`, nothing else), and
//! deserialise by filling their slots in order: no indexing, no panic.

use core::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

/// Serialises `values` (exactly `len` of them) as one flat tuple.
pub(crate) fn serialize_flat<'a, S: Serializer>(
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

/// Fills `slots` (exactly `len` of them) from one flat tuple.
pub(crate) fn deserialize_flat<'a, 'de, D: Deserializer<'de>>(
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

/// A [`DeserializeSeed`] that fills a mutable slice in place (used for nested state).
pub(crate) struct FillSlice<'a>(pub &'a mut [f32]);

impl<'de> DeserializeSeed<'de> for FillSlice<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        let len = self.0.len();
        deserialize_flat(deserializer, len, self.0.iter_mut())
    }
}

macro_rules! flat_serde {
    ($ty:ident < $(const $p:ident : usize),+ >) => {
        impl<$(const $p: usize),+> Serialize for $ty<$($p),+> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let flat = self.as_flat();
                serialize_flat(serializer, flat.len(), flat.iter())
            }
        }

        impl<'de, $(const $p: usize),+> Deserialize<'de> for $ty<$($p),+> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let mut out = Self::zeroed();
                FillSlice(out.as_flat_mut()).deserialize(deserializer)?;
                Ok(out)
            }
        }
    };
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

flat_serde!(Vector<const N: usize>);
flat_serde!(Matrix<const R: usize, const C: usize>);
flat_serde!(GateMatrix<const H: usize, const C: usize>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postcard_bytes_are_flat_little_endian_f32() {
        let m = Matrix([[1.0_f32, 2.0], [3.0, 4.0]]);
        let mut buf = [0u8; 32];
        let bytes = postcard::to_slice(&m, &mut buf).unwrap();
        let mut expected = [0u8; 16];
        for (chunk, v) in expected.chunks_mut(4).zip([1.0_f32, 2.0, 3.0, 4.0]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bytes, &expected);
    }

    #[test]
    fn large_arrays_round_trip() {
        let mut g = GateMatrix::<40, 3>::zeroed();
        for (i, x) in g.as_flat_mut().iter_mut().enumerate() {
            *x = i as f32 * 0.5;
        }
        let mut buf = [0u8; 4 * 4 * 40 * 3];
        let bytes = postcard::to_slice(&g, &mut buf).unwrap();
        assert_eq!(bytes.len(), 4 * 480);
        let back: GateMatrix<40, 3> = postcard::from_bytes(bytes).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.0[1][0][0], 3.0 * 40.0 * 0.5, "gate f starts at row H");
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let bytes = [0u8; 4 * 99];
        assert!(postcard::from_bytes::<Vector<100>>(&bytes).is_err());
    }
}
