//! The action heads (spec §4) and how an action changes the hyperparameters.

use crate::hyper::Hyperparams;
use crate::math::{logit_unclipped, sigmoid};

/// Number of categorical heads: lr, wd, eps, ombeta1, ombeta2, clip_frac, clip_ombeta,
/// lamb_ombeta, restart (in this order).
pub const NUM_HEADS: usize = 9;

/// Number of choices of each head, in head order.
pub const HEAD_SIZES: [usize; NUM_HEADS] = [7, 3, 3, 3, 3, 5, 3, 3, 10];

/// Total number of logits over all heads.
pub const NUM_ACTION_LOGITS: usize = 40;

/// Index of each head's first logit in the concatenated logit vector.
pub const HEAD_OFFSETS: [usize; NUM_HEADS] = [0, 7, 10, 13, 16, 19, 24, 27, 30];

/// Multipliers of the learning-rate head.
pub const LR_SCALES: [f32; 7] = [0.5, 0.707, 0.9, 1.0, 1.1, 1.414, 2.0];
/// Multipliers of the wd, eps, ombeta1, ombeta2 and clip_ombeta heads (×1 lets a head hold).
pub const HALVE_HOLD_DOUBLE: [f32; 3] = [0.5, 1.0, 2.0];
/// Additive shifts of the clip_frac head, in logit space.
pub const CLIP_FRAC_SHIFTS: [f32; 5] = [-1.0, -0.3, 0.0, 0.3, 1.0];
/// Multipliers of the lamb_ombeta head.
pub const LAMB_SCALES: [f32; 3] = [1.0 / 1.5, 1.0, 1.5];

/// Number of checkpoint registers the restart head addresses.
pub const NUM_REGISTERS: usize = 3;

/// One choice per head, in head order.
///
/// A choice outside its head's range is treated as that head's hold choice by [`apply`],
/// [`Action::restart`] and [`Action::one_hot`] (nothing panics on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Action {
    /// Chosen index per head.
    pub choices: [u8; NUM_HEADS],
}

impl Action {
    /// Every head at its neutral choice: ×1, +0 and no restart.
    pub const HOLD: Self = Self {
        choices: [3, 1, 1, 1, 1, 2, 1, 1, 0],
    };

    /// Whether every choice is inside its head.
    pub fn is_valid(&self) -> bool {
        self.choices
            .iter()
            .zip(HEAD_SIZES)
            .all(|(&c, n)| (c as usize) < n)
    }

    /// What the restart head asks for.
    pub fn restart(&self) -> Restart {
        self.choices
            .last()
            .map_or(Restart::None, |&c| Restart::from_choice(c))
    }

    /// The 40-wide one-hot encoding (one 1 per head, at the chosen index); a head with an out of
    /// range choice stays all zero.
    pub fn one_hot(&self) -> [f32; NUM_ACTION_LOGITS] {
        let mut out = [0.0; NUM_ACTION_LOGITS];
        for ((&c, offset), size) in self.choices.iter().zip(HEAD_OFFSETS).zip(HEAD_SIZES) {
            if (c as usize) < size
                && let Some(slot) = out.get_mut(offset + c as usize)
            {
                *slot = 1.0;
            }
        }
        out
    }
}

impl Default for Action {
    /// [`Action::HOLD`].
    fn default() -> Self {
        Self::HOLD
    }
}

/// Checkpoint-register request of the restart head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Restart {
    /// Keep training.
    None,
    /// Save parameters and optimizer state into register `r` (0..3).
    Save(u8),
    /// Load parameters and optimizer state from register `r`.
    Load(u8),
    /// Save into register `r` and load what it held before.
    Swap(u8),
}

impl Restart {
    /// Decodes a restart-head choice: 0 no-op, 1..=3 save, 4..=6 load, 7..=9 swap; anything else
    /// is a no-op.
    pub fn from_choice(c: u8) -> Self {
        match c {
            1..=3 => Self::Save(c - 1),
            4..=6 => Self::Load(c - 4),
            7..=9 => Self::Swap(c - 7),
            _ => Self::None,
        }
    }

    /// The restart-head choice that encodes this request (inverse of [`Restart::from_choice`]).
    pub fn to_choice(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Save(r) => 1 + r,
            Self::Load(r) => 4 + r,
            Self::Swap(r) => 7 + r,
        }
    }
}

/// What the runtime must do after a decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The hyperparameters for the next interval (finite and inside bounds).
    pub hyper: Hyperparams,
    /// The checkpoint-register operation to perform before continuing.
    pub restart: Restart,
}

/// The table entry for `choice`, or `hold` when the choice is out of range.
fn pick(table: &[f32], choice: u8, hold: f32) -> f32 {
    table.get(choice as usize).copied().unwrap_or(hold)
}

/// Applies the hyperparameter heads of `a` to `h` and clamps the result to its bounds.
///
/// Scale heads multiply, the clip_frac head shifts `logit(clip_frac)`. A zero shift leaves
/// clip_frac untouched (no logit/sigmoid round trip), so [`Action::HOLD`] is exact.
pub fn apply(h: &Hyperparams, a: &Action) -> Hyperparams {
    let [lr, wd, eps, ob1, ob2, clip, clip_ob, lamb_ob, _restart] = a.choices;
    let shift = pick(&CLIP_FRAC_SHIFTS, clip, 0.0);
    let clip_frac = if shift == 0.0 {
        h.clip_frac
    } else {
        sigmoid(logit_unclipped(h.clip_frac) + shift)
    };
    Hyperparams {
        lr: h.lr * pick(&LR_SCALES, lr, 1.0),
        ombeta1: h.ombeta1 * pick(&HALVE_HOLD_DOUBLE, ob1, 1.0),
        ombeta2: h.ombeta2 * pick(&HALVE_HOLD_DOUBLE, ob2, 1.0),
        eps: h.eps * pick(&HALVE_HOLD_DOUBLE, eps, 1.0),
        wd: h.wd * pick(&HALVE_HOLD_DOUBLE, wd, 1.0),
        clip_frac,
        clip_ombeta: h.clip_ombeta * pick(&HALVE_HOLD_DOUBLE, clip_ob, 1.0),
        lamb_ombeta: h.lamb_ombeta * pick(&LAMB_SCALES, lamb_ob, 1.0),
    }
    .clamped()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_tables_agree_with_sizes_and_offsets() {
        assert_eq!(HEAD_SIZES.iter().sum::<usize>(), NUM_ACTION_LOGITS);
        let mut offset = 0;
        for (o, n) in HEAD_OFFSETS.iter().zip(HEAD_SIZES) {
            assert_eq!(*o, offset);
            offset += n;
        }
        assert_eq!(LR_SCALES.len(), HEAD_SIZES[0]);
        assert_eq!(CLIP_FRAC_SHIFTS.len(), HEAD_SIZES[5]);
        assert_eq!(LR_SCALES[Action::HOLD.choices[0] as usize], 1.0);
        assert_eq!(CLIP_FRAC_SHIFTS[Action::HOLD.choices[5] as usize], 0.0);
        assert!(Action::HOLD.is_valid());
        assert_eq!(Action::default(), Action::HOLD);
    }

    #[test]
    fn hold_is_exact_even_at_the_bounds() {
        let h = Hyperparams {
            clip_frac: 1e-10,
            ..Hyperparams::INITIAL
        };
        assert_eq!(apply(&h, &Action::HOLD), h);
        assert_eq!(
            apply(&Hyperparams::INITIAL, &Action::HOLD),
            Hyperparams::INITIAL
        );
    }

    #[test]
    fn each_head_changes_its_own_hyperparameter() {
        let h = Hyperparams::INITIAL;
        let a = Action {
            choices: [6, 0, 2, 0, 2, 4, 0, 2, 0],
        };
        let out = apply(&h, &a);
        assert_eq!(out.lr, 2e-3);
        assert_eq!(out.wd, 5e-3);
        assert_eq!(out.eps, 2e-6);
        assert_eq!(out.ombeta1, 0.05);
        assert_eq!(out.ombeta2, 2e-2);
        // sigmoid(logit(0.8) + 1) = 1 / (1 + 0.25·e^−1) = 0.915_776_2.
        assert!((out.clip_frac - 0.915_776_2).abs() < 1e-6);
        assert_eq!(out.clip_ombeta, 5e-3);
        assert!((out.lamb_ombeta - 0.075).abs() < 1e-8);
        let lower = apply(
            &h,
            &Action {
                choices: [0, 1, 1, 1, 1, 0, 1, 0, 0],
            },
        );
        assert_eq!(lower.lr, 5e-4);
        // sigmoid(ln 4 − 1) = 4/e / (1 + 4/e) = 0.595_390_3.
        assert!((lower.clip_frac - 0.595_390_3).abs() < 1e-6);
        assert!((lower.lamb_ombeta - 0.05 / 1.5).abs() < 1e-8);
    }

    #[test]
    fn results_are_clamped_to_bounds() {
        let h = Hyperparams {
            lr: 0.8,
            ombeta2: 0.09,
            eps: 1e-8,
            clip_frac: 0.999_999_9,
            ..Hyperparams::INITIAL
        };
        let out = apply(
            &h,
            &Action {
                choices: [6, 1, 0, 1, 2, 4, 1, 1, 0],
            },
        );
        assert_eq!(out.lr, 1.0);
        assert_eq!(out.ombeta2, 0.1);
        assert_eq!(out.eps, 1e-8);
        assert!(out.clip_frac < 1.0);
        assert!(out.in_bounds());
    }

    #[test]
    fn out_of_range_choices_hold() {
        let a = Action {
            choices: [200; NUM_HEADS],
        };
        assert!(!a.is_valid());
        assert_eq!(apply(&Hyperparams::INITIAL, &a), Hyperparams::INITIAL);
        assert_eq!(a.restart(), Restart::None);
        assert!(a.one_hot().iter().all(|&x| x == 0.0));
    }

    #[test]
    fn restart_choices_round_trip() {
        assert_eq!(Restart::from_choice(0), Restart::None);
        assert_eq!(Restart::from_choice(1), Restart::Save(0));
        assert_eq!(Restart::from_choice(6), Restart::Load(2));
        assert_eq!(Restart::from_choice(8), Restart::Swap(1));
        for c in 0..10 {
            assert_eq!(Restart::from_choice(c).to_choice(), c);
        }
    }

    #[test]
    fn one_hot_marks_one_slot_per_head() {
        let oh = Action::HOLD.one_hot();
        assert_eq!(oh.iter().sum::<f32>(), NUM_HEADS as f32);
        assert_eq!(oh[3], 1.0, "lr ×1 is choice 3");
        assert_eq!(oh[19 + 2], 1.0, "clip_frac +0 is choice 2");
        assert_eq!(oh[30], 1.0, "restart no-op");
    }
}
