//! The digits runtime on small generated data: it trains, it is deterministic, and what it
//! reports to the controller, replayed into the core library's controller, gives exactly the
//! decisions the runtime applied.

use lhopt_core::{
    BOUNDS, Controller, Decision, DecisionInputs, Error, FrozenPolicy, Hyperparams, Mode, Observer,
    RunConfig, StepReductions, StepStatus, TensorReductions,
};
use lhopt_digits_mlp::data::Dataset;
use lhopt_digits_mlp::train::{RunLog, TrainConfig, train_fixed, train_steered};
use lhopt_embed::steer::Steer;
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};

const STEPS: u64 = 120;
const DECISIONS: u32 = 10;

fn config() -> TrainConfig {
    TrainConfig {
        hidden: vec![16],
        batch: 16,
        steps: STEPS,
        seed: 3,
        eval_at_decisions: true,
    }
}

fn controller() -> Controller<32, 32, 32> {
    let policy = FrozenPolicy::decode(&tiny_policy_bytes(TEST_SEED)).expect("decodes");
    let run = RunConfig {
        total_steps: STEPS,
        decisions: DECISIONS,
    };
    Controller::new(policy, run, Hyperparams::INITIAL, Mode::Greedy).expect("valid run")
}

/// One call the runtime made, with everything it passed.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Observe {
        loss: f32,
        reductions: Option<(Vec<TensorReductions>, bool)>,
        asked: bool,
    },
    Decide(DecisionInputs, Decision),
}

/// A controller that records every call made to it.
struct Recorder<S> {
    inner: S,
    calls: Vec<Call>,
}

impl<S: Steer> Steer for Recorder<S> {
    fn wants_reductions(&self) -> bool {
        self.inner.wants_reductions()
    }
    fn observe(&mut self, loss: f32, r: Option<StepReductions<'_>>) -> StepStatus {
        let asked = self.inner.wants_reductions();
        self.calls.push(Call::Observe {
            loss,
            reductions: r.as_ref().map(|r| (r.tensors.to_vec(), r.clipped)),
            asked,
        });
        self.inner.observe(loss, r)
    }
    fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, lhopt_core::Error> {
        let d = self.inner.decide(inputs)?;
        self.calls.push(Call::Decide(*inputs, d));
        Ok(d)
    }
    fn hyper(&self) -> Hyperparams {
        self.inner.hyper()
    }
    fn observer(&self) -> &Observer {
        self.inner.observer()
    }
    fn state_max_len(&self) -> usize {
        self.inner.state_max_len()
    }
    fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.inner.save_state(buf)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.restore_state(bytes)
    }
}

fn steered_run(data: &Dataset) -> (RunLog, Vec<Call>) {
    let mut recorder = Recorder {
        inner: controller(),
        calls: Vec::new(),
    };
    let log = train_steered(data, &config(), &mut recorder);
    (log, recorder.calls)
}

fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

#[test]
fn fixed_defaults_train_the_mlp() {
    let data = Dataset::synthetic(400, 1);
    let cfg = TrainConfig {
        steps: 300,
        ..config()
    };
    let log = train_fixed(&data, &cfg, Hyperparams::INITIAL);
    let (first, last) = (mean(&log.train_loss[..20]), mean(&log.train_loss[280..]));
    assert!(last < 0.7 * first, "train loss {first} -> {last}");
    assert!(
        log.final_eval_accuracy > 0.6,
        "eval accuracy {}",
        log.final_eval_accuracy
    );
}

#[test]
fn the_runtime_applies_exactly_the_core_librarys_decisions() {
    let data = Dataset::synthetic(400, 1);
    let (log, calls) = steered_run(&data);

    // The protocol: every step observed, reductions exactly when asked, K decisions.
    let observes: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::Observe { .. }))
        .collect();
    assert_eq!(observes.len() as u64, STEPS);
    for c in &observes {
        if let Call::Observe {
            reductions, asked, ..
        } = c
        {
            assert_eq!(reductions.is_some(), *asked, "reductions given iff asked");
            if let Some((tensors, _)) = reductions {
                assert_eq!(tensors.len(), 4, "two weight matrices and two biases");
                assert_eq!(tensors[0].numel, 64 * 16);
            }
        }
    }
    assert_eq!(log.decisions.len(), DECISIONS as usize);
    for (k, d) in log.decisions.iter().enumerate() {
        assert_eq!(d.step, (k as u64 + 1) * STEPS / u64::from(DECISIONS));
        for (v, (lo, hi)) in d.hyper.to_array().iter().zip(BOUNDS) {
            assert!(v.is_finite() && *v >= lo && *v <= hi);
        }
    }

    // Replaying the recorded inputs into a fresh core controller gives the same decisions.
    let mut reference = controller();
    let mut replayed = Vec::new();
    for call in &calls {
        match call {
            Call::Observe {
                loss, reductions, ..
            } => {
                let r = reductions.as_ref().map(|(t, clipped)| StepReductions {
                    tensors: t,
                    clipped: *clipped,
                });
                reference.observe(*loss, r);
            }
            Call::Decide(inputs, _) => replayed.push(reference.decide(inputs).unwrap()),
        }
    }
    let applied: Vec<(Hyperparams, lhopt_core::Restart)> =
        log.decisions.iter().map(|d| (d.hyper, d.restart)).collect();
    let expected: Vec<(Hyperparams, lhopt_core::Restart)> =
        replayed.iter().map(|d| (d.hyper, d.restart)).collect();
    assert_eq!(applied, expected);
    // The policy's choices do change the hyperparameters the run trains with.
    assert_ne!(log.decisions[0].hyper, Hyperparams::INITIAL);
}

#[test]
fn runs_are_deterministic_for_a_seed() {
    let data = Dataset::synthetic(400, 1);
    let (a, calls_a) = steered_run(&data);
    let (b, calls_b) = steered_run(&data);
    assert_eq!(a.train_loss, b.train_loss);
    assert_eq!(calls_a, calls_b);
}
