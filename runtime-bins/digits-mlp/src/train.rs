//! The training loop: minibatch SGD with the core's reference inner optimizer
//! ([`lhopt_core::ciao`]), its hyperparameters either held fixed or steered by a controller.
//!
//! This is the whole contract a runtime fulfils (spec §2): after every step, report the loss to
//! the controller (with the per-tensor reductions when it asks); when a decision is due, report
//! the parameter norm, the displacement since the previous decision and the eval loss, then apply
//! the decision's hyperparameters and checkpoint request.

use lhopt_core::ciao::{self, CiaoState, ParamSlot, StepOutcome, TensorState};
use lhopt_core::{
    Decision, DecisionInputs, Hyperparams, Restart, StepReductions, StepStatus, TensorReductions,
};
use lhopt_embed::steer::Steer;

use crate::data::Dataset;
use crate::mlp::{Mlp, SplitMix};

/// What to train and for how long.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Hidden layer widths (input and output widths come from the data).
    pub hidden: Vec<usize>,
    /// Examples per step.
    pub batch: usize,
    /// Inner steps.
    pub steps: u64,
    /// Seed of initialisation and batch order (the same for every run being compared).
    pub seed: u64,
    /// Compute the eval loss at every decision (it is also a policy input); without it the
    /// policy sees "no eval loss".
    pub eval_at_decisions: bool,
}

/// One decision as it happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecisionRecord {
    /// Steps done when it was made.
    pub step: u64,
    /// Hyperparameters chosen for the next interval.
    pub hyper: Hyperparams,
    /// Checkpoint request (as applied: loads of an empty register come back as `None`).
    pub restart: Restart,
}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct RunLog {
    /// Training loss of every step.
    pub train_loss: Vec<f32>,
    /// Decisions in order (empty for fixed hyperparameters).
    pub decisions: Vec<DecisionRecord>,
    /// Eval loss after the last step.
    pub final_eval_loss: f32,
    /// Eval accuracy after the last step.
    pub final_eval_accuracy: f32,
}

/// Parameters and inner-optimizer state: everything a checkpoint register holds.
#[derive(Clone)]
struct Snapshot {
    params: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    tensors: Vec<TensorState>,
    ciao: CiaoState,
}

/// A model being trained: the MLP, its parameters, gradients and optimizer state.
pub struct Trainer {
    mlp: Mlp,
    state: Snapshot,
    grads: Vec<Vec<f32>>,
    is_matrix: Vec<bool>,
    reductions: Vec<TensorReductions>,
    batch_x: Vec<f32>,
    batch_y: Vec<u8>,
    rng: SplitMix,
    batch: usize,
}

impl Trainer {
    /// A freshly initialised model for `data`, seeded by `cfg.seed`.
    pub fn new(data: &Dataset, cfg: &TrainConfig) -> Self {
        let mut widths = vec![data.features];
        widths.extend(&cfg.hidden);
        widths.push(data.classes);
        let mlp = Mlp::new(&widths);
        let mut rng = SplitMix::new(cfg.seed);
        let params = mlp.init(&mut rng);
        let zeros: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let is_matrix = mlp.shapes().iter().map(|s| s.len() >= 2).collect();
        Trainer {
            state: Snapshot {
                m: zeros.clone(),
                v: zeros.clone(),
                tensors: vec![TensorState::default(); params.len()],
                ciao: CiaoState::default(),
                params,
            },
            grads: zeros,
            is_matrix,
            reductions: Vec::new(),
            batch_x: Vec::with_capacity(cfg.batch * data.features),
            batch_y: Vec::with_capacity(cfg.batch),
            mlp,
            rng,
            batch: cfg.batch,
        }
    }

    /// One inner step on a random minibatch of `data.train` with hyperparameters `h`; fills the
    /// per-tensor reductions when `with_reductions`. Returns the batch loss and what the
    /// optimizer did (a non-finite gradient skips the update).
    pub fn step(
        &mut self,
        data: &Dataset,
        h: &Hyperparams,
        with_reductions: bool,
    ) -> (f32, StepOutcome) {
        data.sample_train_batch(
            &mut self.rng,
            self.batch,
            &mut self.batch_x,
            &mut self.batch_y,
        );
        let s = &mut self.state;
        let loss = self
            .mlp
            .loss_and_grad(&s.params, &self.batch_x, &self.batch_y, &mut self.grads);
        let mut slots: Vec<ParamSlot<'_>> = s
            .params
            .iter_mut()
            .zip(&mut self.grads)
            .zip(s.m.iter_mut().zip(&mut s.v))
            .zip(s.tensors.iter_mut().zip(&self.is_matrix))
            .map(|(((param, grad), (m, v)), (state, &is_matrix))| ParamSlot {
                param,
                grad,
                m,
                v,
                state,
                is_matrix,
            })
            .collect();
        self.reductions
            .resize(slots.len(), TensorReductions::default());
        let reductions = with_reductions.then_some(self.reductions.as_mut_slice());
        let outcome = ciao::step(&mut slots, h, &mut s.ciao, reductions)
            .expect("the slots are built from tensors of matching lengths, one reduction each");
        (loss, outcome)
    }

    /// The reductions filled by the last step that asked for them.
    pub fn reductions(&self) -> &[TensorReductions] {
        &self.reductions
    }

    /// Mean loss and accuracy on the eval split.
    pub fn evaluate(&mut self, data: &Dataset) -> (f32, f32) {
        self.mlp
            .evaluate(&self.state.params, &data.eval_x, &data.eval_y)
    }

    /// The parameter tensors, `[w0, b0, w1, b1, ...]`.
    pub fn params(&self) -> &[Vec<f32>] {
        &self.state.params
    }

    /// Global L2 norm of the parameters.
    pub fn param_norm(&self) -> f32 {
        norm(self.state.params.iter().flatten().copied())
    }

    /// L2 norm of `params - other` (the displacement since `other` was saved).
    pub fn distance_to(&self, other: &[Vec<f32>]) -> f32 {
        norm(
            self.state
                .params
                .iter()
                .flatten()
                .zip(other.iter().flatten())
                .map(|(a, b)| a - b),
        )
    }
}

fn norm(xs: impl Iterator<Item = f32>) -> f32 {
    xs.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32
}

/// Trains with hyperparameters fixed at `h`.
pub fn train_fixed(data: &Dataset, cfg: &TrainConfig, h: Hyperparams) -> RunLog {
    let mut trainer = Trainer::new(data, cfg);
    let mut log = RunLog::default();
    for _ in 0..cfg.steps {
        let (loss, _) = trainer.step(data, &h, false);
        log.train_loss.push(loss);
    }
    finish(&mut trainer, data, log)
}

/// Trains steered by `ctrl`, which must be set up for a run of `cfg.steps` steps.
pub fn train_steered(data: &Dataset, cfg: &TrainConfig, ctrl: &mut dyn Steer) -> RunLog {
    let mut trainer = Trainer::new(data, cfg);
    let mut log = RunLog::default();
    let mut h = ctrl.hyper();
    let mut registers: [Option<Snapshot>; 3] = Default::default();
    // Parameters at the previous decision, for the displacement input.
    let mut previous = trainer.state.params.clone();
    for _ in 0..cfg.steps {
        let want = ctrl.wants_reductions();
        let (loss, outcome) = trainer.step(data, &h, want);
        log.train_loss.push(loss);
        let reductions = (want && outcome.applied()).then(|| StepReductions {
            tensors: trainer.reductions(),
            clipped: outcome.clipped(),
        });
        if ctrl.observe(loss, reductions) != StepStatus::DecisionDue {
            continue;
        }
        let eval_loss = if cfg.eval_at_decisions {
            trainer.evaluate(data).0
        } else {
            f32::NAN
        };
        let inputs = DecisionInputs {
            param_norm: trainer.param_norm(),
            displacement: trainer.distance_to(&previous),
            eval_loss,
        };
        // On an error (the policy diverged) the controller holds the hyperparameters: so does
        // this loop, without a restart.
        let decision = ctrl.decide(&inputs).unwrap_or(Decision {
            hyper: h,
            restart: Restart::None,
        });
        h = decision.hyper;
        apply_restart(&mut trainer.state, &mut registers, decision.restart);
        previous.clone_from(&trainer.state.params);
        log.decisions.push(DecisionRecord {
            step: log.train_loss.len() as u64,
            hyper: h,
            restart: decision.restart,
        });
    }
    finish(&mut trainer, data, log)
}

/// Saves, loads or swaps the training state with a checkpoint register.
fn apply_restart(state: &mut Snapshot, registers: &mut [Option<Snapshot>; 3], r: Restart) {
    match r {
        Restart::None => {}
        Restart::Save(i) => registers[usize::from(i)] = Some(state.clone()),
        // The controller reports loads and swaps of an empty register as `None`.
        Restart::Load(i) => {
            if let Some(saved) = &registers[usize::from(i)] {
                state.clone_from(saved);
            }
        }
        Restart::Swap(i) => {
            if let Some(saved) = &mut registers[usize::from(i)] {
                std::mem::swap(state, saved);
            }
        }
    }
}

fn finish(trainer: &mut Trainer, data: &Dataset, mut log: RunLog) -> RunLog {
    (log.final_eval_loss, log.final_eval_accuracy) = trainer.evaluate(data);
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(x: f32) -> Snapshot {
        Snapshot {
            params: vec![vec![x; 3]],
            m: vec![vec![x + 1.0; 3]],
            v: vec![vec![x + 2.0; 3]],
            tensors: vec![TensorState::default()],
            ciao: CiaoState::default(),
        }
    }

    #[test]
    fn registers_save_load_and_swap_the_whole_training_state() {
        let mut registers: [Option<Snapshot>; 3] = Default::default();
        let mut state = snapshot(1.0);
        apply_restart(&mut state, &mut registers, Restart::Save(1));
        state = snapshot(5.0);
        apply_restart(&mut state, &mut registers, Restart::Load(0)); // empty: no-op
        assert_eq!(state.params[0][0], 5.0);
        apply_restart(&mut state, &mut registers, Restart::Swap(1));
        assert_eq!((state.params[0][0], state.v[0][0]), (1.0, 3.0));
        let saved = registers[1]
            .as_ref()
            .expect("register 1 holds the swapped-out state");
        assert_eq!(saved.m[0][0], 6.0);
        apply_restart(&mut state, &mut registers, Restart::Load(1));
        assert_eq!(state.params[0][0], 5.0);
    }
}
