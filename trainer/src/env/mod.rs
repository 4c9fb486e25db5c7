//! One inner training run of a task under any steering: a controller [`Agent`] (a frozen core
//! policy, or the PPO policy during meta-training), fixed hyperparameters, or the plain loop the
//! AdamW baselines use. Records what happened as a [`Trace`].
//!
//! The features, actions and checkpoint-register bookkeeping are the core's [`Observer`]; this
//! module only feeds it the runtime's statistics and carries out its
//! [`Decision`](lhopt_core::Decision)s on tensors.

mod frozen;
#[cfg(test)]
mod tests;

pub use frozen::{FrozenAgent, PolicyFile};

use lhopt_core::{
    Action, DecisionInputs, FeatureSet, Hyperparams, OBS_DIM, Observer, Restart, RunConfig,
    StepReductions, StepStatus,
};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::optim::{Ciao, Snapshot};
use crate::tasks::Task;

/// Something that picks an action from an observation: the policy half of a controller.
pub trait Agent {
    /// The feature set the agent was trained on, which the run's observer computes (policies
    /// being trained use the current one).
    fn feature_set(&self) -> FeatureSet {
        FeatureSet::CURRENT
    }
    /// Forgets everything about the previous episode (recurrent state, sampling stream).
    fn reset(&mut self);
    /// The action for the raw (un-normalised) observation of one decision.
    fn act(&mut self, obs: &[f32; OBS_DIM]) -> Action;
    /// Told before each [`Agent::act`]: the eval loss the runtime reported for that decision (NaN
    /// where it has none or the episode hides it). Policies read it only through the observation;
    /// the imitation teacher, a hand-written expert, reads the value itself.
    fn see_eval_loss(&mut self, _eval_loss: f32) {}
}

/// How one steered episode runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeConfig {
    /// Inner steps T.
    pub total_steps: u64,
    /// Decisions K, one every ⌊T/K⌋ steps.
    pub decisions: u32,
    /// Hyperparameters in force before the first decision.
    pub initial: Hyperparams,
    /// Give the observer NaN instead of the eval loss (it is still computed and recorded).
    pub hide_eval: bool,
}

/// What happened at one decision.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionRecord {
    /// Inner steps done when the decision was taken.
    pub step: u64,
    /// step / T.
    pub progress: f32,
    /// The raw observation the agent saw.
    pub obs: Vec<f32>,
    /// The agent's action.
    pub action: Action,
    /// Hyperparameters in force after the decision.
    pub hyper: Hyperparams,
    /// The checkpoint-register operation carried out (`None` for a load or swap of an empty one).
    pub restart: Restart,
    /// Mean training loss over the interval that ended here (NaN if any step's was not finite).
    pub train_loss: f32,
    /// Eval loss at the decision, before any restart; computed even when hidden from the agent.
    pub eval_loss: f64,
}

/// Everything recorded during one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trace {
    /// One record per decision (empty for runs without a controller).
    pub decisions: Vec<DecisionRecord>,
    /// Training loss of every inner step taken.
    pub train_losses: Vec<f32>,
    /// `(steps done, eval loss)` of every evaluation, in step order; the last is the final one.
    pub evals: Vec<(u64, f64)>,
    /// Eval loss at the end of the run (NaN when the model diverged).
    pub final_eval_loss: f64,
    /// The task's extra held-out metrics at the end (e.g. NDCG@10).
    pub metrics: Vec<(&'static str, f64)>,
    /// Steps whose training loss was not finite; they changed nothing.
    pub nonfinite_steps: u64,
    /// Set when the run ended before T: the step whose loss was not finite while nothing could
    /// bring the model back (parameters not finite, no controller or no saved register).
    pub stopped_at: Option<u64>,
}

/// Runs `task` for `cfg.total_steps` steps of CIAO steered by `agent`, which decides `cfg.decisions`
/// times. A non-finite training loss skips that step's update; the run stops early (and
/// [`Trace::stopped_at`] says where) only when the parameters are no longer finite and no
/// checkpoint register holds a state to load.
pub fn run_episode(
    task: &mut dyn Task,
    cfg: &EpisodeConfig,
    agent: &mut dyn Agent,
) -> Result<Trace> {
    let config = RunConfig {
        total_steps: cfg.total_steps,
        decisions: cfg.decisions,
    };
    let mut observer =
        Observer::new(config, cfg.initial, agent.feature_set()).map_err(Error::Core)?;
    agent.reset();
    let params = shallow_copies(task.parameters());
    let buffers = shallow_copies(task.buffers());
    let mut ciao = Ciao::new(&params);
    let mut registers: [Option<Snapshot>; lhopt_core::action::NUM_REGISTERS] = Default::default();
    let at_last_decision = deep_copies(&params);
    let mut h = observer.hyper();
    let mut trace = Trace::default();
    trace.evals.push((0, task.eval_loss()));
    let mut interval_start = 0;

    for step in 0..cfg.total_steps {
        let want = observer.wants_reductions();
        let loss = forward_backward(task);
        trace.train_losses.push(loss);
        let report = if loss.is_finite() {
            ciao.step(&params, &h, want)
        } else {
            trace.nonfinite_steps += 1;
            if !all_finite(&params) && registers.iter().all(Option::is_none) {
                trace.stopped_at = Some(step);
                break;
            }
            None
        };
        let status = observer.observe_step(
            loss,
            report.as_ref().map(|r| StepReductions {
                tensors: &r.tensors,
                clipped: r.clipped,
            }),
        );
        if status != StepStatus::DecisionDue {
            continue;
        }

        let done = step + 1;
        let eval_loss = task.eval_loss();
        trace.evals.push((done, eval_loss));
        let (param_norm, displacement) = norm_and_distance(&params, &at_last_decision);
        let inputs = DecisionInputs {
            param_norm: param_norm as f32,
            displacement: displacement as f32,
            eval_loss: if cfg.hide_eval {
                f32::NAN
            } else {
                eval_loss as f32
            },
        };
        let obs = observer.observation(&inputs);
        agent.see_eval_loss(inputs.eval_loss);
        let action = agent.act(&obs);
        let decision = observer.apply(&action);
        h = decision.hyper;
        apply_restart(
            decision.restart,
            &mut registers,
            &mut ciao,
            &params,
            &buffers,
        );
        // After any restart: the next displacement is measured from where training resumes.
        copy_into(&at_last_decision, &params);
        let interval = &trace.train_losses[interval_start..];
        trace.decisions.push(DecisionRecord {
            step: done,
            progress: observer.progress(),
            obs: obs.to_vec(),
            action,
            hyper: h,
            restart: decision.restart,
            train_loss: interval.iter().sum::<f32>() / interval.len().max(1) as f32,
            eval_loss,
        });
        interval_start = trace.train_losses.len();
    }
    // A load or swap at the last decision changed the model after its eval: evaluate again.
    let moved = |r: Restart| matches!(r, Restart::Load(_) | Restart::Swap(_));
    let last_eval_stale = trace.decisions.last().is_some_and(|d| moved(d.restart));
    finish(task, &mut trace, last_eval_stale);
    Ok(trace)
}

/// Runs `task` for `total_steps` steps of CIAO at fixed hyperparameters `h`, evaluating after each
/// step count in `eval_at` (0 = at initialisation) and at the end.
pub fn run_fixed(
    task: &mut dyn Task,
    total_steps: u64,
    h: Hyperparams,
    eval_at: &[u64],
) -> Result<Trace> {
    let params = shallow_copies(task.parameters());
    let mut ciao = Ciao::new(&params);
    Ok(train_plain(task, total_steps, eval_at, |_, params| {
        ciao.step(params, &h, false);
    }))
}

/// The loop of every run without a controller: `update(step, params)` after each backward pass
/// with a finite loss, evaluations after the step counts in `eval_at` and at the end. Without a
/// controller nothing can undo a divergence, so the first non-finite loss ends the run.
pub(crate) fn train_plain(
    task: &mut dyn Task,
    total_steps: u64,
    eval_at: &[u64],
    mut update: impl FnMut(u64, &[Tensor]),
) -> Trace {
    let params = shallow_copies(task.parameters());
    let mut trace = Trace::default();
    let mut marks: Vec<u64> = eval_at
        .iter()
        .copied()
        .filter(|&s| s < total_steps)
        .collect();
    marks.sort_unstable();
    marks.dedup();
    let mut marks = marks.into_iter().peekable();
    for step in 0..total_steps {
        if marks.next_if_eq(&step).is_some() {
            trace.evals.push((step, task.eval_loss()));
        }
        let loss = forward_backward(task);
        trace.train_losses.push(loss);
        if !loss.is_finite() {
            trace.nonfinite_steps = 1;
            trace.stopped_at = Some(step);
            break;
        }
        update(step, &params);
    }
    finish(task, &mut trace, false);
    trace
}

/// Final evaluation (reusing one taken at the last step unless `last_eval_stale`) and metrics.
fn finish(task: &mut dyn Task, trace: &mut Trace, last_eval_stale: bool) {
    let done = trace.train_losses.len() as u64;
    let final_loss = match trace.evals.last() {
        Some(&(step, loss)) if step == done && !last_eval_stale => loss,
        _ => {
            let loss = task.eval_loss();
            trace.evals.push((done, loss));
            loss
        }
    };
    trace.final_eval_loss = final_loss;
    trace.metrics = task.metrics();
}

/// Zeroes the gradients, takes the next minibatch loss and back-propagates it when it is finite.
/// Returns the loss; after a non-finite one the gradients are left at zero.
pub(crate) fn forward_backward(task: &mut dyn Task) -> f32 {
    for p in task.parameters() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let loss = task.train_loss();
    let value = loss.double_value(&[]) as f32;
    if value.is_finite() {
        loss.backward();
    }
    value
}

/// Carries out a checkpoint-register operation on the parameters, buffers and optimizer state.
///
/// # Panics
/// On a load or swap of an empty register: the observer turns those into `Restart::None`, so it
/// would mean the observer's register records and the runtime's registers disagree (a bug).
fn apply_restart(
    restart: Restart,
    registers: &mut [Option<Snapshot>],
    ciao: &mut Ciao,
    params: &[Tensor],
    buffers: &[Tensor],
) {
    const IN_SYNC: &str = "the observer loads only registers the runtime has saved";
    match restart {
        Restart::None => {}
        Restart::Save(r) => registers[usize::from(r)] = Some(ciao.snapshot(params, buffers)),
        Restart::Load(r) => {
            let saved = registers[usize::from(r)].as_ref().expect(IN_SYNC);
            ciao.restore(params, buffers, saved);
        }
        Restart::Swap(r) => {
            let current = ciao.snapshot(params, buffers);
            let saved = registers[usize::from(r)].replace(current).expect(IN_SYNC);
            ciao.restore(params, buffers, &saved);
        }
    }
}

fn shallow_copies(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(Tensor::shallow_clone).collect()
}

fn deep_copies(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(|t| t.detach().copy()).collect()
}

fn copy_into(dst: &[Tensor], src: &[Tensor]) {
    let _guard = tch::no_grad_guard();
    for (d, s) in dst.iter().zip(src) {
        d.shallow_clone().copy_(s);
    }
}

/// ‖θ‖ and ‖θ − θ_prev‖ over all tensors, read back in one transfer.
fn norm_and_distance(params: &[Tensor], prev: &[Tensor]) -> (f64, f64) {
    let _guard = tch::no_grad_guard();
    let sq = |t: Tensor| t.square().sum(Kind::Double);
    let norms: Vec<Tensor> = params.iter().map(|p| sq(p.detach())).collect();
    let dists: Vec<Tensor> = params
        .iter()
        .zip(prev)
        .map(|(p, q)| sq(p.detach() - q))
        .collect();
    let both = Tensor::stack(
        &[
            Tensor::stack(&norms, 0).sum(Kind::Double),
            Tensor::stack(&dists, 0).sum(Kind::Double),
        ],
        0,
    );
    let host = Vec::<f64>::try_from(both.sqrt().to_device(tch::Device::Cpu)).unwrap_or_default();
    (
        host.first().copied().unwrap_or(f64::NAN),
        host.get(1).copied().unwrap_or(f64::NAN),
    )
}

/// True when every parameter element is finite (one device reduction).
fn all_finite(params: &[Tensor]) -> bool {
    let _guard = tch::no_grad_guard();
    params
        .iter()
        .all(|p| p.isfinite().all().int64_value(&[]) != 0)
}
