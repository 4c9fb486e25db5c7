//! The seven learning-rate schedules of spec §9, each fitted to the budget it runs for.

use std::f64::consts::PI;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A learning-rate schedule: the factor applied to the base learning rate at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// ×0.1 at 50% of the budget and again at 75%.
    StepDecay,
    /// Linear to 0.
    Linear,
    /// Quadratic to 0: (1 − f)².
    Quadratic,
    /// Exponential to 1% of the base rate.
    Exponential,
    /// Half a cosine to 0.
    Cosine,
    /// Half a cosine to 10% of the base rate.
    Cosine10,
}

impl Schedule {
    /// All seven, in the spec's order.
    pub const ALL: [Schedule; 7] = [
        Schedule::Constant,
        Schedule::StepDecay,
        Schedule::Linear,
        Schedule::Quadratic,
        Schedule::Exponential,
        Schedule::Cosine,
        Schedule::Cosine10,
    ];

    /// Short name, used in cache file names and tables.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::StepDecay => "step",
            Schedule::Linear => "linear",
            Schedule::Quadratic => "quadratic",
            Schedule::Exponential => "exp",
            Schedule::Cosine => "cosine",
            Schedule::Cosine10 => "cosine10",
        }
    }

    /// The factor on the base learning rate at `step` (0-based) of a run of `budget` steps.
    /// The fraction of training done is `step / budget`, so the first step runs at the full
    /// rate and decaying schedules approach, without reaching, their end value at the last step.
    pub fn factor(self, step: u64, budget: u64) -> f64 {
        let f = (step as f64 / budget.max(1) as f64).clamp(0.0, 1.0);
        let half_cosine = 0.5 * (1.0 + (PI * f).cos());
        match self {
            Schedule::Constant => 1.0,
            Schedule::StepDecay if f < 0.5 => 1.0,
            Schedule::StepDecay if f < 0.75 => 0.1,
            Schedule::StepDecay => 0.01,
            Schedule::Linear => 1.0 - f,
            Schedule::Quadratic => (1.0 - f).powi(2),
            Schedule::Exponential => 0.01_f64.powf(f),
            Schedule::Cosine => half_cosine,
            Schedule::Cosine10 => 0.1 + 0.9 * half_cosine,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn every_schedule_starts_at_the_base_rate() {
        for s in Schedule::ALL {
            assert!(close(s.factor(0, 1000), 1.0), "{s}");
        }
    }

    #[test]
    fn values_at_the_middle() {
        let mid = |s: Schedule| s.factor(500, 1000);
        assert!(close(mid(Schedule::Constant), 1.0));
        assert!(close(mid(Schedule::StepDecay), 0.1)); // the first drop happens at exactly 50%
        assert!(close(Schedule::StepDecay.factor(499, 1000), 1.0));
        assert!(close(mid(Schedule::Linear), 0.5));
        assert!(close(mid(Schedule::Quadratic), 0.25));
        assert!(close(mid(Schedule::Exponential), 0.1));
        assert!(close(mid(Schedule::Cosine), 0.5));
        assert!(close(mid(Schedule::Cosine10), 0.55));
        assert!(close(Schedule::StepDecay.factor(750, 1000), 0.01));
    }

    #[test]
    fn values_at_the_end_of_the_budget() {
        let end = |s: Schedule| s.factor(1000, 1000);
        assert!(close(end(Schedule::Constant), 1.0));
        assert!(close(end(Schedule::StepDecay), 0.01));
        assert!(close(end(Schedule::Linear), 0.0));
        assert!(close(end(Schedule::Quadratic), 0.0));
        assert!(close(end(Schedule::Exponential), 0.01));
        assert!(close(end(Schedule::Cosine), 0.0));
        assert!(close(end(Schedule::Cosine10), 0.1));
    }

    #[test]
    fn a_schedule_is_fitted_to_its_budget() {
        for s in Schedule::ALL {
            assert!(close(s.factor(100, 400), s.factor(250, 1000)), "{s}");
        }
    }
}
