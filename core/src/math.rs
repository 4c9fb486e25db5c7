//! Scalar math shared by the features, the policy and the actions.
//!
//! Everything goes through `libm` or basic operations ([`exp_basic`]), so the host and a
//! Cortex-M target run the same routines and produce the same bits.

use core::f32::consts::FRAC_1_SQRT_2;

/// The small constant δ of the spec: added inside logarithms, the floor of cosine denominators,
/// and the clip of probabilities before a logit.
pub const DELTA: f32 = 1e-8;

/// `logit(1 − δ) = ln((1 − δ) / δ)`: the largest magnitude a logit may take.
///
/// In `f32`, `1 − 1e-8` rounds to 1, so this is written out rather than computed.
pub const LOGIT_MAX: f32 = 18.420_681;

/// From this |z| on, the exact `logit(Φ(z))` exceeds [`LOGIT_MAX`] (`logit(Φ(6)) ≈ 20.7`), so the
/// clamped result is known without evaluating it.
const LOGIT_PHI_Z_SATURATED: f32 = 6.0;

/// `e^x` within a few ulp for `x` in [−87, 88], and `e^−87` or `e^88` beyond (never 0, ∞ or
/// NaN, also for a NaN `x`), from additions, multiplications and bit operations only: it
/// inlines and vectorises across the LSTM's gates, where libm's `expf` and `tanhf` calls were a
/// quarter of a host decision, and gives the same bits on every target.
///
/// `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2` (Cody–Waite: `ln 2` in a part exact for every `n` used
/// and a small rest), `e^r` by its Taylor series to `r⁷` (truncation error below 6e-9), and
/// `2^n` written into the exponent bits.
#[inline]
pub fn exp_basic(x: f32) -> f32 {
    // `clamp(x, -87.0, 88.0)` with one comparison per bound (`clamp` also allows NaN bounds):
    // `x >= -87.0` is false for a NaN `x` as well.
    let x = if x >= -87.0 { x } else { -87.0 };
    let x = if x <= 88.0 { x } else { 88.0 };
    let t = x * core::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    exp_reduced((x - n * LN2_HI) - n * LN2_LO, t)
}

/// Adding 1.5·2^23 rounds to an integer, which then sits in the low bits of the sum.
const ROUND: f32 = 12_582_912.0;
/// `ln 2 = LN2_HI + LN2_LO`, the first part exact in `n·LN2_HI` for |n| < 2^9 (0x3f317200).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^r · 2^n` for a reduced argument `|r| ≤ ln 2 / 2` and `t = n + ROUND` with `n` in
/// [−126, 127]: the Taylor series of `e^r` to `r⁷`, and `2^n` written into the exponent bits.
#[inline(always)]
fn exp_reduced(r: f32, t: f32) -> f32 {
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23;
    p * f32::from_bits(exponent)
}

/// `σ(a)·tanh(b)` for the LSTM, through [`exp_basic`] and one division:
/// `copysign(1 − e^−2|b|, b) / ((1 + e^−a)(1 + e^−2|b|))` (σ and tanh each as a quotient would
/// take two; divisions were the slowest part of the host's gate activations). The denominator
/// is at most `2(1 + e^88) < f32::MAX` ([`exp_basic`] saturates), so it never overflows.
#[inline]
pub fn sigmoid_tanh(a: f32, b: f32) -> f32 {
    let e = exp_basic(-2.0 * b.abs());
    (1.0 - e).copysign(b) / ((1.0 + exp_basic(-a)) * (1.0 + e))
}

/// `x·σ(a) = x / (1 + e^−a)` for the LSTM's forget gate, through [`exp_basic`], without
/// branches. [`exp_basic`] never overflows, so neither does the sum.
#[inline]
pub fn times_sigmoid(x: f32, a: f32) -> f32 {
    x / (1.0 + exp_basic(-a))
}

/// `√x` within one ulp (the `f32` nearest to it for three inputs in four, otherwise the one
/// next to that) for a positive normal `x`: a first guess from the halved exponent bits,
/// within 3.5 %, and three Newton steps of one division each. On thumbv7em, where a division
/// is one instruction, that is some twelve instructions against libm's fifty for the correctly
/// rounded `sqrtf`; the CDF features take one per scale of every series, some 90 a decision.
/// ∞ gives NaN.
pub fn sqrt_within_ulp(x: f32) -> f32 {
    let mut s = f32::from_bits((x.to_bits() >> 1) + 0x1fbb_4f2e);
    for _ in 0..3 {
        s = 0.5 * (s + x / s);
    }
    s
}

/// Standard normal CDF `Φ(x)`, within 7 ulp of the exact value for |x| ≤ 10 (tested).
///
/// For 1.75 ≤ |x| ≤ 10 through [`phi_lower_tail`]; elsewhere `½·erfc(−x/√2)` with libm's
/// `erfcf`, written with `erfc` rather than `½(1 + erf(x/√2))`: the latter cancels
/// catastrophically in the lower tail (it returns 0 at x = −8, where Φ ≈ 6.2e-16).
pub fn phi(x: f32) -> f32 {
    let a = x.abs();
    // A NaN `x` fails this test too.
    if (PHI_TAIL_FROM..=PHI_TAIL_TO).contains(&a) {
        let lower = phi_lower_tail(a);
        return if x < 0.0 { lower } else { 1.0 - lower };
    }
    0.5 * libm::erfcf(-x * FRAC_1_SQRT_2)
}

/// The range of |x| where [`phi`] takes [`phi_lower_tail`]: from where libm's `erfcf` turns to
/// its exponential branch (|x/√2| ≥ 1.25) to the clip of the CDF features.
const PHI_TAIL_FROM: f32 = 1.75;
const PHI_TAIL_TO: f32 = 10.0;

/// `Φ(−a)` for `a` in [1.75, 10] as `t·e^(−a²/2 + Q(u))`, `t = 1/(1 + 0.3a)`, `u = U1·t + U0`
/// (t's range mapped onto [−1, 1]), `Q` a degree-6 polynomial fitted to `ln(Φ(−a)/t) + a²/2`
/// (mpmath `chebyfit`: 3.4e-8 with the coefficients rounded to `f32`). `−a²/2` is formed
/// exactly, as `hi + lo` with `a_hi²` exact (`a_hi` keeps 12 bits of `a`'s significand), and
/// enters the reduction of the exponential in two parts, so its size (up to 50) costs no
/// accuracy.
///
/// Within 6.5 ulp of the exact `Φ(−a)`, where `½·erfcf(a/√2)` is off by up to 85 ulp here
/// (`a/√2` is rounded before the exponential magnifies its error). About 60 instructions on
/// thumbv7em against some 130 (libm's `erfcf` takes two `expf` in this range); the CDF
/// features evaluate a quarter of their Φ here.
fn phi_lower_tail(a: f32) -> f32 {
    const P: f32 = 0.3;
    const U1: f32 = 4.929_293;
    const U0: f32 = -2.232_323_2;
    const Q: [f32; 7] = [
        1.899_861_7e-5,
        -9.230_355e-6,
        -5.922_188e-4,
        -1.330_704_1e-3,
        2.005_776_2e-2,
        0.291_758_48,
        -1.574_056_7,
    ];
    let t = 1.0 / (1.0 + P * a);
    let u = U1 * t + U0;
    let [mut q, rest @ ..] = Q;
    for c in rest {
        q = q * u + c;
    }
    let a_hi = f32::from_bits(a.to_bits() & 0xffff_f000);
    let a_lo = a - a_hi;
    let hi = -0.5 * (a_hi * a_hi);
    let lo = q - 0.5 * a_lo * (a + a_hi);
    // As in `exp_basic`, with `hi + lo` in the place of `x`: n is in [−75, −2].
    let t_n = (hi + lo) * core::f32::consts::LOG2_E + ROUND;
    let n = t_n - ROUND;
    t * exp_reduced(((hi - n * LN2_HI) + lo) - n * LN2_LO, t_n)
}

/// `logit(Φ(z))`, exact in both tails, clamped to ±[`LOGIT_MAX`]; 0 for NaN.
///
/// Computed as `ln Φ(z) − ln Φ(−z)` with `erfc` on both sides, so it never forms `1 − Φ(z)`
/// (which is 0 in `f32` once z ≳ 5.4). The features pass `cos·√numel`, which can be ±1000.
pub fn logit_phi(z: f32) -> f32 {
    if z.is_nan() {
        return 0.0;
    }
    if z.abs() >= LOGIT_PHI_Z_SATURATED {
        return LOGIT_MAX.copysign(z);
    }
    clamp(
        libm::logf(phi(z)) - libm::logf(phi(-z)),
        -LOGIT_MAX,
        LOGIT_MAX,
    )
}

/// `logit(p) = ln(p / (1 − p))` with p clipped to [δ, 1 − δ] (the result to ±[`LOGIT_MAX`]);
/// 0 for NaN.
pub fn logit(p: f32) -> f32 {
    if p.is_nan() {
        return 0.0;
    }
    logit_unclipped(p.clamp(DELTA, 1.0)).clamp(-LOGIT_MAX, LOGIT_MAX)
}

/// Unclipped `logit(p) = ln p − ln(1 − p)`: exact for every `p` in (0, 1), ±∞ at 0 and 1, NaN
/// outside. The `clip_frac` action uses it so that values below δ keep their logit.
pub fn logit_unclipped(p: f32) -> f32 {
    libm::logf(p) - libm::log1pf(-p)
}

/// Logistic sigmoid `1 / (1 + e^−x)`, evaluated so that neither side overflows. Always libm
/// (the actions use it); the forward pass uses [`times_sigmoid`] and [`sigmoid_tanh`].
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

/// `ln(x + δ)`: the spec's safe logarithm of a norm. Finite for every finite `x ≥ 0`.
pub fn ln_delta(x: f32) -> f32 {
    libm::logf(x + DELTA)
}

/// `Σ ln xᵢ` for a stream of values at about the cost of one multiply each, instead of a
/// `logf` each: the runtime's `Σ ln(|u| + δ)` reduction runs over every parameter element, where
/// per-element `logf` dominated the reduction cost.
///
/// Each positive normal `x = 2^e · m` (m in [1, 2)) adds `e` to an integer sum and multiplies
/// `m` into a running product, which is renormalised (its exponent moved to the integer sum)
/// every [`Self::RENORMALISE_EVERY`] values, before it can overflow. Anything else (0,
/// subnormals, negatives, ∞, NaN) goes through `logf`, so the result follows `logf`'s rules:
/// −∞ for a 0, NaN for a NaN or a negative, +∞ for +∞.
#[derive(Clone, Copy, Debug)]
pub struct LnSum {
    mantissas: f32,
    exponents: i64,
    pending: u32,
    unusual: f32,
}

impl Default for LnSum {
    fn default() -> Self {
        Self::new()
    }
}

impl LnSum {
    /// Values between renormalisations: a product of 64 mantissas stays below 2^64.
    pub const RENORMALISE_EVERY: u32 = 64;

    /// The empty sum.
    pub const fn new() -> Self {
        LnSum {
            mantissas: 1.0,
            exponents: 0,
            pending: 0,
            unusual: 0.0,
        }
    }

    /// Adds `ln x`.
    #[inline]
    pub fn push(&mut self, x: f32) {
        let bits = x.to_bits();
        if (MIN_POSITIVE_BITS..INFINITY_BITS).contains(&bits) {
            let (e, m) = split_exponent(bits);
            self.exponents += i64::from(e);
            self.mantissas *= m;
            self.pending += 1;
            if self.pending == Self::RENORMALISE_EVERY {
                let (e, m) = split_exponent(self.mantissas.to_bits());
                self.exponents += i64::from(e);
                self.mantissas = m;
                self.pending = 0;
            }
        } else {
            self.unusual += libm::logf(x);
        }
    }

    /// The sum so far.
    pub fn value(&self) -> f32 {
        let (e, m) = split_exponent(self.mantissas.to_bits());
        (self.exponents + i64::from(e)) as f32 * core::f32::consts::LN_2
            + libm::logf(m)
            + self.unusual
    }
}

/// [`LnSum`] over `L` interleaved lanes (value `i` of a chunk goes to lane `i`), so that the
/// products of a long stream vectorise. Only for values that are all positive normal numbers
/// (the sum of `ln(|u| + δ)` for a finite `u`): [`Self::value`] is `None` when one was not, and
/// the caller sums that stream with [`LnSum`] instead.
#[derive(Clone, Copy, Debug)]
pub struct LnSumLanes<const L: usize> {
    mantissas: [f32; L],
    exponent: i64,
    /// The smallest and largest bit patterns as `i32`, to find values that are not positive
    /// normal numbers afterwards (integer min and max vectorise; a branch would not).
    smallest_bits: [i32; L],
    largest_bits: [i32; L],
}

impl<const L: usize> Default for LnSumLanes<L> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const L: usize> LnSumLanes<L> {
    /// The empty sum.
    pub const fn new() -> Self {
        LnSumLanes {
            mantissas: [1.0; L],
            exponent: 0,
            smallest_bits: [i32::MAX; L],
            largest_bits: [i32::MIN; L],
        }
    }

    /// Adds `ln x` for every value of every chunk. Works through groups of
    /// [`LnSum::RENORMALISE_EVERY`] chunks in local variables, so they stay in registers.
    pub fn push_chunks(&mut self, chunks: impl Iterator<Item = [f32; L]>) {
        let mut chunks = chunks.peekable();
        while chunks.peek().is_some() {
            let mut mantissas = self.mantissas;
            let mut exponents = [0_i32; L];
            let (mut smallest, mut largest) = (self.smallest_bits, self.largest_bits);
            for x in chunks.by_ref().take(LnSum::RENORMALISE_EVERY as usize) {
                let lanes = exponents
                    .iter_mut()
                    .zip(&mut mantissas)
                    .zip(&mut smallest)
                    .zip(&mut largest);
                for ((((exponent, mantissa), smallest), largest), x) in lanes.zip(x) {
                    let bits = x.to_bits();
                    let (e, m) = split_exponent(bits);
                    *exponent += e;
                    *mantissa *= m;
                    // Negative values (and NaNs with the sign bit) are negative as i32.
                    *smallest = (*smallest).min(bits as i32);
                    *largest = (*largest).max(bits as i32);
                }
            }
            for (mantissa, e) in mantissas.iter_mut().zip(exponents) {
                let (me, mm) = split_exponent(mantissa.to_bits());
                self.exponent += i64::from(e) + i64::from(me);
                *mantissa = mm;
            }
            (self.mantissas, self.smallest_bits, self.largest_bits) =
                (mantissas, smallest, largest);
        }
    }

    /// The sum so far, with the lanes added in order; `None` if a value was not a positive
    /// normal number.
    pub fn value(&self) -> Option<f32> {
        let lowest = self.smallest_bits.iter().min().copied().unwrap_or(i32::MAX);
        let highest = self.largest_bits.iter().max().copied().unwrap_or(i32::MIN);
        if lowest < MIN_POSITIVE_BITS as i32 || highest >= INFINITY_BITS as i32 {
            return None;
        }
        // Each lane's mantissa is in [1, 2): their product stays far from overflow for L ≤ 64.
        let (e, m) = split_exponent(self.mantissas.iter().product::<f32>().to_bits());
        Some((self.exponent + i64::from(e)) as f32 * core::f32::consts::LN_2 + libm::logf(m))
    }
}

/// Bits of the smallest positive normal `f32` and of +∞: the range [`LnSum`] splits itself.
const MIN_POSITIVE_BITS: u32 = 0x0080_0000;
const INFINITY_BITS: u32 = 0x7f80_0000;

/// A positive normal `f32`'s bits as (unbiased exponent e, mantissa m in [1, 2)), x = 2^e · m.
fn split_exponent(bits: u32) -> (i32, f32) {
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    (e, f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000))
}

/// `x` limited to `[lo, hi]` for bounds only known at run time: unlike `f32::clamp`, which
/// asserts `lo <= hi` (a panic path the decision code must not have), it never panics. A NaN `x`
/// becomes `lo`.
pub fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    // `x.max(lo).min(hi)` written as comparisons: on thumbv7em `f32::max` and `f32::min` are
    // calls into libm (the input normalisation made 332 of them per decision).
    let above = if x < lo || x.is_nan() { lo } else { x };
    if above > hi || above.is_nan() {
        hi
    } else {
        above
    }
}

/// `x.max(0.0)` (0 also for NaN) as one comparison: on thumbv7em `f32::max` is a call into libm.
#[inline]
pub fn non_negative(x: f32) -> f32 {
    if x > 0.0 { x } else { 0.0 }
}

/// `x` if it is finite, otherwise 0. Features use it so bad input feeds zeros.
pub fn finite_or_zero(x: f32) -> f32 {
    if x.is_finite() { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel_err(a: f32, b: f64) -> f64 {
        ((a as f64 - b) / b).abs()
    }

    #[test]
    fn ln_sum_matches_the_f64_sum_of_logs() {
        // Log-uniform values over 1e-8..1e4 (the range of |u| + δ), 100k of them, then a handful
        // of short streams that end between renormalisations.
        let mut rng = crate::policy::Rng::new(7);
        for n in [1, 5, 63, 64, 65, 1000, 100_000] {
            let mut sum = LnSum::new();
            let mut exact = 0f64;
            for _ in 0..n {
                let x = libm::expf(-18.42 + 27.63 * rng.next_f32());
                sum.push(x);
                exact += (x as f64).ln();
            }
            let err = (sum.value() as f64 - exact).abs();
            assert!(
                err <= 1e-6 * exact.abs().max(1.0),
                "n {n}: {} vs {exact}",
                sum.value()
            );
        }
    }

    #[test]
    fn ln_sum_follows_logf_on_unusual_values() {
        let of = |xs: &[f32]| {
            let mut s = LnSum::new();
            xs.iter().for_each(|&x| s.push(x));
            s.value()
        };
        assert_eq!(of(&[]), 0.0);
        assert_eq!(of(&[2.0, 0.0]), f32::NEG_INFINITY);
        assert_eq!(of(&[2.0, f32::INFINITY]), f32::INFINITY);
        assert!(of(&[2.0, f32::NAN]).is_nan());
        assert!(of(&[-1.0]).is_nan());
        let subnormal = f32::MIN_POSITIVE / 8.0;
        assert!(rel_err(of(&[subnormal, 4.0]), (subnormal as f64 * 4.0).ln()) < 1e-6);
    }

    #[test]
    fn phi_matches_reference_values() {
        // Reference values of the standard normal CDF (to 16 digits).
        assert_eq!(phi(0.0), 0.5);
        assert!(rel_err(phi(1.0), 0.841_344_746_068_542_9) < 1e-6);
        assert!(rel_err(phi(-1.96), 0.024_997_895_148_220_43) < 1e-5);
        assert!(rel_err(phi(-8.0), 6.220_960_574_271_785e-16) < 1e-5);
    }

    #[test]
    fn phi_is_within_7_ulp_of_the_exact_cdf() {
        // Every 97th `f32` from 1e-4 to 10, both signs, against Φ in f64 (libm's `erfc`).
        let mut worst = (0f64, 0f32);
        let mut a = 1e-4_f32;
        while a <= 10.0 {
            for x in [-a, a] {
                let exact = 0.5 * libm::erfc(-(x as f64) * core::f64::consts::FRAC_1_SQRT_2);
                let ulp = f64::from(f32::EPSILON) * 2f64.powi(exact.log2().floor() as i32);
                let err = (phi(x) as f64 - exact).abs() / ulp;
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            a = f32::from_bits(a.to_bits() + 97);
        }
        assert!(worst.0 <= 7.0, "{} ulp at {}", worst.0, worst.1);
    }

    #[test]
    fn one_plus_erf_form_fails_in_the_tail_where_phi_does_not() {
        let naive = 0.5 * (1.0 + libm::erff(-8.0 * FRAC_1_SQRT_2));
        assert_eq!(naive, 0.0, "the cancelling form is why phi uses erfc");
        assert!(phi(-8.0) > 0.0);
    }

    #[test]
    fn logit_phi_is_exact_in_the_middle_and_clamped_in_the_tails() {
        // logit(Φ(1)) = ln(0.8413447 / 0.1586553).
        let expected = (0.841_344_746_068_542_9_f64 / 0.158_655_253_931_457_05).ln();
        assert!((logit_phi(1.0) as f64 - expected).abs() < 1e-5);
        // logit(Φ(−5)): Φ(−5) = 2.866515718791939e-7.
        let p = 2.866_515_718_791_939e-7_f64;
        assert!(rel_err(logit_phi(-5.0), (p / (1.0 - p)).ln()) < 1e-5);
        assert_eq!(logit_phi(1000.0), LOGIT_MAX);
        assert_eq!(logit_phi(-1000.0), -LOGIT_MAX);
        assert_eq!(logit_phi(f32::INFINITY), LOGIT_MAX);
        assert_eq!(logit_phi(f32::NAN), 0.0);
        assert_eq!(logit_phi(0.0), 0.0);
        // Just below the shortcut the formula is already clamped: the shortcut changes nothing.
        assert_eq!(logit_phi(5.999), LOGIT_MAX);
        assert_eq!(logit_phi(-5.999), -LOGIT_MAX);
        assert!(logit_phi(5.5) < LOGIT_MAX);
    }

    #[test]
    fn logit_and_sigmoid_are_inverse_and_clamped() {
        assert_eq!(logit(0.5), 0.0);
        assert!((logit(0.8) - 4.0_f32.ln()).abs() < 1e-6);
        assert!((sigmoid(logit(0.3)) - 0.3).abs() < 1e-6);
        assert_eq!(logit(0.0), -LOGIT_MAX);
        assert_eq!(logit(-3.0), -LOGIT_MAX);
        assert_eq!(logit(1.0), LOGIT_MAX);
        assert_eq!(logit(f32::NAN), 0.0);
        assert!((LOGIT_MAX as f64 - ((1.0 - 1e-8) / 1e-8_f64).ln()).abs() < 2e-6);
        assert!((logit_unclipped(1e-10) - 1e-10_f32.ln()).abs() < 1e-5);
        assert!((sigmoid(2.0) - 0.880_797_1).abs() < 1e-6);
        assert!((sigmoid(-2.0) - 0.119_202_92).abs() < 1e-6);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn the_gate_activations_follow_the_exact_functions() {
        // Worst errors over x in [−10, 10], absolute: about the rounding of the result.
        let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
        let mut worst = 0f64;
        for i in -400..=400 {
            let x = i as f32 / 40.0;
            let x64 = x as f64;
            // Against a second argument that sweeps the other way, so the products vary.
            let y = 3.0 - x / 2.0;
            let y64 = y as f64;
            let exact = sigmoid(x64) * y64.tanh();
            worst = worst.max((sigmoid_tanh(x, y) as f64 - exact).abs());
            let exact = y64 * sigmoid(x64);
            worst = worst.max((times_sigmoid(y, x) as f64 - exact).abs());
        }
        assert!(worst <= 3e-7, "worst error {worst}");
    }

    #[test]
    fn exp_basic_is_within_a_few_ulp_and_saturates() {
        let mut worst = 0f64;
        let mut x = -87.0_f32;
        while x <= 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_basic(x) as f64 - exact) / exact).abs());
            x += 0.013;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_basic(0.0), 1.0);
        assert_eq!(exp_basic(-1000.0), exp_basic(-87.0));
        assert_eq!(exp_basic(1000.0), exp_basic(88.0));
        assert!(exp_basic(88.0).is_finite() && exp_basic(-87.0) > 0.0);
        assert_eq!(exp_basic(f32::NAN), exp_basic(-87.0));
        // Saturated gates give the limits, not NaN or an overflow.
        assert_eq!(times_sigmoid(2.5, 1000.0), 2.5);
        assert_eq!(times_sigmoid(2.5, -1000.0), 2.5 / (1.0 + exp_basic(88.0)));
        assert_eq!(sigmoid_tanh(1000.0, -1000.0), -1.0);
        assert!(sigmoid_tanh(-1000.0, 1000.0) > 0.0 && sigmoid_tanh(-1000.0, 1000.0) < 1e-37);
    }

    #[test]
    fn sqrt_within_ulp_is_within_one_ulp_of_the_correctly_rounded_root() {
        // Scaling x by 4 scales every step by 2 exactly, so two binades, [0.5, 2), cover every
        // positive normal x; every 7th significand of them, and the ends of the range.
        let ulps =
            |x: f32| (sqrt_within_ulp(x).to_bits() as i64 - libm::sqrtf(x).to_bits() as i64).abs();
        let mut worst = 0;
        for exponent in [126u32, 127] {
            for m in (0..1u32 << 23).step_by(7) {
                worst = worst.max(ulps(f32::from_bits(exponent << 23 | m)));
            }
        }
        assert!(worst <= 1, "{worst} ulp");
        for x in [f32::MIN_POSITIVE, 1e-12, 1.0, 4.0, 3e38, f32::MAX] {
            assert!(ulps(x) <= 1, "{x}");
        }
    }

    #[test]
    fn clamp_never_panics() {
        assert_eq!(clamp(5.0, -1.0, 1.0), 1.0);
        assert_eq!(clamp(-5.0, -1.0, 1.0), -1.0);
        assert_eq!(clamp(f32::NAN, -1.0, 1.0), -1.0);
        // Inverted or NaN bounds (a corrupt clip) give a number instead of a panic.
        assert_eq!(clamp(0.5, 1.0, -1.0), -1.0);
        assert_eq!(clamp(0.5, f32::NAN, f32::NAN), 0.5);
    }

    #[test]
    fn ln_delta_and_finite_or_zero() {
        assert!((ln_delta(0.0) - 1e-8_f32.ln()).abs() < 1e-5);
        assert!((ln_delta(2.0) - 2.0_f32.ln()).abs() < 1e-7);
        assert!(ln_delta(-1.0).is_nan());
        assert_eq!(finite_or_zero(f32::NAN), 0.0);
        assert_eq!(finite_or_zero(f32::NEG_INFINITY), 0.0);
        assert_eq!(finite_or_zero(-2.5), -2.5);
    }
}
