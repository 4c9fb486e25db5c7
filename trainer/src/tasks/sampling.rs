//! Small helpers for drawing task configurations and data from a seeded RNG.

use rand::Rng;
use rand::seq::SliceRandom;

/// An integer log-uniform in `[lo, hi]` (both inclusive, `1 <= lo <= hi`).
pub(crate) fn log_uniform_int(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    let x = log_uniform(rng, lo as f64, hi as f64 + 1.0);
    (x.floor() as u64).clamp(lo, hi)
}

/// A real log-uniform in `[lo, hi)` (`0 < lo < hi`).
pub(crate) fn log_uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    (rng.gen_range(lo.ln()..hi.ln())).exp()
}

/// A uniformly chosen element of a non-empty slice.
pub(crate) fn choose<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("choose from a non-empty slice")
}

/// A standard normal draw (Box-Muller; one of the pair is discarded for simplicity).
pub(crate) fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>(); // (0, 1], so ln is finite
    let u2: f64 = rng.r#gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// A uniformly shuffled `0..n`.
pub(crate) fn permutation(rng: &mut impl Rng, n: usize) -> Vec<i64> {
    let mut p: Vec<i64> = (0..n as i64).collect();
    p.shuffle(rng);
    p
}
