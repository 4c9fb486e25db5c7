//! Spec §6: the reward. A baseline run (the inner optimizer at its unperturbed initial
//! hyperparameters, held constant) is summarised by a fitted power-law curve
//! L(t) = c + b·(t+1)^α; a decision's potential is the log of how many baseline steps the run's
//! eval loss is worth, relative to the steps it took; rewards are potential differences, so the
//! undiscounted return of an episode is its final log-speedup.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Log-spaced eval points of the baseline run (the loss at initialisation comes on top).
pub const BASELINE_EVAL_POINTS: usize = 14;
/// Potentials are clipped to [−POTENTIAL_CLIP, POTENTIAL_CLIP]; a non-finite loss scores the minimum.
pub const POTENTIAL_CLIP: f64 = 3.0;
/// Extrapolation limit: the baseline is never credited with more than this many times T steps.
const EXTRAPOLATION_LIMIT: f64 = 2.0;
/// The α grid: exponents −ALPHA_MAX..−ALPHA_MIN, log-spaced, wide enough for slow power laws and
/// for the near-exponential decay of noisy quadratics.
const ALPHA_MIN: f64 = 1e-3;
const ALPHA_MAX: f64 = 4.0;
const ALPHA_GRID: usize = 400;

/// Steps after which the baseline run records its eval loss: 0 (initialisation) and up to 14
/// distinct log-spaced steps in [1, T] ending at T (fewer when T < 14 makes them collide).
pub fn baseline_eval_steps(total_steps: u64) -> Vec<u64> {
    let t = total_steps.max(1) as f64;
    let mut steps = vec![0];
    for i in 1..=BASELINE_EVAL_POINTS {
        let s = t.powf(i as f64 / BASELINE_EVAL_POINTS as f64).round() as u64;
        if s > *steps.last().unwrap() {
            steps.push(s);
        }
    }
    steps
}

/// The fitted baseline curve L(t) = c + b·(t+1)^α of one task configuration.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BaselineCurve {
    /// Asymptotic loss, ≥ 0.
    pub c: f64,
    /// Scale, > 0.
    pub b: f64,
    /// Exponent, < 0.
    pub alpha: f64,
    /// The episode length T the curve is used for (sets the extrapolation limit 2T).
    pub total_steps: u64,
}

impl BaselineCurve {
    /// Fits the curve to `(step, eval loss)` points by a grid over α with linear least squares
    /// for (c, b) under c ≥ 0, b > 0. Non-finite points are ignored; the fit fails when fewer than
    /// three finite points remain or no exponent gives a decreasing curve (a baseline that does
    /// not learn cannot define a speedup; the caller should sample another task).
    pub fn fit(points: &[(u64, f64)], total_steps: u64) -> Result<Self> {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|(_, l)| l.is_finite())
            .map(|&(t, l)| (t as f64 + 1.0, l))
            .collect();
        if pts.len() < 3 {
            return Err(Error::Reward(format!(
                "baseline curve fit needs at least 3 finite eval losses, got {} of {}",
                pts.len(),
                points.len()
            )));
        }
        let mut best: Option<(f64, Self)> = None;
        for i in 0..ALPHA_GRID {
            let frac = i as f64 / (ALPHA_GRID - 1) as f64;
            let alpha = -(ALPHA_MIN * (ALPHA_MAX / ALPHA_MIN).powf(frac));
            let Some((c, b)) = least_squares(&pts, alpha) else {
                continue;
            };
            let sse: f64 = pts
                .iter()
                .map(|&(t1, l)| (l - c - b * t1.powf(alpha)).powi(2))
                .sum();
            if best.as_ref().is_none_or(|(e, _)| sse < *e) {
                best = Some((
                    sse,
                    Self {
                        c,
                        b,
                        alpha,
                        total_steps,
                    },
                ));
            }
        }
        best.map(|(_, curve)| curve).ok_or_else(|| {
            Error::Reward(
                "baseline eval loss does not decrease: no power law c + b(t+1)^α with b > 0 fits"
                    .into(),
            )
        })
    }

    /// The fitted baseline loss after `t` steps.
    pub fn loss_at(&self, t: f64) -> f64 {
        self.c + self.b * (t + 1.0).powf(self.alpha)
    }

    /// t_b: the baseline steps needed to reach `loss`, capped at 2T (also when `loss` ≤ c, which
    /// the baseline never reaches). `None` when `loss` is at or above the curve's start (t_b ≤ 0)
    /// or not finite.
    pub fn baseline_steps(&self, loss: f64) -> Option<f64> {
        let cap = EXTRAPOLATION_LIMIT * self.total_steps as f64;
        if !loss.is_finite() {
            return None;
        }
        if loss <= self.c {
            return Some(cap);
        }
        let tb = ((loss - self.c) / self.b).powf(1.0 / self.alpha) - 1.0;
        (tb > 0.0).then_some(tb.min(cap))
    }

    /// The potential s = clip(log(t_b / t), −3, 3) of reaching `loss` after `step` (≥ 1) steps;
    /// −3 for a non-finite loss or one above the curve's start.
    pub fn potential(&self, step: u64, loss: f64) -> f64 {
        match self.baseline_steps(loss) {
            Some(tb) => (tb / step.max(1) as f64)
                .ln()
                .clamp(-POTENTIAL_CLIP, POTENTIAL_CLIP),
            None => -POTENTIAL_CLIP,
        }
    }
}

/// Least squares for L = c + b·x with x = (t+1)^α under c ≥ 0, b > 0; `None` when b ≤ 0.
fn least_squares(pts: &[(f64, f64)], alpha: f64) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for &(t1, l) in pts {
        let x = t1.powf(alpha);
        sx += x;
        sy += l;
        sxx += x * x;
        sxy += x * l;
    }
    let var = sxx - sx * sx / n;
    let (mut c, mut b) = if var > 1e-300 {
        let b = (sxy - sx * sy / n) / var;
        ((sy - b * sx) / n, b)
    } else {
        (f64::NAN, f64::NAN)
    };
    // The problem is convex, so when the unconstrained c is negative the optimum has c = 0.
    if c.is_nan() || c < 0.0 {
        c = 0.0;
        b = sxy / sxx;
    }
    (b > 0.0 && b.is_finite()).then_some((c, b))
}

/// Potentials s_k of a run's decisions `(step t_k, eval loss L_k)`.
pub fn potentials(curve: &BaselineCurve, decisions: &[(u64, f64)]) -> Vec<f64> {
    decisions
        .iter()
        .map(|&(t, l)| curve.potential(t, l))
        .collect()
}

/// Rewards as potential differences r_k = s_k − s_{k−1} with s_0 = 0, so that Σ r_k = s_K, the
/// final log-speedup.
pub fn rewards(potentials: &[f64]) -> Vec<f64> {
    let mut prev = 0.0;
    potentials
        .iter()
        .map(|&s| {
            let r = s - prev;
            prev = s;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1000;

    fn truth() -> BaselineCurve {
        BaselineCurve {
            c: 0.3,
            b: 2.0,
            alpha: -0.5,
            total_steps: T,
        }
    }

    fn sampled(curve: &BaselineCurve) -> Vec<(u64, f64)> {
        baseline_eval_steps(T)
            .into_iter()
            .map(|t| (t, curve.loss_at(t as f64)))
            .collect()
    }

    #[test]
    fn eval_steps_start_at_init_and_end_at_t() {
        let s = baseline_eval_steps(T);
        assert_eq!(s.len(), 1 + BASELINE_EVAL_POINTS);
        assert_eq!((s[0], *s.last().unwrap()), (0, T));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // Short runs: distinct steps only.
        let short = baseline_eval_steps(5);
        assert!(short.windows(2).all(|w| w[0] < w[1]) && *short.last().unwrap() == 5);
    }

    #[test]
    fn fit_recovers_a_power_law() {
        let fit = BaselineCurve::fit(&sampled(&truth()), T).unwrap();
        for t in [0.0, 10.0, 500.0, 2000.0] {
            let (a, b) = (fit.loss_at(t), truth().loss_at(t));
            assert!((a - b).abs() < 1e-3 * b, "t={t}: fit {a} vs truth {b}");
        }
    }

    #[test]
    fn matching_the_baseline_scores_zero() {
        let fit = BaselineCurve::fit(&sampled(&truth()), T).unwrap();
        let run: Vec<(u64, f64)> = (1..=10)
            .map(|k| (k * 100, truth().loss_at(k as f64 * 100.0)))
            .collect();
        let s = potentials(&fit, &run);
        assert!(s.iter().all(|s| s.abs() < 0.02), "{s:?}");
        assert!(rewards(&s).iter().sum::<f64>().abs() < 0.02);
    }

    #[test]
    fn twice_as_fast_scores_log_two() {
        let fit = BaselineCurve::fit(&sampled(&truth()), T).unwrap();
        // At step t the run has the baseline's loss of step 2t.
        let run: Vec<(u64, f64)> = (1..=10)
            .map(|k| (k * 100, truth().loss_at(k as f64 * 200.0)))
            .collect();
        let s = potentials(&fit, &run);
        assert!(s.iter().all(|s| (s - 2f64.ln()).abs() < 0.02), "{s:?}");
        assert!((rewards(&s).iter().sum::<f64>() - 2f64.ln()).abs() < 0.02);
    }

    #[test]
    fn non_finite_and_bad_losses_score_minus_three() {
        let c = truth();
        assert_eq!(c.potential(100, f64::NAN), -POTENTIAL_CLIP);
        assert_eq!(c.potential(100, f64::INFINITY), -POTENTIAL_CLIP);
        // Above the curve's start: worse than initialisation.
        assert_eq!(c.potential(100, c.loss_at(0.0) * 2.0), -POTENTIAL_CLIP);
        // Below the asymptote: credited with the 2T extrapolation limit, log(2T / t), clipped at 3.
        assert!((c.potential(100, 0.1) - (2.0 * T as f64 / 100.0).ln().min(3.0)).abs() < 1e-12);
        assert!((c.potential(900, 0.1) - (2000f64 / 900.0).ln()).abs() < 1e-12);
    }

    #[test]
    fn rewards_telescope_to_the_final_potential() {
        let r = rewards(&[0.5, -0.25, 1.0]);
        assert_eq!(r, vec![0.5, -0.75, 1.25]);
    }

    #[test]
    fn fit_rejects_flat_or_broken_baselines() {
        let flat: Vec<(u64, f64)> = baseline_eval_steps(T)
            .into_iter()
            .map(|t| (t, 1.0 + t as f64 * 1e-4))
            .collect();
        assert!(BaselineCurve::fit(&flat, T).is_err());
        let nan: Vec<(u64, f64)> = vec![(0, 2.0), (1, f64::NAN), (2, f64::NAN), (4, 1.0)];
        assert!(BaselineCurve::fit(&nan, T).is_err());
    }
}
