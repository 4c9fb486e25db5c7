//! Rollout workers: each owns one inner task at a time. Per sampled task configuration
//! ([`MetaTask`]) a worker gets its tuned reference once (spec §6, cached on disk), then runs
//! `episodes_per_task` episodes, most from perturbed initial hyperparameters (spec §4) and a share
//! from the unperturbed ones (where deployment starts), with the latest policy it has been given,
//! and sends each finished episode to the learner as plain data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use lhopt_core::math::logit;
use lhopt_core::{Hyperparams, NUM_HYPERS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Device;

use super::agent::{ActMode, ActingRecord, PolicyAgent};
use super::learner::Episode;
use crate::env::{self, EpisodeConfig, Trace};
use crate::error::Result;
use crate::meta_task::{MetaTask, ReferenceCache, mix};
use crate::policy_net::{ActorCritic, PolicySizes};
use crate::pool::Pool;
use crate::reward::{self, ReferenceCurve};
use crate::tasks::{Family, Scale};

/// Inputs only the critic sees, per decision: the initial-hyperparameter perturbation (8), the
/// raw log train and eval losses with non-finite flags (4), the reference fit ln c, ln b, α (3),
/// the reference's log loss at this step (1) and the current potential (1).
pub const PRIVILEGED_DIM: usize = NUM_HYPERS + 4 + 3 + 2;

/// Index of clip_frac in [`Hyperparams::to_array`] (perturbed in logit space).
const CLIP_FRAC: usize = 5;

/// What the workers do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// Worker threads (each one libtorch thread).
    pub workers: usize,
    /// Task families to sample from (held-out families are refused).
    pub families: Vec<Family>,
    /// Task size ranges.
    pub scale: Scale,
    /// Inner steps T per episode, log-uniform in [min_steps, max_steps] (the task's own T when
    /// smaller).
    pub min_steps: u64,
    /// See [`Self::min_steps`].
    pub max_steps: u64,
    /// Decisions per episode, sampled log-uniform in this range.
    pub decisions: (u32, u32),
    /// Inner steps per decision at least.
    pub min_interval: u64,
    /// Episodes per sampled task configuration (one reference serves them all).
    pub episodes_per_task: u32,
    /// Fraction of episodes whose eval loss is hidden from the policy.
    pub hide_eval_fraction: f64,
    /// Fraction of episodes that start from the unperturbed starting hyperparameters
    /// ([`Self::start`]).
    pub unperturbed_fraction: f64,
    /// The learning rate episodes start from (perturbed ones around it); every other
    /// hyperparameter starts at [`Hyperparams::INITIAL`]. A policy is deployed from this lr.
    #[serde(serialize_with = "super::f32_as_written")]
    pub start_lr: f32,
    /// Per-tensor initial-weight rescaling, log-uniform in [1/weight_scale, weight_scale]
    /// (1 disables it); see [`MetaTask::weight_scale`].
    pub weight_scale: f64,
    /// Instances per batch for the families with batched tasks (noisy quadratic, image MLP,
    /// algorithmic RNN): a configuration of those runs as one batch of this many episodes in
    /// lockstep ([`crate::batched::rollout`]) instead of `episodes_per_task` sequential ones.
    /// 1 turns batching off.
    pub batch_instances: usize,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            workers: thread::available_parallelism().map_or(1, usize::from),
            families: Family::TRAINING.to_vec(),
            scale: Scale::Cpu,
            min_steps: 100,
            max_steps: 1000,
            decisions: (8, 64),
            min_interval: 8,
            episodes_per_task: 8,
            hide_eval_fraction: 0.25,
            unperturbed_fraction: 0.25,
            start_lr: Hyperparams::INITIAL.lr,
            weight_scale: 10.0,
            batch_instances: crate::batched::rollout::DEFAULT_INSTANCES,
        }
    }
}

impl RolloutConfig {
    /// Where an unperturbed episode starts: [`Hyperparams::INITIAL`] at [`Self::start_lr`].
    pub fn start(&self) -> Hyperparams {
        Hyperparams {
            lr: self.start_lr,
            ..Hyperparams::INITIAL
        }
        .clamped()
    }
}

/// The policy the workers act with: the learner publishes a new one after each update.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicySnapshot {
    /// Learner version.
    pub version: u64,
    /// All network variables by name ([`ActorCritic::to_named`]).
    pub vars: Vec<(String, Vec<f32>)>,
}

/// Where the learner publishes snapshots and the workers read them.
pub type SharedPolicy = Arc<RwLock<Arc<PolicySnapshot>>>;

/// One finished episode and what it achieved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeReport {
    /// The learner's data.
    pub episode: Episode,
    /// Monitoring summary.
    pub summary: EpisodeSummary,
}

/// How one episode went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeSummary {
    /// Task key.
    pub task: String,
    /// Task family.
    pub family: Family,
    /// Index of the task configuration in the run's task sequence.
    pub task_index: u64,
    /// Inner steps T.
    pub steps: u64,
    /// Decisions taken.
    pub decisions: usize,
    /// Final potential: the episode's log-speedup over the tuned reference (the undiscounted
    /// return).
    pub log_speedup: f64,
    /// Whether the episode started from the unperturbed initial hyperparameters.
    pub unperturbed: bool,
    /// Whether the eval loss was hidden from the policy.
    pub hide_eval: bool,
    /// Wall seconds of the episode (not counting its share of the reference).
    pub seconds: f64,
    /// Whether the configuration is one batching can speed up
    /// ([`crate::batched::tasks::prefers_batching`]), whether or not this run batches it.
    #[serde(default)]
    pub batchable: bool,
    /// The episode's share of the wall seconds its worker spent on references (its
    /// configuration's and those of configurations skipped before it for want of a reward).
    #[serde(default)]
    pub reference_seconds: f64,
    /// Inner steps run, this episode plus its share of the reference runs.
    pub inner_steps: u64,
}

/// What every worker shares: the policy shape, the run seed, where tasks are built, where
/// references are cached, where the policy is published and the task counter.
#[derive(Clone)]
pub struct WorkerContext {
    /// Network sizes.
    pub sizes: PolicySizes,
    /// Input-normalisation clip.
    pub norm_clip: f64,
    /// Run seed.
    pub seed: u64,
    /// Builds tasks.
    pub pool: Arc<Pool>,
    /// Tuned references by task configuration.
    pub references: ReferenceCache,
    /// The latest policy.
    pub policy: SharedPolicy,
    /// Number of the next task configuration.
    pub next_task: Arc<AtomicU64>,
    /// How far [`Self::next_task`] moves per configuration taken: 1 in one process; the number
    /// of rollout ranks under MPI, each rank starting at its own offset, so that the ranks take
    /// disjoint configurations of the one task sequence.
    pub task_stride: u64,
}

/// Running rollout workers.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// Starts `cfg.workers` threads. Task configurations are numbered from `ctx.next_task` on (a
    /// resumed run continues the sequence); each worker takes the next number when it needs a
    /// task. Episodes, or the error that stopped a worker, go to `tx`.
    pub fn start(
        cfg: &RolloutConfig,
        ctx: &WorkerContext,
        tx: SyncSender<Result<EpisodeReport>>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..cfg.workers.max(1) {
            let worker = Worker {
                cfg: cfg.clone(),
                ctx: ctx.clone(),
                stop: stop.clone(),
            };
            let tx = tx.clone();
            let handle = thread::Builder::new()
                .name(format!("rollout-{w}"))
                .stack_size(64 << 20)
                .spawn(move || {
                    crate::device::init_worker_thread();
                    if let Err(e) = worker.run(&tx) {
                        let _ = tx.send(Err(e));
                    }
                })
                .map_err(|e| crate::error::Error::Io {
                    path: "<rollout worker>".into(),
                    source: e,
                })?;
            handles.push(handle);
        }
        Ok(Self { handles, stop })
    }

    /// Asks the workers to stop after their current episode and waits for them. The receiver must
    /// be dropped or drained first, or a worker blocked on a full channel never sees the request.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

struct Worker {
    cfg: RolloutConfig,
    ctx: WorkerContext,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self, tx: &SyncSender<Result<EpisodeReport>>) -> Result<()> {
        let mut net = ActorCritic::new(
            Device::Cpu,
            self.ctx.sizes,
            PRIVILEGED_DIM,
            self.ctx.norm_clip,
        );
        let mut version = None;
        let mut reference_seconds = 0.0;
        while !self.stop.load(Ordering::Relaxed) {
            let index = self
                .ctx
                .next_task
                .fetch_add(self.ctx.task_stride, Ordering::Relaxed);
            let clock = Instant::now();
            let job = self.prepare(index)?;
            reference_seconds += clock.elapsed().as_secs_f64();
            let Some(mut job) = job else {
                continue;
            };
            job.reference_seconds = std::mem::take(&mut reference_seconds);
            if crate::batched::rollout::is_batched(&self.cfg, &job.task) {
                let snapshot = self.latest_policy(&mut net, &mut version)?;
                let reports = crate::batched::rollout::episodes(
                    &self.cfg,
                    &self.ctx.pool,
                    job.view(),
                    snapshot.version,
                    &net,
                )?;
                for report in reports {
                    if tx.send(Ok(report)).is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            for e in 0..self.cfg.episodes_per_task {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let snapshot = self.latest_policy(&mut net, &mut version)?;
                let report = self.episode(&job, e, snapshot.version, &net)?;
                if tx.send(Ok(report)).is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The latest published policy, loaded into `net` unless it is `version` already.
    fn latest_policy(
        &self,
        net: &mut ActorCritic,
        version: &mut Option<u64>,
    ) -> Result<Arc<PolicySnapshot>> {
        let snapshot = self
            .ctx
            .policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if *version != Some(snapshot.version) {
            net.load_named(&snapshot.vars)?;
            *version = Some(snapshot.version);
        }
        Ok(snapshot)
    }

    /// Samples task configuration `index` and gets its reference (as one batched program when
    /// the configuration runs batched); `None` when the reference cannot define a reward (the
    /// configuration is skipped).
    fn prepare(&self, index: u64) -> Result<Option<TaskJob>> {
        let task = MetaTask::sample(&self.cfg, self.ctx.seed, index);
        let (pool, cache) = (&self.ctx.pool, &self.ctx.references);
        let curve = if crate::batched::rollout::is_batched(&self.cfg, &task) {
            crate::batched::reference::reference(&task, pool, cache)?
        } else {
            task.reference(pool, cache)?
        };
        Ok(curve.map(|curve| TaskJob {
            task,
            curve,
            reference_seconds: 0.0,
        }))
    }

    fn episode(
        &self,
        job: &TaskJob,
        e: u32,
        version: u64,
        net: &ActorCritic,
    ) -> Result<EpisodeReport> {
        let t = &job.task;
        let start = EpisodeStart::draw(&self.cfg, t, e);
        let cfg = EpisodeConfig {
            total_steps: t.steps,
            decisions: t.decisions,
            initial: start.initial,
            hide_eval: start.hide_eval,
        };
        let clock = Instant::now();
        let mut task = t.build(&self.ctx.pool)?;
        let mut agent = PolicyAgent::new(&net.actor, ActMode::Sample, start.agent_seed);
        let trace = env::run_episode(&mut *task, &cfg, &mut agent)?;
        Ok(episode_report(
            &job.view(),
            &start,
            &trace,
            agent.record,
            version,
            clock.elapsed().as_secs_f64(),
            self.cfg.episodes_per_task.max(1) as usize,
        ))
    }
}

/// How episode `e` of a task configuration starts: from perturbed initial hyperparameters or not
/// (spec §4), with the eval loss hidden or not, and the agent's sampling seed.
pub(crate) struct EpisodeStart {
    pub(crate) initial: Hyperparams,
    pub(crate) unperturbed: bool,
    pub(crate) hide_eval: bool,
    pub(crate) agent_seed: u64,
}

impl EpisodeStart {
    /// A deterministic function of the configuration's seed and `e`.
    pub(crate) fn draw(cfg: &RolloutConfig, t: &MetaTask, e: u32) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(t.seed, 1 + e as u64));
        let unperturbed = rng.gen_bool(cfg.unperturbed_fraction.clamp(0.0, 1.0));
        let initial = if unperturbed {
            cfg.start()
        } else {
            perturb(&mut rng, cfg.start())
        };
        let hide_eval = rng.gen_bool(cfg.hide_eval_fraction.clamp(0.0, 1.0));
        EpisodeStart {
            initial,
            unperturbed,
            hide_eval,
            agent_seed: rng.r#gen(),
        }
    }
}

/// The learner's data and the summary of one finished episode of `job`'s configuration: rewards
/// from the potentials against its curve, the critic's privileged inputs. `seconds` is the
/// episode's wall time; the episode carries a 1/`episodes` share of the reference's inner steps
/// and seconds.
pub(crate) fn episode_report(
    job: &JobRef<'_>,
    start: &EpisodeStart,
    trace: &Trace,
    record: ActingRecord,
    version: u64,
    seconds: f64,
    episodes: usize,
) -> EpisodeReport {
    let (t, curve) = (job.task, job.curve);
    let potentials = episode_potentials(curve, trace, t.steps);
    let final_potential = potentials
        .last()
        .copied()
        .unwrap_or(-reward::POTENTIAL_CLIP);
    // Action k is rewarded with s_{k+1} − s_k; the last one with the end-of-run potential.
    let rewards: Vec<f32> = potentials
        .windows(2)
        .map(|w| (w[1] - w[0]) as f32)
        .collect();
    let privileged = privileged_inputs(curve, trace, &start.initial, &potentials);
    let summary = EpisodeSummary {
        task: t.key(),
        family: t.spec.family,
        task_index: t.index,
        steps: t.steps,
        decisions: trace.decisions.len(),
        log_speedup: final_potential,
        unperturbed: start.unperturbed,
        hide_eval: start.hide_eval,
        seconds,
        batchable: crate::batched::tasks::prefers_batching(&t.spec),
        reference_seconds: job.reference_seconds / episodes as f64,
        inner_steps: trace.train_losses.len() as u64 + t.reference_steps() / episodes as u64,
    };
    let episode = Episode {
        version,
        obs: record.obs,
        privileged,
        actions: record.actions,
        behaviour_logp: record.logp,
        actor_h: record.h,
        actor_c: record.c,
        rewards,
    };
    EpisodeReport { episode, summary }
}

/// A sampled task configuration with its fitted reference.
struct TaskJob {
    task: MetaTask,
    curve: ReferenceCurve,
    /// Wall seconds its worker spent on references before the configuration could start.
    reference_seconds: f64,
}

impl TaskJob {
    fn view(&self) -> JobRef<'_> {
        JobRef {
            task: &self.task,
            curve: &self.curve,
            reference_seconds: self.reference_seconds,
        }
    }
}

/// What an episode's report needs of its configuration: the configuration, its reference curve
/// and the wall seconds the reference cost.
pub(crate) struct JobRef<'a> {
    pub(crate) task: &'a MetaTask,
    pub(crate) curve: &'a ReferenceCurve,
    pub(crate) reference_seconds: f64,
}

/// s_1..s_K at the decisions, then the end-of-run potential (−3 when the run stopped early).
pub(crate) fn episode_potentials(curve: &ReferenceCurve, trace: &Trace, steps: u64) -> Vec<f64> {
    let at_decisions: Vec<(u64, f64)> = trace
        .decisions
        .iter()
        .map(|d| (d.step, d.eval_loss))
        .collect();
    let mut s = reward::potentials(curve, &at_decisions);
    let end = if trace.stopped_at.is_some() {
        f64::NAN
    } else {
        trace.final_eval_loss
    };
    s.push(curve.potential(steps, end));
    s
}

/// The critic's extra inputs for every decision of `trace` (see [`PRIVILEGED_DIM`]).
pub(crate) fn privileged_inputs(
    curve: &ReferenceCurve,
    trace: &Trace,
    initial: &Hyperparams,
    potentials: &[f64],
) -> Vec<f32> {
    let perturbation = relative_hyper(initial, &Hyperparams::INITIAL);
    let log_or_flag = |x: f64| {
        if x.is_finite() && x > 0.0 {
            [x.ln() as f32, 0.0]
        } else {
            [0.0, 1.0]
        }
    };
    let fit = [
        (curve.c + 1e-8).ln() as f32,
        curve.b.ln() as f32,
        curve.alpha as f32,
    ];
    let mut out = Vec::with_capacity(trace.decisions.len() * PRIVILEGED_DIM);
    for (d, s) in trace.decisions.iter().zip(potentials) {
        out.extend_from_slice(&perturbation);
        out.extend_from_slice(&log_or_flag(d.train_loss as f64));
        out.extend_from_slice(&log_or_flag(d.eval_loss));
        out.extend_from_slice(&fit);
        out.push(curve.loss_at(d.step as f64).max(1e-8).ln() as f32);
        out.push(*s as f32);
    }
    out
}

/// log(h / reference) per scale hyperparameter, logit difference for clip_frac: how far `h` is
/// from `reference` in the units the action heads move in.
fn relative_hyper(h: &Hyperparams, reference: &Hyperparams) -> [f32; NUM_HYPERS] {
    let (h, r) = (h.to_array(), reference.to_array());
    std::array::from_fn(|i| {
        if i == CLIP_FRAC {
            logit(h[i]) - logit(r[i])
        } else {
            (h[i] / r[i]).ln()
        }
    })
}

/// Spec §4, around `centre`: lr × log-uniform[1e-2, 1e2]; wd, eps, ombeta1, ombeta2 ×
/// log-uniform[0.1, 10]; clip_frac logit + U[−1, 1]; clip_ombeta, lamb_ombeta ×
/// log-uniform[0.5, 2]; then clamped.
pub fn perturb(rng: &mut impl Rng, centre: Hyperparams) -> Hyperparams {
    let mut scale = |lo: f32, hi: f32| (rng.gen_range(lo.ln()..hi.ln())).exp();
    let h = centre;
    let lr = h.lr * scale(1e-2, 1e2);
    let wd = h.wd * scale(0.1, 10.0);
    let eps = h.eps * scale(0.1, 10.0);
    let ombeta1 = h.ombeta1 * scale(0.1, 10.0);
    let ombeta2 = h.ombeta2 * scale(0.1, 10.0);
    let clip_ombeta = h.clip_ombeta * scale(0.5, 2.0);
    let lamb_ombeta = h.lamb_ombeta * scale(0.5, 2.0);
    let clip_frac = lhopt_core::math::sigmoid(logit(h.clip_frac) + rng.gen_range(-1.0f32..1.0));
    Hyperparams {
        lr,
        ombeta1,
        ombeta2,
        eps,
        wd,
        clip_frac,
        clip_ombeta,
        lamb_ombeta,
    }
    .clamped()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbation_ranges_match_the_spec() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let i = Hyperparams::INITIAL;
        for _ in 0..500 {
            let h = perturb(&mut rng, i);
            let r = relative_hyper(&h, &i);
            assert!(h.in_bounds());
            // lr within ×[1e-2, 1e2] (clamping can only shrink the ratio toward the bounds).
            assert!(r[0].abs() <= 100f32.ln() + 1e-4, "lr {}", h.lr);
            assert!(r[CLIP_FRAC].abs() <= 1.0 + 1e-4);
            assert!(r[6].abs() <= 2f32.ln() + 1e-4 && r[7].abs() <= 2f32.ln() + 1e-4);
        }
        // Seeded: the same stream gives the same draws.
        let i = Hyperparams::INITIAL;
        let a = perturb(&mut ChaCha8Rng::seed_from_u64(9), i);
        assert_eq!(a, perturb(&mut ChaCha8Rng::seed_from_u64(9), i));
    }

    #[test]
    fn episodes_start_at_the_configured_lr_or_are_perturbed_around_it() {
        let cfg = RolloutConfig {
            start_lr: 1e-2,
            unperturbed_fraction: 0.5,
            ..RolloutConfig::default()
        };
        let start = cfg.start();
        assert_eq!(
            start,
            Hyperparams {
                lr: 1e-2,
                ..Hyperparams::INITIAL
            }
        );
        let task = MetaTask::sample(&cfg, 1, 0);
        let (mut unperturbed, mut above_initial_range) = (0, 0);
        for e in 0..64 {
            let s = EpisodeStart::draw(&cfg, &task, e);
            if s.unperturbed {
                assert_eq!(s.initial, start);
                unperturbed += 1;
            } else {
                let r = relative_hyper(&s.initial, &start);
                assert!(r[0].abs() <= 100f32.ln() + 1e-4, "lr {}", s.initial.lr);
                // Around 1e-2, not the initial 1e-3: some draws lie above 1e-3 × 100.
                above_initial_range += usize::from(s.initial.lr > 0.1);
            }
        }
        assert!((16..=48).contains(&unperturbed), "{unperturbed} of 64");
        assert!(above_initial_range > 0);
    }
}
