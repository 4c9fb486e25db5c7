//! The embedding API: a frozen policy steering one training run.
//!
//! # The contract with the runtime
//!
//! - **Steps.** Call [`Controller::observe`] once after every inner step with its training loss
//!   (NaN or ±∞ if it diverged; a loss ≤ 0 counts as NaN, since the features take its log) and,
//!   when [`Controller::wants_reductions`] said so before the step, its per-tensor reductions.
//!   Loop `while !ctrl.is_finished()`: that is exactly T steps.
//! - **Decisions.** After a step answered with [`StepStatus::DecisionDue`], call
//!   [`Controller::decide`] once with ‖θ‖, the displacement and the eval loss (NaN if there is
//!   none), then apply the new hyperparameters and the restart before the next step. Until then
//!   `observe` records nothing and answers `DecisionDue` again; a second `decide` is an error.
//! - **Checkpoint registers.** There are three. A register holds everything that training resumes
//!   from: the parameters (and model buffers such as batch-norm statistics), the optimizer's per-tensor state (`m`, `v`, bias corrections, the
//!   trust-ratio EMA) and its shared state (the clipping rolling max), but **not** the
//!   hyperparameters, which stay the ones the decision returned: a runtime that restores a
//!   framework checkpoint holding learning rates (a PyTorch optimizer's `state_dict`) must set
//!   the decision's hyperparameters again after loading it. `Save(r)` copies the current state
//!   into register r; `Load(r)` replaces the current state by register r's; `Swap(r)` does both
//!   at once. A load or swap of a register that was never saved is a no-op, which the decision
//!   already reports as [`Restart::None`](crate::Restart::None): do nothing.
//! - **Displacement after a restart.** The displacement of the next decision is measured from
//!   the parameters training resumed from at this decision, that is *after* the restart: after a
//!   load, from the loaded parameters.
//! - **The last decision.** When K divides T the last step announces the last decision; its
//!   restart still applies (a load moves the parameters), so make the final evaluation after
//!   performing it. [`Controller::is_finished`] is true once it is made.
//!
//! ```
//! use lhopt_core::{
//!     Controller, DecisionInputs, FrozenPolicy, Hyperparams, Mode, RunConfig, StepReductions,
//!     StepStatus, Tiny, TensorReductions,
//! };
//! # let mut file = vec![0u8; FrozenPolicy::<32, 32, 32>::MAX_ENCODED_LEN];
//! # let n = FrozenPolicy::new(Tiny::neutral(), "doc", "").unwrap().encode(&mut file).unwrap();
//! # let policy_bytes = &file[..n]; // in firmware: include_bytes!("policy.lhp")
//! let policy = FrozenPolicy::<32, 32, 32>::decode(policy_bytes)?;
//! let cfg = RunConfig { total_steps: 1000, decisions: 20 };
//! let start: Hyperparams = policy.start(); // where the policy was trained to start
//! let mut ctl = Controller::new(policy, cfg, start, Mode::Greedy)?;
//! let mut hyper = ctl.hyper();
//! let mut steps = 0;
//! while !ctl.is_finished() {
//!     steps += 1; // one optimizer step with `hyper`
//!     let reductions = [TensorReductions::default()]; // one per tensor, from your optimizer step
//!     let sampled = ctl.wants_reductions().then_some(StepReductions { tensors: &reductions, clipped: false });
//!     if ctl.observe(0.5 /* train loss */, sampled) == StepStatus::DecisionDue {
//!         let inputs = DecisionInputs { param_norm: 10.0, displacement: 0.1, eval_loss: f32::NAN };
//!         let decision = ctl.decide(&inputs)?;
//!         hyper = decision.hyper; // and perform decision.restart
//!     }
//! }
//! assert_eq!(steps, 1000); // exactly T optimizer steps
//! # assert!(hyper.in_bounds());
//! # Ok::<(), lhopt_core::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::action::Decision;
use crate::error::Error;
use crate::format::FrozenPolicy;
use crate::format::{CRC_LEN, PREAMBLE_LEN, open_frame, postcard_into, postcard_len, write_frame};
use crate::hyper::Hyperparams;
use crate::observation::{
    DecisionInputs, OBS_DIM, Observer, RunConfig, StepReductions, StepStatus,
};
use crate::policy::{LstmState, Rng, greedy, sample};

/// First four bytes of a saved controller state.
pub const STATE_MAGIC: [u8; 4] = *b"LHST";

/// Version of the saved-state layout. Version 2 keeps the interval's running mean loss where
/// version 1 kept its sum; version 3 adds the eval loss to the checkpoint registers' records
/// (feature set 3). Older states are refused.
pub const STATE_VERSION: u16 = 3;

/// How actions are chosen from the policy's logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The most likely choice of every head (the deployment default).
    Greedy,
    /// Sample every head from its softmax, with a PRNG seeded by `seed`.
    Sample {
        /// PRNG seed.
        seed: u64,
    },
}

impl Mode {
    /// The PRNG seed (unused, 0, for greedy).
    fn seed(self) -> u64 {
        match self {
            Mode::Greedy => 0,
            Mode::Sample { seed } => seed,
        }
    }
}

/// What a saved state must match to be restored: the hidden size and the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StateHeader {
    hidden: u32,
    policy_fingerprint: u32,
}

/// A frozen policy, the run's observer, the recurrent state and the PRNG.
#[derive(Clone, Debug)]
pub struct Controller<const PRE: usize, const H: usize, const POST: usize> {
    policy: FrozenPolicy<PRE, H, POST>,
    observer: Observer,
    state: LstmState<H>,
    rng: Rng,
    mode: Mode,
}

impl<const PRE: usize, const H: usize, const POST: usize> Controller<PRE, H, POST> {
    /// A buffer size that always holds [`Controller::save_state`]'s output: frame, header
    /// (hidden and fingerprint varints, 10), observer, LSTM state, PRNG (10) and mode (11).
    pub const STATE_MAX_LEN: usize =
        PREAMBLE_LEN + 10 + Observer::MAX_ENCODED_LEN + 8 * H + 10 + 11 + CRC_LEN;

    /// A controller at the start of a run. `initial` is the run's starting hyperparameters
    /// (clamped to bounds), usually [`FrozenPolicy::start`]; see [`Observer::new`]. Errors on an
    /// invalid `cfg`.
    pub fn new(
        policy: FrozenPolicy<PRE, H, POST>,
        cfg: RunConfig,
        initial: Hyperparams,
        mode: Mode,
    ) -> Result<Self, Error> {
        Ok(Self {
            observer: Observer::new(cfg, initial, policy.feature_set())?,
            policy,
            state: LstmState::default(),
            rng: Rng::new(mode.seed()),
            mode,
        })
    }

    /// A controller that holds every hyperparameter where it is ([`FrozenPolicy::holding`],
    /// greedy): a constant baseline behind the same integration code.
    pub fn holding(cfg: RunConfig, initial: Hyperparams) -> Result<Self, Error> {
        Self::new(FrozenPolicy::holding(), cfg, initial, Mode::Greedy)
    }

    /// A controller with no policy and no run, built at compile time: it answers as a finished
    /// run (`observe` says [`StepStatus::Finished`], `decide` [`Error::NoDecisionDue`], and its
    /// hyperparameters are [`Hyperparams::INITIAL`]) until [`Controller::load`] puts a policy
    /// and a run into it.
    ///
    /// Where stack is scarce, this is how the weights exist only once: the value is a `const`, so
    /// a `static` holds it (in firmware, a `static mut` declared at the top of cortex-m-rt's
    /// `#[entry]`, which the macro hands out as a safe `&'static mut`) and `load` decodes into
    /// it in place. Any controller built at run time is returned by value, and rustc keeps a
    /// temporary copy of it on the stack (README, "Embedding the controller").
    pub const fn empty() -> Self {
        Self {
            policy: FrozenPolicy::empty(),
            observer: Observer::FINISHED,
            state: LstmState::ZERO,
            rng: Rng::new(0),
            mode: Mode::Greedy,
        }
    }

    /// Decodes a policy file into this controller in place ([`FrozenPolicy::decode_into`]) and
    /// starts a new run, as [`Controller::new`] would. On error `self` is unchanged.
    pub fn load(
        &mut self,
        policy: &[u8],
        cfg: RunConfig,
        initial: Hyperparams,
        mode: Mode,
    ) -> Result<(), Error> {
        cfg.interval()?;
        self.policy.decode_into(policy)?;
        // Cannot fail: the configuration was checked before anything was written.
        self.observer = Observer::new(cfg, initial, self.policy.feature_set())?;
        self.state = LstmState::default();
        self.rng = Rng::new(mode.seed());
        self.mode = mode;
        Ok(())
    }

    /// Whether the step about to run should report reductions.
    pub fn wants_reductions(&self) -> bool {
        self.observer.wants_reductions()
    }

    /// Records one inner step; see [`Observer::observe_step`].
    pub fn observe(
        &mut self,
        train_loss: f32,
        reductions: Option<StepReductions<'_>>,
    ) -> StepStatus {
        self.observer.observe_step(train_loss, reductions)
    }

    /// Takes the decision that [`Controller::observe`] announced with
    /// [`StepStatus::DecisionDue`]: observation, normalisation, policy step, action, new
    /// hyperparameters. No allocation, no panic; the hyperparameters are always finite and
    /// inside their bounds.
    ///
    /// Errors, neither of which changes the hyperparameters:
    /// - [`Error::NoDecisionDue`] when no decision is due (before its step, or a second call for
    ///   the same one); nothing changes.
    /// - [`Error::PolicyDiverged`] when the policy's recurrent state or logits overflowed: the
    ///   interval is closed as if a decision had been taken, no restart is requested, and the
    ///   recurrent state is reset to zero so later decisions can run. Training continues.
    ///
    /// When this was the last decision ([`Controller::is_finished`] is now true), still perform
    /// its restart: a load or swap moves the parameters, so any final evaluation comes after it.
    pub fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, Error> {
        if !self.observer.decision_due() {
            return Err(Error::NoDecisionDue);
        }
        let mut obs = [0.0; OBS_DIM];
        self.observer.observation_into(inputs, &mut obs);
        let logits = self.policy.forward(&obs, &mut self.state);
        let finite = |xs: &[f32]| xs.iter().all(|x| x.is_finite());
        if !(finite(&logits) && finite(&self.state.h) && finite(&self.state.c)) {
            self.state = LstmState::default();
            return Err(Error::PolicyDiverged);
        }
        let action = match self.mode {
            Mode::Greedy => greedy(&logits),
            Mode::Sample { .. } => sample(&logits, &mut self.rng),
        };
        Ok(self.observer.apply(&action))
    }

    /// Whether a decision was announced and not yet taken.
    pub fn decision_due(&self) -> bool {
        self.observer.decision_due()
    }

    /// Whether the run is over: all T steps recorded and no decision left. Check it before each
    /// inner step (`while !ctrl.is_finished()`) and the loop runs exactly T steps, whether or not
    /// K divides T.
    pub fn is_finished(&self) -> bool {
        self.observer.is_finished()
    }

    /// Current hyperparameters.
    pub fn hyper(&self) -> Hyperparams {
        self.observer.hyper()
    }

    /// The run's observer (progress, step, previous action, ...).
    pub fn observer(&self) -> &Observer {
        &self.observer
    }

    /// The policy.
    pub fn policy(&self) -> &FrozenPolicy<PRE, H, POST> {
        &self.policy
    }

    /// The recurrent state.
    pub fn lstm_state(&self) -> &LstmState<H> {
        &self.state
    }

    /// The action-selection mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn header(&self) -> StateHeader {
        StateHeader {
            hidden: u32::try_from(H).unwrap_or(u32::MAX),
            policy_fingerprint: self.policy.fingerprint(),
        }
    }

    /// Writes the whole run state (observer, LSTM state, PRNG, mode) into `buf`
    /// ([`Controller::STATE_MAX_LEN`] bytes always suffice); returns the bytes written. The
    /// layout is framed like a policy file (magic `LHST`, version, length, CRC-32). On error
    /// (a buffer too small) `buf` is unchanged.
    pub fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let state = (
            self.header(),
            &self.observer,
            &self.state,
            &self.rng,
            &self.mode,
        );
        let len = postcard_len(&state)?;
        write_frame(buf, STATE_MAGIC, STATE_VERSION, len, |payload| {
            postcard_into(&state, payload)
        })
    }

    /// Restores a state written by [`Controller::save_state`] of a controller with the same
    /// policy; the run then continues bit for bit as if it had never stopped, with the saved
    /// run's configuration (T, K) and mode, whatever this controller was created with. Every
    /// field is checked ([`Error::InvalidState`] names the first one wrong), so a restored
    /// controller never hands out an out-of-bounds hyperparameter. On error `self` is unchanged.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let (_, payload) = open_frame(bytes, STATE_MAGIC, STATE_VERSION, STATE_VERSION)?;
        let (header, rest) =
            postcard::take_from_bytes::<StateHeader>(payload).map_err(|_| Error::Malformed)?;
        let expected = self.header();
        if header.hidden != expected.hidden {
            return Err(Error::SizeMismatch {
                which: "hidden",
                found: header.hidden,
                expected: expected.hidden,
            });
        }
        if header.policy_fingerprint != expected.policy_fingerprint {
            return Err(Error::PolicyMismatch);
        }
        let ((observer, state, rng, mode), trailing) =
            postcard::take_from_bytes::<(Observer, LstmState<H>, Rng, Mode)>(rest)
                .map_err(|_| Error::Malformed)?;
        if !trailing.is_empty() {
            return Err(Error::Malformed);
        }
        if observer.feature_set() != self.policy.feature_set() {
            return Err(Error::PolicyMismatch);
        }
        observer.validate()?;
        if !state.h.iter().chain(&state.c).all(|x| x.is_finite()) {
            return Err(Error::InvalidState("LSTM state: not finite"));
        }
        self.observer = observer;
        self.state = state;
        self.rng = rng;
        self.mode = mode;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::action::{Action, Restart};
    use crate::observation::Observer;
    use crate::policy::{PolicyNet, random_net};
    use crate::reductions::TensorReductions;

    type Ctl = Controller<8, 4, 6>;

    const CFG: RunConfig = RunConfig {
        total_steps: 120,
        decisions: 12,
    };

    fn controller(seed: u64, mode: Mode) -> Ctl {
        let policy = FrozenPolicy::new(random_net(seed), "t", "").unwrap();
        Controller::new(policy, CFG, Hyperparams::INITIAL, mode).unwrap()
    }

    /// Deterministic synthetic training signals for step `t`.
    fn drive(ctl: &mut Ctl, t: u64) -> Option<Decision> {
        let x = t as f32;
        let tensors = [
            TensorReductions {
                numel: 100,
                grad_norm: 1.0 + 0.1 * libm::sinf(x),
                mhat_norm: 0.8,
                mhat_minus_grad_norm: 0.5,
                param_norm: 5.0 + 0.01 * x,
                update_norm: 0.3,
                lr_p: ctl.hyper().lr,
                grad_dot_mhat: 0.4 * libm::cosf(x),
                grad_dot_param: -0.2,
                grad_dot_update: 0.1,
                count_v_gt_eps: 90.0,
                sum_log_abs_update: -120.0,
            },
            TensorReductions::default(),
        ];
        let r = ctl.wants_reductions().then_some(StepReductions {
            tensors: &tensors,
            clipped: t.is_multiple_of(7),
        });
        let loss = 2.0 / (1.0 + 0.05 * x) + 0.01 * libm::sinf(3.0 * x);
        (ctl.observe(loss, r) == StepStatus::DecisionDue).then(|| {
            ctl.decide(&DecisionInputs {
                param_norm: 5.0 + 0.01 * x,
                displacement: 0.1 / (1.0 + 0.01 * x),
                eval_loss: if t.is_multiple_of(20) {
                    f32::NAN
                } else {
                    loss * 1.1
                },
            })
            .unwrap()
        })
    }

    #[test]
    fn an_empty_controller_is_a_finished_run_until_a_policy_is_loaded() {
        // Built at compile time, as firmware does for its `static`.
        const EMPTY: Ctl = Ctl::empty();
        let mut ctl = EMPTY;
        assert!(ctl.is_finished() && !ctl.wants_reductions() && !ctl.decision_due());
        assert_eq!(ctl.observe(0.5, None), StepStatus::Finished);
        let inputs = DecisionInputs {
            param_norm: 1.0,
            displacement: 0.1,
            eval_loss: f32::NAN,
        };
        assert_eq!(ctl.decide(&inputs), Err(Error::NoDecisionDue));
        assert_eq!(ctl.hyper(), Hyperparams::INITIAL);

        let policy = FrozenPolicy::new(random_net(4), "t", "").unwrap();
        let mut file = vec![0u8; FrozenPolicy::<8, 4, 6>::MAX_ENCODED_LEN];
        let n = policy.encode(&mut file).unwrap();
        ctl.load(&file[..n], CFG, Hyperparams::INITIAL, Mode::Greedy)
            .unwrap();
        let mut fresh = Controller::new(policy, CFG, Hyperparams::INITIAL, Mode::Greedy).unwrap();
        for t in 0..CFG.total_steps {
            assert_eq!(drive(&mut ctl, t), drive(&mut fresh, t));
        }
        assert!(ctl.is_finished());
    }

    #[test]
    fn a_holding_controller_keeps_its_hyperparameters_and_loads_a_policy_in_place() {
        let mut ctl = Ctl::holding(CFG, Hyperparams::INITIAL).unwrap();
        let mut decisions = 0;
        for t in 0..CFG.total_steps {
            if let Some(d) = drive(&mut ctl, t) {
                assert_eq!((d.hyper, d.restart), (Hyperparams::INITIAL, Restart::None));
                decisions += 1;
            }
        }
        assert_eq!(decisions, CFG.decisions);

        // load = new(decode): the same decisions, bit for bit.
        let policy = FrozenPolicy::new(random_net(3), "t", "").unwrap();
        let mut file = vec![0u8; FrozenPolicy::<8, 4, 6>::MAX_ENCODED_LEN];
        let n = policy.encode(&mut file).unwrap();
        let mode = Mode::Sample { seed: 5 };
        ctl.load(&file[..n], CFG, Hyperparams::INITIAL, mode)
            .unwrap();
        let mut fresh = Controller::new(policy, CFG, Hyperparams::INITIAL, mode).unwrap();
        let mut state = vec![0u8; Ctl::STATE_MAX_LEN];
        for t in 0..CFG.total_steps / 2 {
            assert_eq!(drive(&mut ctl, t), drive(&mut fresh, t));
        }

        // A truncated file or a bad run configuration changes nothing, mid-run included.
        let saved = ctl.save_state(&mut state).unwrap();
        let bad_cfg = RunConfig {
            total_steps: 0,
            decisions: 1,
        };
        assert!(
            ctl.load(&file[..n - 1], CFG, Hyperparams::INITIAL, mode)
                .is_err()
        );
        assert!(
            ctl.load(&file[..n], bad_cfg, Hyperparams::INITIAL, mode)
                .is_err()
        );
        let mut again = vec![0u8; Ctl::STATE_MAX_LEN];
        assert_eq!(ctl.save_state(&mut again).unwrap(), saved);
        assert_eq!(again, state);
        for t in CFG.total_steps / 2..CFG.total_steps {
            assert_eq!(drive(&mut ctl, t), drive(&mut fresh, t));
        }
    }

    #[test]
    fn restored_run_continues_bit_for_bit() {
        for mode in [Mode::Greedy, Mode::Sample { seed: 5 }] {
            let mut whole = controller(11, mode);
            let mut expected = Vec::new();
            for t in 0..CFG.total_steps {
                expected.extend(drive(&mut whole, t));
            }
            assert_eq!(expected.len(), 12);

            let mut first = controller(11, mode);
            let mut got = Vec::new();
            for t in 0..55 {
                got.extend(drive(&mut first, t));
            }
            let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
            let n = first.save_state(&mut buf).unwrap();
            drop(first);
            let mut resumed = controller(11, Mode::Greedy);
            resumed.restore_state(&buf[..n]).unwrap();
            assert_eq!(resumed.mode(), mode);
            for t in 55..CFG.total_steps {
                got.extend(drive(&mut resumed, t));
            }
            assert_eq!(got, expected);
            assert_eq!(resumed.lstm_state(), whole.lstm_state());
            assert_eq!(resumed.observer(), whole.observer());
        }
    }

    #[test]
    fn sampling_and_greedy_differ_and_sampling_depends_on_the_seed() {
        let run = |mode| {
            let mut c = controller(2, mode);
            let mut out = Vec::new();
            for t in 0..CFG.total_steps {
                out.extend(drive(&mut c, t).map(|d| d.hyper));
            }
            out
        };
        let a = run(Mode::Sample { seed: 1 });
        assert_eq!(a, run(Mode::Sample { seed: 1 }));
        assert_ne!(a, run(Mode::Sample { seed: 2 }));
        assert_ne!(a, run(Mode::Greedy));
    }

    #[test]
    fn greedy_decisions_follow_the_head_biases_and_stay_in_bounds() {
        // Only biases: every head prefers to hold, except lr (×2) and restart (save into
        // register 2). Ties would go to the first choice, like torch.argmax.
        let mut net = PolicyNet::<8, 4, 6>::neutral();
        for (&offset, &hold) in crate::action::HEAD_OFFSETS
            .iter()
            .zip(&Action::HOLD.choices)
        {
            net.heads_b.0[offset + hold as usize] = 0.5;
        }
        net.heads_b.0[6] = 1.0;
        net.heads_b.0[30 + 3] = 1.0;
        let policy = FrozenPolicy::new(net, "biased", "").unwrap();
        let mut ctl = Controller::new(policy, CFG, Hyperparams::INITIAL, Mode::Greedy).unwrap();
        let mut lr = Hyperparams::INITIAL.lr;
        for t in 0..CFG.total_steps {
            if let Some(d) = drive(&mut ctl, t) {
                lr = (lr * 2.0).min(1.0);
                assert_eq!(d.hyper.lr, lr);
                assert_eq!(d.hyper.wd, Hyperparams::INITIAL.wd);
                assert_eq!(d.restart, Restart::Save(2));
                assert!(d.hyper.in_bounds());
            }
        }
        assert_eq!(lr, 1.0, "clamped at the upper bound");
    }

    #[test]
    fn bad_state_bytes_are_rejected_and_leave_the_controller_unchanged() {
        let mut a = controller(11, Mode::Greedy);
        for t in 0..30 {
            drive(&mut a, t);
        }
        let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
        let n = a.save_state(&mut buf).unwrap();
        let bytes = &buf[..n];

        let mut other_policy = controller(12, Mode::Greedy);
        let before = other_policy.observer().clone();
        assert_eq!(
            other_policy.restore_state(bytes),
            Err(Error::PolicyMismatch)
        );
        assert_eq!(other_policy.observer(), &before);

        let mut b = controller(11, Mode::Greedy);
        let mut bad = bytes.to_vec();
        bad[n / 2] ^= 1;
        assert!(matches!(b.restore_state(&bad), Err(Error::Corrupt { .. })));
        assert!(matches!(
            b.restore_state(&bytes[..n - 3]),
            Err(Error::Truncated { .. })
        ));
        assert_eq!(b.observer().step(), 0);

        let policy = FrozenPolicy::new(random_net::<8, 5, 6>(11), "t", "").unwrap();
        let mut wider = Controller::new(policy, CFG, Hyperparams::INITIAL, Mode::Greedy).unwrap();
        assert!(matches!(
            wider.restore_state(bytes),
            Err(Error::SizeMismatch {
                which: "hidden",
                found: 4,
                expected: 5
            })
        ));
        assert!(matches!(
            a.save_state(&mut [0u8; 20]),
            Err(Error::BufferTooSmall { .. })
        ));
        assert_eq!(
            crate::format::read_header(bytes).map(|_| ()),
            Err(Error::BadMagic)
        );
    }

    /// The saved state of `ctl` with `edit` applied to its observer and LSTM state, CRC valid.
    fn edited_state(ctl: &Ctl, edit: impl FnOnce(&mut Observer, &mut LstmState<4>)) -> Vec<u8> {
        let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
        let n = ctl.save_state(&mut buf).unwrap();
        let payload = &buf[PREAMBLE_LEN..n - CRC_LEN];
        let (mut parts, _) =
            postcard::take_from_bytes::<(StateHeader, Observer, LstmState<4>, Rng, Mode)>(payload)
                .unwrap();
        edit(&mut parts.1, &mut parts.2);
        let mut out = vec![0u8; Ctl::STATE_MAX_LEN];
        let len = postcard_len(&parts).unwrap();
        let n = write_frame(&mut out, STATE_MAGIC, STATE_VERSION, len, |p| {
            postcard_into(&parts, p)
        })
        .unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn restored_fields_are_validated_and_a_bad_one_changes_nothing() {
        let mut saved = controller(11, Mode::Greedy);
        for t in 0..55 {
            drive(&mut saved, t);
        }
        let mut target = controller(11, Mode::Greedy);
        for t in 0..7 {
            drive(&mut target, t);
        }
        let mut before = vec![0u8; Ctl::STATE_MAX_LEN];
        target.save_state(&mut before).unwrap();
        let mut cases: Vec<(&str, Vec<u8>)> = crate::observation::unreachable_edits()
            .into_iter()
            .map(|(what, edit)| (what, edited_state(&saved, |o, _| edit(o))))
            .collect();
        cases.push((
            "NaN LSTM state",
            edited_state(&saved, |_, s| s.c[2] = f32::NAN),
        ));
        for (what, bytes) in cases {
            let got = target.restore_state(&bytes);
            assert!(
                matches!(got, Err(Error::InvalidState(_))),
                "{what}: {got:?}"
            );
            let mut after = vec![0u8; Ctl::STATE_MAX_LEN];
            target.save_state(&mut after).unwrap();
            assert_eq!(after, before, "{what}: the controller changed");
        }
        // The unedited state is accepted.
        target
            .restore_state(&edited_state(&saved, |_, _| {}))
            .unwrap();
        assert_eq!(target.observer(), saved.observer());
    }

    #[test]
    fn a_buffer_too_small_is_left_untouched() {
        let ctl = controller(11, Mode::Greedy);
        let mut full = vec![0u8; Ctl::STATE_MAX_LEN];
        let n = ctl.save_state(&mut full).unwrap();
        for len in [0, 9, 20, n - 1] {
            let mut buf = vec![0xA5u8; len];
            assert_eq!(
                ctl.save_state(&mut buf),
                Err(Error::BufferTooSmall {
                    needed: n,
                    available: len
                })
            );
            assert!(buf.iter().all(|&b| b == 0xA5), "{len}-byte buffer written");
        }
        let mut exact = vec![0u8; n];
        assert_eq!(ctl.save_state(&mut exact), Ok(n));
        assert_eq!(exact, full[..n]);

        let policy = ctl.policy();
        let mut file = vec![0u8; FrozenPolicy::<8, 4, 6>::MAX_ENCODED_LEN];
        let n = policy.encode(&mut file).unwrap();
        for len in [0, 11, n / 2, n - 1] {
            let mut buf = vec![0xA5u8; len];
            assert!(matches!(
                policy.encode(&mut buf),
                Err(Error::BufferTooSmall { needed, .. }) if needed == n
            ));
            assert!(buf.iter().all(|&b| b == 0xA5), "{len}-byte buffer written");
        }
    }

    #[test]
    fn weights_that_overflow_the_lstm_are_reported_and_the_run_goes_on() {
        // Valid weights (finite, positive variances) at 1e30: the gates' inputs overflow.
        let mut net = random_net::<8, 4, 6>(5);
        net.for_each_param_mut(|name, values| {
            if !name.starts_with("norm") {
                values.iter_mut().for_each(|v| *v *= 1e30);
            }
        });
        let policy = FrozenPolicy::new(net, "huge", "").unwrap();
        let mut ctl = Controller::new(policy, CFG, Hyperparams::INITIAL, Mode::Greedy).unwrap();
        let mut reported = 0;
        for t in 0..CFG.total_steps {
            let r = ctl.wants_reductions().then_some(StepReductions {
                tensors: &[],
                clipped: false,
            });
            if ctl.observe(1.0, r) == StepStatus::DecisionDue {
                let inputs = DecisionInputs {
                    param_norm: 1.0 + t as f32,
                    displacement: 0.1,
                    eval_loss: 1.0,
                };
                assert_eq!(ctl.decide(&inputs), Err(Error::PolicyDiverged));
                reported += 1;
                assert_eq!(ctl.hyper(), Hyperparams::INITIAL, "held");
                assert_eq!(ctl.lstm_state(), &LstmState::default(), "reset");
                assert!(!ctl.decision_due(), "the interval was closed");
            }
        }
        assert_eq!(reported, CFG.decisions);
        assert!(ctl.is_finished());
        // The state stays finite, so it can be saved and restored.
        let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
        let n = ctl.save_state(&mut buf).unwrap();
        ctl.restore_state(&buf[..n]).unwrap();
    }

    #[test]
    fn decide_refuses_when_no_decision_is_due_and_changes_nothing() {
        let mut ctl = controller(11, Mode::Sample { seed: 9 });
        let inputs = DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        };
        assert_eq!(
            ctl.decide(&inputs),
            Err(Error::NoDecisionDue),
            "before any step"
        );
        for t in 0..10 {
            drive(&mut ctl, t);
        }
        let before = (ctl.observer().clone(), *ctl.lstm_state());
        assert_eq!(ctl.decide(&inputs), Err(Error::NoDecisionDue), "twice");
        assert_eq!((ctl.observer().clone(), *ctl.lstm_state()), before);
    }

    #[test]
    fn the_documented_loop_runs_exactly_t_steps() {
        // K divides T, K does not, one decision, one step per decision.
        for (total_steps, decisions) in [(120, 12), (125, 12), (10, 1), (12, 12)] {
            let cfg = RunConfig {
                total_steps,
                decisions,
            };
            let policy = FrozenPolicy::new(random_net::<8, 4, 6>(4), "t", "").unwrap();
            let mut ctl = Controller::new(policy, cfg, Hyperparams::INITIAL, Mode::Greedy).unwrap();
            let (mut steps, mut decided) = (0, 0);
            while !ctl.is_finished() {
                steps += 1;
                if ctl.observe(1.0, None) == StepStatus::DecisionDue {
                    ctl.decide(&DecisionInputs {
                        param_norm: 1.0,
                        displacement: 1.0,
                        eval_loss: 1.0,
                    })
                    .unwrap();
                    decided += 1;
                }
            }
            assert_eq!((steps, decided), (total_steps, decisions));
            assert_eq!(ctl.observe(1.0, None), StepStatus::Finished);
            assert_eq!(ctl.observer().step(), total_steps);
        }
    }
}
