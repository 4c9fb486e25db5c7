//! The tch policy as an acting agent: one LSTM step per decision, actions sampled (or greedy)
//! through the core's head semantics, and everything PPO needs recorded as it goes.

use lhopt_core::{Action, NUM_ACTION_LOGITS, NUM_HEADS, OBS_DIM};

use crate::env::Agent;
use crate::policy_net::{LstmState, RecurrentNet};

/// How the agent turns logits into actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActMode {
    /// Sample each head with the core's seeded sampler (training).
    Sample,
    /// The argmax of each head (deployment default).
    Greedy,
}

/// What the agent saw and did in one episode, one row per decision.
#[derive(Clone, Debug, Default)]
pub struct ActingRecord {
    /// Raw observations, `T × OBS_DIM`.
    pub obs: Vec<f32>,
    /// Chosen actions.
    pub actions: Vec<[u8; NUM_HEADS]>,
    /// Log-probability of each chosen action.
    pub logp: Vec<f32>,
    /// LSTM hidden state before each decision, `T × hidden`.
    pub h: Vec<f32>,
    /// LSTM cell before each decision, `T × hidden`.
    pub c: Vec<f32>,
}

/// A [`RecurrentNet`] actor that acts on raw observations and records its decisions.
#[derive(Debug)]
pub struct PolicyAgent<'a> {
    net: &'a RecurrentNet,
    state: LstmState,
    rng: lhopt_core::Rng,
    mode: ActMode,
    /// The current episode so far.
    pub record: ActingRecord,
}

impl<'a> PolicyAgent<'a> {
    /// An agent over `net` (acting on the net's device) with a seeded sampler.
    pub fn new(net: &'a RecurrentNet, mode: ActMode, seed: u64) -> Self {
        Self {
            net,
            state: LstmState::zeros(1, net.sizes().hidden, tch::Device::Cpu),
            rng: lhopt_core::Rng::new(seed),
            mode,
            record: ActingRecord::default(),
        }
    }
}

impl Agent for PolicyAgent<'_> {
    /// Starts a new episode: zero LSTM state, empty record.
    fn reset(&mut self) {
        self.state = LstmState::zeros(1, self.net.sizes().hidden, self.state.h.device());
        self.record = ActingRecord::default();
    }

    /// One decision on a raw observation.
    fn act(&mut self, obs: &[f32; OBS_DIM]) -> Action {
        let (h, c) = self.state.row0();
        let logits: [f32; NUM_ACTION_LOGITS] = self
            .net
            .step(obs, &mut self.state)
            .try_into()
            .expect("the actor outputs 40 logits");
        choose_and_record(
            self.mode,
            &logits,
            &mut self.rng,
            obs,
            (&h, &c),
            &mut self.record,
        )
    }
}

/// Picks the action for `logits` in `mode` and records the decision (the observation, the action,
/// its log-probability and the LSTM state `(h, c)` before the step) in `record`.
pub(crate) fn choose_and_record(
    mode: ActMode,
    logits: &[f32; NUM_ACTION_LOGITS],
    rng: &mut lhopt_core::Rng,
    obs: &[f32; OBS_DIM],
    (h, c): (&[f32], &[f32]),
    record: &mut ActingRecord,
) -> Action {
    let action = match mode {
        ActMode::Sample => lhopt_core::sample(logits, rng),
        ActMode::Greedy => lhopt_core::greedy(logits),
    };
    record.obs.extend_from_slice(obs);
    record.actions.push(action.choices);
    record.logp.push(lhopt_core::log_prob(logits, &action));
    record.h.extend_from_slice(h);
    record.c.extend_from_slice(c);
    action
}
