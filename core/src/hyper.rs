//! The inner optimizer's hyperparameters (spec §1): initial values and bounds.

use serde::{Deserialize, Serialize};

/// Number of controlled hyperparameters.
pub const NUM_HYPERS: usize = 8;

/// Largest `f32` below 1. The spec's open upper bound `1 − 1e-10` for `clip_frac` rounds to 1 in
/// `f32`, so the representable value closest below it is used instead.
const BELOW_ONE: f32 = 1.0 - f32::EPSILON / 2.0;

/// Inclusive bounds `(low, high)` of every hyperparameter, in [`Hyperparams`] field order.
///
/// `clip_frac`'s open interval (1e-10, 1 − 1e-10) is kept inside by using 1e-10 and the largest
/// `f32` below 1 as inclusive bounds.
pub const BOUNDS: [(f32, f32); NUM_HYPERS] = [
    (1e-8, 1.0),        // lr
    (1e-5, 1.0),        // ombeta1
    (1e-5, 0.1),        // ombeta2
    (1e-8, 1.0),        // eps
    (1e-8, 1.0),        // wd
    (1e-10, BELOW_ONE), // clip_frac
    (1e-5, 1.0),        // clip_ombeta
    (1e-5, 1.0),        // lamb_ombeta
];

/// The eight hyperparameters of the inner optimizer, several stored as "one minus beta".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyperparams {
    /// Learning rate.
    pub lr: f32,
    /// 1 − β1 (momentum).
    pub ombeta1: f32,
    /// 1 − β2 (decay of the AdaMax-style running max of |g|).
    pub ombeta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Weight decay, added into the update.
    pub wd: f32,
    /// Gradient clip threshold as a fraction of the rolling max gradient norm.
    pub clip_frac: f32,
    /// 1 − decay of the rolling max gradient norm.
    pub clip_ombeta: f32,
    /// 1 − β of the EMA of the update norm used by the LAMB trust ratio.
    pub lamb_ombeta: f32,
}

impl Hyperparams {
    /// The spec's initial values.
    pub const INITIAL: Self = Self {
        lr: 1e-3,
        ombeta1: 0.1,
        ombeta2: 1e-2,
        eps: 1e-6,
        wd: 1e-2,
        clip_frac: 0.8,
        clip_ombeta: 1e-2,
        lamb_ombeta: 0.05,
    };

    /// The field names, in [`Hyperparams::to_array`] order (what runtimes and command lines
    /// call them).
    pub const NAMES: [&'static str; NUM_HYPERS] = [
        "lr",
        "ombeta1",
        "ombeta2",
        "eps",
        "wd",
        "clip_frac",
        "clip_ombeta",
        "lamb_ombeta",
    ];

    /// All eight values in field order.
    pub fn to_array(&self) -> [f32; NUM_HYPERS] {
        [
            self.lr,
            self.ombeta1,
            self.ombeta2,
            self.eps,
            self.wd,
            self.clip_frac,
            self.clip_ombeta,
            self.lamb_ombeta,
        ]
    }

    /// The inverse of [`Hyperparams::to_array`]. No clamping.
    pub fn from_array(a: [f32; NUM_HYPERS]) -> Self {
        let [
            lr,
            ombeta1,
            ombeta2,
            eps,
            wd,
            clip_frac,
            clip_ombeta,
            lamb_ombeta,
        ] = a;
        Self {
            lr,
            ombeta1,
            ombeta2,
            eps,
            wd,
            clip_frac,
            clip_ombeta,
            lamb_ombeta,
        }
    }

    /// Every field finite and inside [`BOUNDS`]: a non-finite value becomes its initial value,
    /// the rest are clamped.
    pub fn clamped(self) -> Self {
        let mut values = self.to_array();
        let initial = Self::INITIAL.to_array();
        for ((v, init), (lo, hi)) in values.iter_mut().zip(initial).zip(BOUNDS) {
            let finite = if v.is_finite() { *v } else { init };
            *v = crate::math::clamp(finite, lo, hi);
        }
        Self::from_array(values)
    }

    /// Whether every field is finite and inside [`BOUNDS`].
    pub fn in_bounds(&self) -> bool {
        self.to_array()
            .iter()
            .zip(BOUNDS)
            .all(|(v, (lo, hi))| v.is_finite() && (lo..=hi).contains(v))
    }
}

impl Default for Hyperparams {
    fn default() -> Self {
        Self::INITIAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_values_are_the_spec_table_and_in_bounds() {
        assert_eq!(
            Hyperparams::INITIAL.to_array(),
            [1e-3, 0.1, 1e-2, 1e-6, 1e-2, 0.8, 1e-2, 0.05]
        );
        assert!(Hyperparams::INITIAL.in_bounds());
        assert_eq!(Hyperparams::INITIAL.clamped(), Hyperparams::INITIAL);
    }

    #[test]
    fn array_round_trip_keeps_field_order() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let h = Hyperparams::from_array(a);
        assert_eq!(h.ombeta2, 3.0);
        assert_eq!(h.lamb_ombeta, 8.0);
        assert_eq!(h.to_array(), a);
    }

    #[test]
    fn clamped_replaces_non_finite_and_clamps_to_bounds() {
        let h = Hyperparams {
            lr: f32::NAN,
            ombeta1: 5.0,
            ombeta2: 0.5,
            eps: 0.0,
            wd: f32::NEG_INFINITY,
            clip_frac: 1.0,
            clip_ombeta: -1.0,
            lamb_ombeta: f32::INFINITY,
        }
        .clamped();
        assert_eq!(h.lr, 1e-3);
        assert_eq!(h.ombeta1, 1.0);
        assert_eq!(h.ombeta2, 0.1);
        assert_eq!(h.eps, 1e-8);
        assert_eq!(h.wd, 1e-2);
        assert!(h.clip_frac < 1.0 && h.clip_frac > 0.999_999);
        assert_eq!(h.clip_ombeta, 1e-5);
        assert_eq!(h.lamb_ombeta, 0.05);
        assert!(h.in_bounds());
        assert!(
            !Hyperparams {
                lr: 2.0,
                ..Hyperparams::INITIAL
            }
            .in_bounds()
        );
    }
}
