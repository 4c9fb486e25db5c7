//! Fixed-size `f32` arrays for the policy weights, and a flat serde encoding for `f32` state.
//!
//! The array types give each tensor its shape. Vectors and [`Matrix`] keep row-major order, the
//! order of the policy file and of the trainer's export. The weights of the matrix-vector
//! products ([`PackedMatrix`], [`GateMatrix`]) are stored in panels instead: the rows are cut
//! into groups of [`PANEL`], and each group is stored column by column, so that the kernel
//! ([`matvec`]) reads one contiguous stream and updates [`PANEL`] outputs per input with
//! vector instructions. Every output is still the plain in-order sum `Σ_k w[r][k]·x[k]`, so the
//! bits do not depend on the panel width or the target. The file keeps row-major order; the
//! conversion happens element by element at decode and encode time ([`Packed`]).
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

/// Rows per panel of the packed weight layout: enough independent sums to hide the latency of
/// the additions, few enough to stay in registers. 32 outputs are eight SSE registers on
/// x86-64 (with 16, four dependent chains of additions, a Paper decision took 54 µs against
/// 42 µs); the Cortex-M4F has 32 single-precision registers in all, so it takes 16. The bits do
/// not depend on it.
#[cfg(not(target_arch = "arm"))]
pub const PANEL: usize = 32;
/// Rows per panel of the packed weight layout (see the other targets' definition).
#[cfg(target_arch = "arm")]
pub const PANEL: usize = 16;

/// Where element `(r, c)` of a packed `rows × cols` matrix lives: rows are cut into panels of
/// [`PANEL`] (the last one narrower when `rows` is not a multiple), each panel column-major.
const fn packed_index(rows: usize, cols: usize, r: usize, c: usize) -> usize {
    let start = r - r % PANEL;
    let width = if rows - start < PANEL {
        rows - start
    } else {
        PANEL
    };
    start * cols + c * width + (r - start)
}

/// `out[r] = Σ_k w[r][k]·x[k]` over a packed matrix `w` of `out.len()` rows and `C` columns,
/// each sum in order of `k` from 0. A full panel keeps its [`PANEL`] sums in registers while it
/// streams through its weights, and so does a last panel of half that width (the 40 logits are
/// panels of 32 and 8 rows); a last panel of any other width sums in `out`.
pub fn matvec<const C: usize>(w: &[[f32; C]], x: &[f32; C], out: &mut [f32]) {
    let (out_panels, out_tail) = out.as_chunks_mut::<PANEL>();
    let (w_panels, w_tail) = w.split_at(usize::min(out_panels.len() * PANEL, w.len()));
    for (o, panel) in out_panels
        .iter_mut()
        .zip(w_panels.as_flattened().chunks_exact(PANEL * C.max(1)))
    {
        *o = panel_sums(panel.as_chunks().0, x);
    }
    let tail = w_tail.as_flattened();
    if let Ok(o) = <&mut [f32; PANEL / 2]>::try_from(&mut *out_tail) {
        *o = panel_sums(tail.as_chunks().0, x);
        return;
    }
    out_tail.fill(0.0);
    for (column, &xk) in tail.chunks_exact(out_tail.len().max(1)).zip(x) {
        for (a, &wk) in out_tail.iter_mut().zip(column) {
            *a += wk * xk;
        }
    }
}

/// The `W` sums of one panel, given column by column.
#[inline(always)]
fn panel_sums<const W: usize>(columns: &[[f32; W]], x: &[f32]) -> [f32; W] {
    let mut acc = [0.0; W];
    let mut add = |column: &[f32; W], xk: f32| {
        for (a, &wk) in acc.iter_mut().zip(column) {
            *a += wk * xk;
        }
    };
    let (columns4, columns_rest) = columns.as_chunks::<4>();
    let (x4, x_rest) = x.as_chunks::<4>();
    for (columns, xs) in columns4.iter().zip(x4) {
        for (column, &xk) in columns.iter().zip(xs) {
            add(column, xk);
        }
    }
    for (column, &xk) in columns_rest.iter().zip(x_rest) {
        add(column, xk);
    }
    acc
}

/// Access in row-major (file) order to a matrix stored in panels: `ROWS` rows of `C` columns
/// held as `ROWS` arrays of `C` numbers, each panel of [`PANEL`] rows column by column.
pub trait Packed<const C: usize> {
    /// The storage, `ROWS × C` numbers in panel order.
    fn storage(&self) -> &[[f32; C]];

    /// The storage, mutably.
    fn storage_mut(&mut self) -> &mut [[f32; C]];

    /// Element `(r, c)`; `None` out of range.
    fn get(&self, r: usize, c: usize) -> Option<f32> {
        let rows = self.storage().len();
        if r >= rows || c >= C {
            return None;
        }
        self.storage()
            .as_flattened()
            .get(packed_index(rows, C, r, c))
            .copied()
    }

    /// Sets element `(r, c)`; out of range does nothing.
    fn set(&mut self, r: usize, c: usize, value: f32) {
        let rows = self.storage().len();
        if r < rows
            && c < C
            && let Some(slot) = self
                .storage_mut()
                .as_flattened_mut()
                .get_mut(packed_index(rows, C, r, c))
        {
            *slot = value;
        }
    }

    /// Calls `f` with every row in order.
    fn for_each_row(&self, mut f: impl FnMut(&[f32])) {
        let mut row = [0.0; C];
        for r in 0..self.storage().len() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.get(r, c).unwrap_or_default();
            }
            f(&row);
        }
    }

    /// Fills the matrix from `values` in row-major order (stopping early if they run out).
    fn fill_row_major(&mut self, values: &mut impl Iterator<Item = f32>) {
        for r in 0..self.storage().len() {
            for c in 0..C {
                let Some(v) = values.next() else { return };
                self.set(r, c, v);
            }
        }
    }

    /// Rearranges the storage into row-major order, calls `f` with it, and packs it again.
    /// Works panel by panel through one panel of scratch (`PANEL × C` numbers on the stack).
    fn with_row_major(&mut self, f: impl FnOnce(&mut [f32])) {
        transpose_panels(self.storage_mut(), true);
        f(self.storage_mut().as_flattened_mut());
        transpose_panels(self.storage_mut(), false);
    }

    /// `out = W·x` ([`matvec`]).
    fn matvec_into(&self, x: &[f32; C], out: &mut [f32]) {
        matvec(self.storage(), x, out);
    }
}

/// Turns every panel of `rows` from panel order into row-major order (`to_row_major`) or back.
fn transpose_panels<const C: usize>(rows: &mut [[f32; C]], to_row_major: bool) {
    for panel in rows.chunks_mut(PANEL) {
        let width = panel.len();
        let mut scratch = [[0.0; C]; PANEL];
        let flat = panel.as_flattened_mut();
        for (t, row) in scratch.iter_mut().take(width).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                let from = if to_row_major {
                    c * width + t
                } else {
                    t * C + c
                };
                *v = flat.get(from).copied().unwrap_or_default();
            }
        }
        for (t, row) in scratch.iter().take(width).enumerate() {
            for (c, v) in row.iter().enumerate() {
                let to = if to_row_major {
                    t * C + c
                } else {
                    c * width + t
                };
                if let Some(slot) = flat.get_mut(to) {
                    *slot = *v;
                }
            }
        }
    }
}

/// A weight matrix of `R` outputs by `C` inputs (a torch `nn.Linear.weight`), stored in panels
/// for [`matvec`]; read and write it in row-major order through [`Packed`].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix<const R: usize, const C: usize>([[f32; C]; R]);

impl<const R: usize, const C: usize> PackedMatrix<R, C> {
    /// All zeros.
    pub const fn zeroed() -> Self {
        Self([[0.0; C]; R])
    }
}

impl<const R: usize, const C: usize> Packed<C> for PackedMatrix<R, C> {
    fn storage(&self) -> &[[f32; C]] {
        &self.0
    }

    fn storage_mut(&mut self) -> &mut [[f32; C]] {
        &mut self.0
    }
}

/// The four stacked gate blocks of an LSTM weight, a `4H × C` matrix in gate order i, f, g, o,
/// stored in panels like [`PackedMatrix`] so that one product yields all four gates.
#[derive(Clone, Debug, PartialEq)]
pub struct GateMatrix<const H: usize, const C: usize>([[[f32; C]; H]; 4]);

impl<const H: usize, const C: usize> GateMatrix<H, C> {
    /// All zeros.
    pub const fn zeroed() -> Self {
        Self([[[0.0; C]; H]; 4])
    }
}

impl<const H: usize, const C: usize> Packed<C> for GateMatrix<H, C> {
    fn storage(&self) -> &[[f32; C]] {
        self.0.as_flattened()
    }

    fn storage_mut(&mut self) -> &mut [[f32; C]] {
        self.0.as_flattened_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, inexact values, so any misplaced element or reordered sum changes the bits.
    fn value(r: usize, c: usize) -> f32 {
        libm::sinf((r * 31 + c * 7) as f32 + 0.3) * 1.7
    }

    /// Rows that fill no panel, exactly one, several with and without a narrower last one.
    fn check<const R: usize, const C: usize>() {
        let mut m = PackedMatrix::<R, C>::zeroed();
        let mut values = (0..R).flat_map(|r| (0..C).map(move |c| value(r, c)));
        m.fill_row_major(&mut values);
        let x: [f32; C] = core::array::from_fn(|c| libm::cosf(c as f32) * 0.9);
        let mut out = [f32::NAN; R];
        m.matvec_into(&x, &mut out);
        for (r, o) in out.iter().enumerate() {
            assert_eq!(m.get(r, C - 1), Some(value(r, C - 1)));
            // The plain in-order sum, bit for bit.
            let mut expected = 0.0_f32;
            for (c, xc) in x.iter().enumerate() {
                expected += value(r, c) * xc;
            }
            assert_eq!(o.to_bits(), expected.to_bits(), "{R}x{C} row {r}");
        }
        let mut row_index = 0;
        m.for_each_row(|row| {
            assert!(
                row.iter()
                    .enumerate()
                    .all(|(c, &v)| v == value(row_index, c))
            );
            row_index += 1;
        });
        assert_eq!(row_index, R);
        let before = m.clone();
        m.with_row_major(|flat| {
            assert!(
                flat.iter()
                    .enumerate()
                    .all(|(i, &v)| v == value(i / C, i % C))
            );
            flat[C] = 42.0; // element (1, 0)
        });
        assert_eq!(m.get(1, 0), Some(42.0));
        m.set(1, 0, value(1, 0));
        assert_eq!(m, before);
        assert_eq!((m.get(R, 0), m.get(0, C)), (None, None));
    }

    #[test]
    fn packed_matrices_keep_row_major_access_and_in_order_sums() {
        check::<3, 5>();
        check::<16, 7>();
        check::<40, 33>();
        check::<48, 166>();
    }

    #[test]
    fn gate_matrices_are_one_4h_row_matrix() {
        let mut g = GateMatrix::<3, 2>::zeroed();
        let mut values = (0..24).map(|i| i as f32);
        g.fill_row_major(&mut values);
        // Gate f starts at row H = 3 of the 4H × C matrix.
        assert_eq!((g.get(3, 0), g.get(3, 1)), (Some(6.0), Some(7.0)));
        let mut out = [0.0; 12];
        g.matvec_into(&[1.0, 10.0], &mut out);
        assert_eq!(out[3], 76.0);
        assert_eq!(Vector::<3>::splat(2.0).as_flat(), &[2.0; 3]);
        assert_eq!(
            Matrix([[1.0_f32, 2.0], [3.0, 4.0]]).as_flat(),
            &[1.0, 2.0, 3.0, 4.0]
        );
    }
}
