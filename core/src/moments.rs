//! Running statistics: bias-corrected EMAs and the progress-weighted moments behind the CDF
//! features (spec §3).

use serde::{Deserialize, Serialize};

use crate::math::{exp_basic, non_negative, phi, sqrt_within_ulp};

/// One step of a bias-corrected exponential moving average whose decay may change each step.
///
/// `raw ← (1 − ombeta)·raw + ombeta·x` and `weight ← (1 − ombeta)·weight + ombeta`, so that
/// `raw / weight` is the average of the samples so far with their EMA weights renormalised. Both
/// start at 0. Keeping the correction as state (rather than `1 − β^t`) keeps it exact when β
/// changes mid-run.
pub fn ema_update(raw: &mut f32, weight: &mut f32, ombeta: f32, x: f32) {
    *raw = (1.0 - ombeta) * *raw + ombeta * x;
    *weight = (1.0 - ombeta) * *weight + ombeta;
}

/// Bias-corrected exponential moving averages of x and x², giving a mean and a variance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EmaMoments {
    mean_raw: f32,
    square_raw: f32,
    weight: f32,
}

impl EmaMoments {
    /// Adds `x` with `ombeta` = 1 − decay.
    pub fn update(&mut self, ombeta: f32, x: f32) {
        let mut weight = self.weight;
        ema_update(&mut self.mean_raw, &mut weight, ombeta, x);
        ema_update(&mut self.square_raw, &mut self.weight, ombeta, x * x);
    }

    /// Bias-corrected mean; 0 before the first sample.
    pub fn mean(&self) -> f32 {
        if self.weight > 0.0 {
            self.mean_raw / self.weight
        } else {
            0.0
        }
    }

    /// Bias-corrected variance `E[x²] − E[x]²`, floored at 0; 0 before the first sample.
    pub fn variance(&self) -> f32 {
        if self.weight > 0.0 {
            let mean = self.mean();
            non_negative(self.square_raw / self.weight - mean * mean)
        } else {
            0.0
        }
    }
}

/// Weighted Welford moments of a scalar series (spec §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightedMoments {
    weight: f32,
    mean: f32,
    sum_sq: f32,
}

impl WeightedMoments {
    /// Adds `x` with weight `a`: `W += a; d = x − μ; μ += a·d/W; S += a·d·(x − μ)`. A non-finite
    /// sample or a weight that is not positive and finite is ignored.
    pub fn add(&mut self, x: f32, a: f32) {
        // The test of `a` as two float comparisons (`a > 0` excludes NaN, `<= MAX` excludes ∞):
        // written with `is_finite` or `< ∞`, LLVM turns it into some twenty integer instructions
        // on thumbv7em, for every scale of every series.
        if !(x.is_finite() && a > 0.0 && a <= f32::MAX) {
            return;
        }
        self.weight += a;
        let d = x - self.mean;
        // `a / W` first: it is exactly 1 for the first sample, so μ starts at x exactly.
        self.mean += d * (a / self.weight);
        self.sum_sq += a * d * (x - self.mean);
    }

    /// Whether the total weight is one a run can reach: finite and not negative (the weights of
    /// [`progress_weights`] sum to at most 20 over a run). The mean and the sum of squares may
    /// overflow on extreme samples, and [`WeightedMoments::cdf`] answers 0.5 for them then, so
    /// any value of theirs is one a run can produce.
    pub fn is_valid(&self) -> bool {
        self.weight.is_finite() && self.weight >= 0.0
    }

    /// Total weight so far.
    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// Weighted mean; 0 before the first sample.
    pub fn mean(&self) -> f32 {
        self.mean
    }

    /// Weighted variance `S / W`; 0 before the first sample.
    pub fn variance(&self) -> f32 {
        if self.weight > 0.0 {
            non_negative(self.sum_sq / self.weight)
        } else {
            0.0
        }
    }

    /// `Φ(z)` with `z = (x − μ) / sqrt(var + 1e-12)` clipped to [−10, 10] (the root within one
    /// ulp, [`sqrt_within_ulp`]); 0.5 before the first sample, for a non-finite `x`, and when
    /// overflowed moments make `z` undefined.
    pub fn cdf(&self, x: f32) -> f32 {
        if self.weight <= 0.0 || !x.is_finite() {
            return 0.5;
        }
        let z = (x - self.mean) / sqrt_within_ulp(self.variance() + 1e-12);
        if z.is_nan() {
            return 0.5;
        }
        phi(z.clamp(-10.0, 10.0))
    }
}

/// The time scales `w` of the CDF features.
pub const CDF_SCALES: [f32; 5] = [1.25, 2.5, 5.0, 10.0, 20.0];

/// Number of CDF features per series.
pub const NUM_CDF: usize = CDF_SCALES.len();

/// `ln w` for each `w` of [`CDF_SCALES`], rounded to `f32`.
const LN_CDF_SCALES: [f32; NUM_CDF] = [
    0.223_143_55,
    0.916_290_76,
    1.609_438,
    core::f32::consts::LN_10,
    2.995_732_3,
];

/// The weight `a = w^p · Δp` of a sample at progress `p`, `Δp` after the previous decision, under
/// each time scale `w` of [`CDF_SCALES`] (the first decision has `Δp = p`). Larger `w` weight
/// recent samples more. Computed once per decision and shared by every series.
///
/// `w^p` is `e^(p·ln w)` through [`exp_basic`], within 2.6 ulp of the exact power for `p` in
/// [0, 1] (tested): libm's `powf` took some 1,050 instructions of a Cortex-M4F decision for
/// these five, `exp_basic` about 30 each.
pub fn progress_weights(p: f32, dp: f32) -> [f32; NUM_CDF] {
    LN_CDF_SCALES.map(|ln_w| exp_basic(p * ln_w) * dp)
}

/// The five progress-weighted moments of one series, one per time scale in [`CDF_SCALES`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdfFeatures {
    scales: [WeightedMoments; NUM_CDF],
}

impl Default for CdfFeatures {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl CdfFeatures {
    /// No samples yet (a `const`, so that a whole controller can be built at compile time).
    pub const EMPTY: Self = Self {
        scales: [WeightedMoments {
            weight: 0.0,
            mean: 0.0,
            sum_sq: 0.0,
        }; NUM_CDF],
    };

    /// The five CDF features of `x` against the moments so far (without adding `x`).
    pub fn transform(&self, x: f32) -> [f32; NUM_CDF] {
        self.scales.map(|m| m.cdf(x))
    }

    /// Adds `x` with the per-scale weights from [`progress_weights`].
    pub fn add(&mut self, x: f32, weights: &[f32; NUM_CDF]) {
        for (m, &a) in self.scales.iter_mut().zip(weights) {
            m.add(x, a);
        }
    }

    /// [`CdfFeatures::transform`], then [`CdfFeatures::add`]: the spec's "computed against the
    /// moments before x is added".
    pub fn observe(&mut self, x: f32, weights: &[f32; NUM_CDF]) -> [f32; NUM_CDF] {
        let out = self.transform(x);
        self.add(x, weights);
        out
    }

    /// The moments of each time scale.
    pub fn moments(&self) -> &[WeightedMoments; NUM_CDF] {
        &self.scales
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_bias_corrected_from_the_first_sample() {
        let mut m = EmaMoments::default();
        assert_eq!((m.mean(), m.variance()), (0.0, 0.0));
        m.update(0.1, 4.0);
        assert!((m.mean() - 4.0).abs() < 1e-6, "one sample is its own mean");
        assert!(m.variance() < 1e-5);
        m.update(0.1, 2.0);
        // Weights 0.09 and 0.1 (normalised by 0.19): mean = (0.36 + 0.2) / 0.19.
        let mean = (0.09 * 4.0 + 0.1 * 2.0) / 0.19;
        let second = (0.09 * 16.0 + 0.1 * 4.0) / 0.19;
        assert!((m.mean() - mean).abs() < 1e-5);
        assert!((m.variance() - (second - mean * mean)).abs() < 1e-4);
    }

    #[test]
    fn ema_update_keeps_the_correction_exact_when_the_decay_changes() {
        let (mut raw, mut w) = (0.0, 0.0);
        ema_update(&mut raw, &mut w, 0.5, 2.0);
        ema_update(&mut raw, &mut w, 0.25, 6.0);
        // raw = 0.75·1 + 0.25·6 = 2.25, weight = 0.75·0.5 + 0.25 = 0.625.
        assert_eq!((raw, w), (2.25, 0.625));
        assert_eq!(raw / w, 3.6);
    }

    #[test]
    fn weighted_welford_matches_the_direct_formulas() {
        let xs = [1.0_f32, 3.0, -2.0, 0.5];
        let ws = [0.5_f32, 1.0, 2.0, 0.25];
        let mut m = WeightedMoments::default();
        for (x, w) in xs.iter().zip(ws) {
            m.add(*x, w);
        }
        let total: f32 = ws.iter().sum();
        let mean = xs.iter().zip(ws).map(|(x, w)| x * w).sum::<f32>() / total;
        let var = xs
            .iter()
            .zip(ws)
            .map(|(x, w)| w * (x - mean) * (x - mean))
            .sum::<f32>()
            / total;
        assert!((m.weight() - total).abs() < 1e-6);
        assert!((m.mean() - mean).abs() < 1e-6);
        assert!((m.variance() - var).abs() < 1e-5);
    }

    #[test]
    fn cdf_is_one_half_when_empty_and_against_previous_moments() {
        let mut c = CdfFeatures::default();
        assert_eq!(c.observe(3.0, &progress_weights(0.1, 0.1)), [0.5; NUM_CDF]);
        // One sample: μ = 3, var = 0, so any other x saturates at z = ±10.
        let f = c.transform(4.0);
        assert!(f.iter().all(|&v| v == crate::math::phi(10.0)));
        assert_eq!(c.transform(3.0), [0.5; NUM_CDF]);
    }

    #[test]
    fn cdf_weights_follow_progress_and_scale() {
        // Samples 0 at p = 0.5 (Δp = 0.5) and 2 at p = 1 (Δp = 0.5).
        let mut c = CdfFeatures::default();
        c.add(0.0, &progress_weights(0.5, 0.5));
        c.add(2.0, &progress_weights(1.0, 0.5));
        for (m, w) in c.moments().iter().zip(CDF_SCALES) {
            let (a0, a1) = (w.sqrt() * 0.5, w * 0.5);
            let mean = 2.0 * a1 / (a0 + a1);
            let var = (a0 * mean * mean + a1 * (2.0 - mean) * (2.0 - mean)) / (a0 + a1);
            assert!((m.mean() - mean).abs() < 1e-6);
            assert!((m.variance() - var).abs() < 1e-5);
        }
        // Hand-computed for w = 1.25: a0 = 0.559017, a1 = 0.625, μ = 1.055728,
        // var = 0.996894; x = 1 gives z = −0.055815 and Φ(z) = 0.477745.
        let f = c.transform(1.0);
        assert!((f[0] - 0.477_745).abs() < 1e-5, "{}", f[0]);
        // Larger scales weight the recent sample (2) more, so x = 1 ranks lower.
        assert!(f.windows(2).all(|p| p[0] > p[1]));
    }

    #[test]
    fn progress_weights_follow_the_exact_powers() {
        for (&ln_w, w) in LN_CDF_SCALES.iter().zip(CDF_SCALES) {
            assert_eq!(ln_w, libm::logf(w));
        }
        let mut worst = 0f64;
        for i in 0..=1000 {
            let p = i as f32 / 1000.0;
            for (a, w) in progress_weights(p, 1.0).iter().zip(CDF_SCALES) {
                let exact = (w as f64).powf(p as f64);
                // In units of the exact value's ulp.
                let ulp = f64::from(f32::EPSILON) * 2f64.powi(exact.log2().floor() as i32);
                worst = worst.max((*a as f64 - exact).abs() / ulp);
            }
        }
        assert!(worst <= 3.0, "{worst} ulp");
    }

    #[test]
    fn bad_samples_and_weights_are_ignored() {
        let mut m = WeightedMoments::default();
        m.add(f32::NAN, 1.0);
        m.add(1.0, 0.0);
        m.add(1.0, f32::INFINITY);
        m.add(1.0, -1.0);
        assert_eq!(m, WeightedMoments::default());
        m.add(2.0, 1.0);
        assert_eq!(m.cdf(f32::NAN), 0.5);
    }
}
