//! `lhopt meta-train`: an imitation warm start ([`crate::imitate`]), then the PPO loop over the
//! task distribution. Rollout workers keep producing episodes with the latest published policy
//! while the learner waits for enough fresh decisions, updates, publishes, logs one JSON line per
//! update, redraws the plots and checkpoints.
//!
//! A run lives in one folder: `config.toml` (fixed at the start), `imitation.jsonl` and
//! `imitation.lhp` (the warm start's metrics and policy), `metrics.jsonl`, `progress.png`,
//! `checkpoint.bin` (written after the warm start and rewritten atomically after every update)
//! and, at the end, `policy.lhp`. `--resume` reloads the checkpoint and drops metrics lines
//! written after it, so a killed run loses at most the update in progress (or, killed during the
//! warm start, the warm start's demonstrations; their references stay cached).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;
use lhopt_core::{FEATURE_SET_VERSION, FeatureSet, Hyperparams};
use serde::{Deserialize, Serialize};

use crate::distributed::{LaunchRollouts, LocalRollouts, Rollouts};
use crate::error::{Error, Result};
use crate::export::{self, write_atomic};
use crate::imitate::{self, ImitationConfig};
use crate::meta_task::ReferenceCache;
use crate::plot::{self, Line, Panel};
use crate::policy_net::{ActorCritic, PolicySizes, RecurrentNet};
use crate::pool::Pool;
use crate::ppo::learner::{Episode, Learner, LearnerState, UpdateStats};
use crate::ppo::rollout::{PRIVILEGED_DIM, PolicySnapshot, RolloutConfig};
use crate::ppo::{AdvantageNorm, PpoConfig};
use crate::progress;
use crate::tasks::{Family, Scale};

/// File names inside a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// See [`CONFIG_FILE`].
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// See [`CONFIG_FILE`].
pub const METRICS_FILE: &str = "metrics.jsonl";
/// See [`CONFIG_FILE`].
pub const PLOT_FILE: &str = "progress.png";
/// See [`CONFIG_FILE`].
pub const POLICY_FILE: &str = "policy.lhp";
/// See [`CONFIG_FILE`].
pub const IMITATION_POLICY_FILE: &str = "imitation.lhp";

/// Appended to the run's name in the warm start's policy file, so it never passes for a PPO
/// export of the same run.
const IMITATION_NAME_SUFFIX: &str = "-imitation";

/// The name the warm start's policy file ([`IMITATION_POLICY_FILE`]) stores for a run named
/// `run_name`.
fn warm_start_name(run_name: &str) -> String {
    format!("{run_name}{IMITATION_NAME_SUFFIX}")
}

/// Everything a meta-training run is configured by (the TOML file; every field has a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaTrainConfig {
    /// Seeds the networks, the task sequence, perturbations and minibatch sampling.
    pub seed: u64,
    /// Policy size preset: tiny, small, medium or paper.
    pub preset: String,
    /// Updates to run in total (a resumed run continues up to this number).
    pub updates: u64,
    /// Redraw the plots every this many updates (a checkpoint is written after every update).
    pub plot_every: u64,
    /// Name written into exported policies.
    pub name: String,
    /// The imitation warm start before PPO (spec §6a).
    pub imitation: ImitationConfig,
    /// PPO settings (spec §7).
    pub ppo: PpoConfig,
    /// Rollout settings.
    pub rollout: RolloutConfig,
}

impl Default for MetaTrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            preset: "tiny".into(),
            updates: 300,
            plot_every: 2,
            name: "lhopt-meta-trained".into(),
            imitation: ImitationConfig::default(),
            ppo: PpoConfig::default(),
            rollout: RolloutConfig::default(),
        }
    }
}

impl MetaTrainConfig {
    /// Parses a TOML config, with a message that says which field is wrong.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::Usage(format!("config {}: {e}", path.display())))?;
        cfg.sizes()?;
        if cfg.rollout.families.iter().any(|f| f.is_held_out()) {
            return Err(Error::Usage(format!(
                "config {}: rollout.families includes a held-out family; meta-training never samples those",
                path.display()
            )));
        }
        crate::batched::rollout::check_config(&cfg.rollout)
            .map_err(|e| Error::Usage(format!("config {}: {e}", path.display())))?;
        // A half-life of 0 would make the first update's KL weight 0·∞ (a NaN loss).
        if !(cfg.ppo.kl_to_warm_start >= 0.0 && cfg.ppo.kl_half_life > 0.0) {
            return Err(Error::Usage(format!(
                "config {}: ppo.kl_to_warm_start must be at least 0 and ppo.kl_half_life above 0",
                path.display()
            )));
        }
        // Checked here, not at export: the warm start's file is written after the whole
        // imitation phase, and a name that does not fit would stop the run there.
        if warm_start_name(&cfg.name).len() > lhopt_core::format::NAME_CAPACITY {
            return Err(Error::Usage(format!(
                "config {}: name '{}' is {} bytes; policy files hold {} and the warm start's \
                 appends '{IMITATION_NAME_SUFFIX}', so use at most {} bytes",
                path.display(),
                cfg.name,
                cfg.name.len(),
                lhopt_core::format::NAME_CAPACITY,
                lhopt_core::format::NAME_CAPACITY - IMITATION_NAME_SUFFIX.len()
            )));
        }
        if cfg.rollout.families.is_empty() || cfg.plot_every == 0 {
            return Err(Error::Usage(format!(
                "config {}: rollout.families must not be empty and plot_every must be at least 1",
                path.display()
            )));
        }
        Ok(cfg)
    }

    /// The network sizes of [`Self::preset`].
    pub fn sizes(&self) -> Result<PolicySizes> {
        PolicySizes::preset(&self.preset).ok_or_else(|| {
            Error::Usage(format!(
                "unknown preset '{}'; choose tiny, small, medium or paper",
                self.preset
            ))
        })
    }
}

/// Decodes a checkpoint file into its body and the feature set it records (none for the layouts
/// before [`Checkpoint::feature_set`]). Postcard writes no field names, so a layout is accepted
/// only when it consumes the whole file; a file of the layout before `imitation.back_off` existed
/// loads with the open-loop teacher it was trained with, one before `ppo.advantage_norm` with
/// the per-minibatch standardisation it was trained with.
fn decode(bytes: &[u8]) -> std::result::Result<(CheckpointBody, Option<u16>), postcard::Error> {
    fn exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> std::result::Result<T, postcard::Error> {
        match postcard::take_from_bytes(bytes)? {
            (value, []) => Ok(value),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }
    let recorded = |c: Checkpoint| {
        let body = CheckpointBody {
            config: c.config,
            progress: c.progress,
            learner: c.learner,
        };
        (body, Some(c.feature_set))
    };
    exact::<Checkpoint>(bytes).map(recorded).or_else(|e| {
        exact::<CheckpointBeforeAdvantageNorm>(bytes)
            .map(|c| recorded(c.into()))
            .or_else(|_| exact::<CheckpointBeforeFeatureSet>(bytes).map(|c| (c.into(), None)))
            .or_else(|_| exact::<CheckpointBeforeStartLr>(bytes).map(|c| (c.into(), None)))
            .or_else(|_| {
                exact::<CheckpointBeforeBackOff>(bytes)
                    .map(|c| (CheckpointBeforeStartLr::from(c).into(), None))
            })
            .map_err(|_| e)
    })
}

/// A checkpoint's content but the feature set (the common form of every layout).
struct CheckpointBody {
    config: MetaTrainConfig,
    progress: RunProgress,
    learner: LearnerState,
}

/// The checkpoint layout before `ppo.advantage_norm`.
#[derive(Deserialize)]
struct CheckpointBeforeAdvantageNorm {
    config: ConfigBefore<PpoConfigBeforeAdvantageNorm, RolloutConfig>,
    progress: RunProgress,
    learner: LearnerState,
    feature_set: u16,
}

impl From<CheckpointBeforeAdvantageNorm> for Checkpoint {
    fn from(c: CheckpointBeforeAdvantageNorm) -> Self {
        Checkpoint {
            config: c.config.into(),
            progress: c.progress,
            learner: c.learner,
            feature_set: c.feature_set,
        }
    }
}

/// The checkpoint layouts without [`Checkpoint::feature_set`]: a configuration of an earlier
/// layout, then the counters and the learner.
#[derive(Deserialize)]
struct BodyBefore<C> {
    config: C,
    progress: RunProgress,
    learner: LearnerState,
}

impl<P: Into<PpoConfig>, R: Into<RolloutConfig>> From<BodyBefore<ConfigBefore<P, R>>>
    for CheckpointBody
{
    fn from(c: BodyBefore<ConfigBefore<P, R>>) -> Self {
        CheckpointBody {
            config: c.config.into(),
            progress: c.progress,
            learner: c.learner,
        }
    }
}

/// The checkpoint layout before [`Checkpoint::feature_set`].
type CheckpointBeforeFeatureSet =
    BodyBefore<ConfigBefore<PpoConfigBeforeAdvantageNorm, RolloutConfig>>;

/// The checkpoint layout before `rollout.start_lr` (whose runs started at the initial lr).
type CheckpointBeforeStartLr =
    BodyBefore<ConfigBefore<PpoConfigBeforeAdvantageNorm, RolloutBeforeStartLr>>;

/// [`MetaTrainConfig`] of an earlier layout: its PPO and rollout sections as they were then.
#[derive(Deserialize)]
struct ConfigBefore<P, R> {
    seed: u64,
    preset: String,
    updates: u64,
    plot_every: u64,
    name: String,
    imitation: ImitationConfig,
    ppo: P,
    rollout: R,
}

impl<P: Into<PpoConfig>, R: Into<RolloutConfig>> From<ConfigBefore<P, R>> for MetaTrainConfig {
    fn from(c: ConfigBefore<P, R>) -> Self {
        MetaTrainConfig {
            seed: c.seed,
            preset: c.preset,
            updates: c.updates,
            plot_every: c.plot_every,
            name: c.name,
            imitation: c.imitation,
            ppo: c.ppo.into(),
            rollout: c.rollout.into(),
        }
    }
}

/// [`PpoConfig`] before `advantage_norm` (whose runs standardised per minibatch only).
#[derive(Deserialize)]
struct PpoConfigBeforeAdvantageNorm {
    clip: f64,
    entropy_coef: f64,
    value_coef: f64,
    learning_rate: f64,
    max_grad_norm: f64,
    gamma: f32,
    gae_lambda: f32,
    minibatch: usize,
    minibatches: usize,
    buffer: usize,
    max_uses: u32,
    max_staleness: u64,
    chunk_len: usize,
    norm_clip: f64,
    kl_to_warm_start: f64,
    kl_half_life: f64,
}

impl From<PpoConfigBeforeAdvantageNorm> for PpoConfig {
    fn from(p: PpoConfigBeforeAdvantageNorm) -> Self {
        PpoConfig {
            clip: p.clip,
            entropy_coef: p.entropy_coef,
            value_coef: p.value_coef,
            learning_rate: p.learning_rate,
            max_grad_norm: p.max_grad_norm,
            gamma: p.gamma,
            gae_lambda: p.gae_lambda,
            minibatch: p.minibatch,
            minibatches: p.minibatches,
            buffer: p.buffer,
            max_uses: p.max_uses,
            max_staleness: p.max_staleness,
            chunk_len: p.chunk_len,
            norm_clip: p.norm_clip,
            kl_to_warm_start: p.kl_to_warm_start,
            kl_half_life: p.kl_half_life,
            advantage_norm: AdvantageNorm::Minibatch,
        }
    }
}

/// [`RolloutConfig`] before `start_lr`.
#[derive(Deserialize)]
struct RolloutBeforeStartLr {
    workers: usize,
    families: Vec<Family>,
    scale: Scale,
    min_steps: u64,
    max_steps: u64,
    decisions: (u32, u32),
    min_interval: u64,
    episodes_per_task: u32,
    hide_eval_fraction: f64,
    unperturbed_fraction: f64,
    weight_scale: f64,
    batch_instances: usize,
}

impl From<RolloutBeforeStartLr> for RolloutConfig {
    fn from(r: RolloutBeforeStartLr) -> Self {
        RolloutConfig {
            workers: r.workers,
            families: r.families,
            scale: r.scale,
            min_steps: r.min_steps,
            max_steps: r.max_steps,
            decisions: r.decisions,
            min_interval: r.min_interval,
            episodes_per_task: r.episodes_per_task,
            hide_eval_fraction: r.hide_eval_fraction,
            unperturbed_fraction: r.unperturbed_fraction,
            start_lr: Hyperparams::INITIAL.lr,
            weight_scale: r.weight_scale,
            batch_instances: r.batch_instances,
        }
    }
}

/// The checkpoint layout before `imitation.back_off` (the same fields, flattened as postcard
/// lays nested structs out); it converts through the next layout.
#[derive(Deserialize)]
struct CheckpointBeforeBackOff {
    seed: u64,
    preset: String,
    updates: u64,
    plot_every: u64,
    name: String,
    tasks: u64,
    peaks: Vec<f64>,
    peak_tolerance: f64,
    perturbed_demos: u32,
    steps: u64,
    batch: usize,
    dagger_rounds: u32,
    dagger_steps: u64,
    ppo: PpoConfigBeforeAdvantageNorm,
    rollout: RolloutBeforeStartLr,
    progress: RunProgress,
    learner: LearnerState,
}

impl From<CheckpointBeforeBackOff> for CheckpointBeforeStartLr {
    fn from(c: CheckpointBeforeBackOff) -> Self {
        let config = ConfigBefore {
            seed: c.seed,
            preset: c.preset,
            updates: c.updates,
            plot_every: c.plot_every,
            name: c.name,
            imitation: ImitationConfig {
                tasks: c.tasks,
                peaks: c.peaks,
                peak_tolerance: c.peak_tolerance,
                perturbed_demos: c.perturbed_demos,
                steps: c.steps,
                batch: c.batch,
                dagger_rounds: c.dagger_rounds,
                dagger_steps: c.dagger_steps,
                back_off: f64::INFINITY,
            },
            ppo: c.ppo,
            rollout: c.rollout,
        };
        BodyBefore {
            config,
            progress: c.progress,
            learner: c.learner,
        }
    }
}

/// Counters of a run, kept across resumes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct RunProgress {
    /// Task configurations handed out (the next one's number).
    pub next_task: u64,
    /// Episodes received.
    pub episodes: u64,
    /// Decisions received.
    pub decisions: u64,
    /// Inner steps run (episodes and baselines).
    pub inner_steps: u64,
    /// Wall seconds spent in this loop, over all sessions.
    pub seconds: f64,
}

/// The checkpoint file's content.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The run's configuration.
    pub config: MetaTrainConfig,
    /// Counters.
    pub progress: RunProgress,
    /// The learner.
    pub learner: LearnerState,
    /// The version of the feature set the policy is trained on ([`FeatureSet::version`]).
    pub feature_set: u16,
}

impl Checkpoint {
    /// Reads a checkpoint file. `stated` is the feature set the caller says it was trained on:
    /// needed for a file written before checkpoints recorded theirs, an error if it contradicts
    /// a recorded one.
    pub fn load(path: &Path, stated: Option<FeatureSet>) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let (body, recorded) = decode(&bytes).map_err(|e| {
            Error::Checkpoint(format!(
                "{} is not a readable checkpoint of this version ({e}); a checkpoint loads only in \
                 the lhopt version that wrote it or a later one, so export its policy with that \
                 version",
                path.display()
            ))
        })?;
        let feature_set = match (recorded, stated) {
            (Some(r), Some(s)) if r != s.version() => {
                return Err(Error::Usage(format!(
                    "{} records feature set {r}, not the {} stated with --feature-set",
                    path.display(),
                    s.version()
                )));
            }
            (Some(r), _) => r,
            (None, Some(s)) => s.version(),
            (None, None) => {
                return Err(Error::Usage(format!(
                    "{} was written before checkpoints recorded the feature set their policy is \
                     trained on; state it with --feature-set N: 2 for runs of lhopt before commit \
                     79fd43b (2026-12-03), 3 from it on (the run's README or card may say)",
                    path.display()
                )));
            }
        };
        let ckpt = Checkpoint {
            config: body.config,
            progress: body.progress,
            learner: body.learner,
            feature_set,
        };
        ckpt.trained_feature_set()
            .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
        Ok(ckpt)
    }

    /// [`Self::feature_set`] as a feature set; an error for one this build does not compute.
    fn trained_feature_set(&self) -> Result<FeatureSet> {
        FeatureSet::from_version(self.feature_set).ok_or_else(|| {
            Error::Checkpoint(format!(
                "its policy is trained on feature set {}, which this build does not compute \
                 (it computes 1 to {FEATURE_SET_VERSION}); export it with a later lhopt",
                self.feature_set
            ))
        })
    }

    fn save(&self, path: &Path) -> Result<()> {
        let bytes =
            postcard::to_allocvec(self).map_err(|e| Error::Checkpoint(format!("encoding: {e}")))?;
        write_atomic(path, &bytes)
    }

    /// The trained actor with its frozen input statistics, on the CPU.
    pub fn actor_critic(&self) -> Result<ActorCritic> {
        let mut net = ActorCritic::new(
            tch::Device::Cpu,
            self.config.sizes()?,
            PRIVILEGED_DIM,
            self.config.ppo.norm_clip,
        );
        net.load_named(&self.learner.vars)?;
        Ok(net)
    }

    /// `actor` as a policy file named `name`, with this run's card, start lr and feature set.
    pub fn encode_policy(&self, actor: &RecurrentNet, name: &str) -> Result<Vec<u8>> {
        let label = export::PolicyLabel {
            name,
            card: &self.card(),
            start_lr: self.config.rollout.start_lr,
            feature_set: self.trained_feature_set()?,
        };
        export::encode_policy(actor, &label)
    }

    /// The one-paragraph card stored in the policy file (the full card is a separate document).
    pub fn card(&self) -> String {
        let families: Vec<&str> = self
            .config
            .rollout
            .families
            .iter()
            .map(|f| f.name())
            .collect();
        format!(
            "lhopt meta-train, preset {}, seed {}, {} PPO updates, {} episodes, {} decisions, {} inner steps, {:.2} h wall; \
             tasks {} at {:?} scale, T<={}; feature set {}; licence MIT OR Apache-2.0",
            self.config.preset,
            self.config.seed,
            self.learner.version,
            self.progress.episodes,
            self.progress.decisions,
            self.progress.inner_steps,
            self.progress.seconds / 3600.0,
            families.join(","),
            self.config.rollout.scale,
            self.config.rollout.max_steps,
            self.feature_set,
        )
    }
}

/// One line of `metrics.jsonl`: one update.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Policy version after the update.
    pub update: u64,
    /// Run wall seconds so far.
    pub seconds: f64,
    /// Episodes so far.
    pub episodes: u64,
    /// Fresh episodes in this update.
    pub fresh_episodes: usize,
    /// Mean undiscounted return (final log-speedup over the baseline) of the fresh episodes.
    pub mean_return: f64,
    /// Geometric-mean speedup over the baseline of the fresh episodes, exp(mean return).
    pub speedup: f64,
    /// Mean return of fresh episodes whose eval loss was hidden (none when no episode hid it).
    pub mean_return_hidden_eval: Option<f64>,
    /// Decisions so far.
    pub decisions: u64,
    /// Inner steps so far (episodes and baselines).
    pub inner_steps: u64,
    /// Decisions per wall second over this update's collection.
    pub decisions_per_s: f64,
    /// Inner steps per wall second over this update's collection.
    pub inner_steps_per_s: f64,
    /// Where the time went (all three from this update's fresh episodes and learner step):
    /// worker wall seconds in the episodes themselves, summed over workers.
    #[serde(default)]
    pub episode_seconds: f64,
    /// Worker wall seconds on the episodes' tuned references, summed over workers.
    #[serde(default)]
    pub reference_seconds: f64,
    /// Learner wall seconds in the ingest and the PPO update.
    #[serde(default)]
    pub learner_seconds: f64,
    /// Worker wall seconds (episodes and references) of the configurations batching can speed
    /// up ([`crate::ppo::rollout::EpisodeSummary::batchable`]), batched in this run or not.
    #[serde(default)]
    pub batchable_seconds: f64,
    /// Decisions of those configurations.
    #[serde(default)]
    pub batchable_decisions: usize,
    /// The mean return per task family of this update's fresh episodes (families without one
    /// left out): which families the policy gains or loses on, which the overall mean hides.
    #[serde(default)]
    pub family_returns: Vec<FamilyReturn>,
    /// The update's statistics.
    pub stats: UpdateStats,
}

/// One family's share of an update's fresh episodes ([`MetricsLine::family_returns`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyReturn {
    /// The task family.
    pub family: Family,
    /// Its fresh episodes in the update.
    pub episodes: usize,
    /// Their mean return.
    pub mean_return: f64,
}

impl FamilyReturn {
    /// The mean return per family of `(family, return)` pairs, in [`Family::ALL`]'s order.
    pub fn of(returns: &[(Family, f64)]) -> Vec<FamilyReturn> {
        Family::ALL
            .into_iter()
            .filter_map(|family| {
                let mine: Vec<f64> = returns
                    .iter()
                    .filter(|(f, _)| *f == family)
                    .map(|&(_, r)| r)
                    .collect();
                (!mine.is_empty()).then(|| FamilyReturn {
                    family,
                    episodes: mine.len(),
                    mean_return: mine.iter().sum::<f64>() / mine.len() as f64,
                })
            })
            .collect()
    }
}

/// Which phases [`run`] goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phases {
    /// The warm start (for a new run), then PPO up to the configured number of updates.
    All,
    /// Only the warm start: the run folder then holds a checkpoint at update 0 that
    /// `meta-train --resume` continues with PPO.
    ImitationOnly,
}

/// Whether a run starts in an empty folder or continues the folder's checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run; the folder must not hold one.
    Fresh,
    /// Continue the folder's checkpoint. `feature_set` states the feature set its policy is
    /// trained on, which a checkpoint written before checkpoints recorded it needs
    /// ([`Checkpoint::load`]).
    Resume {
        /// The stated feature set, if any.
        feature_set: Option<FeatureSet>,
    },
}

/// Runs (or, with [`Start::Resume`], continues) a meta-training run in `out`. `config` is optional for a
/// new run; when resuming it is accepted only for a warm start at update 0 (its PPO and rollout
/// settings, `ppo_config_for_warm_start`), since a run's configuration is fixed once PPO has
/// started. `updates`, the total to train up to, may also be raised to continue a finished run.
pub fn run(
    out: &Path,
    config: Option<&Path>,
    start: Start,
    updates: Option<u64>,
    phases: Phases,
    pool: Pool,
    show_progress: bool,
) -> Result<Checkpoint> {
    run_with(
        out,
        config,
        start,
        updates,
        phases,
        pool,
        show_progress,
        &LocalRollouts,
    )
}

/// [`run`] with the rollouts started by `launch`: worker threads of this process, or the rollout
/// ranks of an MPI job ([`crate::distributed`]).
#[allow(clippy::too_many_arguments)]
pub fn run_with(
    out: &Path,
    config: Option<&Path>,
    start: Start,
    updates: Option<u64>,
    phases: Phases,
    pool: Pool,
    show_progress: bool,
    launch: &dyn LaunchRollouts,
) -> Result<Checkpoint> {
    let ckpt_path = out.join(CHECKPOINT_FILE);
    let (mut cfg, resumed) = if let Start::Resume {
        feature_set: stated_feature_set,
    } = start
    {
        let ckpt = Checkpoint::load(&ckpt_path, stated_feature_set)
            .map_err(|e| Error::Usage(format!("cannot resume from {}: {e}", out.display())))?;
        if ckpt.feature_set != FEATURE_SET_VERSION {
            // The rollouts compute the current feature set only.
            return Err(Error::Usage(format!(
                "cannot resume from {}: its policy is trained on feature set {}, and this build \
                 trains on feature set {FEATURE_SET_VERSION} only; export it (lhopt export \
                 --checkpoint {}), which keeps feature set {} and runs everywhere, or start a new run",
                out.display(),
                ckpt.feature_set,
                ckpt_path.display(),
                ckpt.feature_set
            )));
        }
        let cfg = match config {
            None => ckpt.config.clone(),
            Some(p) => ppo_config_for_warm_start(&ckpt, read_config(p)?, p)?,
        };
        (cfg, Some(ckpt))
    } else {
        if ckpt_path.exists() {
            return Err(Error::Usage(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                out.display()
            )));
        }
        let cfg = match config {
            Some(p) => read_config(p)?,
            None => MetaTrainConfig::default(),
        };
        std::fs::create_dir_all(out).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        (cfg, None)
    };
    if let Some(n) = updates {
        cfg.updates = n;
    }
    // config.toml always states what the run trains up to (a raised total included).
    let text = toml::to_string_pretty(&cfg).map_err(|e| Error::Usage(format!("config: {e}")))?;
    write_atomic(&out.join(CONFIG_FILE), text.as_bytes())?;
    let sizes = cfg.sizes()?;
    let mut learner = Learner::new(
        cfg.ppo,
        sizes,
        PRIVILEGED_DIM,
        crate::device::default_device(),
        cfg.seed,
    );
    let mut progress = RunProgress::default();
    let references = ReferenceCache::from_env()?;
    if let Some(ckpt) = resumed {
        learner.restore(ckpt.learner)?;
        progress = ckpt.progress;
    } else if cfg.imitation.tasks > 0 {
        warm_start(
            out,
            &cfg,
            &mut learner,
            &mut progress,
            &pool,
            &references,
            show_progress,
        )?;
    }
    if phases == Phases::ImitationOnly {
        return Ok(Checkpoint {
            config: cfg,
            progress,
            learner: learner.state(),
            feature_set: FEATURE_SET_VERSION,
        });
    }
    let mut metrics = read_metrics(&out.join(METRICS_FILE), learner.version())?;
    rewrite_metrics(&out.join(METRICS_FILE), &metrics)?;

    // The seam to the rollouts: episodes come in through `rollouts.next()`, each new policy goes
    // out through `rollouts.publish()`.
    let mut rollouts = launch.start(
        &cfg,
        snapshot(&learner),
        progress.next_task,
        pool,
        references,
    )?;

    let bar = if show_progress {
        progress::bar(
            cfg.updates,
            "{prefix} [{bar:30}] {pos}/{len} updates ({elapsed}, eta {eta}) {msg}",
        )
    } else {
        ProgressBar::hidden()
    };
    // Set without drawing: a log keeps the first frame drawn, and a resumed run is not at 0.
    let bar = bar
        .with_prefix("meta-train")
        .with_position(learner.version());

    let mut result = Ok(());
    let session_start = Instant::now();
    let seconds_before = progress.seconds;
    while learner.version() < cfg.updates {
        match one_update(&mut learner, &mut *rollouts, &mut progress, &cfg) {
            Ok(Some(mut line)) => {
                progress.seconds = seconds_before + session_start.elapsed().as_secs_f64();
                progress.next_task = rollouts.next_task();
                line.seconds = progress.seconds;
                line.episodes = progress.episodes;
                line.decisions = progress.decisions;
                line.inner_steps = progress.inner_steps;
                rollouts.publish(snapshot(&learner))?;
                append_metrics(&out.join(METRICS_FILE), &line)?;
                bar.set_position(learner.version());
                bar.set_message(format!(
                    "return {:+.3} entropy {:.2} KL to warm start {:.3} {:.1} decisions/s",
                    line.mean_return,
                    line.stats.entropy,
                    line.stats.kl_to_warm_start,
                    line.decisions_per_s
                ));
                metrics.push(line);
                let ckpt = Checkpoint {
                    config: cfg.clone(),
                    progress,
                    learner: learner.state(),
                    feature_set: FEATURE_SET_VERSION,
                };
                ckpt.save(&ckpt_path)?;
                if learner.version().is_multiple_of(cfg.plot_every)
                    || learner.version() == cfg.updates
                {
                    plot_metrics(&out.join(PLOT_FILE), &metrics)?;
                }
            }
            Ok(None) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    rollouts.stop();
    bar.finish();
    result?;
    let ckpt = Checkpoint {
        config: cfg,
        progress,
        learner: learner.state(),
        feature_set: FEATURE_SET_VERSION,
    };
    let bytes = ckpt.encode_policy(&ckpt.actor_critic()?.actor, &ckpt.config.name)?;
    write_atomic(&out.join(POLICY_FILE), &bytes)?;
    Ok(ckpt)
}

/// The imitation phase of a new run: demonstrations and behaviour cloning into `learner`, then
/// a checkpoint at update 0 and the cloned policy as `imitation.lhp`. PPO's task sequence goes on
/// after the demonstrated configurations.
fn warm_start(
    out: &Path,
    cfg: &MetaTrainConfig,
    learner: &mut Learner,
    progress: &mut RunProgress,
    pool: &Pool,
    references: &ReferenceCache,
    show_progress: bool,
) -> Result<()> {
    let start = Instant::now();
    let bar = if show_progress {
        progress::bar(
            0,
            "imitate [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
    } else {
        ProgressBar::hidden()
    };
    let lines = imitate::run(learner, cfg, pool, references, out, &bar)?;
    bar.finish_and_clear();
    for line in &lines {
        if let imitate::ImitationLine::Teachers { .. } | imitate::ImitationLine::Student { .. } =
            line
        {
            eprintln!(
                "imitation: {}",
                serde_json::to_string(line).expect("lines serialise")
            );
        }
    }
    if let Some(imitate::ImitationLine::Step { step, stats }) = lines.last() {
        eprintln!(
            "imitation: {step} cloning steps, cross-entropy {:.3}, lr-head accuracy {:.2}",
            stats.cross_entropy, stats.lr_accuracy
        );
    }
    learner.anchor_here()?;
    progress.next_task = cfg.imitation.tasks;
    progress.seconds += start.elapsed().as_secs_f64();
    let ckpt = Checkpoint {
        config: cfg.clone(),
        progress: *progress,
        learner: learner.state(),
        feature_set: FEATURE_SET_VERSION,
    };
    ckpt.save(&out.join(CHECKPOINT_FILE))?;
    let bytes = ckpt.encode_policy(&ckpt.actor_critic()?.actor, &warm_start_name(&cfg.name))?;
    write_atomic(&out.join(IMITATION_POLICY_FILE), &bytes)
}

fn read_config(path: &Path) -> Result<MetaTrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    MetaTrainConfig::from_toml(&text, path)
}

/// The configuration a resumed run continues with when `--config` is given: allowed only while
/// the checkpoint is a warm start at update 0, so one warm start can be tried with several PPO
/// and rollout settings. What made the warm start (the imitation section, the network preset,
/// its input clip and the seed) must stay as it was.
fn ppo_config_for_warm_start(
    ckpt: &Checkpoint,
    new: MetaTrainConfig,
    path: &Path,
) -> Result<MetaTrainConfig> {
    let old = &ckpt.config;
    if ckpt.learner.version > 0 {
        return Err(Error::Usage(format!(
            "--resume continues with the run's own config.toml once PPO has started (update {}); \
             drop --config",
            ckpt.learner.version
        )));
    }
    if new.imitation != old.imitation
        || new.preset != old.preset
        || new.seed != old.seed
        || new.ppo.norm_clip != old.ppo.norm_clip
    {
        return Err(Error::Usage(format!(
            "config {}: its [imitation] section, preset, seed or ppo.norm_clip differ from the \
             warm start's; when PPO begins from a warm start only the other PPO and rollout \
             settings may change",
            path.display()
        )));
    }
    Ok(new)
}

/// Collects fresh episodes until one update's worth has arrived, ingests them and updates.
/// `None` while the buffer is still filling.
fn one_update(
    learner: &mut Learner,
    rollouts: &mut dyn Rollouts,
    progress: &mut RunProgress,
    cfg: &MetaTrainConfig,
) -> Result<Option<MetricsLine>> {
    let start = Instant::now();
    let mut fresh: Vec<Episode> = Vec::new();
    let mut configurations = Vec::new();
    let mut returns = Vec::new();
    let mut hidden_returns = Vec::new();
    let mut inner_steps = 0;
    let (mut episode_seconds, mut reference_seconds) = (0.0, 0.0);
    let (mut batchable_seconds, mut batchable_decisions) = (0.0, 0);
    while fresh.iter().map(Episode::len).sum::<usize>() < cfg.ppo.fresh_per_update() {
        let report = rollouts.next()?;
        let s = &report.summary;
        returns.push((s.family, s.log_speedup));
        if s.hide_eval {
            hidden_returns.push(s.log_speedup);
        }
        inner_steps += s.inner_steps;
        episode_seconds += s.seconds;
        reference_seconds += s.reference_seconds;
        if s.batchable {
            batchable_seconds += s.seconds + s.reference_seconds;
            batchable_decisions += report.episode.len();
        }
        configurations.push(s.task_index);
        fresh.push(report.episode);
    }
    let decisions: usize = fresh.iter().map(Episode::len).sum();
    progress.episodes += fresh.len() as u64;
    progress.decisions += decisions as u64;
    progress.inner_steps += inner_steps;
    let wall = start.elapsed().as_secs_f64().max(1e-9);
    let learner_start = Instant::now();
    learner.ingest(&fresh, &configurations);
    let Some(stats) = learner.update() else {
        return Ok(None);
    };
    let learner_seconds = learner_start.elapsed().as_secs_f64();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mean_return = mean(&returns.iter().map(|&(_, r)| r).collect::<Vec<_>>());
    Ok(Some(MetricsLine {
        update: learner.version(),
        seconds: 0.0,
        episodes: 0,
        fresh_episodes: fresh.len(),
        mean_return,
        speedup: mean_return.exp(),
        mean_return_hidden_eval: (!hidden_returns.is_empty()).then(|| mean(&hidden_returns)),
        decisions: 0,
        inner_steps: 0,
        decisions_per_s: decisions as f64 / wall,
        inner_steps_per_s: inner_steps as f64 / wall,
        episode_seconds,
        reference_seconds,
        learner_seconds,
        batchable_seconds,
        batchable_decisions,
        family_returns: FamilyReturn::of(&returns),
        stats,
    }))
}

fn snapshot(learner: &Learner) -> PolicySnapshot {
    PolicySnapshot {
        version: learner.version(),
        vars: learner.net.to_named(),
    }
}

/// Metrics lines of updates up to `version` (later ones belong to iterations a resume redoes).
fn read_metrics(path: &Path, version: u64) -> Result<Vec<MetricsLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    // A line cut short by a kill is skipped; every complete one parses.
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<MetricsLine>(l).ok())
        .filter(|m| m.update <= version)
        .collect())
}

fn rewrite_metrics(path: &Path, lines: &[MetricsLine]) -> Result<()> {
    let text: String = lines.iter().map(|l| json_line(l) + "\n").collect();
    write_atomic(path, text.as_bytes())
}

fn append_metrics(path: &Path, line: &MetricsLine) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{}", json_line(line)).map_err(io)
}

fn json_line(line: &MetricsLine) -> String {
    serde_json::to_string(line).expect("metrics serialise")
}

/// Return, speedup and entropy (and the value loss) over updates.
fn plot_metrics(path: &Path, metrics: &[MetricsLine]) -> Result<()> {
    let series = |f: fn(&MetricsLine) -> f64| -> Vec<(f64, f64)> {
        metrics.iter().map(|m| (m.update as f64, f(m))).collect()
    };
    let panel = |title: &str, y: &str, log_y: bool, lines: Vec<Line>| Panel {
        title: title.into(),
        x_label: "PPO update".into(),
        y_label: y.into(),
        log_y,
        lines,
    };
    let line = |label: &str, points: Vec<(f64, f64)>| Line {
        label: label.into(),
        points,
        markers: false,
    };
    let ret = series(|m| m.mean_return);
    let panels = [
        panel(
            "return = final log-speedup over the baseline",
            "log-speedup",
            false,
            vec![
                line("per update", ret.clone()),
                line("moving average (10)", moving_average(&ret, 10)),
            ],
        ),
        panel(
            "speedup over the baseline (geometric mean)",
            "speedup",
            true,
            vec![
                line("per update", series(|m| m.speedup)),
                line(
                    "moving average (10)",
                    moving_average(&series(|m| m.speedup.ln()), 10)
                        .into_iter()
                        .map(|(x, y)| (x, y.exp()))
                        .collect(),
                ),
            ],
        ),
        panel(
            "policy entropy (sum over heads)",
            "nats",
            false,
            vec![line("entropy", series(|m| m.stats.entropy))],
        ),
        panel(
            "value loss (normalised)",
            "loss",
            true,
            vec![line("value loss", series(|m| m.stats.value_loss))],
        ),
        panel(
            "KL(policy || warm start), sum over heads",
            "nats",
            false,
            vec![line("KL", series(|m| m.stats.kl_to_warm_start))],
        ),
        panel(
            "return per task family (moving average over 20 updates)",
            "log-speedup",
            false,
            Family::ALL
                .into_iter()
                .map(|f| line(f.name(), family_moving_average(metrics, f, 20)))
                .filter(|l| !l.points.is_empty())
                .collect(),
        ),
    ];
    plot::write_png(path, "lhopt meta-training", &panels, 2)
}

fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = (i + 1).saturating_sub(window);
            let ys: Vec<f64> = points[from..=i]
                .iter()
                .map(|p| p.1)
                .filter(|y| y.is_finite())
                .collect();
            (points[i].0, ys.iter().sum::<f64>() / ys.len().max(1) as f64)
        })
        .collect()
}

/// `family`'s mean return over the last `window` updates at each update, weighted by its episodes
/// (one update holds a few episodes of each family, too few to read alone); updates whose window
/// holds none of its episodes (runs from before [`MetricsLine::family_returns`]) are left out.
fn family_moving_average(
    metrics: &[MetricsLine],
    family: Family,
    window: usize,
) -> Vec<(f64, f64)> {
    (0..metrics.len())
        .filter_map(|i| {
            let (sum, episodes) = metrics[(i + 1).saturating_sub(window)..=i]
                .iter()
                .flat_map(|m| &m.family_returns)
                .filter(|r| r.family == family && r.mean_return.is_finite())
                .fold((0.0, 0), |(sum, n), r| {
                    (sum + r.mean_return * r.episodes as f64, n + r.episodes)
                });
            (episodes > 0).then(|| (metrics[i].update as f64, sum / episodes as f64))
        })
        .collect()
}

/// `lhopt export`: checkpoint → policy file, with the feature set the checkpoint records or, for
/// an old one, the one `feature_set` states.
pub fn export_checkpoint(
    checkpoint: &Path,
    out: &Path,
    name: Option<&str>,
    feature_set: Option<FeatureSet>,
) -> Result<PathBuf> {
    let ckpt = Checkpoint::load(checkpoint, feature_set)?;
    let net = ckpt.actor_critic()?;
    let bytes = ckpt.encode_policy(&net.actor, name.unwrap_or(&ckpt.config.name))?;
    write_atomic(out, &bytes)?;
    Ok(out.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cpu_config_is_the_builtin_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/meta-train-cpu.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut cfg = MetaTrainConfig::from_toml(&text, &path).unwrap();
        let mut default = MetaTrainConfig::default();
        // Only the worker count (cores of this machine) and the policy name may differ.
        cfg.rollout.workers = 0;
        default.rollout.workers = 0;
        default.name = cfg.name.clone();
        assert_eq!(cfg, default);
    }

    #[test]
    fn the_run_folders_config_shows_f32_fields_as_written_and_reads_them_back() {
        let mut cfg = MetaTrainConfig::default();
        cfg.rollout.start_lr = 0.01;
        let text = toml::to_string_pretty(&cfg).unwrap();
        assert!(text.contains("start_lr = 0.01\n"), "{text}");
        assert!(text.contains("gae_lambda = 0.95\n"), "{text}");
        assert_eq!(
            MetaTrainConfig::from_toml(&text, Path::new("c.toml")).unwrap(),
            cfg
        );
    }

    #[test]
    fn checkpoints_of_every_earlier_layout_still_load_and_round_trip() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints");
        let v2 = Some(FeatureSet::V2);
        let old = Checkpoint::load(&root.join("v3-warm/checkpoint.bin"), v2).unwrap();
        assert_eq!(old.config.imitation.back_off, f64::INFINITY);
        assert_eq!(old.config.rollout.start_lr, Hyperparams::INITIAL.lr);
        // And from after it, before the start lr.
        let v9 = Checkpoint::load(&root.join("v9-seed1-warm/checkpoint.bin"), v2).unwrap();
        assert_eq!(v9.config.imitation.back_off, 0.5);
        assert_eq!(v9.config.rollout.start_lr, Hyperparams::INITIAL.lr);
        assert_eq!(old.config.imitation.tasks, 128);
        assert!(old.actor_critic().is_ok());
        // And from after the feature set was recorded, before ppo.advantage_norm.
        let big = Checkpoint::load(&root.join("v16-seed1-big/checkpoint.bin"), None).unwrap();
        assert_eq!(big.feature_set, 3);
        assert_eq!(big.config.ppo.minibatch, 512);
        for c in [&old, &v9, &big] {
            assert_eq!(c.config.ppo.advantage_norm, AdvantageNorm::Minibatch);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        let mut new = old.clone();
        new.config.imitation.back_off = 0.05;
        new.config.ppo.advantage_norm = AdvantageNorm::Configuration;
        new.save(&path).unwrap();
        // The new layout records the feature set: no need to state it.
        let again = Checkpoint::load(&path, None).unwrap();
        assert_eq!(again.config, new.config);
        assert_eq!(again.learner.vars, old.learner.vars);
        assert_eq!(again.feature_set, 2);
        // A truncated file is an error that names the file, not a misread.
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..1000]).unwrap();
        let err = Checkpoint::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("c.bin"), "{err}");
    }

    #[test]
    fn a_checkpoint_exports_with_the_feature_set_it_was_trained_on() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let old = root.join("checkpoints/v7-seed1-warm/checkpoint.bin");
        // Written before checkpoints recorded it: the feature set must be stated.
        let err = Checkpoint::load(&old, None).unwrap_err().to_string();
        assert!(err.contains("--feature-set"), "{err}");
        // Stated, it exports the shipped policy (the same header, weights and card; only the
        // file's format version, which added the start lr, is newer).
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.lhp");
        export_checkpoint(&old, &out, None, Some(FeatureSet::V2)).unwrap();
        let described = |path: &Path| {
            let text = export::describe(&std::fs::read(path).unwrap()).unwrap();
            text.lines()
                .filter(|l| !l.starts_with("sizes:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let shipped = described(&root.join("policies/default.lhp"));
        assert!(shipped.contains("feature set:  2 "), "{shipped}");
        assert_eq!(described(&out), shipped);
        // Saved again, the checkpoint records it, and a contradicting statement is an error.
        let ckpt = Checkpoint::load(&old, Some(FeatureSet::V2)).unwrap();
        let path = dir.path().join("c.bin");
        ckpt.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path, None).unwrap().feature_set, 2);
        let err = Checkpoint::load(&path, Some(FeatureSet::V3))
            .unwrap_err()
            .to_string();
        assert!(err.contains("records feature set 2"), "{err}");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let p = Path::new("x.toml");
        let err = MetaTrainConfig::from_toml("[ppo]\nclip_range = 0.1\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("clip_range"), "{err}");
        let err = MetaTrainConfig::from_toml("preset = \"huge\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("huge") && err.contains("tiny"), "{err}");
        let err = MetaTrainConfig::from_toml("[rollout]\nfamilies = [\"Ncf\"]\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("held-out"), "{err}");
        let err = MetaTrainConfig::from_toml("[ppo]\nkl_half_life = 0.0\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kl_half_life"), "{err}");
        // The warm start's name is the run's plus a suffix: a run named to the file's capacity
        // would train for the whole imitation phase and then fail to write it.
        let fits = "n".repeat(lhopt_core::format::NAME_CAPACITY - IMITATION_NAME_SUFFIX.len());
        let cfg = MetaTrainConfig::from_toml(&format!("name = \"{fits}\"\n"), p).unwrap();
        assert_eq!(
            warm_start_name(&cfg.name).len(),
            lhopt_core::format::NAME_CAPACITY
        );
        let err = MetaTrainConfig::from_toml(&format!("name = \"{fits}n\"\n"), p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 22 bytes"), "{err}");
    }

    fn metrics_line(update: u64, family_returns: Vec<FamilyReturn>) -> MetricsLine {
        MetricsLine {
            update,
            seconds: update as f64,
            episodes: 0,
            fresh_episodes: 1,
            mean_return: -0.5,
            speedup: (-0.5f64).exp(),
            mean_return_hidden_eval: None,
            decisions: 0,
            inner_steps: 0,
            decisions_per_s: 1.0,
            inner_steps_per_s: 10.0,
            episode_seconds: 1.0,
            reference_seconds: 0.5,
            learner_seconds: 0.1,
            batchable_seconds: 0.5,
            batchable_decisions: 4,
            family_returns,
            stats: UpdateStats::default(),
        }
    }

    #[test]
    fn returns_are_reported_per_family_and_averaged_by_episodes_over_updates() {
        use Family::*;
        let update_1 = FamilyReturn::of(&[(CharLm, 1.0), (NoisyQuadratic, 2.0), (CharLm, 0.0)]);
        assert_eq!(
            update_1,
            vec![
                FamilyReturn {
                    family: NoisyQuadratic,
                    episodes: 1,
                    mean_return: 2.0
                },
                FamilyReturn {
                    family: CharLm,
                    episodes: 2,
                    mean_return: 0.5
                },
            ]
        );
        let update_2 = FamilyReturn::of(&[(CharLm, 2.0)]);
        // An old line without the field, then the two updates.
        let metrics = [
            metrics_line(1, Vec::new()),
            metrics_line(2, update_1),
            metrics_line(3, update_2),
        ];
        // Update 3's window holds three char-LM episodes: (1 + 0 + 2) / 3.
        assert_eq!(
            family_moving_average(&metrics, CharLm, 20),
            vec![(2.0, 0.5), (3.0, 1.0)]
        );
        // A window of one update reads that update alone; a family never run has no line.
        assert_eq!(
            family_moving_average(&metrics, NoisyQuadratic, 1),
            vec![(2.0, 2.0)]
        );
        assert!(family_moving_average(&metrics, Ncf, 20).is_empty());
        // Lines written before the field existed still read.
        let mut old = serde_json::to_value(&metrics[2]).unwrap();
        old.as_object_mut().unwrap().remove("family_returns");
        let line: MetricsLine = serde_json::from_value(old).unwrap();
        assert!(line.family_returns.is_empty());
    }

    #[test]
    fn resume_keeps_metrics_up_to_the_checkpoint_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        for u in 1..=4 {
            append_metrics(&path, &metrics_line(u, Vec::new())).unwrap();
        }
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "{{\"update\":5,\"seco").unwrap();
        let kept = read_metrics(&path, 3).unwrap();
        assert_eq!(
            kept.iter().map(|m| m.update).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        rewrite_metrics(&path, &kept).unwrap();
        assert_eq!(read_metrics(&path, 100).unwrap().len(), 3);
    }
}
