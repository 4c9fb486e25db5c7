//! Spec §9 evaluation: run each task under each controller, and score every run's final eval
//! loss against the tuned AdamW grid of that task and against the untuned default (CIAO at its
//! initial hyperparameters, held constant, run to the largest budget). Writes the table as CSV and JSON and one PNG of
//! loss curves and hyperparameter traces per task. Controllers are CIAO under a policy or fixed
//! hyperparameters, or one of the [`Alternative`] optimizers users pick instead.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use indicatif::ProgressBar;
use lhopt_core::Hyperparams;
use serde::Serialize;

use crate::alternatives::Alternative;
use crate::baseline::{self, Grid, GridCurve, MeanSpeedup, Speedup};
use crate::env::{self, EpisodeConfig, PolicyFile, Trace};
use crate::error::{Error, Result};
use crate::imitate::Teacher;
use crate::plot::{self, Line, PlottedRun};
use crate::pool::Pool;
use crate::tasks::{Task, TaskSpec};

/// Budgets, as multiples of T, at which the untuned default is measured for speedups against
/// it: one run to the largest, so a wide range is cheap (the grid's default range stops at 2x).
pub const DEFAULT_BUDGET_FACTORS: [f64; 6] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0];

/// What steers a run.
#[derive(Clone, Debug)]
pub enum Controller {
    /// CIAO at fixed hyperparameters; at [`Hyperparams::INITIAL`] this is the untuned default.
    Fixed(Hyperparams),
    /// A frozen policy, starting from `initial`.
    Policy {
        /// The policy.
        file: Box<PolicyFile>,
        /// Hyperparameters before its first decision.
        initial: Hyperparams,
    },
    /// Another optimizer at its published defaults instead of CIAO.
    Alternative(Alternative),
    /// CIAO following the imitation teacher's hand schedule ([`Teacher`]) to a fixed peak
    /// learning rate: what the warm start clones.
    Schedule {
        /// Peak learning rate (CIAO units).
        peak: f32,
        /// The teacher's back-off threshold (`f32::INFINITY`: open loop).
        back_off: f32,
        /// Where the run starts (the climb to the peak starts at its lr).
        start: Hyperparams,
        /// The final share of the run over which the lr decays ([`Teacher::with_cooldown`]).
        cooldown: f32,
    },
}

impl Controller {
    /// Name in tables and legends.
    pub fn name(&self) -> String {
        match self {
            Controller::Fixed(h) if *h == Hyperparams::INITIAL => "default".into(),
            Controller::Fixed(_) => "fixed".into(),
            Controller::Policy { file, .. } => file.name.clone(),
            Controller::Alternative(a) => a.name().into(),
            Controller::Schedule {
                peak,
                back_off,
                start,
                cooldown,
            } => {
                let mut name = format!("schedule-{peak:e}");
                if *cooldown < 1.0 {
                    name += &format!("-cooldown-{cooldown}");
                }
                if back_off.is_finite() {
                    name += &format!("-back-off-{back_off}");
                }
                if start.lr != Hyperparams::INITIAL.lr {
                    name += &format!("-from-{:e}", start.lr);
                }
                name
            }
        }
    }

    /// CIAO's hyperparameters at the start of a run (`None`: not a CIAO run).
    pub fn initial(&self) -> Option<Hyperparams> {
        match self {
            Controller::Fixed(h)
            | Controller::Policy { initial: h, .. }
            | Controller::Schedule { start: h, .. } => Some(*h),
            Controller::Alternative(_) => None,
        }
    }

    /// Trains `task` for `steps` steps under this controller. A policy decides `decisions` times
    /// (capped at `steps`); runs without one are evaluated at the same points, so curves line up.
    pub fn run(
        &self,
        task: &mut dyn Task,
        steps: u64,
        decisions: u32,
        hide_eval: bool,
    ) -> Result<Trace> {
        let decisions = decisions.clamp(1, u32::try_from(steps).unwrap_or(u32::MAX));
        let interval = steps / u64::from(decisions);
        let eval_at: Vec<u64> = (0..=u64::from(decisions)).map(|k| k * interval).collect();
        match self {
            Controller::Fixed(h) => env::run_fixed(task, steps, *h, &eval_at),
            Controller::Alternative(a) => Ok(a.run(task, steps, &eval_at)),
            Controller::Policy { file, initial } => {
                let cfg = EpisodeConfig {
                    total_steps: steps,
                    decisions,
                    initial: *initial,
                    hide_eval,
                };
                env::run_episode(task, &cfg, file.agent()?.as_mut())
            }
            Controller::Schedule {
                peak,
                back_off,
                start,
                cooldown,
            } => {
                let cfg = EpisodeConfig {
                    total_steps: steps,
                    decisions,
                    initial: *start,
                    hide_eval,
                };
                env::run_episode(
                    task,
                    &cfg,
                    &mut Teacher::new(*peak, *back_off, *start, decisions).with_cooldown(*cooldown),
                )
            }
        }
    }
}

/// One evaluated run.
#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    /// [`TaskSpec::key`].
    pub task: String,
    /// Task family name.
    pub family: String,
    /// Task seed.
    pub seed: u64,
    /// T.
    pub steps: u64,
    /// [`Controller::name`].
    pub controller: String,
    /// The run's final eval loss (NaN: diverged).
    pub final_eval_loss: f64,
    /// The best grid run's final eval loss at budget T, for reference.
    pub grid_loss_at_t: f64,
    /// Speedup against the grid.
    pub speedup: Speedup,
    /// Speedup against the untuned default: the steps the constant default needs to reach
    /// this run's final loss, over T (the default itself scores 1 up to run-to-run noise).
    pub speedup_vs_default: Speedup,
    /// The task's extra metrics at the end of the run.
    pub metrics: Vec<(String, f64)>,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// One row per task and controller.
    pub rows: Vec<EvalRow>,
    /// Geometric-mean speedup against the grid per controller across tasks.
    pub means: Vec<(String, Option<MeanSpeedup>)>,
    /// Geometric-mean speedup against the untuned default per controller across tasks.
    pub means_vs_default: Vec<(String, Option<MeanSpeedup>)>,
    /// The grid of every task.
    pub grids: Vec<(String, GridCurve)>,
    /// The untuned default's loss per budget of every task.
    pub default_curves: Vec<(String, GridCurve)>,
}

/// What runs are scored against.
#[derive(Clone, Copy, Debug)]
pub struct References<'a> {
    /// The tuned AdamW grid.
    pub grid: &'a Grid,
    /// Budgets, as multiples of T, at which the untuned default is measured
    /// ([`DEFAULT_BUDGET_FACTORS`] by default).
    pub default_factors: &'a [f64],
}

/// Runs every task in `specs` under every controller (in parallel on `pool`), computes or loads
/// the grids, runs the untuned default to the largest of its budgets, and scores the runs
/// against both references. Returns the report and the traces, indexed `[task][controller]`.
pub fn evaluate(
    specs: &[TaskSpec],
    controllers: &[Controller],
    decisions: u32,
    pool: &Pool,
    references: References<'_>,
    grid_progress: &ProgressBar,
    run_progress: &ProgressBar,
) -> Result<(EvalReport, Vec<Vec<Trace>>)> {
    let References {
        grid,
        default_factors,
    } = references;
    let grids = grid.curves(specs, pool, grid_progress)?;
    // Job (t, Some(c)) runs task t under controller c; (t, None) runs the untuned default to the
    // largest budget, evaluated at every budget.
    let jobs: Vec<(usize, Option<usize>)> = (0..specs.len())
        .flat_map(|t| {
            (0..controllers.len())
                .map(Some)
                .chain([None])
                .map(move |c| (t, c))
        })
        .collect();
    run_progress.set_length(jobs.len() as u64);
    let traces = pool.run(jobs, run_progress, |(t, c)| {
        let mut task = pool.build(&specs[t])?;
        match c {
            Some(c) => controllers[c].run(task.as_mut(), specs[t].steps, decisions, false),
            None => {
                let budgets = baseline::budgets(default_factors, specs[t].steps);
                let longest = budgets.last().copied().unwrap_or(specs[t].steps);
                env::run_fixed(task.as_mut(), longest, Hyperparams::INITIAL, &budgets)
            }
        }
    })?;
    // Per task, in job order: the controllers' traces, then the default's long run.
    let mut traces = traces.into_iter();
    let mut default_curves = Vec::with_capacity(specs.len());
    let traces: Vec<Vec<Trace>> = specs
        .iter()
        .map(|spec| {
            let runs: Vec<Trace> = traces.by_ref().take(controllers.len()).collect();
            if let Some(long) = traces.next() {
                default_curves.push(GridCurve::of_constant_run(
                    spec.steps,
                    &baseline::budgets(default_factors, spec.steps),
                    &long.evals,
                    f64::from(Hyperparams::INITIAL.lr),
                ));
            }
            runs
        })
        .collect();

    let mut rows = Vec::new();
    for (((spec, grid), default), runs) in
        specs.iter().zip(&grids).zip(&default_curves).zip(&traces)
    {
        for (controller, trace) in controllers.iter().zip(runs) {
            rows.push(EvalRow {
                task: spec.key(),
                family: spec.family.to_string(),
                seed: spec.seed,
                steps: spec.steps,
                controller: controller.name(),
                final_eval_loss: trace.final_eval_loss,
                grid_loss_at_t: grid.at(spec.steps).map_or(f64::NAN, |p| p.loss),
                speedup: grid.speedup(trace.final_eval_loss),
                speedup_vs_default: default.speedup(trace.final_eval_loss),
                metrics: trace
                    .metrics
                    .iter()
                    .map(|&(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    let means_of = |speedup: fn(&EvalRow) -> Speedup| -> Vec<(String, Option<MeanSpeedup>)> {
        controllers
            .iter()
            .map(|c| {
                let name = c.name();
                let mean =
                    MeanSpeedup::of(rows.iter().filter(|r| r.controller == name).map(speedup));
                (name, mean)
            })
            .collect()
    };
    let means = means_of(|r| r.speedup);
    let means_vs_default = means_of(|r| r.speedup_vs_default);
    let keys = || specs.iter().map(|s| s.key());
    let report = EvalReport {
        rows,
        means,
        means_vs_default,
        grids: keys().zip(grids).collect(),
        default_curves: keys().zip(default_curves).collect(),
    };
    Ok((report, traces))
}

impl EvalReport {
    /// The table as aligned text, with the geometric means below it.
    pub fn table(&self) -> String {
        let width = |f: fn(&EvalRow) -> usize, title: &str| {
            self.rows
                .iter()
                .map(f)
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        };
        let (tw, cw) = (
            width(|r| r.task.len(), "task"),
            width(|r| r.controller.len(), "controller"),
        );
        let mut out = format!(
            "{:<tw$} {:>4} {:>6} {:<cw$} {:>11} {:>11} {:>9} {:>10}\n",
            "task", "seed", "T", "controller", "final loss", "grid at T", "vs grid", "vs default"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<tw$} {:>4} {:>6} {:<cw$} {:>11.4e} {:>11.4e} {:>9} {:>10}",
                r.task,
                r.seed,
                r.steps,
                r.controller,
                r.final_eval_loss,
                r.grid_loss_at_t,
                r.speedup.to_string(),
                r.speedup_vs_default.to_string()
            );
        }
        for (against, means) in [("grid", &self.means), ("default", &self.means_vs_default)] {
            for (name, mean) in means {
                match mean {
                    Some(m) => {
                        _ = writeln!(out, "geometric-mean speedup vs {against}, {name}: {m}")
                    }
                    None => _ = writeln!(out, "geometric-mean speedup vs {against}, {name}: n/a"),
                }
            }
        }
        out
    }

    /// The rows as CSV (speedup as kind and value, so bounds stay machine-readable).
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "task,family,seed,steps,controller,final_eval_loss,grid_loss_at_t,speedup_kind,speedup,\
             vs_default_kind,vs_default\n",
        );
        let parts = |s: Speedup| match s {
            Speedup::Measured(x) => ("measured", x),
            Speedup::Below(x) => ("below", x),
            Speedup::Above(x) => ("above", x),
            Speedup::Unmeasured => ("unmeasured", f64::NAN),
        };
        for r in &self.rows {
            let (kind, value) = parts(r.speedup);
            let (d_kind, d_value) = parts(r.speedup_vs_default);
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{kind},{value},{d_kind},{d_value}",
                r.task,
                r.family,
                r.seed,
                r.steps,
                r.controller.replace(',', ";"),
                r.final_eval_loss,
                r.grid_loss_at_t
            );
        }
        out
    }

    /// Writes `eval.csv`, `eval.json` and one `<task>.png` per task into `dir`.
    pub fn write(
        &self,
        dir: &Path,
        specs: &[TaskSpec],
        controllers: &[Controller],
        traces: &[Vec<Trace>],
    ) -> Result<()> {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(|source| Error::Io { path, source })
        };
        write("eval.csv", self.csv())?;
        write(
            "eval.json",
            serde_json::to_string_pretty(self).expect("a report always serialises"),
        )?;
        for ((spec, runs), (_, grid)) in specs.iter().zip(traces).zip(&self.grids) {
            let plotted: Vec<PlottedRun<'_>> = controllers
                .iter()
                .zip(runs)
                .map(|(c, trace)| PlottedRun {
                    label: c.name(),
                    trace,
                    initial: c.initial(),
                })
                .collect();
            let best = grid.at(spec.steps).map(|b| Line {
                label: format!("best AdamW ({}, lr {:e})", b.schedule, b.lr),
                points: b
                    .curve
                    .iter()
                    .filter_map(|&(s, l)| Some((s as f64, l?)))
                    .collect(),
                markers: true,
            });
            let panels = plot::trace_panels(&plotted, best.into_iter().collect());
            let path = dir.join(format!("{}.png", spec.key()));
            plot::write_png(&path, &spec.key(), &panels, 2)?;
        }
        Ok(())
    }
}
