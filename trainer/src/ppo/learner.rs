//! The learner: turns finished episodes into chunks (critic values, GAE, normalisation
//! statistics) and runs the clipped PPO update over minibatches of recurrent chunks.

use lhopt_core::{NUM_ACTION_LOGITS, NUM_HEADS, OBS_DIM, Restart};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::adam::{Adam, AdamState};
use super::buffer::{self, Chunk, ReplayBuffer};
use super::gae;
use super::loss::{
    clipped_surrogate, head_log_probs, kl_divergence, log_prob_and_entropy, masked_mean, sum_heads,
};
use super::{AdvantageNorm, PpoConfig};
use crate::error::{Error, Result};
use crate::policy_net::{ActorCritic, LstmState, PolicySizes, RunningMoments};

/// One finished episode as a worker reports it: plain data, one row per decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Episode {
    /// Policy version that acted.
    pub version: u64,
    /// Raw observations, `T × OBS_DIM`.
    pub obs: Vec<f32>,
    /// Critic-only inputs, `T × privileged`.
    pub privileged: Vec<f32>,
    /// Chosen actions.
    pub actions: Vec<[u8; NUM_HEADS]>,
    /// Log-probability of each action under the behaviour policy.
    pub behaviour_logp: Vec<f32>,
    /// Actor LSTM hidden state before each decision, `T × hidden`.
    pub actor_h: Vec<f32>,
    /// Actor LSTM cell before each decision, `T × hidden`.
    pub actor_c: Vec<f32>,
    /// Reward following each action.
    pub rewards: Vec<f32>,
}

impl Episode {
    /// Number of decisions.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Whether the episode has no decisions.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// What one update did, averaged over its minibatches.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct UpdateStats {
    /// Clipped surrogate loss.
    pub policy_loss: f64,
    /// Value loss (normalised units).
    pub value_loss: f64,
    /// Mean summed entropy of the heads.
    pub entropy: f64,
    /// Mean of behaviour − current log-probability (≈ KL(behaviour ‖ current)).
    pub approx_kl: f64,
    /// Fraction of decisions whose ratio was outside the clip range.
    pub clip_fraction: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean policy-version lag of the data used.
    pub staleness: f64,
    /// Mean KL(current ‖ warm start) summed over the heads (0 without a warm start).
    #[serde(default)]
    pub kl_to_warm_start: f64,
    /// The coefficient that KL was weighted with in this update.
    #[serde(default)]
    pub kl_coef: f64,
    /// Decisions in the buffer after the update.
    pub buffer_decisions: usize,
}

/// What one behaviour-cloning step did.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ImitationStats {
    /// Cross-entropy of the teacher's actions, summed over the heads, per decision.
    pub cross_entropy: f64,
    /// Share of decisions where the actor's most likely lr choice is the teacher's.
    pub lr_accuracy: f64,
    /// Value loss (normalised units).
    pub value_loss: f64,
}

/// Σ_{j ≥ t} r_j for every t: the undiscounted return after each decision (γ = 1).
fn returns_to_go(rewards: &[f32]) -> Vec<f32> {
    let mut acc = 0.0;
    let mut out: Vec<f32> = rewards
        .iter()
        .rev()
        .map(|r| {
            acc += r;
            acc
        })
        .collect();
    out.reverse();
    out
}

/// Everything a checkpoint needs to continue learning exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LearnerState {
    /// Policy version (number of updates done).
    pub version: u64,
    /// Seed of the minibatch sampling streams.
    pub seed: u64,
    /// Network variables by name.
    pub vars: Vec<(String, Vec<f32>)>,
    /// Optimizer moments.
    pub adam: AdamState,
    /// Actor input statistics.
    pub obs_stats: RunningMoments,
    /// Critic input statistics.
    pub critic_stats: RunningMoments,
    /// Value-target statistics.
    pub value_stats: RunningMoments,
    /// Unexpired experience.
    pub buffer: ReplayBuffer,
    /// The warm start PPO is kept near ([`Learner::anchor_here`]): its variables, as
    /// [`ActorCritic::to_named`] writes them.
    pub anchor: Option<Vec<(String, Vec<f32>)>>,
}

/// The PPO learner.
#[derive(Debug)]
pub struct Learner {
    /// The networks being trained.
    pub net: ActorCritic,
    params: Vec<Tensor>,
    adam: Adam,
    cfg: PpoConfig,
    privileged: usize,
    obs_stats: RunningMoments,
    critic_stats: RunningMoments,
    value_stats: RunningMoments,
    buffer: ReplayBuffer,
    version: u64,
    seed: u64,
    /// A frozen copy of the warm start, with its own input statistics.
    anchor: Option<ActorCritic>,
}

impl Learner {
    /// A fresh learner on `device`; the critic takes `privileged` extra inputs.
    pub fn new(
        cfg: PpoConfig,
        sizes: PolicySizes,
        privileged: usize,
        device: Device,
        seed: u64,
    ) -> Self {
        tch::manual_seed(seed as i64);
        let net = ActorCritic::new(device, sizes, privileged, cfg.norm_clip);
        let mut named: Vec<(String, Tensor)> = net
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
        let adam = Adam::new(&params, cfg.learning_rate);
        Self {
            net,
            params,
            adam,
            cfg,
            privileged,
            obs_stats: RunningMoments::new(OBS_DIM),
            critic_stats: RunningMoments::new(OBS_DIM + privileged),
            value_stats: RunningMoments::new(1),
            buffer: ReplayBuffer::default(),
            version: 0,
            seed,
            anchor: None,
        }
    }

    /// Freezes the current actor, input statistics included, as the warm start that PPO's KL
    /// penalty ([`PpoConfig::kl_to_warm_start`]) keeps the policy near. Called once, when
    /// behaviour cloning ends.
    pub fn anchor_here(&mut self) -> Result<()> {
        self.anchor = Some(self.frozen_copy(&self.net.to_named())?);
        Ok(())
    }

    fn frozen_copy(&self, vars: &[(String, Vec<f32>)]) -> Result<ActorCritic> {
        let mut net = ActorCritic::new(
            self.net.vs.device(),
            self.net.actor.sizes(),
            self.privileged,
            self.net.actor.norm_clip(),
        );
        net.load_named(vars)?;
        net.vs.freeze();
        Ok(net)
    }

    /// The KL coefficient at the current version: halves every `kl_half_life` updates.
    fn kl_coef(&self) -> f64 {
        self.cfg.kl_to_warm_start * 0.5f64.powf(self.version as f64 / self.cfg.kl_half_life)
    }

    /// The current policy version (updates done).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Decisions in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.decisions()
    }

    /// Adds finished episodes: updates the input statistics with them, evaluates the critic along
    /// each episode (its LSTM state at every chunk start), computes GAE advantages and value
    /// targets, standardises the advantages per task configuration when
    /// [`PpoConfig::advantage_norm`] asks for it (`configurations[i]` names episode `i`'s), and
    /// stores the chunks.
    pub fn ingest(&mut self, episodes: &[Episode], configurations: &[u64]) {
        assert_eq!(
            episodes.len(),
            configurations.len(),
            "one configuration per episode"
        );
        self.update_input_stats(episodes);
        let mut kept: Vec<(&Episode, u64, Evaluated)> = episodes
            .iter()
            .zip(configurations)
            .filter(|(e, _)| !e.is_empty())
            .map(|(e, &c)| (e, c, self.evaluate(e)))
            .collect();
        if self.cfg.advantage_norm == AdvantageNorm::Configuration {
            standardise_by_group(kept.iter_mut().map(|(_, c, ev)| (*c, &mut ev.advantages)));
        }
        for (ep, _, ev) in kept {
            self.push_chunks(ep, ev);
        }
    }

    /// Folds the episodes' observations into the actor's and critic's input normalisation.
    fn update_input_stats<'a>(&mut self, episodes: impl IntoIterator<Item = &'a Episode>) {
        for ep in episodes {
            self.obs_stats.update(&ep.obs);
            self.critic_stats.update(&critic_rows(ep, self.privileged));
        }
        self.net.actor.set_input_stats(&self.obs_stats);
        self.net.critic.set_input_stats(&self.critic_stats);
    }

    /// Prepares behaviour cloning on teacher episodes (spec §6a): their observations set the
    /// input normalisation and their returns the value scale, as PPO's first data would.
    pub fn prepare_imitation(&mut self, demos: &[&Episode]) {
        self.update_input_stats(demos.iter().copied());
        for ep in demos {
            self.value_stats.update(&returns_to_go(&ep.rewards));
        }
    }

    /// One behaviour-cloning step on a batch of whole teacher episodes, each from the zero LSTM
    /// state: the actor's cross-entropy of the teacher's actions (summed over the heads; a
    /// restart label that loads or swaps a register counts `restore_weight` times) plus the
    /// critic's value loss on the teacher's returns-to-go, with the PPO optimizer and its
    /// gradient clip. The reported cross-entropy is the unweighted one. The policy version does
    /// not advance.
    pub fn imitation_step(&mut self, demos: &[&Episode], restore_weight: f64) -> ImitationStats {
        let longest = demos.iter().map(|e| e.len()).max().unwrap_or(1).max(1);
        let (hidden, dev) = (self.net.actor.sizes().hidden, self.net.vs.device());
        let chunks: Vec<Chunk> = demos
            .iter()
            .map(|ep| {
                let zeros = vec![0.0; hidden];
                Chunk {
                    version: self.version,
                    len: ep.len(),
                    obs: ep.obs.clone(),
                    privileged: ep.privileged.clone(),
                    actions: ep
                        .actions
                        .iter()
                        .flat_map(|a| a.iter().map(|&c| c as i64))
                        .collect(),
                    behaviour_logp: vec![0.0; ep.len()],
                    anchor_logits: Vec::new(),
                    advantages: vec![0.0; ep.len()],
                    returns: returns_to_go(&ep.rewards),
                    actor_h0: zeros.clone(),
                    actor_c0: zeros.clone(),
                    critic_h0: zeros.clone(),
                    critic_c0: zeros,
                    uses: 0,
                }
            })
            .collect();
        let mb = buffer::batch(&chunks, longest, self.privileged, hidden, dev);
        let (logits, _) = self.net.actor.forward(&mb.obs, &mb.actor_state);
        let heads = head_log_probs(&logits, &mb.actions);
        let restart_logp = heads[NUM_HEADS - 1].shallow_clone();
        let logp = sum_heads(heads);
        let cross_entropy = -masked_mean(&logp, &mb.mask);
        // Loads and swaps (choices from Load(0)'s on) count `restore_weight` times (once
        // already in `logp`).
        let restores = mb
            .actions
            .select(-1, NUM_HEADS as i64 - 1)
            .ge(i64::from(Restart::Load(0).to_choice()))
            .to_kind(Kind::Float);
        let weighted = &logp + restart_logp * restores * (restore_weight - 1.0);
        let objective = -masked_mean(&weighted, &mb.mask);
        let (mu, sigma) = self.value_scale();
        let critic_in = Tensor::cat(&[&mb.obs, &mb.privileged], -1);
        let (v, _) = self.net.critic.forward(&critic_in, &mb.critic_state);
        let target = (&mb.returns - mu as f64) / sigma as f64;
        let value_loss = masked_mean(&(v.squeeze_dim(-1) - target).square(), &mb.mask);
        let loss = &objective + &value_loss * self.cfg.value_coef;
        for p in &mut self.params {
            p.zero_grad();
        }
        loss.backward();
        self.adam
            .clip_and_step(&self.params, self.cfg.max_grad_norm);
        let _guard = tch::no_grad_guard();
        let lr_head = lhopt_core::HEAD_SIZES[0] as i64;
        let lr_choice = logits.narrow(-1, 0, lr_head).argmax(-1, false);
        let hits = lr_choice
            .eq_tensor(&mb.actions.select(-1, 0))
            .to_kind(Kind::Float);
        ImitationStats {
            cross_entropy: cross_entropy.double_value(&[]),
            lr_accuracy: masked_mean(&hits, &mb.mask).double_value(&[]),
            value_loss: value_loss.double_value(&[]),
        }
    }

    /// The critic's values along `ep` (its state at every chunk start), GAE advantages and
    /// value targets; the targets join the value statistics.
    fn evaluate(&mut self, ep: &Episode) -> Evaluated {
        let _guard = tch::no_grad_guard();
        let (hidden, l, dev) = (
            self.net.critic.sizes().hidden,
            self.cfg.chunk_len,
            self.net.vs.device(),
        );
        let rows = critic_rows(ep, self.privileged);
        let width = OBS_DIM + self.privileged;
        let (mu, sigma) = self.value_scale();
        let mut state = LstmState::zeros(1, hidden, dev);
        let mut values = Vec::with_capacity(ep.len());
        let mut critic_starts = Vec::new();
        for start in (0..ep.len()).step_by(l) {
            let n = l.min(ep.len() - start);
            critic_starts.push(state.row0());
            let x = Tensor::from_slice(&rows[start * width..(start + n) * width])
                .view([1, n as i64, width as i64])
                .to_device(dev);
            let (v, next) = self.net.critic.forward(&x, &state);
            state = next;
            let v =
                Vec::<f32>::try_from(v.view([-1]).to_device(Device::Cpu)).expect("float values");
            values.extend(v.iter().map(|v| v * sigma + mu));
        }
        let adv = gae::advantages(&ep.rewards, &values, self.cfg.gamma, self.cfg.gae_lambda);
        let returns: Vec<f32> = adv.iter().zip(&values).map(|(a, v)| a + v).collect();
        self.value_stats.update(&returns);
        Evaluated {
            advantages: adv,
            returns,
            critic_starts,
        }
    }

    /// Cuts `ep` into chunks carrying its evaluation and stores them.
    fn push_chunks(&mut self, ep: &Episode, ev: Evaluated) {
        let l = self.cfg.chunk_len;
        let anchor_logits = self.anchor_logits(ep);
        let h = self.net.actor.sizes().hidden;
        let starts = (0..ep.len()).step_by(l).zip(ev.critic_starts);
        for (start, (critic_h0, critic_c0)) in starts {
            let end = (start + l).min(ep.len());
            self.buffer.push(Chunk {
                version: ep.version,
                len: end - start,
                obs: ep.obs[start * OBS_DIM..end * OBS_DIM].to_vec(),
                privileged: ep.privileged[start * self.privileged..end * self.privileged].to_vec(),
                actions: ep.actions[start..end]
                    .iter()
                    .flat_map(|a| a.iter().map(|&c| c as i64))
                    .collect(),
                behaviour_logp: ep.behaviour_logp[start..end].to_vec(),
                anchor_logits: anchor_logits
                    .get(start * NUM_ACTION_LOGITS..end * NUM_ACTION_LOGITS)
                    .map_or_else(Vec::new, <[f32]>::to_vec),
                advantages: ev.advantages[start..end].to_vec(),
                returns: ev.returns[start..end].to_vec(),
                actor_h0: ep.actor_h[start * h..(start + 1) * h].to_vec(),
                actor_c0: ep.actor_c[start * h..(start + 1) * h].to_vec(),
                critic_h0,
                critic_c0,
                uses: 0,
            });
        }
    }

    /// The warm start's logits along the whole episode from the zero state, `len ×
    /// NUM_ACTION_LOGITS` (empty without a warm start).
    fn anchor_logits(&self, ep: &Episode) -> Vec<f32> {
        let Some(anchor) = &self.anchor else {
            return Vec::new();
        };
        let _guard = tch::no_grad_guard();
        let dev = anchor.vs.device();
        let state = LstmState::zeros(1, anchor.actor.sizes().hidden, dev);
        let x = Tensor::from_slice(&ep.obs)
            .view([1, ep.len() as i64, OBS_DIM as i64])
            .to_device(dev);
        let (logits, _) = anchor.actor.forward(&x, &state);
        Vec::<f32>::try_from(logits.view([-1]).to_device(Device::Cpu)).expect("float logits")
    }

    /// (mean, std) of the value targets, the critic's output scale.
    fn value_scale(&self) -> (f32, f32) {
        let var = self.value_stats.var()[0];
        (self.value_stats.mean[0] as f32, var.sqrt().max(1e-2) as f32)
    }

    /// One PPO update: `minibatches` gradient steps on chunks drawn from the buffer, then the
    /// version advances. `None` (and nothing changes) while the buffer holds less than one
    /// minibatch.
    pub fn update(&mut self) -> Option<UpdateStats> {
        let limits = self.cfg.buffer_limits();
        self.buffer.evict(self.version, &limits);
        if self.buffer.decisions() < self.cfg.minibatch {
            return None;
        }
        // The weight this update's steps use; reported before the version advances.
        let kl_coef = self.kl_coef();
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ self.version.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut sum = UpdateStats::default();
        for _ in 0..self.cfg.minibatches {
            let chunks = self.buffer.sample(self.cfg.minibatch, &mut rng);
            sum.staleness += chunks
                .iter()
                .map(|c| (self.version - c.version) as f64)
                .sum::<f64>()
                / chunks.len() as f64;
            let mb = buffer::batch(
                &chunks,
                self.cfg.chunk_len,
                self.privileged,
                self.net.actor.sizes().hidden,
                self.net.vs.device(),
            );
            let s = self.step(&mb);
            sum.policy_loss += s.policy_loss;
            sum.value_loss += s.value_loss;
            sum.entropy += s.entropy;
            sum.approx_kl += s.approx_kl;
            sum.clip_fraction += s.clip_fraction;
            sum.grad_norm += s.grad_norm;
            sum.kl_to_warm_start += s.kl_to_warm_start;
        }
        let n = self.cfg.minibatches as f64;
        self.version += 1;
        self.buffer.evict(self.version, &limits);
        Some(UpdateStats {
            policy_loss: sum.policy_loss / n,
            value_loss: sum.value_loss / n,
            entropy: sum.entropy / n,
            approx_kl: sum.approx_kl / n,
            clip_fraction: sum.clip_fraction / n,
            grad_norm: sum.grad_norm / n,
            staleness: sum.staleness / n,
            kl_to_warm_start: sum.kl_to_warm_start / n,
            kl_coef,
            buffer_decisions: self.buffer.decisions(),
        })
    }

    /// One gradient step on one minibatch.
    fn step(&mut self, mb: &buffer::Minibatch) -> UpdateStats {
        let (logits, _) = self.net.actor.forward(&mb.obs, &mb.actor_state);
        let (logp, entropy) = log_prob_and_entropy(&logits, &mb.actions);
        // Advantages normalised per minibatch over the real (unpadded) decisions.
        let mean = masked_mean(&mb.advantages, &mb.mask);
        let var = masked_mean(&(&mb.advantages - &mean).square(), &mb.mask);
        let adv = (&mb.advantages - &mean) / (var.sqrt() + 1e-8);
        let policy_loss =
            clipped_surrogate(&logp, &mb.behaviour_logp, &adv, &mb.mask, self.cfg.clip);

        let (mu, sigma) = self.value_scale();
        let critic_in = Tensor::cat(&[&mb.obs, &mb.privileged], -1);
        let (v, _) = self.net.critic.forward(&critic_in, &mb.critic_state);
        let target = (&mb.returns - mu as f64) / sigma as f64;
        let value_loss = masked_mean(&(v.squeeze_dim(-1) - target).square(), &mb.mask);
        let entropy_mean = masked_mean(&entropy, &mb.mask);
        let mut loss = &policy_loss + &value_loss * self.cfg.value_coef
            - &entropy_mean * self.cfg.entropy_coef;
        let kl = mb
            .anchor_logits
            .as_ref()
            .map(|anchor| masked_mean(&kl_divergence(&logits, anchor), &mb.mask));
        if let Some(kl) = &kl {
            loss += kl * self.kl_coef();
        }

        for p in &mut self.params {
            p.zero_grad();
        }
        loss.backward();
        let grad_norm = self
            .adam
            .clip_and_step(&self.params, self.cfg.max_grad_norm);
        let _guard = tch::no_grad_guard();
        let log_ratio = &logp - &mb.behaviour_logp;
        let outside = (log_ratio.exp() - 1.0)
            .abs()
            .gt(self.cfg.clip)
            .to_kind(Kind::Float);
        UpdateStats {
            policy_loss: policy_loss.double_value(&[]),
            value_loss: value_loss.double_value(&[]),
            entropy: entropy_mean.double_value(&[]),
            approx_kl: masked_mean(&(-log_ratio), &mb.mask).double_value(&[]),
            clip_fraction: masked_mean(&outside, &mb.mask).double_value(&[]),
            grad_norm,
            kl_to_warm_start: kl.map_or(0.0, |kl| kl.double_value(&[])),
            ..Default::default()
        }
    }

    /// The learner's complete state (for checkpoints).
    pub fn state(&self) -> LearnerState {
        LearnerState {
            version: self.version,
            seed: self.seed,
            vars: self.net.to_named(),
            adam: self.adam.state(),
            obs_stats: self.obs_stats.clone(),
            critic_stats: self.critic_stats.clone(),
            value_stats: self.value_stats.clone(),
            buffer: self.buffer.clone(),
            anchor: self.anchor.as_ref().map(ActorCritic::to_named),
        }
    }

    /// Restores a state written by [`Self::state`] for the same sizes and configuration.
    pub fn restore(&mut self, s: LearnerState) -> Result<()> {
        self.net.load_named(&s.vars)?;
        self.adam.restore(&s.adam).ok_or_else(|| {
            Error::Checkpoint("optimizer state does not match the network's parameters".into())
        })?;
        self.version = s.version;
        self.seed = s.seed;
        self.obs_stats = s.obs_stats;
        self.critic_stats = s.critic_stats;
        self.value_stats = s.value_stats;
        self.buffer = s.buffer;
        self.anchor = s.anchor.map(|vars| self.frozen_copy(&vars)).transpose()?;
        Ok(())
    }
}

/// One episode as the critic saw it ([`Learner::evaluate`]).
struct Evaluated {
    advantages: Vec<f32>,
    /// Value targets, in return units.
    returns: Vec<f32>,
    /// The critic's LSTM state at each chunk start.
    critic_starts: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Standardises the advantages of each group (mean 0, standard deviation 1 over all its
/// decisions); a group whose advantages are all equal becomes all 0.
fn standardise_by_group<'a>(members: impl Iterator<Item = (u64, &'a mut Vec<f32>)>) {
    let mut groups: Vec<(u64, Vec<&'a mut Vec<f32>>)> = Vec::new();
    for (key, adv) in members {
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(adv),
            None => groups.push((key, vec![adv])),
        }
    }
    for (_, group) in groups {
        let n = group.iter().map(|a| a.len()).sum::<usize>() as f64;
        let all = || group.iter().flat_map(|a| a.iter().map(|&x| f64::from(x)));
        let mean = all().sum::<f64>() / n;
        let std = (all().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        for adv in group {
            for x in adv.iter_mut() {
                *x = ((f64::from(*x) - mean) / (std + 1e-8)) as f32;
            }
        }
    }
}

/// The critic's input rows: each observation followed by its privileged inputs.
fn critic_rows(ep: &Episode, privileged: usize) -> Vec<f32> {
    if privileged == 0 {
        return ep.obs.clone();
    }
    ep.obs
        .chunks(OBS_DIM)
        .zip(ep.privileged.chunks(privileged))
        .flat_map(|(o, p)| o.iter().chain(p).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Agent;
    use crate::ppo::agent::{ActMode, PolicyAgent};
    use lhopt_core::Action;

    /// Toy environment: 12 decisions of noise observations; the lr head's choice 5 earns 1, any
    /// other choice 0. Returns the episode and the fraction of right choices.
    fn toy_episode(learner: &Learner, seed: u64) -> (Episode, f32) {
        let mut agent = PolicyAgent::new(&learner.net.actor, ActMode::Sample, seed);
        agent.reset();
        let mut rewards = Vec::new();
        for t in 0..12u64 {
            let obs: [f32; OBS_DIM] =
                std::array::from_fn(|i| ((i as u64 * 31 + t * 7 + seed) % 13) as f32 / 13.0);
            let a: Action = agent.act(&obs);
            rewards.push(f32::from(a.choices[0] == 5));
        }
        let right = rewards.iter().sum::<f32>() / rewards.len() as f32;
        let r = agent.record;
        let ep = Episode {
            version: learner.version(),
            privileged: vec![0.5; r.actions.len() * 2],
            obs: r.obs,
            actions: r.actions,
            behaviour_logp: r.logp,
            actor_h: r.h,
            actor_c: r.c,
            rewards,
        };
        (ep, right)
    }

    fn toy_config() -> PpoConfig {
        PpoConfig {
            minibatch: 48,
            chunk_len: 8,
            buffer: 288,
            learning_rate: 3e-3,
            ..PpoConfig::default()
        }
    }

    /// Up to `updates` PPO updates on the toy environment, stopping once the right action is
    /// chosen 90 % of the time: that share in the last update's episodes, and its statistics.
    fn train_toy(learner: &mut Learner, updates: usize) -> (f32, UpdateStats) {
        let cfg = learner.cfg;
        let mut seed = 0;
        let (mut right, mut stats) = (0.0, UpdateStats::default());
        for _ in 0..updates {
            let mut eps = Vec::new();
            right = 0.0;
            while eps.iter().map(Episode::len).sum::<usize>() < cfg.fresh_per_update() {
                let (ep, r) = toy_episode(learner, seed);
                seed += 1;
                right += r;
                eps.push(ep);
            }
            right /= eps.len() as f32;
            learner.ingest(&eps, &vec![0; eps.len()]);
            if let Some(s) = learner.update() {
                assert!(s.staleness <= cfg.max_staleness as f64);
                assert!(s.grad_norm.is_finite() && s.entropy > 0.0);
                stats = s;
            }
            if right > 0.9 {
                break;
            }
        }
        (right, stats)
    }

    #[test]
    fn learns_the_one_right_action_on_a_toy_environment() {
        let mut learner = Learner::new(toy_config(), PolicySizes::TINY, 2, Device::Cpu, 11);
        let first = (0..8)
            .map(|s| toy_episode(&learner, 1000 + s).1)
            .sum::<f32>()
            / 8.0;
        assert!(
            first < 0.35,
            "the untrained policy is near uniform over 7 choices, got {first}"
        );
        let (right, _) = train_toy(&mut learner, 40);
        assert!(
            right > 0.9,
            "after 40 updates the right action is chosen {right} of the time"
        );
    }

    #[test]
    fn the_kl_penalty_holds_the_policy_near_its_warm_start() {
        // The same toy run with and without the penalty, both anchored at the untrained policy:
        // without it the policy leaves for the rewarded action; with it, it stays near.
        let run = |kl_to_warm_start: f64| {
            let cfg = PpoConfig {
                kl_to_warm_start,
                kl_half_life: f64::INFINITY,
                ..toy_config()
            };
            let mut learner = Learner::new(cfg, PolicySizes::TINY, 2, Device::Cpu, 11);
            learner.anchor_here().unwrap();
            let (_, stats) = train_toy(&mut learner, 12);
            assert_eq!(stats.kl_coef, kl_to_warm_start);
            stats.kl_to_warm_start
        };
        let (free, held) = (run(0.0), run(3.0));
        assert!(
            free > 0.2 && held < free / 3.0,
            "KL to the warm start after 12 updates: {free} free, {held} held"
        );
    }

    /// The actor's probability of `Load(0)` at each decision of `obs` (12 decisions).
    fn load_probability(learner: &Learner, obs: &[f32]) -> Vec<f32> {
        let head = lhopt_core::action::HEAD_OFFSETS[NUM_HEADS - 1];
        let load = usize::from(Restart::Load(0).to_choice());
        let mut state = LstmState::zeros(1, 32, Device::Cpu);
        obs.chunks(OBS_DIM)
            .map(|o| {
                let logits = learner.net.actor.step(o, &mut state);
                let restart = &logits[head..];
                let z: f32 = restart.iter().map(|l| l.exp()).sum();
                restart[load].exp() / z
            })
            .collect()
    }

    #[test]
    fn cloning_counts_restore_labels_restore_weight_times() {
        // Two episodes the actor cannot tell apart (same observations): one labels every
        // decision Load(0), the other no restart. Unweighted cloning settles near P(load) = 1/2;
        // with loads counted 9 times, near 9/10.
        let clone = |restore_weight: f64| {
            let mut learner = Learner::new(toy_config(), PolicySizes::TINY, 2, Device::Cpu, 5);
            let (base, _) = toy_episode(&learner, 0);
            let with_restart = |choice: Restart| {
                let mut ep = base.clone();
                for a in &mut ep.actions {
                    a[NUM_HEADS - 1] = choice.to_choice();
                }
                ep
            };
            let eps = [with_restart(Restart::Load(0)), with_restart(Restart::None)];
            let batch: Vec<&Episode> = eps.iter().collect();
            learner.prepare_imitation(&batch);
            for _ in 0..300 {
                learner.imitation_step(&batch, restore_weight);
            }
            let p = load_probability(&learner, &base.obs);
            p.iter().sum::<f32>() / p.len() as f32
        };
        let (plain, weighted) = (clone(1.0), clone(9.0));
        assert!(
            (0.35..0.65).contains(&plain) && weighted > 0.8,
            "mean P(load): {plain} unweighted, {weighted} with loads counted 9 times"
        );
    }

    #[test]
    fn advantages_are_standardised_within_each_group_alone() {
        let mut a = vec![1.0, 3.0];
        let mut b = vec![5.0];
        let mut c = vec![100.0, 300.0, 200.0];
        let mut d = vec![7.0, 7.0];
        standardise_by_group([(1, &mut a), (2, &mut c), (1, &mut b), (3, &mut d)].into_iter());
        // Group 1 is {1, 3, 5}: mean 3, standard deviation √(8/3).
        let s = (8.0f32 / 3.0).sqrt();
        for (got, want) in a.iter().chain(&b).zip([-2.0 / s, 0.0, 2.0 / s]) {
            assert!((got - want).abs() < 1e-5, "{a:?} {b:?}");
        }
        // Group 2's scale is its own; a constant group carries no preference.
        let s = (20000.0f32 / 3.0).sqrt();
        for (got, want) in c.iter().zip([-100.0 / s, 100.0 / s, 0.0]) {
            assert!((got - want).abs() < 1e-5, "{c:?}");
        }
        assert_eq!(d, [0.0, 0.0]);
    }

    #[test]
    fn configuration_norm_gives_each_configurations_advantages_unit_scale() {
        // Two configurations, one with rewards 100 times the other's: standardised per
        // minibatch only, the stored advantages keep the rewards' scale (hundreds); per
        // configuration, both have standard deviation 1.
        let spread = |advantage_norm: AdvantageNorm| {
            let cfg = PpoConfig {
                advantage_norm,
                ..toy_config()
            };
            let mut learner = Learner::new(cfg, PolicySizes::TINY, 2, Device::Cpu, 7);
            let mut eps: Vec<Episode> = (0..4).map(|s| toy_episode(&learner, s).0).collect();
            for (i, ep) in eps.iter_mut().enumerate() {
                let scale = if i % 2 == 0 { 100.0 } else { 1.0 };
                for (t, r) in ep.rewards.iter_mut().enumerate() {
                    *r = scale * ((t * 7 + i * 3) % 5) as f32;
                }
            }
            learner.ingest(&eps, &[0, 1, 0, 1]);
            let std_of = |first: usize| {
                let adv: Vec<f32> = learner
                    .buffer
                    .chunks()
                    .enumerate()
                    .filter(|(i, _)| (i / 2) % 2 == first)
                    .flat_map(|(_, c)| c.advantages.clone())
                    .collect();
                let mean = adv.iter().sum::<f32>() / adv.len() as f32;
                (adv.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / adv.len() as f32).sqrt()
            };
            (std_of(0), std_of(1))
        };
        let (big, _) = spread(AdvantageNorm::Minibatch);
        assert!(big > 50.0, "raw: {big}");
        let (big, small) = spread(AdvantageNorm::Configuration);
        assert!(
            (big - 1.0).abs() < 1e-3 && (small - 1.0).abs() < 1e-3,
            "per configuration: {big} and {small}"
        );
    }

    #[test]
    fn the_kl_weight_halves_every_half_life() {
        let cfg = PpoConfig {
            kl_to_warm_start: 2.0,
            kl_half_life: 10.0,
            ..toy_config()
        };
        let mut learner = Learner::new(cfg, PolicySizes::TINY, 2, Device::Cpu, 3);
        assert_eq!(learner.kl_coef(), 2.0);
        learner.version = 20;
        assert!((learner.kl_coef() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn state_round_trip_restores_the_same_policy() {
        let cfg = toy_config();
        let mut a = Learner::new(cfg, PolicySizes::TINY, 2, Device::Cpu, 3);
        a.anchor_here().unwrap();
        let eps: Vec<Episode> = (0..6).map(|s| toy_episode(&a, s).0).collect();
        a.ingest(&eps, &vec![0; eps.len()]);
        a.update().expect("enough data for an update");
        let mut b = Learner::new(cfg, PolicySizes::TINY, 2, Device::Cpu, 99);
        b.restore(a.state()).unwrap();
        assert_eq!(b.version(), 1);
        assert_eq!(b.buffered(), a.buffered());
        assert!(b.state().anchor.is_some() && b.state().anchor == a.state().anchor);
        let obs = [0.25f32; OBS_DIM];
        let mut sa = LstmState::zeros(1, 32, Device::Cpu);
        let mut sb = LstmState::zeros(1, 32, Device::Cpu);
        assert_eq!(
            a.net.actor.step(&obs, &mut sa),
            b.net.actor.step(&obs, &mut sb)
        );
        // The next update continues identically (same optimizer moments, buffer and sampling).
        let (sa, sb) = (a.update().unwrap(), b.update().unwrap());
        assert_eq!(sa.policy_loss, sb.policy_loss);
        assert_eq!(a.net.to_named(), b.net.to_named());
    }
}
