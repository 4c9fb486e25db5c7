//! The tuned baseline of spec §9: AdamW over 5 learning rates × 7 schedules, each run at budgets
//! T/2, T and 2T with its schedule fitted to the budget; results cached on disk; the speedup of a
//! run is measured against the best of them.

mod cache;
mod schedule;
mod speedup;

pub use cache::{BaselineRun, Cache, RunKey};
pub use schedule::Schedule;
pub use speedup::{BudgetBest, GridCurve, MeanSpeedup, Speedup};

use indicatif::ProgressBar;

use crate::env::train_plain;
use crate::error::Result;
use crate::optim::AdamW;
use crate::pool::Pool;
use crate::tasks::{Task, TaskSpec};

/// Base learning rates of the grid.
pub const LEARNING_RATES: [f64; 5] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];

/// Evaluations per baseline run, evenly spaced (the last one is the final loss).
const CURVE_POINTS: u64 = 8;

/// The measured budgets for a task of `steps` steps: T/2, T, 2T.
pub fn budgets(steps: u64) -> [u64; 3] {
    [(steps / 2).max(1), steps, 2 * steps]
}

/// Every run of the grid for `spec`: 3 budgets × 5 learning rates × 7 schedules.
pub fn grid_keys(spec: &TaskSpec) -> Vec<RunKey> {
    let task_key = spec.key();
    let mut keys = Vec::with_capacity(3 * LEARNING_RATES.len() * Schedule::ALL.len());
    for budget in budgets(spec.steps) {
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

/// Trains a freshly built `task` with AdamW for `key.budget` steps at `key.lr` × the schedule.
pub fn run_baseline(task: &mut dyn Task, key: RunKey) -> BaselineRun {
    let params: Vec<_> = task
        .parameters()
        .iter()
        .map(tch::Tensor::shallow_clone)
        .collect();
    let mut adamw = AdamW::new(&params);
    let budget = key.budget;
    let eval_at: Vec<u64> = (1..CURVE_POINTS)
        .map(|i| budget * i / CURVE_POINTS)
        .filter(|&s| s > 0)
        .collect();
    let trace = train_plain(task, budget, &eval_at, |step, params| {
        adamw.step(params, key.lr * key.schedule.factor(step, budget));
    });
    let curve = trace
        .evals
        .iter()
        .map(|&(step, loss)| (step, loss.is_finite().then_some(loss)))
        .collect();
    BaselineRun::new(key, curve, trace.stopped_at)
}

/// The grid curve of every task in `specs`, computing (in parallel) and caching the runs that
/// are not cached yet. `progress` is set to the number of runs computed.
pub fn grid_curves(
    specs: &[TaskSpec],
    pool: &Pool,
    cache: &Cache,
    progress: &ProgressBar,
) -> Result<Vec<GridCurve>> {
    let mut missing = Vec::new();
    let mut runs: Vec<Vec<BaselineRun>> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let mut found = Vec::new();
        for key in grid_keys(spec) {
            match cache.load(&key)? {
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
        cache.store(&run)?;
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
