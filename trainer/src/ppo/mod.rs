//! PPO meta-training (spec §7): a learner that updates a recurrent actor-critic from
//! experience that parallel rollout workers collect with slightly stale copies of the policy.

pub mod adam;
pub mod agent;
pub mod buffer;
pub mod gae;
pub mod learner;
pub mod loss;
pub mod rollout;

use serde::{Deserialize, Serialize};

use buffer::BufferLimits;

/// Serializes an f32 config field. Human-readable formats (the run folder's `config.toml`) get
/// the shortest decimal that reads back as the same f32 (0.95, not 0.949999988079071, which TOML's
/// f64 floats would show); binary ones (the postcard checkpoint) keep the f32 itself.
pub(crate) fn f32_as_written<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        let shortest: f64 = v.to_string().parse().unwrap_or(f64::from(*v));
        s.serialize_f64(shortest)
    } else {
        s.serialize_f32(*v)
    }
}

/// PPO hyperparameters; the defaults are spec §7.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Ratio clip ε.
    pub clip: f64,
    /// Entropy bonus coefficient.
    pub entropy_coef: f64,
    /// Value loss coefficient.
    pub value_coef: f64,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Discount γ.
    #[serde(serialize_with = "f32_as_written")]
    pub gamma: f32,
    /// GAE λ.
    #[serde(serialize_with = "f32_as_written")]
    pub gae_lambda: f32,
    /// Decisions per minibatch.
    pub minibatch: usize,
    /// Minibatches (gradient steps) per update.
    pub minibatches: usize,
    /// Decisions the buffer keeps.
    pub buffer: usize,
    /// Uses per decision at most.
    pub max_uses: u32,
    /// Policy versions a decision may lag at most.
    pub max_staleness: u64,
    /// Decisions per recurrent chunk (BPTT length).
    pub chunk_len: usize,
    /// Input normalisation clip (stored in the exported policy).
    pub norm_clip: f64,
    /// Weight of KL(policy ‖ warm start) in the loss at the first update (spec §6a); 0 turns it
    /// off, and runs without a warm start have nothing to stay near.
    pub kl_to_warm_start: f64,
    /// Updates over which that weight halves.
    pub kl_half_life: f64,
    /// Which decisions' advantages are standardised together before the minibatch's own
    /// standardisation.
    pub advantage_norm: AdvantageNorm,
}

/// How advantages are standardised (mean 0, standard deviation 1) before the clipped surrogate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvantageNorm {
    /// Over each minibatch (spec §7, the common PPO recipe).
    #[default]
    Minibatch,
    /// First over the decisions of each task configuration's episodes in the update's fresh
    /// data, then over each minibatch. Families whose returns vary little (a noisy quadratic
    /// near the reward's ceiling) then weigh in the gradient as much as those whose returns vary
    /// widely (a char LM), instead of being drowned by them.
    Configuration,
}

impl Default for PpoConfig {
    fn default() -> Self {
        Self {
            clip: 0.2,
            entropy_coef: 0.01,
            value_coef: 0.5,
            // Spec §7 says 2e-4 for paper-scale data; at CPU scale that barely moved the policy
            // and 3e-3 moved it too far (configs/meta-train-cpu.toml has the measurements).
            learning_rate: 1e-3,
            max_grad_norm: 5.0,
            gamma: 1.0,
            gae_lambda: 0.95,
            minibatch: 128,
            minibatches: 4,
            buffer: 768,
            max_uses: 4,
            max_staleness: 4,
            chunk_len: 16,
            norm_clip: 5.0,
            kl_to_warm_start: 1.0,
            kl_half_life: 100.0,
            advantage_norm: AdvantageNorm::Minibatch,
        }
    }
}

impl PpoConfig {
    /// The buffer's reuse and staleness limits.
    pub fn buffer_limits(&self) -> BufferLimits {
        BufferLimits {
            capacity: self.buffer,
            max_uses: self.max_uses,
            max_staleness: self.max_staleness,
        }
    }

    /// Fresh decisions per update that keep each decision used about `max_uses` times.
    pub fn fresh_per_update(&self) -> usize {
        (self.minibatch * self.minibatches).div_ceil(self.max_uses as usize)
    }
}
