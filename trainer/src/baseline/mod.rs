//! The tuned baseline of spec §9: AdamW over 5 learning rates × 7 schedules, each run at budgets
//! T/2, T and 2T with its schedule fitted to the budget; results cached on disk; the speedup of a
//! run is measured against the best of them.

mod cache;
mod schedule;
mod speedup;

pub use cache::{BaselineRun, Cache, RunKey, cache_dir};
pub use schedule::Schedule;
pub use speedup::{BudgetBest, GridCurve, MeanSpeedup, Speedup};

use indicatif::ProgressBar;

use crate::env::{Trace, train_plain};
use crate::error::{Error, Result};
use crate::optim::AdamW;
use crate::pool::Pool;
use crate::tasks::{Task, TaskSpec};

/// Base learning rates of the grid.
pub const LEARNING_RATES: [f64; 5] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];

/// Evaluations per baseline run, evenly spaced (the last one is the final loss).
const CURVE_POINTS: u64 = 8;

/// The budgets of spec §9 as multiples of T: T/2, T and 2T.
pub const BUDGET_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];

/// Budget factors must be positive multiples of T, at least one.
pub fn check_budget_factors(factors: &[f64]) -> Result<()> {
    if factors.is_empty() || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(Error::Usage(format!(
            "budget factors must be positive multiples of T, e.g. 0.5,1,2; got {factors:?}"
        )));
    }
    Ok(())
}

/// Budgets of a task of `steps` steps: each factor × T, rounded down (at least one step),
/// ascending, without repeats.
pub fn budgets(factors: &[f64], steps: u64) -> Vec<u64> {
    let mut budgets: Vec<u64> = factors
        .iter()
        .map(|f| ((steps as f64 * f).floor() as u64).max(1))
        .collect();
    budgets.sort_unstable();
    budgets.dedup();
    budgets
}

/// The AdamW grid of a set of budgets, with its cache.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Where runs are stored.
    pub cache: Cache,
    /// Budgets as multiples of a task's T (positive).
    pub budget_factors: Vec<f64>,
}

impl Grid {
    /// The grid at budgets `budget_factors` × T, cached in `cache`.
    pub fn new(cache: Cache, budget_factors: &[f64]) -> Result<Grid> {
        check_budget_factors(budget_factors)?;
        Ok(Grid {
            cache,
            budget_factors: budget_factors.to_vec(),
        })
    }

    /// The measured budgets of a task of `steps` steps (see [`budgets`]).
    pub fn budgets(&self, steps: u64) -> Vec<u64> {
        budgets(&self.budget_factors, steps)
    }

    /// Every run of the grid for `spec`: budgets × 5 learning rates × 7 schedules.
    pub fn keys(&self, spec: &TaskSpec) -> Vec<RunKey> {
        let task_key = spec.key();
        let mut keys = Vec::new();
        for budget in self.budgets(spec.steps) {
            for lr in LEARNING_RATES {
                for schedule in Schedule::ALL {
                    keys.push(RunKey {
                        task_key: task_key.clone(),
                        budget,
                        lr,
                        schedule,
                    });
                }
            }
        }
        keys
    }

    /// The grid curve of every task in `specs`, computing (in parallel) and caching the runs that
    /// are not cached yet. `progress` is set to the number of runs computed.
    pub fn curves(
        &self,
        specs: &[TaskSpec],
        pool: &Pool,
        progress: &ProgressBar,
    ) -> Result<Vec<GridCurve>> {
        let mut missing = Vec::new();
        let mut runs: Vec<Vec<BaselineRun>> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let mut found = Vec::new();
            for key in self.keys(spec) {
                match self.cache.load(&key)? {
                    Some(run) => found.push(run),
                    None => missing.push((i, key)),
                }
            }
            runs.push(found);
        }
        progress.set_length(missing.len() as u64);
        let computed = pool.run(missing, progress, |(i, key)| {
            let mut task = pool.build(&specs[i])?;
            let run = run_baseline(task.as_mut(), key);
            self.cache.store(&run)?;
            Ok((i, run))
        })?;
        for (i, run) in computed {
            runs[i].push(run);
        }
        Ok(specs
            .iter()
            .zip(&runs)
            .map(|(spec, runs)| GridCurve::from_runs(spec.steps, runs))
            .collect())
    }
}

/// Trains a freshly built `task` with AdamW for `key.budget` steps at `key.lr` × the schedule.
pub fn run_baseline(task: &mut dyn Task, key: RunKey) -> BaselineRun {
    let budget = key.budget;
    let eval_at: Vec<u64> = (1..CURVE_POINTS)
        .map(|i| budget * i / CURVE_POINTS)
        .filter(|&s| s > 0)
        .collect();
    let trace = train_adamw(task, key.lr, key.schedule, budget, &eval_at);
    let curve = trace
        .evals
        .iter()
        .map(|&(step, loss)| (step, loss.is_finite().then_some(loss)))
        .collect();
    BaselineRun::new(key, curve, trace.stopped_at)
}

/// Trains a freshly built `task` with AdamW for `budget` steps at `lr` × `schedule` (fitted to
/// the budget), evaluating after the step counts in `eval_at` and at the end.
pub fn train_adamw(
    task: &mut dyn Task,
    lr: f64,
    schedule: Schedule,
    budget: u64,
    eval_at: &[u64],
) -> Trace {
    let params: Vec<_> = task
        .parameters()
        .iter()
        .map(tch::Tensor::shallow_clone)
        .collect();
    let mut adamw = AdamW::new(&params);
    train_plain(task, budget, eval_at, |step, params| {
        adamw.step(params, lr * schedule.factor(step, budget));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_multiples_of_t_rounded_down_and_sorted() {
        let grid = Grid::new(Cache::at("unused"), &BUDGET_FACTORS).unwrap();
        assert_eq!(grid.budgets(229), [114, 229, 458]);
        let grid = Grid::new(Cache::at("unused"), &[4.0, 0.001, 1.0, 1.0]).unwrap();
        assert_eq!(grid.budgets(100), [1, 100, 400]);
        assert!(Grid::new(Cache::at("unused"), &[1.0, 0.0]).is_err());
        assert!(Grid::new(Cache::at("unused"), &[]).is_err());
    }

    #[test]
    fn the_grid_has_35_runs_per_budget() {
        let spec = crate::tasks::sample(
            crate::tasks::Family::NoisyQuadratic,
            3,
            crate::tasks::Scale::Cpu,
        );
        let keys = Grid::new(Cache::at("unused"), &BUDGET_FACTORS)
            .unwrap()
            .keys(&spec);
        assert_eq!(keys.len(), 3 * 35);
        assert!(keys.iter().all(|k| k.task_key == spec.key()));
    }
}
