//! A fixed, synthetic training run: losses, per-tensor reductions and decision inputs as pure
//! functions of the step, built from `+ - * /` only so the host and a Cortex-M produce the same
//! bits. Every example runtime replays it in its tests and must answer with exactly the core
//! library's decisions ([`replay`]).
//!
//! It exercises the awkward paths on purpose: a NaN and an infinite loss, clipped steps, and
//! decisions without an eval loss.

use lhopt_core::{DecisionInputs, RunConfig, StepReductions, StepStatus, TensorReductions};

use crate::steer::Steer;

/// Number of parameter tensors the synthetic model has.
pub const TENSORS: usize = 3;

/// Element counts of the synthetic tensors: a matrix, a bias, a second matrix.
const NUMEL: [u64; TENSORS] = [2048, 32, 320];

/// One inner step's inputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInput {
    /// Training loss of the step's batch.
    pub loss: f32,
    /// The reductions, to be handed over only when the controller asks for them.
    pub reductions: [TensorReductions; TENSORS],
    /// Whether gradient clipping fired on this step.
    pub clipped: bool,
}

/// A synthetic run of `total_steps` inner steps with `decisions` decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Inner steps T.
    pub total_steps: u64,
    /// Decisions K.
    pub decisions: u32,
}

impl Scenario {
    /// The run the example tests and the firmware replay: 240 steps, a decision every 12.
    pub const DEFAULT: Self = Self {
        total_steps: 240,
        decisions: 20,
    };

    /// The controller's run configuration for this scenario.
    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            total_steps: self.total_steps,
            decisions: self.decisions,
        }
    }

    /// The inputs of inner step `t` (0-based).
    pub fn step(&self, t: u64) -> StepInput {
        let p = t as f32 / self.total_steps as f32;
        let u = unit(t, 1);
        let loss = match t {
            37 => f32::NAN,
            111 => f32::INFINITY,
            _ => 0.1 + 2.2 / (1.0 + 3.0 * p) * (0.95 + 0.1 * u),
        };
        let mut reductions = [TensorReductions::default(); TENSORS];
        for (i, (r, &numel)) in reductions.iter_mut().zip(&NUMEL).enumerate() {
            let salt = 2 + i as u64;
            let (u1, u2, u3) = (unit(t, salt), unit(t, salt + 10), unit(t, salt + 20));
            let g = 0.5 / (1.0 + 2.0 * p) * (0.85 + 0.3 * u1);
            let m = g * (0.4 + 0.4 * u2);
            let param = 10.0 + 2.0 * p + i as f32;
            let update = 5.0 * (0.9 + 0.2 * u3);
            let n = numel as f32;
            *r = TensorReductions {
                numel,
                grad_norm: g,
                mhat_norm: m,
                mhat_minus_grad_norm: g * (0.7 + 0.2 * u3),
                param_norm: param,
                update_norm: update,
                lr_p: 1e-3 * (1.0 + u2),
                grad_dot_mhat: (0.8 * u1 - 0.2) * g * m,
                grad_dot_param: (0.2 * u2 - 0.1) * g * param,
                grad_dot_update: (0.5 * u3 - 0.1) * g * update,
                count_v_gt_eps: n * (0.9 + 0.1 * u1),
                sum_log_abs_update: n * (-8.0 + u2),
            };
        }
        StepInput {
            loss,
            reductions,
            clipped: unit(t, 99) < 0.2,
        }
    }

    /// The runtime-side inputs of decision `k` (1-based): every other decision has no eval loss.
    pub fn decision_inputs(&self, k: u32) -> DecisionInputs {
        let p = k as f32 / self.decisions as f32;
        DecisionInputs {
            param_norm: 20.0 + 0.1 * k as f32,
            displacement: 1.0 / (1.0 + 0.2 * k as f32),
            eval_loss: if k % 2 == 1 {
                f32::NAN
            } else {
                0.15 + 2.0 / (1.0 + 3.0 * p)
            },
        }
    }
}

/// Runs the scenario through `ctrl`, handing over reductions whenever it asks, and calls
/// `at_decision(ctrl, k, inputs)` each time a decision is due (`k` counts from 1); the callback
/// makes the decision (`ctrl.decide(inputs)`) and records or times it.
pub fn replay<C: Steer + ?Sized>(
    ctrl: &mut C,
    scenario: &Scenario,
    mut at_decision: impl FnMut(&mut C, u32, &DecisionInputs),
) {
    let mut k = 0;
    for t in 0..scenario.total_steps {
        let input = scenario.step(t);
        let reductions = ctrl.wants_reductions().then_some(StepReductions {
            tensors: &input.reductions,
            clipped: input.clipped,
        });
        match ctrl.observe(input.loss, reductions) {
            StepStatus::Continue => {}
            StepStatus::DecisionDue => {
                k += 1;
                at_decision(ctrl, k, &scenario.decision_inputs(k));
            }
            StepStatus::Finished => break,
        }
    }
}

/// A deterministic value in [0, 1) for (step, salt): SplitMix64 finaliser, top 24 bits.
fn unit(t: u64, salt: u64) -> f32 {
    let mut z = t
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// A decision of the reference run, with a fingerprint of the policy's recurrent state right
/// after it (which any numerical difference in the observation or the network would change).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReferenceDecision {
    /// The decision.
    pub decision: lhopt_core::Decision,
    /// [`lstm_fingerprint`] after the decision.
    pub lstm_fingerprint: u32,
}

/// FNV-1a over the bits of the LSTM state, `h` then `c`.
pub fn lstm_fingerprint<const H: usize>(state: &lhopt_core::LstmState<H>) -> u32 {
    state
        .h
        .iter()
        .chain(&state.c)
        .flat_map(|x| x.to_bits().to_le_bytes())
        .fold(0x811c_9dc5, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
}

/// The core library's decisions for `scenario` under a Tiny policy: the reference every example
/// runtime is compared with. It drives [`lhopt_core::Controller`] directly, not through the
/// size-erased loader the runtimes use.
#[cfg(feature = "std")]
pub fn reference_decisions_tiny(
    policy: &[u8],
    scenario: &Scenario,
) -> Result<std::vec::Vec<ReferenceDecision>, lhopt_core::Error> {
    use lhopt_core::{Controller, FrozenPolicy, Hyperparams, Mode};
    let frozen = FrozenPolicy::<32, 32, 32>::decode(policy)?;
    let mut ctrl = Controller::new(
        frozen,
        scenario.run_config(),
        Hyperparams::INITIAL,
        Mode::Greedy,
    )?;
    let mut decisions = std::vec::Vec::new();
    let mut failure = None;
    replay(&mut ctrl, scenario, |ctrl, _, inputs| {
        match ctrl.decide(inputs) {
            Ok(decision) => decisions.push(ReferenceDecision {
                decision,
                lstm_fingerprint: lstm_fingerprint(ctrl.lstm_state()),
            }),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    });
    failure.map_or(Ok(decisions), Err)
}
