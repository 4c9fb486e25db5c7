//! Imitation warm start (spec §6a): before PPO, the policy learns by behaviour cloning to
//! reproduce good schedules on the training distribution.
//!
//! The teacher is the inner optimizer itself (CIAO, so its learning rates are in the units the
//! policy steers: the trust ratio makes lr relative to ‖p‖): per task configuration a small grid
//! of peak learning rates, each followed through the lr head's own relative actions as closely as
//! they allow (up as fast as ×2 per decision, then a linear decay to 0 by the end, the schedule
//! measured to reach the tuned grid on Fashion-MNIST), every other hyperparameter steered back to
//! its initial value. Each configuration demonstrates one peak: the best in hindsight, or among
//! near-ties the one that does best over all configurations ([`choose_peaks`]). It is also
//! replayed from perturbed starts, so the clone learns to recover from bad settings. Then DAgger
//! rounds: the clone runs the configurations itself and the teacher labels what it should have
//! done from where it was. Demonstrations carry the reward of spec §6, so the critic is fitted to
//! them too and PPO starts with a value function that knows what these schedules earn.

use std::io::Write;
use std::path::Path;

use indicatif::ProgressBar;
use lhopt_core::action::{CLIP_FRAC_SHIFTS, HALVE_HOLD_DOUBLE, LAMB_SCALES, LR_SCALES};
use lhopt_core::math::logit;
use lhopt_core::observation::{OBS_CHECKPOINTS, OBS_EVAL_LOSS, OBS_PROGRESS, OBS_TRAIN_LOSS};
use lhopt_core::{Action, Hyperparams, OBS_DIM, Restart};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::env::{self, Agent, EpisodeConfig, Trace};
use crate::error::{Error, Result};
use crate::meta_task::{MetaTask, ReferenceCache, mix};
use crate::meta_train::MetaTrainConfig;
use crate::policy_net::ActorCritic;
use crate::pool::Pool;
use crate::ppo::agent::{ActMode, PolicyAgent};
use crate::ppo::learner::{Episode, ImitationStats, Learner};
use crate::ppo::rollout;
use crate::reward::{self, ReferenceCurve};
use crate::tasks::Family;

/// How the imitation phase runs (a section of the meta-training config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImitationConfig {
    /// Task configurations to demonstrate on (0 skips the phase: PPO from a random policy).
    pub tasks: u64,
    /// The teacher's peak learning rates (CIAO units).
    pub peaks: Vec<f64>,
    /// A configuration demonstrates the peak nearest the usual one among those whose final
    /// log-speedup is within this of its best ([`choose_peaks`]; 0: always its best).
    pub peak_tolerance: f64,
    /// Extra demonstrations per configuration from perturbed initial hyperparameters.
    pub perturbed_demos: u32,
    /// Behaviour-cloning gradient steps.
    pub steps: u64,
    /// Episodes per gradient step.
    pub batch: usize,
    /// DAgger rounds after the first cloning: the clone runs every demonstrated configuration
    /// itself (greedy, from the initial hyperparameters), each decision it took is labelled with
    /// the teacher's action from where the clone actually was, and cloning continues on all
    /// episodes so far. Corrects the drift of a pure clone away from the states it was taught.
    pub dagger_rounds: u32,
    /// Behaviour-cloning gradient steps after each DAgger round.
    pub dagger_steps: u64,
    /// The teacher backs off (reloads its best checkpoint, halves the lr and lowers its peak to
    /// match) when the interval's mean training loss is more than this in log above the saved
    /// best, or is not finite, and restores its best eval point near the end
    /// ([`RESTORE_STRETCH`]); `inf` keeps it open loop ([`Teacher`]).
    pub back_off: f64,
}

impl Default for ImitationConfig {
    fn default() -> Self {
        Self {
            tasks: 128,
            peaks: vec![1e-2, 3e-2, 5e-2, 1e-1, 2e-1, 3e-1],
            peak_tolerance: 0.15,
            perturbed_demos: 1,
            steps: 400,
            batch: 32,
            dagger_rounds: 2,
            dagger_steps: 200,
            back_off: 0.5,
        }
    }
}

/// The final share of a run in which the teacher goes back to its best eval point whenever the
/// eval loss is above it (the lr is below a tenth of its peak there, so little progress is lost).
/// Restoring at the last decision only gave the clone one such label per overfit run, too rare
/// to learn (measured: that clone restored on none of the six held-out 1000-step runs, the
/// overfit image-MLP seed 0 included).
pub const RESTORE_STRETCH: f32 = 0.1;

/// Cloning counts a restart label that loads or swaps a register this many times
/// ([`Learner::imitation_step`]). The teacher restores at a few decisions of a few runs (a
/// diverging run answered, an overfit run rolled back), too rare for a clone weighted like every
/// other label to learn (measured: no clone restored on held-out runs). With feature set 3's
/// register eval loss to read, the weighted clone restores where the run has overfit
/// (`policies/default.md`, "Feature set 3").
pub const RESTORE_LABEL_WEIGHT: f64 = 10.0;

/// The teacher: follows `peak × (1 − p)` (or, [`Teacher::with_cooldown`], holds the peak and
/// decays over the last share of the run only) with the lr head's relative actions and steers
/// every other hyperparameter back to its initial value. It mirrors the hyperparameters itself
/// with the core's own [`lhopt_core::apply`], so what it aims at is what the run gets.
///
/// Closed loop: it keeps its best point so far in checkpoint register 0: the lowest eval loss
/// where the run reports one, else the lowest training loss (the interval's mean). When the
/// register's loss feature puts the run more than `back_off` in log above the saved point (under
/// feature set 3 by the eval losses where the run reports them, else by the training losses), or
/// the training loss is not finite, it loads the checkpoint and the schedule's peak drops so that
/// the lr it wants is half the lr in force, for the rest of the run (the line still decays to 0 by
/// the end). So a peak that is too high for the task is cut where the task shows it, and the
/// clone sees a diverging run answered. The test
/// is against the saved point, not the previous interval: minibatch noise moves consecutive
/// intervals by more than a divergence does at first (measured: a 10% rise between intervals, on
/// fixed-peak schedules, fired on healthy runs and cost 1.20x → 1.05x). In the last
/// [`RESTORE_STRETCH`] of the run and at the last decision, where the eval loss is above the saved
/// one (the run overfits), it loads the checkpoint, so the run ends at or near its best eval point.
#[derive(Clone, Debug)]
pub struct Teacher {
    peak: f32,
    /// The peak after backing off (`peak` until the run first diverges).
    lowered_peak: f32,
    /// The final share of the run over which the lr decays linearly to 0; before it the schedule
    /// holds its peak (1: a linear decay over the whole run).
    cooldown: f32,
    back_off: f32,
    start: Hyperparams,
    h: Hyperparams,
    /// Decisions in the run (the last one may restore the best eval point).
    total_decisions: u32,
    decisions: u32,
    /// The eval loss the run reported for the coming decision (NaN: none).
    eval_now: f32,
    /// (progress, eval loss) of every decision so far that saw one and did not back off: what a
    /// saved register holds (a register saved at any other decision counts as unknown).
    evals: Vec<(f32, f32)>,
}

impl Teacher {
    /// A teacher aiming at peak learning rate `peak`, for a run of `decisions` decisions starting
    /// from `start`, backing off when the training loss is more than `back_off` in log above its
    /// saved best (`f32::INFINITY`: open loop, never; it then never touches the registers).
    pub fn new(peak: f32, back_off: f32, start: Hyperparams, decisions: u32) -> Self {
        let start = start.clamped();
        Self {
            peak,
            lowered_peak: peak,
            cooldown: 1.0,
            back_off,
            start,
            h: start,
            total_decisions: decisions,
            decisions: 0,
            eval_now: f32::NAN,
            evals: Vec::new(),
        }
    }

    /// The same teacher holding its peak until the last `cooldown` of the run (in (0, 1]) and
    /// decaying linearly to 0 over it.
    pub fn with_cooldown(mut self, cooldown: f32) -> Self {
        self.cooldown = cooldown.clamp(1e-3, 1.0);
        self
    }

    /// The schedule's share of its peak at progress `p`: 1 until the cooldown starts, then
    /// falling linearly to 0 at the end of the run.
    fn share(&self, p: f32) -> f32 {
        ((1.0 - p) / self.cooldown).min(1.0)
    }

    /// The learning rate the schedule wants over the interval that starts at progress `p` and
    /// ends at `p + dp`: its value at the interval's midpoint.
    fn target_lr(&self, p: f32, dp: f32) -> f32 {
        (self.lowered_peak * self.share(p + 0.5 * dp)).max(Hyperparams::INITIAL.lr * 1e-3)
    }

    /// Reads the observation of the next decision and the eval loss the run reported there (NaN:
    /// none), with the run's hyperparameters at `h`, and returns the teacher's action from there
    /// (DAgger labels the clone's own runs with this).
    pub fn label(&mut self, obs: &[f32], h: Hyperparams, eval_loss: f32) -> Action {
        self.h = h;
        let p = obs[OBS_PROGRESS];
        self.decisions += 1;
        // Decisions are evenly spaced: the k-th comes at p = k·Δp.
        let dp = p / self.decisions as f32;
        let restart = if self.back_off.is_finite() {
            self.react(obs, p, eval_loss)
        } else {
            Restart::None
        };
        self.action(p, dp, restart)
    }

    /// The closed loop ([`Teacher`]): the register operation it asks for, lowering the peak when
    /// the run diverges.
    fn react(&mut self, obs: &[f32], p: f32, eval_loss: f32) -> Restart {
        let loss_valid = obs[OBS_TRAIN_LOSS] < 0.5 && obs[OBS_TRAIN_LOSS + 1] < 0.5;
        // Register 0: tanh(ln(L_saved / L_now)) (eval losses where both are reported) and the
        // progress it was saved at (−1: empty).
        let (saved_vs_now, saved_at) = (obs[OBS_CHECKPOINTS], obs[OBS_CHECKPOINTS + 1]);
        let saved = saved_at >= 0.0;
        let diverged = !loss_valid || (saved && saved_vs_now < -self.back_off.tanh());
        if diverged {
            self.lowered_peak = self
                .lowered_peak
                .min(0.5 * self.h.lr / self.share(p).max(1e-3));
            return if saved {
                Restart::Load(0)
            } else {
                Restart::None
            };
        }
        if !(eval_loss.is_finite() && eval_loss > 0.0) {
            // No eval loss: the best point is the best training loss.
            return if !saved || saved_vs_now >= 0.0 {
                Restart::Save(0)
            } else {
                Restart::None
            };
        }
        // The register's eval loss, if it was saved at a decision that saw one (the clone's own
        // saves included, when DAgger relabels its run).
        let saved_eval = self
            .evals
            .iter()
            .find(|&&(at, _)| saved && (at - saved_at).abs() < 1e-6)
            .map(|&(_, eval)| eval);
        self.evals.push((p, eval_loss));
        let last = self.decisions >= self.total_decisions;
        let restoring = last || p >= 1.0 - RESTORE_STRETCH;
        match saved_eval {
            Some(best) if eval_loss > best && restoring => Restart::Load(0),
            Some(best) if eval_loss >= best => Restart::None,
            // A new best: worth saving unless the run ends here.
            _ if last => Restart::None,
            _ => Restart::Save(0),
        }
    }

    /// The action that brings the hyperparameters `h` nearest to the schedule at progress `p`.
    fn action(&self, p: f32, dp: f32, restart: Restart) -> Action {
        let h = &self.h;
        let init = &Hyperparams::INITIAL;
        let nearest_log = |value: f32, target: f32, table: &[f32]| -> u8 {
            nearest(table, |m| ((value * m).ln() - target.ln()).abs())
        };
        let target_lr = self.target_lr(p, dp);
        let clip_shift = nearest(&CLIP_FRAC_SHIFTS, |d| {
            (logit(h.clip_frac) + d - logit(init.clip_frac)).abs()
        });
        Action {
            choices: [
                nearest_log(h.lr, target_lr, &LR_SCALES),
                nearest_log(h.wd, init.wd, &HALVE_HOLD_DOUBLE),
                nearest_log(h.eps, init.eps, &HALVE_HOLD_DOUBLE),
                nearest_log(h.ombeta1, init.ombeta1, &HALVE_HOLD_DOUBLE),
                nearest_log(h.ombeta2, init.ombeta2, &HALVE_HOLD_DOUBLE),
                clip_shift,
                nearest_log(h.clip_ombeta, init.clip_ombeta, &HALVE_HOLD_DOUBLE),
                nearest_log(h.lamb_ombeta, init.lamb_ombeta, &LAMB_SCALES),
                restart.to_choice(),
            ],
        }
    }
}

/// Index of the entry of `table` with the smallest `distance`; on a tie the one nearest the
/// middle of the table (every table's hold choice), so the teacher never moves for nothing.
fn nearest(table: &[f32], distance: impl Fn(f32) -> f32) -> u8 {
    let mid = table.len() / 2;
    let key = |i: usize| (distance(table[i]), i.abs_diff(mid));
    let best = (0..table.len())
        .min_by(|&a, &b| {
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(mid);
    best as u8
}

impl Agent for Teacher {
    fn reset(&mut self) {
        self.h = self.start;
        self.lowered_peak = self.peak;
        self.decisions = 0;
        self.eval_now = f32::NAN;
        self.evals.clear();
    }

    fn see_eval_loss(&mut self, eval_loss: f32) {
        self.eval_now = eval_loss;
    }

    fn act(&mut self, obs: &[f32; OBS_DIM]) -> Action {
        let action = self.label(obs, self.h, self.eval_now);
        self.h = lhopt_core::apply(&self.h, &action);
        action
    }
}

/// The demonstrations of one task configuration.
#[derive(Clone, Debug)]
pub struct Demonstrations {
    /// The configuration.
    pub task: MetaTask,
    /// Its tuned reference.
    pub curve: ReferenceCurve,
    /// The configuration's family.
    pub family: Family,
    /// The peak it demonstrates ([`choose_peaks`]).
    pub peak: f64,
    /// That peak's final log-speedup over the reference.
    pub chosen_log_speedup: f64,
    /// Final log-speedup over the tuned reference of each peak from the initial hyperparameters
    /// (−3 when it diverged), in [`ImitationConfig::peaks`] order.
    pub peak_log_speedups: Vec<f64>,
    /// The chosen peak's run and its perturbed replays, as learner episodes.
    pub episodes: Vec<Episode>,
}

/// Every peak of the teacher's grid, run on one configuration from the initial hyperparameters.
pub struct TeacherRuns {
    /// The configuration.
    pub task: MetaTask,
    /// Its tuned reference.
    pub curve: ReferenceCurve,
    /// Final log-speedup over the reference of each peak (−3 when it diverged), in
    /// [`ImitationConfig::peaks`] order.
    pub log_speedups: Vec<f64>,
    traces: Vec<Trace>,
}

/// One run of `task` steered by `agent` from `initial`, the eval loss visible.
fn run_on(
    task: &MetaTask,
    pool: &Pool,
    initial: Hyperparams,
    agent: &mut dyn Agent,
) -> Result<Trace> {
    let mut inner = task.build(pool)?;
    let cfg = EpisodeConfig {
        total_steps: task.steps,
        decisions: task.decisions,
        initial,
        hide_eval: false,
    };
    env::run_episode(inner.as_mut(), &cfg, agent)
}

/// One teacher run of `task` at `peak` from `initial`.
fn teacher_run(
    task: &MetaTask,
    cfg: &ImitationConfig,
    pool: &Pool,
    peak: f64,
    initial: Hyperparams,
) -> Result<Trace> {
    let mut teacher = Teacher::new(peak as f32, cfg.back_off as f32, initial, task.decisions);
    run_on(task, pool, initial, &mut teacher)
}

/// Runs the teacher's grid on `task`; `None` when the task's reference cannot define a reward.
pub fn teach(
    task: &MetaTask,
    cfg: &ImitationConfig,
    start: Hyperparams,
    pool: &Pool,
    references: &ReferenceCache,
) -> Result<Option<TeacherRuns>> {
    let Some(curve) = task.reference(pool, references)? else {
        return Ok(None);
    };
    let mut runs = TeacherRuns {
        task: task.clone(),
        curve,
        log_speedups: Vec::with_capacity(cfg.peaks.len()),
        traces: Vec::with_capacity(cfg.peaks.len()),
    };
    for &peak in &cfg.peaks {
        let trace = teacher_run(task, cfg, pool, peak, start)?;
        runs.log_speedups
            .push(final_log_speedup(&curve, &trace, task.steps));
        runs.traces.push(trace);
    }
    Ok(Some(runs))
}

fn final_log_speedup(curve: &ReferenceCurve, trace: &Trace, steps: u64) -> f64 {
    *rollout::episode_potentials(curve, trace, steps)
        .last()
        .unwrap_or(&-reward::POTENTIAL_CLIP)
}

/// The peak each configuration demonstrates (indices into [`ImitationConfig::peaks`]): among
/// the peaks within [`ImitationConfig::peak_tolerance`] of the configuration's best final
/// log-speedup, the one nearest (in log) to the peak that does best on average over all
/// configurations. A clone cannot tell configurations apart by differences that small, so
/// near-ties go to one consistent schedule instead of splitting the labels of similar states
/// between neighbouring peaks (a split clone settles between them, measured below either).
pub fn choose_peaks(runs: &[TeacherRuns], cfg: &ImitationConfig) -> Vec<usize> {
    let n = runs.len().max(1) as f64;
    let mean = |i: usize| runs.iter().map(|r| r.log_speedups[i]).sum::<f64>() / n;
    let by = |f: &dyn Fn(usize) -> f64| {
        (0..cfg.peaks.len())
            .min_by(|&a, &b| f(a).total_cmp(&f(b)))
            .unwrap_or(0)
    };
    let usual = cfg.peaks[by(&|i| -mean(i))];
    runs.iter()
        .map(|r| {
            let best = r.log_speedups.iter().copied().fold(f64::MIN, f64::max);
            by(&|i| {
                if r.log_speedups[i] >= best - cfg.peak_tolerance {
                    (cfg.peaks[i] / usual).ln().abs()
                } else {
                    f64::INFINITY
                }
            })
        })
        .collect()
}

/// The demonstrations of one configuration at its chosen peak: the teacher's run from the
/// initial hyperparameters and its replays from perturbed starts.
pub fn demonstrate(
    runs: TeacherRuns,
    choice: usize,
    cfg: &ImitationConfig,
    start: Hyperparams,
    pool: &Pool,
) -> Result<Demonstrations> {
    let TeacherRuns {
        task,
        curve,
        log_speedups,
        mut traces,
    } = runs;
    let peak = cfg.peaks[choice];
    let trace = traces.swap_remove(choice);
    let mut episodes = vec![episode(&curve, &trace, &start, task.steps)];
    let mut rng = ChaCha8Rng::seed_from_u64(mix(task.seed, 0x7EAC_4E50));
    for _ in 0..cfg.perturbed_demos {
        let initial = rollout::perturb(&mut rng, start);
        let trace = teacher_run(&task, cfg, pool, peak, initial)?;
        episodes.push(episode(&curve, &trace, &initial, task.steps));
    }
    Ok(Demonstrations {
        family: task.spec.family,
        task,
        curve,
        peak,
        chosen_log_speedup: log_speedups[choice],
        peak_log_speedups: log_speedups,
        episodes,
    })
}

/// A teacher's run as a learner episode: observations, actions, the rewards of spec §6 and the
/// critic's privileged inputs (no behaviour probabilities or actor states: cloning does not use
/// them).
fn episode(curve: &ReferenceCurve, trace: &Trace, initial: &Hyperparams, steps: u64) -> Episode {
    let potentials = rollout::episode_potentials(curve, trace, steps);
    let rewards = potentials
        .windows(2)
        .map(|w| (w[1] - w[0]) as f32)
        .collect();
    Episode {
        version: 0,
        obs: trace.decisions.iter().flat_map(|d| d.obs.clone()).collect(),
        privileged: rollout::privileged_inputs(curve, trace, initial, &potentials),
        actions: trace.decisions.iter().map(|d| d.action.choices).collect(),
        behaviour_logp: Vec::new(),
        actor_h: Vec::new(),
        actor_c: Vec::new(),
        rewards,
    }
}

/// One line of `imitation.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImitationLine {
    /// What the teachers achieved, once before cloning.
    Teachers {
        /// Configurations with demonstrations (the others had no usable reference).
        tasks: usize,
        /// Episodes demonstrated.
        episodes: usize,
        /// Mean final log-speedup over the tuned reference of the best peak in hindsight, from the initial
        /// hyperparameters.
        mean_best_log_speedup: f64,
        /// Mean final log-speedup of the demonstrated (chosen) peaks.
        mean_chosen_log_speedup: f64,
        /// Mean final log-speedup of each peak from the initial hyperparameters.
        mean_log_speedup_per_peak: Vec<(f64, f64)>,
        /// How often each peak was demonstrated.
        chosen_per_peak: Vec<(f64, usize)>,
        /// Mean best-in-hindsight log-speedup per family.
        per_family: Vec<(String, f64)>,
    },
    /// The clone's own greedy runs of the demonstrated configurations, before a DAgger round.
    Student {
        /// DAgger round (1-based).
        round: u32,
        /// Mean final log-speedup over the reference from the initial hyperparameters.
        mean_log_speedup: f64,
        /// The same for the demonstrated teachers, for comparison.
        mean_teacher_log_speedup: f64,
        /// Share of the clone's decisions whose lr choice was its teacher's from there.
        lr_agreement: f64,
    },
    /// A behaviour-cloning step (every tenth, and the last).
    Step {
        /// Gradient step (1-based).
        step: u64,
        /// Its statistics.
        #[serde(flatten)]
        stats: ImitationStats,
    },
}

/// The imitation phase of the run configured by `run_cfg`: demonstrations on the first
/// `imitation.tasks` configurations of its task sequence, then behaviour cloning into `learner`.
/// Writes `imitation.jsonl` into `out`.
pub fn run(
    learner: &mut Learner,
    run_cfg: &MetaTrainConfig,
    pool: &Pool,
    references: &ReferenceCache,
    out: &Path,
    progress: &ProgressBar,
) -> Result<Vec<ImitationLine>> {
    let (cfg, run_seed) = (&run_cfg.imitation, run_cfg.seed);
    if cfg.peaks.is_empty() || cfg.batch == 0 {
        return Err(Error::Usage(
            "imitation.peaks must not be empty and imitation.batch must be at least 1".into(),
        ));
    }
    if cfg.back_off.is_nan() || cfg.back_off < 0.0 {
        return Err(Error::Usage(format!(
            "imitation.back_off is a rise in log training loss, at least 0 (inf: open loop); got {}",
            cfg.back_off
        )));
    }
    let tasks: Vec<MetaTask> = (0..cfg.tasks)
        .map(|i| MetaTask::sample(&run_cfg.rollout, run_seed, i))
        .collect();
    phase(progress, "teachers", tasks.len());
    let runs: Vec<TeacherRuns> = pool
        .run(tasks, progress, |t| {
            teach(&t, cfg, run_cfg.rollout.start(), pool, references)
        })?
        .into_iter()
        .flatten()
        .collect();
    if runs.is_empty() {
        return Err(Error::Usage(
            "imitation: no task configuration had a usable reference; raise imitation.tasks".into(),
        ));
    }
    let choices = choose_peaks(&runs, cfg);
    phase(progress, "perturbed replays", runs.len());
    let demos: Vec<Demonstrations> = pool.run(
        runs.into_iter().zip(choices).collect(),
        progress,
        |(r, choice)| demonstrate(r, choice, cfg, run_cfg.rollout.start(), pool),
    )?;
    let mut lines = vec![teachers_line(cfg, &demos)];
    let mut episodes: Vec<Episode> = demos
        .iter()
        .flat_map(|d| d.episodes.iter().cloned())
        .filter(|e| !e.is_empty())
        .collect();
    learner.prepare_imitation(&episodes.iter().collect::<Vec<_>>());

    let mut rng = ChaCha8Rng::seed_from_u64(mix(run_seed, 0x0131_7A7E));
    let mut done = 0;
    for round in 0..=cfg.dagger_rounds {
        if round > 0 {
            phase(
                progress,
                format!("clone's own runs, round {round}"),
                demos.len(),
            );
            let vars = learner.net.to_named();
            let runs = pool.run(demos.iter().collect(), progress, |d| {
                student_run(d, &vars, run_cfg, pool)
            })?;
            lines.push(student_line(round, &demos, &runs));
            episodes.extend(
                runs.into_iter()
                    .map(|r| r.episode)
                    .filter(|e| !e.is_empty()),
            );
        }
        let steps = if round == 0 {
            cfg.steps
        } else {
            cfg.dagger_steps
        };
        phase(progress, format!("cloning, round {round}"), steps as usize);
        let mut order: Vec<usize> = Vec::new();
        for _ in 0..steps {
            if order.len() < cfg.batch {
                let mut fresh: Vec<usize> = (0..episodes.len()).collect();
                fresh.shuffle(&mut rng);
                order.extend(fresh);
            }
            let batch: Vec<&Episode> = order
                .drain(..cfg.batch.min(order.len()))
                .map(|i| &episodes[i])
                .collect();
            let stats = learner.imitation_step(&batch, RESTORE_LABEL_WEIGHT);
            done += 1;
            if done % 10 == 0 || done == total_steps(cfg) {
                lines.push(ImitationLine::Step { step: done, stats });
            }
            progress.inc(1);
        }
    }
    write_lines(&out.join(IMITATION_FILE), &lines)?;
    Ok(lines)
}

/// Starts the bar on a phase of `len` steps and draws it once: a log keeps the first frame a bar
/// draws, so the phase's name and length are set (through the builders, which do not draw; the
/// clone shares the bar's state) before that frame.
fn phase(progress: &ProgressBar, message: impl Into<std::borrow::Cow<'static, str>>, len: usize) {
    let _ = progress.clone().with_message(message).with_position(0);
    progress.set_length(len as u64);
}

/// Behaviour-cloning steps of the whole phase, DAgger rounds included.
fn total_steps(cfg: &ImitationConfig) -> u64 {
    cfg.steps + u64::from(cfg.dagger_rounds) * cfg.dagger_steps
}

/// The clone's own run of one demonstrated configuration, relabelled by its teacher.
struct StudentRun {
    /// Observations the clone saw, the teacher's actions from there, the run's own rewards.
    episode: Episode,
    /// The run's final log-speedup over the reference.
    log_speedup: f64,
    /// Share of its decisions whose lr choice was the teacher's.
    lr_agreement: f64,
}

/// Runs the clone (actor variables `vars`) greedily on `demo`'s configuration from the initial
/// hyperparameters, as deployment does, and labels each decision with what the demonstrated
/// teacher would have done from the hyperparameters the clone had reached (DAgger).
fn student_run(
    demo: &Demonstrations,
    vars: &[(String, Vec<f32>)],
    run_cfg: &MetaTrainConfig,
    pool: &Pool,
) -> Result<StudentRun> {
    let mut net = ActorCritic::new(
        tch::Device::Cpu,
        run_cfg.sizes()?,
        rollout::PRIVILEGED_DIM,
        run_cfg.ppo.norm_clip,
    );
    net.load_named(vars)?;
    let task = &demo.task;
    let initial = run_cfg.rollout.start();
    let mut agent = PolicyAgent::new(&net.actor, ActMode::Greedy, task.seed);
    let trace = run_on(task, pool, initial, &mut agent)?;
    let mut episode = episode(&demo.curve, &trace, &initial, task.steps);
    // The teacher follows the clone's run: it reads each observation the clone saw (so it backs
    // off where the clone's loss rose) from the hyperparameters the clone had reached.
    let mut teacher = Teacher::new(
        demo.peak as f32,
        run_cfg.imitation.back_off as f32,
        initial,
        task.decisions,
    );
    let mut before = initial;
    let mut agree = 0usize;
    for (d, label) in trace.decisions.iter().zip(&mut episode.actions) {
        // What the clone's run reported at that decision (NaN where its observation had none).
        let eval_seen = if d.obs[OBS_EVAL_LOSS] > 0.5 {
            f32::NAN
        } else {
            d.eval_loss as f32
        };
        let wanted = teacher.label(&d.obs, before, eval_seen);
        agree += usize::from(wanted.choices[0] == d.action.choices[0]);
        *label = wanted.choices;
        before = d.hyper;
    }
    let log_speedup = *rollout::episode_potentials(&demo.curve, &trace, task.steps)
        .last()
        .unwrap_or(&-reward::POTENTIAL_CLIP);
    Ok(StudentRun {
        lr_agreement: agree as f64 / trace.decisions.len().max(1) as f64,
        log_speedup,
        episode,
    })
}

fn student_line(round: u32, demos: &[Demonstrations], runs: &[StudentRun]) -> ImitationLine {
    let n = runs.len().max(1) as f64;
    ImitationLine::Student {
        round,
        mean_log_speedup: runs.iter().map(|r| r.log_speedup).sum::<f64>() / n,
        mean_teacher_log_speedup: demos.iter().map(|d| d.chosen_log_speedup).sum::<f64>() / n,
        lr_agreement: runs.iter().map(|r| r.lr_agreement).sum::<f64>() / n,
    }
}

/// Metrics of the imitation phase, in a run folder.
pub const IMITATION_FILE: &str = "imitation.jsonl";

fn teachers_line(cfg: &ImitationConfig, demos: &[Demonstrations]) -> ImitationLine {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let best: Vec<f64> = demos
        .iter()
        .map(|d| d.peak_log_speedups.iter().copied().fold(f64::MIN, f64::max))
        .collect();
    let per_peak = cfg
        .peaks
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let v: Vec<f64> = demos.iter().map(|d| d.peak_log_speedups[i]).collect();
            (p, mean(&v))
        })
        .collect();
    let wins = cfg
        .peaks
        .iter()
        .map(|&p| (p, demos.iter().filter(|d| d.peak == p).count()))
        .collect();
    let mut families: Vec<Family> = demos.iter().map(|d| d.family).collect();
    families.sort_by_key(|f| f.name());
    families.dedup();
    let per_family = families
        .into_iter()
        .map(|f| {
            let v: Vec<f64> = demos
                .iter()
                .zip(&best)
                .filter(|(d, _)| d.family == f)
                .map(|(_, b)| *b)
                .collect();
            (f.name().to_owned(), mean(&v))
        })
        .collect();
    ImitationLine::Teachers {
        tasks: demos.len(),
        episodes: demos.iter().map(|d| d.episodes.len()).sum(),
        mean_best_log_speedup: mean(&best),
        mean_chosen_log_speedup: mean(
            &demos
                .iter()
                .map(|d| d.chosen_log_speedup)
                .collect::<Vec<_>>(),
        ),
        mean_log_speedup_per_peak: per_peak,
        chosen_per_peak: wins,
        per_family,
    }
}

fn write_lines(path: &Path, lines: &[ImitationLine]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    for l in lines {
        writeln!(f, "{}", serde_json::to_string(l).expect("lines serialise")).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lr after each of `k` evenly spaced decisions of an open-loop teacher at `peak`.
    fn lr_path(peak: f32, k: u32) -> Vec<f32> {
        let mut open = Teacher::new(peak, f32::INFINITY, Hyperparams::INITIAL, k);
        lr_path_seeing(&mut open, k, |_| 0.0)
    }

    #[test]
    fn a_log_sees_each_phase_by_name_and_length_from_its_first_line() {
        use crate::progress::{SharedLog, log_target};
        let out = SharedLog::default();
        // An interval no test outlasts: only the first frame reaches the log.
        let target = log_target(std::time::Duration::from_secs(3600), out.clone());
        let bar = ProgressBar::with_draw_target(Some(0), target)
            .with_style(indicatif::ProgressStyle::with_template("{pos}/{len} {msg}").unwrap());
        phase(&bar, "teachers", 256);
        bar.inc(3);
        assert_eq!(out.text(), "0/256 teachers\n");
    }

    #[test]
    fn the_teacher_ramps_up_at_most_2x_per_decision_then_decays() {
        let path = lr_path(3e-2, 32);
        // Up from 1e-3 as fast as the head allows: ×2 at each of the first four decisions.
        assert_eq!(&path[..4], &[2e-3, 4e-3, 8e-3, 16e-3]);
        // Once caught up, and while the line falls by less than ×0.9 per decision, it tracks
        // 3e-2 · (1 − p) at the interval's midpoint to within half a step of the finest lr
        // choices (×0.9 / ×1: half of ln(1/0.9)).
        for (i, &lr) in path.iter().enumerate().take(21).skip(9) {
            let target = 3e-2 * (1.0 - (i as f32 + 1.5) / 32.0);
            let gap = (lr / target).ln().abs();
            assert!(
                gap <= (1.0f32 / 0.9).ln() / 2.0 + 1e-3,
                "{i}: {lr} vs {target}"
            );
        }
        assert!(*path.last().unwrap() < 3e-2 * 0.1, "{path:?}");
    }

    #[test]
    fn a_teacher_with_a_cooldown_holds_its_peak_until_the_cooldown_starts() {
        let k = 32;
        let mut t = Teacher::new(3e-2, f32::INFINITY, Hyperparams::INITIAL, k).with_cooldown(0.25);
        let path = lr_path_seeing(&mut t, k, |_| 0.0);
        // Once it has climbed from 1e-3, it holds the peak to within the finest lr step until the
        // last quarter (p = 0.75 at decision 24) …
        for &lr in &path[12..23] {
            assert!((lr / 3e-2).ln().abs() <= (1.0f32 / 0.9).ln(), "{path:?}");
        }
        // … then decays, ending below a tenth of it, as the linear teacher does.
        assert!(path[31] < 0.5 * path[24], "{path:?}");
        assert!(*path.last().unwrap() < 3e-2 * 0.1, "{path:?}");
        // A cooldown of the whole run is the linear teacher.
        let mut whole =
            Teacher::new(3e-2, f32::INFINITY, Hyperparams::INITIAL, k).with_cooldown(1.0);
        assert_eq!(lr_path_seeing(&mut whole, k, |_| 0.0), lr_path(3e-2, k));
    }

    #[test]
    fn the_teacher_brings_other_hyperparameters_back_and_holds_them() {
        let start = Hyperparams {
            wd: 8e-2,
            eps: 1e-7,
            clip_frac: 0.5,
            ..Hyperparams::INITIAL
        };
        let mut t = Teacher::new(1e-3, f32::INFINITY, start, 16);
        t.reset();
        for i in 1..=16 {
            let mut obs = [0.0; OBS_DIM];
            obs[OBS_PROGRESS] = i as f32 / 16.0;
            t.act(&obs);
        }
        let (h, init) = (t.h, Hyperparams::INITIAL);
        assert!(
            (h.wd / init.wd).ln().abs() <= 2f32.ln() / 2.0 + 1e-6,
            "wd {}",
            h.wd
        );
        assert!(
            (h.eps / init.eps).ln().abs() <= 2f32.ln() / 2.0 + 1e-6,
            "eps {}",
            h.eps
        );
        assert!((logit(h.clip_frac) - logit(init.clip_frac)).abs() <= 0.15 + 1e-6);
        // Unperturbed, every head but lr holds.
        let mut t = Teacher::new(1e-3, f32::INFINITY, Hyperparams::INITIAL, 16);
        t.reset();
        let a = t.action(0.5, 0.0625, Restart::None);
        assert_eq!(&a.choices[1..], &Action::HOLD.choices[1..]);
    }

    /// Observation at progress `p` of a run whose training loss is `worse` in log above the best
    /// one saved in register 0 (`None`: nothing saved; NaN: the loss is not finite).
    fn seeing(p: f32, worse: Option<f32>) -> [f32; OBS_DIM] {
        let mut o = [0.0; OBS_DIM];
        o[OBS_PROGRESS] = p;
        match worse {
            Some(x) if x.is_nan() => o[OBS_TRAIN_LOSS] = 1.0,
            Some(x) => o[OBS_CHECKPOINTS] = (-x).tanh(),
            None => {}
        }
        o[OBS_CHECKPOINTS + 1] = if worse.is_some() { 0.25 } else { -1.0 };
        o
    }

    /// The lr after each of `k` evenly spaced decisions of `teacher`, seeing `worse(i)` at
    /// decision i.
    fn lr_path_seeing(teacher: &mut Teacher, k: u32, worse: impl Fn(u32) -> f32) -> Vec<f32> {
        teacher.reset();
        (1..=k)
            .map(|i| {
                teacher.act(&seeing(i as f32 / k as f32, Some(worse(i))));
                teacher.h.lr
            })
            .collect()
    }

    #[test]
    fn the_closed_loop_teacher_backs_off_where_the_run_diverges_and_only_there() {
        let open = lr_path(1e-1, 32);
        let mut closed = Teacher::new(1e-1, 0.3, Hyperparams::INITIAL, 32);
        // At the best loss so far, or above it by less than the threshold: the open-loop path.
        assert_eq!(lr_path_seeing(&mut closed, 32, |_| 0.0), open);
        assert_eq!(lr_path_seeing(&mut closed, 32, |_| 0.25), open);
        // The loss is far above its best at decision 4 (lr 8e-3 in force, doubling to the
        // peak): the lr halves there, and then follows the lowered line down.
        let path = lr_path_seeing(&mut closed, 32, |i| if i == 4 { 0.5 } else { 0.0 });
        assert_eq!(&path[..4], &[2e-3, 4e-3, 8e-3, 4e-3]);
        assert!(path[4..].iter().all(|&lr| lr <= 4e-3 * 1.1), "{path:?}");
        assert!(*path.last().unwrap() < 4e-3 * 0.2, "{path:?}");
        // A non-finite loss diverges too, and each further divergence halves again.
        let path = lr_path_seeing(&mut closed, 32, |i| if i >= 5 { f32::NAN } else { 0.0 });
        assert_eq!(&path[3..7], &[16e-3, 8e-3, 4e-3, 2e-3]);
        // Open loop, neither moves it.
        let mut open_teacher = Teacher::new(1e-1, f32::INFINITY, Hyperparams::INITIAL, 32);
        assert_eq!(lr_path_seeing(&mut open_teacher, 32, |_| f32::NAN), open);
    }

    #[test]
    fn the_closed_loop_teacher_keeps_the_best_checkpoint_and_loads_it_when_diverging() {
        let restart = |o: [f32; OBS_DIM]| {
            Teacher::new(1e-1, 0.3, Hyperparams::INITIAL, 16)
                .label(&o, Hyperparams::INITIAL, f32::NAN)
                .restart()
        };
        // The first loss, or a new best, is saved; one a little above the best is not.
        assert_eq!(restart(seeing(0.5, None)), Restart::Save(0));
        assert_eq!(restart(seeing(0.5, Some(-0.1))), Restart::Save(0));
        assert_eq!(restart(seeing(0.5, Some(0.2))), Restart::None);
        // Far above the best, or not finite: load the best.
        assert_eq!(restart(seeing(0.5, Some(0.5))), Restart::Load(0));
        assert_eq!(restart(seeing(0.5, Some(f32::NAN))), Restart::Load(0));
        // Open loop: never touches the registers.
        let open = Teacher::new(1e-1, f32::INFINITY, Hyperparams::INITIAL, 16).label(
            &seeing(0.5, Some(0.5)),
            Hyperparams::INITIAL,
            1.0,
        );
        assert_eq!(open.restart(), Restart::None);
    }

    #[test]
    fn with_an_eval_loss_the_teacher_keeps_the_best_eval_point_and_ends_there() {
        // Eight decisions; the eval loss falls to its best at decision 3, then rises (the run
        // overfits) while the training loss keeps falling. Returns the teacher's restarts.
        let evals = [1.0, 0.5, 0.3, 0.35, 0.4, 0.3, 0.45, 0.5];
        let restarts = |evals: &[f32]| {
            let k = evals.len() as u32;
            let mut t = Teacher::new(1e-1, 0.5, Hyperparams::INITIAL, k);
            t.reset();
            let mut saved_at = None;
            let mut out = Vec::new();
            for (i, &eval) in evals.iter().enumerate() {
                let p = (i + 1) as f32 / k as f32;
                // The training loss is below the saved one's: nothing diverges.
                let mut o = seeing(p, saved_at.map(|_| -0.1));
                if let Some(at) = saved_at {
                    o[OBS_CHECKPOINTS + 1] = at;
                }
                t.see_eval_loss(eval);
                let r = t.act(&o).restart();
                if r == Restart::Save(0) {
                    saved_at = Some(p);
                }
                out.push(r);
            }
            out
        };
        use Restart::{Load, None as Hold, Save};
        // Saves each new best (a tie is not one), and the last decision reloads decision 3's.
        assert_eq!(
            restarts(&evals),
            [Save(0), Save(0), Save(0), Hold, Hold, Hold, Hold, Load(0)]
        );
        // Over 16 decisions the final tenth holds two: a new best there is saved (and restored
        // at the end), and each goes back to the best when it is behind it.
        let mut long = [0.5; 16];
        long[..4].copy_from_slice(&[1.0, 0.4, 0.3, 0.6]);
        long[14] = 0.2;
        let r = restarts(&long);
        assert_eq!(&r[..4], &[Save(0), Save(0), Save(0), Hold]);
        assert!(r[4..14].iter().all(|&x| x == Hold), "{r:?}");
        assert_eq!(&r[14..], &[Save(0), Load(0)]);
        long[14] = 0.35;
        assert_eq!(&restarts(&long)[14..], &[Load(0), Load(0)]);
        // Ending at a new best: nothing to restore, and no save the run could not use.
        assert_eq!(restarts(&[1.0, 0.5, 0.2]), [Save(0), Save(0), Hold]);
        // A register saved where the teacher saw no eval loss is replaced by a point that has one.
        let mut t = Teacher::new(1e-1, 0.5, Hyperparams::INITIAL, 8);
        t.see_eval_loss(0.9);
        assert_eq!(t.act(&seeing(0.5, Some(-0.1))).restart(), Save(0));
        // Without an eval loss it falls back to the best training loss.
        let mut t = Teacher::new(1e-1, 0.5, Hyperparams::INITIAL, 1);
        t.see_eval_loss(f32::NAN);
        assert_eq!(t.act(&seeing(1.0, Some(0.2))).restart(), Hold);
    }

    fn runs_scoring(log_speedups: &[f64]) -> TeacherRuns {
        TeacherRuns {
            task: MetaTask::sample(&crate::ppo::rollout::RolloutConfig::default(), 0, 0),
            curve: ReferenceCurve {
                c: 0.0,
                b: 1.0,
                alpha: -0.5,
                total_steps: 100,
            },
            log_speedups: log_speedups.to_vec(),
            traces: Vec::new(),
        }
    }

    #[test]
    fn near_ties_go_to_the_peak_that_is_best_on_average() {
        let cfg = ImitationConfig {
            peaks: vec![1e-2, 3e-2, 1e-1],
            peak_tolerance: 0.15,
            ..ImitationConfig::default()
        };
        // 1e-1 is best on average (means -0.75, 0.8, 1.325).
        let runs = [
            runs_scoring(&[-3.0, 1.0, 0.9]), // near-tie: 1e-1
            runs_scoring(&[-3.0, 1.0, 0.5]), // clear win of 3e-2
            runs_scoring(&[1.0, -0.8, 2.4]), // clear win of 1e-1
            runs_scoring(&[2.0, 2.0, 1.5]),  // tie far from 1e-1: the nearer, 3e-2
        ];
        assert_eq!(choose_peaks(&runs, &cfg), vec![2, 1, 2, 1]);
        // Zero tolerance: the best in hindsight, always.
        let strict = ImitationConfig {
            peak_tolerance: 0.0,
            ..cfg
        };
        assert_eq!(choose_peaks(&runs, &strict), vec![1, 1, 2, 1]);
    }

    #[test]
    fn nearest_prefers_the_hold_choice_on_ties() {
        assert_eq!(nearest(&HALVE_HOLD_DOUBLE, |_| 1.0), 1);
        assert_eq!(nearest(&LR_SCALES, |m| (m - 2.0).abs()), 6);
    }
}
