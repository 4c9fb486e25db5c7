//! Speedup against the tuned grid (spec §9): how many steps the best of the 35 baselines needs to
//! reach a run's final eval loss, over the steps the run took.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{BaselineRun, Schedule};

/// The best final eval loss the grid reached at one budget, and which run reached it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetBest {
    /// Inner steps.
    pub budget: u64,
    /// Lowest final eval loss over the grid at this budget (+inf when every run diverged).
    pub loss: f64,
    /// Base learning rate of the best run.
    pub lr: f64,
    /// Schedule of the best run.
    pub schedule: Schedule,
    /// The best run's eval losses through training, for plots.
    pub curve: Vec<(u64, Option<f64>)>,
}

/// The grid's best loss as a function of budget, for one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridCurve {
    /// The task's own step count T, the unit of speedups.
    pub steps: u64,
    /// One point per measured budget, ascending.
    pub points: Vec<BudgetBest>,
}

impl GridCurve {
    /// The best run per budget among `runs` (any order, all of one task).
    pub fn from_runs(steps: u64, runs: &[BaselineRun]) -> GridCurve {
        let mut points: Vec<BudgetBest> = Vec::new();
        for run in runs {
            let loss = run.final_loss_or_inf();
            let better = BudgetBest {
                budget: run.key.budget,
                loss,
                lr: run.key.lr,
                schedule: run.key.schedule,
                curve: run.eval_curve.clone(),
            };
            match points.iter_mut().find(|p| p.budget == run.key.budget) {
                Some(p) if loss < p.loss => *p = better,
                Some(_) => {}
                None => points.push(better),
            }
        }
        points.sort_by_key(|p| p.budget);
        GridCurve { steps, points }
    }

    /// The curve of one run at constant hyperparameters (learning rate `lr`) with eval losses
    /// `evals` (`(step, loss)`): with nothing scheduled, a run of budget B is the first B steps
    /// of the longer run, so its loss at each of `budgets` is the eval at that step. Budgets
    /// without an eval are left out; a non-finite loss counts as +inf, as a diverged grid run.
    pub fn of_constant_run(steps: u64, budgets: &[u64], evals: &[(u64, f64)], lr: f64) -> Self {
        let points = budgets
            .iter()
            .filter_map(|&budget| {
                let loss = evals.iter().find(|(s, _)| *s == budget)?.1;
                Some(BudgetBest {
                    budget,
                    loss: if loss.is_finite() {
                        loss
                    } else {
                        f64::INFINITY
                    },
                    lr,
                    schedule: Schedule::Constant,
                    curve: evals
                        .iter()
                        .filter(|(s, _)| *s <= budget)
                        .map(|&(s, l)| (s, l.is_finite().then_some(l)))
                        .collect(),
                })
            })
            .collect();
        GridCurve { steps, points }
    }

    /// The best point at budget `budget`, if it was measured.
    pub fn at(&self, budget: u64) -> Option<&BudgetBest> {
        self.points.iter().find(|p| p.budget == budget)
    }

    /// Speedup of a run of `self.steps` steps that ended at eval loss `final_loss`: the smallest
    /// budget B at which the grid reaches `final_loss`, over T. Between two measured budgets
    /// log B is interpolated linearly in the loss; outside the measured range the answer is a
    /// bound, never an extrapolation. A non-finite `final_loss` is beaten by any budget.
    pub fn speedup(&self, final_loss: f64) -> Speedup {
        let t = self.steps.max(1) as f64;
        let (Some(first), Some(last)) = (self.points.first(), self.points.last()) else {
            return Speedup::Unmeasured;
        };
        let ratio = |budget: f64| budget / t;
        if !final_loss.is_finite() || first.loss < final_loss {
            return Speedup::Below(ratio(first.budget as f64));
        }
        if first.loss == final_loss {
            return Speedup::Measured(ratio(first.budget as f64));
        }
        // The first budget whose best loss reaches the target; the one before it does not.
        let Some(i) = self.points.iter().position(|p| p.loss <= final_loss) else {
            return Speedup::Above(ratio(last.budget as f64));
        };
        let (lo, hi) = (&self.points[i - 1], &self.points[i]);
        let frac = (lo.loss - final_loss) / (lo.loss - hi.loss);
        // log B = log B_lo + frac (log B_hi − log B_lo), written so that frac = 1 gives B_hi exactly.
        let (b_lo, b_hi) = (lo.budget as f64, hi.budget as f64);
        Speedup::Measured(ratio(b_lo * (b_hi / b_lo).powf(frac)))
    }
}

/// A speedup, or the bound it lies beyond when it falls outside the measured budgets.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Speedup {
    /// Inside the measured range.
    Measured(f64),
    /// The grid reaches the loss already at the smallest budget: the speedup is below this.
    Below(f64),
    /// The grid never reaches the loss: the speedup is above this (the largest budget over T).
    Above(f64),
    /// No baseline was measured.
    Unmeasured,
}

impl Speedup {
    /// The value, or the bound for censored speedups (what a geometric mean uses).
    pub fn bounded(self) -> Option<f64> {
        match self {
            Speedup::Measured(x) | Speedup::Below(x) | Speedup::Above(x) => Some(x),
            Speedup::Unmeasured => None,
        }
    }

    /// True for a bound rather than a measured value.
    pub fn is_censored(self) -> bool {
        matches!(self, Speedup::Below(_) | Speedup::Above(_))
    }
}

impl fmt::Display for Speedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speedup::Measured(x) => write!(f, "{x:.2}x"),
            Speedup::Below(x) => write!(f, "< {x:.2}x"),
            Speedup::Above(x) => write!(f, "> {x:.2}x"),
            Speedup::Unmeasured => f.write_str("n/a"),
        }
    }
}

/// A geometric mean of speedups, with how many of them were bounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanSpeedup {
    /// Geometric mean, bounds counted at their bound.
    pub value: f64,
    /// Speedups that went into the mean.
    pub count: usize,
    /// How many of them were bounds ("< 0.5x", "> 2x").
    pub censored: usize,
}

impl MeanSpeedup {
    /// Geometric mean of `speedups`, `None` when none was measured.
    pub fn of(speedups: impl IntoIterator<Item = Speedup>) -> Option<MeanSpeedup> {
        let (mut log_sum, mut count, mut censored) = (0.0, 0, 0);
        for s in speedups {
            if let Some(x) = s.bounded() {
                log_sum += x.ln();
                count += 1;
                censored += usize::from(s.is_censored());
            }
        }
        (count > 0).then(|| MeanSpeedup {
            value: (log_sum / count as f64).exp(),
            count,
            censored,
        })
    }
}

impl fmt::Display for MeanSpeedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}x over {}", self.value, self.count)?;
        if self.censored > 0 {
            write!(f, " ({} at a range bound)", self.censored)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::RunKey;

    #[test]
    fn a_constant_run_is_its_own_curve_over_budgets() {
        let evals = [
            (0, 2.0),
            (250, 1.5),
            (500, 1.0),
            (1000, 0.5),
            (2000, f64::NAN),
        ];
        let c = GridCurve::of_constant_run(1000, &[500, 1000, 2000], &evals, 1e-3);
        let losses: Vec<f64> = c.points.iter().map(|p| p.loss).collect();
        assert_eq!(losses, [1.0, 0.5, f64::INFINITY]);
        assert_eq!(c.points[1].curve.len(), 4);
        // The run itself at T scores exactly 1; a run that ends where it was at T/2 scores 0.5.
        assert_eq!(c.speedup(0.5), Speedup::Measured(1.0));
        assert_eq!(c.speedup(1.0), Speedup::Measured(0.5));
        // Budgets the run was not evaluated at are left out rather than guessed.
        let sparse = GridCurve::of_constant_run(1000, &[500, 1000], &evals[3..], 1e-3);
        assert_eq!(sparse.points.len(), 1);
    }

    /// A grid for T = 1000 whose best losses at T/2, T, 2T are 1.0, 0.5, 0.25.
    fn grid() -> GridCurve {
        let mut runs = Vec::new();
        for (budget, best) in [(500, 1.0), (1000, 0.5), (2000, 0.25)] {
            for (i, lr) in [1e-4, 3e-4, 1e-3].into_iter().enumerate() {
                let key = RunKey {
                    task_key: "t".into(),
                    budget,
                    lr,
                    schedule: Schedule::Cosine,
                };
                // lr 3e-4 is the best; the others are worse or diverged.
                let loss = [Some(best * 1.5), Some(best), None][i];
                runs.push(BaselineRun::new(key, vec![(budget, loss)], None));
            }
        }
        GridCurve::from_runs(1000, &runs)
    }

    #[test]
    fn the_best_run_per_budget_is_picked() {
        let g = grid();
        assert_eq!(
            g.points.iter().map(|p| p.budget).collect::<Vec<_>>(),
            [500, 1000, 2000]
        );
        assert!(g.points.iter().all(|p| p.lr == 3e-4));
        assert_eq!(g.at(1000).unwrap().loss, 0.5);
    }

    #[test]
    fn reaching_the_2t_loss_in_t_steps_is_2x() {
        assert_eq!(grid().speedup(0.25), Speedup::Measured(2.0));
        assert_eq!(grid().speedup(0.5), Speedup::Measured(1.0));
        assert_eq!(grid().speedup(1.0), Speedup::Measured(0.5));
    }

    #[test]
    fn between_budgets_log_b_is_interpolated_in_the_loss() {
        // Halfway between 0.5 (B = T) and 0.25 (B = 2T) in loss: B = sqrt(2) T.
        match grid().speedup(0.375) {
            Speedup::Measured(x) => assert!((x - 2f64.sqrt()).abs() < 1e-12, "{x}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outside_the_measured_budgets_only_a_bound_is_reported() {
        assert_eq!(grid().speedup(0.1), Speedup::Above(2.0));
        assert_eq!(grid().speedup(3.0), Speedup::Below(0.5));
        assert_eq!(grid().speedup(f64::NAN), Speedup::Below(0.5));
        assert_eq!(Speedup::Above(2.0).to_string(), "> 2.00x");
        assert_eq!(Speedup::Below(0.4978).to_string(), "< 0.50x");
        assert_eq!(
            GridCurve {
                steps: 10,
                points: vec![]
            }
            .speedup(1.0),
            Speedup::Unmeasured
        );
    }

    #[test]
    fn geometric_mean_counts_bounds_at_their_bound() {
        let m = MeanSpeedup::of([
            Speedup::Measured(2.0),
            Speedup::Below(0.5),
            Speedup::Unmeasured,
        ])
        .unwrap();
        assert!((m.value - 1.0).abs() < 1e-12);
        assert_eq!((m.count, m.censored), (2, 1));
        assert_eq!(MeanSpeedup::of([Speedup::Unmeasured]), None);
    }
}
