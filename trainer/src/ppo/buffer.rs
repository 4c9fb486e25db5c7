//! Experience as the learner keeps it: finished episodes cut into fixed-length recurrent chunks
//! (each with the actor's and critic's LSTM state at its start), in a bounded buffer where each
//! chunk is reused at most `max_uses` times and dropped once `max_staleness` policy versions old.

use std::collections::VecDeque;

use lhopt_core::{NUM_ACTION_LOGITS, NUM_HEADS, OBS_DIM};
use rand::Rng;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

use crate::policy_net::LstmState;

/// A stretch of at most `chunk_len` consecutive decisions of one episode, with everything the
/// update needs. Per-decision vectors are flattened row-major.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Chunk {
    /// Policy version that acted.
    pub version: u64,
    /// Number of decisions (≤ chunk_len; the rest is padding when batched).
    pub len: usize,
    /// Raw observations, `len × OBS_DIM`.
    pub obs: Vec<f32>,
    /// Critic-only inputs, `len × privileged`.
    pub privileged: Vec<f32>,
    /// Chosen action per head, `len × NUM_HEADS`.
    pub actions: Vec<i64>,
    /// Log-probability of the actions under the behaviour policy.
    pub behaviour_logp: Vec<f32>,
    /// The warm start's logits at each decision, `len × NUM_ACTION_LOGITS` (empty when the run
    /// has no warm start to stay near).
    pub anchor_logits: Vec<f32>,
    /// GAE advantages.
    pub advantages: Vec<f32>,
    /// Value targets (advantage + value), in return units.
    pub returns: Vec<f32>,
    /// Actor LSTM state before the first decision.
    pub actor_h0: Vec<f32>,
    /// Actor LSTM cell before the first decision.
    pub actor_c0: Vec<f32>,
    /// Critic LSTM state before the first decision.
    pub critic_h0: Vec<f32>,
    /// Critic LSTM cell before the first decision.
    pub critic_c0: Vec<f32>,
    /// How many minibatches have used this chunk.
    pub uses: u32,
}

/// Chunks batched into `[batch, chunk_len, ...]` tensors, padding masked out.
#[derive(Debug)]
pub struct Minibatch {
    /// `[B, L, OBS_DIM]`.
    pub obs: Tensor,
    /// `[B, L, privileged]`.
    pub privileged: Tensor,
    /// `[B, L, NUM_HEADS]`, i64.
    pub actions: Tensor,
    /// `[B, L]`.
    pub behaviour_logp: Tensor,
    /// `[B, L, NUM_ACTION_LOGITS]`: the warm start's logits, when every chunk has them.
    pub anchor_logits: Option<Tensor>,
    /// `[B, L]`.
    pub advantages: Tensor,
    /// `[B, L]`.
    pub returns: Tensor,
    /// `[B, L]`, 1 for real decisions, 0 for padding.
    pub mask: Tensor,
    /// Initial actor state, batch B.
    pub actor_state: LstmState,
    /// Initial critic state, batch B.
    pub critic_state: LstmState,
}

/// Reuse and staleness limits of the buffer.
#[derive(Clone, Copy, Debug)]
pub struct BufferLimits {
    /// Decisions kept at most (oldest dropped first).
    pub capacity: usize,
    /// Minibatch uses per chunk.
    pub max_uses: u32,
    /// Policy versions a chunk may lag behind the learner.
    pub max_staleness: u64,
}

/// The bounded chunk buffer.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplayBuffer {
    chunks: VecDeque<Chunk>,
}

impl ReplayBuffer {
    /// Adds a chunk (newest last).
    pub fn push(&mut self, c: Chunk) {
        self.chunks.push_back(c);
    }

    /// The chunks held, oldest first.
    #[cfg(test)]
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.iter()
    }

    /// Decisions currently held.
    pub fn decisions(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }

    /// Drops chunks that are used up, too stale for policy `version`, or beyond capacity.
    pub fn evict(&mut self, version: u64, limits: &BufferLimits) {
        self.chunks.retain(|c| {
            c.uses < limits.max_uses && version.saturating_sub(c.version) <= limits.max_staleness
        });
        while self.decisions() > limits.capacity {
            self.chunks.pop_front();
        }
    }

    /// Picks chunks for one minibatch of at least `decisions` decisions (or all there are): least
    /// used first, ties broken at random; counts the use.
    pub fn sample(&mut self, decisions: usize, rng: &mut impl Rng) -> Vec<Chunk> {
        let mut order: Vec<usize> = (0..self.chunks.len()).collect();
        order.shuffle(rng);
        order.sort_by_key(|&i| self.chunks[i].uses);
        let mut picked = Vec::new();
        let mut total = 0;
        for i in order {
            if total >= decisions {
                break;
            }
            self.chunks[i].uses += 1;
            total += self.chunks[i].len;
            picked.push(self.chunks[i].clone());
        }
        picked
    }
}

/// Stacks chunks into padded tensors of time length `chunk_len` on `device`.
pub fn batch(
    chunks: &[Chunk],
    chunk_len: usize,
    privileged: usize,
    hidden: usize,
    device: Device,
) -> Minibatch {
    let b = chunks.len();
    let mut obs = vec![0f32; b * chunk_len * OBS_DIM];
    let mut pri = vec![0f32; b * chunk_len * privileged];
    let mut act = vec![0i64; b * chunk_len * NUM_HEADS];
    let anchored = chunks.iter().all(|c| !c.anchor_logits.is_empty());
    let anchor_width = if anchored { NUM_ACTION_LOGITS } else { 0 };
    let mut anchor = vec![0f32; b * chunk_len * anchor_width];
    let (mut lp, mut adv, mut ret, mut mask) = (
        vec![0f32; b * chunk_len],
        vec![0f32; b * chunk_len],
        vec![0f32; b * chunk_len],
        vec![0f32; b * chunk_len],
    );
    let (mut ah, mut ac, mut ch, mut cc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, c) in chunks.iter().enumerate() {
        let row = i * chunk_len;
        obs[row * OBS_DIM..][..c.obs.len()].copy_from_slice(&c.obs);
        pri[row * privileged..][..c.privileged.len()].copy_from_slice(&c.privileged);
        act[row * NUM_HEADS..][..c.actions.len()].copy_from_slice(&c.actions);
        lp[row..][..c.len].copy_from_slice(&c.behaviour_logp);
        if anchored {
            anchor[row * NUM_ACTION_LOGITS..][..c.anchor_logits.len()]
                .copy_from_slice(&c.anchor_logits);
        }
        adv[row..][..c.len].copy_from_slice(&c.advantages);
        ret[row..][..c.len].copy_from_slice(&c.returns);
        mask[row..][..c.len].fill(1.0);
        ah.extend_from_slice(&c.actor_h0);
        ac.extend_from_slice(&c.actor_c0);
        ch.extend_from_slice(&c.critic_h0);
        cc.extend_from_slice(&c.critic_c0);
    }
    let (b, l) = (b as i64, chunk_len as i64);
    let t = |v: &[f32], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
    Minibatch {
        obs: t(&obs, &[b, l, OBS_DIM as i64]),
        privileged: t(&pri, &[b, l, privileged as i64]),
        actions: Tensor::from_slice(&act)
            .view([b, l, NUM_HEADS as i64])
            .to_device(device),
        behaviour_logp: t(&lp, &[b, l]),
        anchor_logits: anchored.then(|| t(&anchor, &[b, l, NUM_ACTION_LOGITS as i64])),
        advantages: t(&adv, &[b, l]),
        returns: t(&ret, &[b, l]),
        mask: t(&mask, &[b, l]).to_kind(Kind::Float),
        actor_state: LstmState::from_rows(&ah, &ac, hidden, device),
        critic_state: LstmState::from_rows(&ch, &cc, hidden, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn chunk(version: u64, len: usize) -> Chunk {
        Chunk {
            version,
            len,
            obs: vec![version as f32; len * OBS_DIM],
            privileged: vec![0.0; len * 2],
            actions: vec![1; len * NUM_HEADS],
            behaviour_logp: vec![-1.0; len],
            anchor_logits: vec![version as f32; len * NUM_ACTION_LOGITS],
            advantages: vec![0.5; len],
            returns: vec![1.0; len],
            actor_h0: vec![0.1; 4],
            actor_c0: vec![0.2; 4],
            critic_h0: vec![0.3; 4],
            critic_c0: vec![0.4; 4],
            uses: 0,
        }
    }

    const LIMITS: BufferLimits = BufferLimits {
        capacity: 40,
        max_uses: 2,
        max_staleness: 1,
    };

    #[test]
    fn reuse_staleness_and_capacity_limits() {
        let mut buf = ReplayBuffer::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for v in 0..3 {
            buf.push(chunk(v, 8));
            buf.push(chunk(v, 8));
        }
        // Policy version 2: chunks of version 0 are 2 versions stale and go.
        buf.evict(2, &LIMITS);
        assert_eq!(buf.decisions(), 32);
        // Least-used first: two minibatches of 16 decisions touch all four chunks once.
        let a = buf.sample(16, &mut rng);
        let b = buf.sample(16, &mut rng);
        assert_eq!((a.len(), b.len()), (2, 2));
        assert!(buf.chunks.iter().all(|c| c.uses == 1));
        buf.sample(32, &mut rng);
        buf.evict(2, &LIMITS);
        assert_eq!(buf.decisions(), 0, "every chunk used twice");
        // Capacity drops the oldest.
        for v in 10..16 {
            buf.push(chunk(v, 8));
        }
        buf.evict(
            15,
            &BufferLimits {
                max_staleness: 10,
                ..LIMITS
            },
        );
        assert_eq!(buf.decisions(), 40);
        assert_eq!(buf.chunks.front().unwrap().version, 11);
    }

    #[test]
    fn batch_pads_and_masks() {
        let mb = batch(&[chunk(1, 3), chunk(2, 5)], 5, 2, 4, Device::Cpu);
        assert_eq!(mb.obs.size(), vec![2, 5, OBS_DIM as i64]);
        assert_eq!(mb.mask.sum(Kind::Float).double_value(&[]), 8.0);
        assert_eq!(mb.obs.double_value(&[1, 4, 0]), 2.0);
        assert_eq!(mb.obs.double_value(&[0, 3, 0]), 0.0);
        assert_eq!(mb.actor_state.h.size(), vec![2, 4]);
        assert_eq!(mb.critic_state.c.double_value(&[1, 3]), 0.4f32 as f64);
        let anchor = mb.anchor_logits.expect("every chunk has anchor logits");
        assert_eq!(anchor.size(), vec![2, 5, NUM_ACTION_LOGITS as i64]);
        assert_eq!(anchor.double_value(&[1, 4, 39]), 2.0);
        assert_eq!(anchor.double_value(&[0, 3, 0]), 0.0);
        // One chunk without them (collected before the run had a warm start): no KL term.
        let mut bare = chunk(3, 2);
        bare.anchor_logits.clear();
        assert!(
            batch(&[chunk(1, 3), bare], 5, 2, 4, Device::Cpu)
                .anchor_logits
                .is_none()
        );
    }
}
