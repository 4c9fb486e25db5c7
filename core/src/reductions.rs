//! The per-tensor reductions a runtime hands over (spec §2) and the 13 inner features.

use crate::math::{DELTA, finite_or_zero, ln_delta, logit_phi, phi};

/// Number of inner features per tensor.
pub const NUM_INNER_FEATURES: usize = 13;

/// Scalar reductions of one parameter tensor at one sampled inner step.
///
/// This is the contract between a training runtime and the controller. `m̂ = m / bc1` is the
/// bias-corrected first moment, `u` the update before the learning rate, `lr_p` the learning rate
/// actually applied to this tensor (after the trust ratio). Gradients are the ones the optimizer
/// used, that is after clipping.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TensorReductions {
    /// Number of elements.
    pub numel: u64,
    /// ‖g‖.
    pub grad_norm: f32,
    /// ‖m̂‖.
    pub mhat_norm: f32,
    /// ‖m̂ − g‖.
    pub mhat_minus_grad_norm: f32,
    /// ‖p‖ before the step.
    pub param_norm: f32,
    /// ‖u‖.
    pub update_norm: f32,
    /// Learning rate applied to this tensor.
    pub lr_p: f32,
    /// g · m̂.
    pub grad_dot_mhat: f32,
    /// g · p, with p after the step.
    pub grad_dot_param: f32,
    /// g · u.
    pub grad_dot_update: f32,
    /// Number of elements with v > eps.
    pub count_v_gt_eps: f32,
    /// Σ ln(|u| + 1e-8) over the elements.
    pub sum_log_abs_update: f32,
}

impl TensorReductions {
    /// Every field in declaration order, exactly (numel is exact below 2^53), for runtimes and
    /// tests that handle the reductions as one row of numbers.
    pub fn to_array(&self) -> [f64; 12] {
        [
            self.numel as f64,
            self.grad_norm.into(),
            self.mhat_norm.into(),
            self.mhat_minus_grad_norm.into(),
            self.param_norm.into(),
            self.update_norm.into(),
            self.lr_p.into(),
            self.grad_dot_mhat.into(),
            self.grad_dot_param.into(),
            self.grad_dot_update.into(),
            self.count_v_gt_eps.into(),
            self.sum_log_abs_update.into(),
        ]
    }
}

/// `a·b / max(‖a‖‖b‖, δ)`, clamped to [−1, 1] (the reductions may come from slightly different
/// roundings of the same vectors); 0 when an input is not finite or a norm is negative.
fn cosine(dot: f32, norm_a: f32, norm_b: f32) -> f32 {
    let norms = norm_a * norm_b;
    if !(dot.is_finite() && norms.is_finite() && norm_a >= 0.0 && norm_b >= 0.0) {
        return 0.0;
    }
    (dot / norms.max(DELTA)).clamp(-1.0, 1.0)
}

/// The 13 inner features of spec §2, in the spec's order. Always finite: a feature whose inputs
/// are non-finite or invalid (negative norms, zero `numel`) is 0.
pub fn inner_features(r: &TensorReductions, clipped: bool) -> [f32; NUM_INNER_FEATURES] {
    let numel = r.numel as f32;
    let sqrt_numel = libm::sqrtf(numel);
    let cos_g_mhat = cosine(r.grad_dot_mhat, r.grad_norm, r.mhat_norm);
    let cos_g_p = cosine(r.grad_dot_param, r.grad_norm, r.param_norm);
    let cos_g_u = cosine(r.grad_dot_update, r.grad_norm, r.update_norm);
    let features = [
        if clipped { 1.0 } else { 0.0 },
        finite_or_zero(r.count_v_gt_eps / numel).clamp(0.0, 1.0),
        r.sum_log_abs_update / numel,
        ln_delta(r.mhat_norm) - ln_delta(r.grad_norm),
        ln_delta(r.lr_p * r.update_norm) - ln_delta(r.param_norm),
        ln_delta(r.mhat_norm) - ln_delta(r.mhat_minus_grad_norm),
        cos_g_mhat,
        cos_g_p,
        ln_delta(r.param_norm) - ln_delta(r.update_norm),
        cos_g_u,
        logit_phi(cos_g_mhat * sqrt_numel),
        logit_phi(cos_g_u * sqrt_numel),
        phi(cos_g_p * sqrt_numel),
    ];
    features.map(finite_or_zero)
}

/// Unweighted mean of [`inner_features`] over the tensors of one sampled step (spec §2's
/// aggregation); `None` when there are no tensors.
pub fn mean_inner_features(
    tensors: &[TensorReductions],
    clipped: bool,
) -> Option<[f32; NUM_INNER_FEATURES]> {
    if tensors.is_empty() {
        return None;
    }
    let mut sum = [0.0_f32; NUM_INNER_FEATURES];
    for r in tensors {
        for (s, f) in sum.iter_mut().zip(inner_features(r, clipped)) {
            *s += f;
        }
    }
    let n = tensors.len() as f32;
    Some(sum.map(|s| s / n))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tensor with hand-picked reductions, shared by the feature tests of other modules.
    pub(crate) fn example() -> TensorReductions {
        TensorReductions {
            numel: 4,
            grad_norm: 2.0,
            mhat_norm: 1.0,
            mhat_minus_grad_norm: 1.5,
            param_norm: 3.0,
            update_norm: 0.5,
            lr_p: 0.01,
            grad_dot_mhat: 1.0,
            grad_dot_param: -3.0,
            grad_dot_update: 0.25,
            count_v_gt_eps: 3.0,
            sum_log_abs_update: -8.0,
        }
    }

    #[test]
    fn every_inner_feature_matches_a_hand_computed_value() {
        // Values from the formulas in f64: ln(1/2), ln(0.005/3), ln(1/1.5), cos = 1/(2·1),
        // −3/(2·3), ln(3/0.5), 0.25/(2·0.5), logit Φ(0.5·√4) = ln(Φ(1)/Φ(−1)),
        // logit Φ(0.25·√4) = ln(Φ(0.5)/Φ(−0.5)), Φ(−0.5·√4) = Φ(−1).
        let expected = [
            1.0,
            0.75,
            -2.0,
            -core::f32::consts::LN_2,
            -6.396_928,
            -0.405_465_1,
            0.5,
            -0.5,
            1.791_759_5,
            0.25,
            1.668_267_9,
            0.806_965_3,
            0.158_655_25,
        ];
        let got = inner_features(&example(), true);
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() < 2e-6, "feature {}: {} vs {}", i + 1, g, e);
        }
        assert_eq!(inner_features(&example(), false)[0], 0.0);
    }

    #[test]
    fn huge_tensors_saturate_instead_of_overflowing() {
        let r = TensorReductions {
            numel: 1_000_000,
            ..example()
        };
        let f = inner_features(&r, false);
        assert_eq!(f[10], crate::math::LOGIT_MAX);
        assert_eq!(f[12], 0.0);
    }

    #[test]
    fn bad_reductions_feed_zeros() {
        let r = TensorReductions {
            numel: 0,
            grad_norm: f32::NAN,
            mhat_norm: -1.0,
            param_norm: f32::INFINITY,
            ..example()
        };
        let f = inner_features(&r, false);
        assert!(f.iter().all(|x| x.is_finite()));
        assert_eq!(f[1], 0.0, "0/0 fraction");
        assert_eq!(f[2], 0.0, "mean over zero elements");
        assert_eq!(f[3], 0.0, "log of a negative norm");
        assert_eq!(f[6], 0.0, "cosine with a NaN norm");
        assert_eq!(f[12], 0.5, "Φ(0)");
    }

    #[test]
    fn mean_over_tensors_is_unweighted() {
        let a = example();
        let b = TensorReductions {
            count_v_gt_eps: 1.0,
            ..example()
        };
        let m = mean_inner_features(&[a, b], false).unwrap_or_default();
        assert!((m[1] - 0.5).abs() < 1e-7, "(0.75 + 0.25) / 2");
        assert!((m[6] - 0.5).abs() < 1e-7);
        assert_eq!(mean_inner_features(&[], false), None);
    }
}
