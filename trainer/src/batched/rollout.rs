//! Batched rollouts: a task configuration of a family with batched tasks runs as one batch of K
//! episodes in lockstep ([`super::env::run_batched_episode`]), one policy forward for all K per
//! decision, and yields the same [`EpisodeReport`]s the unbatched worker sends to the learner.
//!
//! Instance 0 of a batch is the sampled configuration itself; instance i > 0 is the same family
//! configuration, T, K and weight-rescaling range with its own seeds (initialisation, batches,
//! noise, masks, rescaling factors), and episode i starts as the unbatched worker's episode i
//! would (its own perturbation, hidden-eval flag and sampling seed). All instances share the
//! configuration's tuned reference: it depends on the architecture, data and T, which they share,
//! and the seed moves a tuned AdamW curve far less than the policy's actions do, so K references
//! (K × 5 AdamW runs) would buy little for their cost. The one reference runs as one batched
//! program ([`super::reference`]).

use std::time::Instant;

use lhopt_core::{Action, NUM_ACTION_LOGITS, OBS_DIM};
use tch::{Device, Tensor};

use super::env::{BatchedAgent, run_batched_episode};
use super::tasks::{self, BatchedTask, MAX_INSTANCES};
use crate::env::EpisodeConfig;
use crate::error::{Error, Result};
use crate::meta_task::{MetaTask, mix};
use crate::policy_net::{ActorCritic, LstmState, RecurrentNet};
use crate::pool::Pool;
use crate::ppo::agent::{ActMode, ActingRecord, choose_and_record};
use crate::ppo::rollout::{EpisodeReport, EpisodeStart, JobRef, RolloutConfig, episode_report};

/// Default instances per batch, sized by measurement on a 2-core machine (README, "Batched
/// task instances"): 1, batching off. Back to back under steady load, K = 32 collected 1.06x the
/// decisions/s of the unbatched run on the batched families: the configurations batching cannot
/// speed up take about 80% of the workers' time there. With the default `episodes_per_task` a
/// batch would also give the batched families K / 8 times the others' episodes.
pub const DEFAULT_INSTANCES: usize = 1;

/// Refuses a batch size of 0 or above [`MAX_INSTANCES`].
pub fn check_config(cfg: &RolloutConfig) -> Result<()> {
    match cfg.batch_instances {
        0 => Err(Error::Usage(
            "rollout.batch_instances = 0: a batch needs at least one instance (1 turns batching off)"
                .into(),
        )),
        k if k > MAX_INSTANCES => Err(Error::Usage(format!(
            "rollout.batch_instances = {k} is more than the {MAX_INSTANCES} allowed"
        ))),
        _ => Ok(()),
    }
}

/// Whether configuration `t` runs batched: batching is on and the configuration has batched tasks
/// small enough to gain from them ([`tasks::prefers_batching`]).
pub fn is_batched(cfg: &RolloutConfig, t: &MetaTask) -> bool {
    cfg.batch_instances > 1 && tasks::prefers_batching(&t.spec)
}

/// Instance `i` of configuration `t`'s batch (instance 0 is `t`).
pub fn instance(t: &MetaTask, i: usize) -> MetaTask {
    if i == 0 {
        return t.clone();
    }
    let mut inst = t.clone();
    inst.seed = mix(t.seed, i as u64);
    inst.spec.seed = mix(t.spec.seed, i as u64);
    inst
}

/// The batch of `k` instances of `t`, with each instance's initial weights rescaled as
/// [`MetaTask::build`] rescales them.
pub fn build(t: &MetaTask, k: usize, pool: &Pool) -> Result<Box<dyn BatchedTask>> {
    let instances: Vec<MetaTask> = (0..k).map(|i| instance(t, i)).collect();
    let specs: Vec<_> = instances.iter().map(|m| m.spec.clone()).collect();
    let task = tasks::build(&specs, pool.device, &pool.data)?;
    for (i, inst) in instances.iter().enumerate() {
        let views: Vec<Tensor> = task.parameters().iter().map(|p| p.get(i as i64)).collect();
        inst.rescale_weights(&views);
    }
    Ok(task)
}

/// Runs one batch of `cfg.batch_instances` episodes of `job`'s configuration with the actor of
/// `net` (policy `version`) and reports each episode as the unbatched worker would.
pub(crate) fn episodes(
    cfg: &RolloutConfig,
    pool: &Pool,
    job: JobRef<'_>,
    version: u64,
    net: &ActorCritic,
) -> Result<Vec<EpisodeReport>> {
    check_config(cfg)?;
    let t = job.task;
    let k = cfg.batch_instances;
    let clock = Instant::now();
    let starts: Vec<EpisodeStart> = (0..k)
        .map(|e| EpisodeStart::draw(cfg, t, e as u32))
        .collect();
    let episode_cfgs: Vec<EpisodeConfig> = starts
        .iter()
        .map(|s| EpisodeConfig {
            total_steps: t.steps,
            decisions: t.decisions,
            initial: s.initial,
            hide_eval: s.hide_eval,
        })
        .collect();
    let mut task = build(t, k, pool)?;
    let mut agent = BatchedPolicyAgent::new(&net.actor, starts.iter().map(|s| s.agent_seed));
    let traces = run_batched_episode(task.as_mut(), &episode_cfgs, &mut agent)?;
    // Each episode's share of the batch's wall time (and, in the report, of the reference).
    let seconds = clock.elapsed().as_secs_f64() / k as f64;
    Ok(starts
        .iter()
        .zip(&traces)
        .zip(agent.records)
        .map(|((start, trace), record)| {
            episode_report(&job, start, trace, record, version, seconds, k)
        })
        .collect())
}

/// The actor for K environments: one LSTM step over a batch of K rows per decision, each row
/// with its own sampler and record (what [`crate::ppo::agent::PolicyAgent`] is for one).
pub struct BatchedPolicyAgent<'a> {
    net: &'a RecurrentNet,
    state: LstmState,
    rngs: Vec<lhopt_core::Rng>,
    /// Each environment's episode so far.
    pub records: Vec<ActingRecord>,
}

impl<'a> BatchedPolicyAgent<'a> {
    /// One environment per seed.
    pub fn new(net: &'a RecurrentNet, seeds: impl IntoIterator<Item = u64>) -> Self {
        let rngs: Vec<lhopt_core::Rng> = seeds.into_iter().map(lhopt_core::Rng::new).collect();
        let k = rngs.len();
        BatchedPolicyAgent {
            net,
            state: LstmState::zeros(k, net.sizes().hidden, Device::Cpu),
            rngs,
            records: vec![ActingRecord::default(); k],
        }
    }
}

impl BatchedAgent for BatchedPolicyAgent<'_> {
    fn reset(&mut self, k: usize) {
        assert_eq!(k, self.rngs.len(), "one sampling seed per environment");
        self.state = LstmState::zeros(k, self.net.sizes().hidden, self.state.h.device());
        self.records = vec![ActingRecord::default(); k];
    }

    fn act(&mut self, active: &[usize], obs: &[[f32; OBS_DIM]]) -> Vec<Action> {
        let _guard = tch::no_grad_guard();
        let k = self.rngs.len();
        let hidden = self.net.sizes().hidden;
        // Every row steps (a stopped environment's row is never read again).
        let mut input = vec![0f32; k * OBS_DIM];
        for (&i, o) in active.iter().zip(obs) {
            input[i * OBS_DIM..][..OBS_DIM].copy_from_slice(o);
        }
        let device = self.state.h.device();
        let x = Tensor::from_slice(&input)
            .view([k as i64, 1, OBS_DIM as i64])
            .to_device(device);
        let host = |t: &Tensor| {
            Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view([-1])).expect("f32")
        };
        let (h, c) = (host(&self.state.h), host(&self.state.c));
        let (out, next) = self.net.forward(&x, &self.state);
        self.state = next;
        let logits = host(&out);
        active
            .iter()
            .zip(obs)
            .map(|(&i, o)| {
                let row: &[f32; NUM_ACTION_LOGITS] = logits[i * NUM_ACTION_LOGITS..]
                    [..NUM_ACTION_LOGITS]
                    .try_into()
                    .expect("the actor outputs 40 logits");
                choose_and_record(
                    ActMode::Sample,
                    row,
                    &mut self.rngs[i],
                    o,
                    (&h[i * hidden..][..hidden], &c[i * hidden..][..hidden]),
                    &mut self.records[i],
                )
            })
            .collect()
    }
}
