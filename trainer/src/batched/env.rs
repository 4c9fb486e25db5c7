//! [`crate::env::run_episode`] for K instances at once: one batched forward/backward and one
//! batched CIAO step per inner step, each instance with its own core [`Observer`] (features,
//! actions, register bookkeeping), and one policy forward for all K at each decision.
//!
//! The instances run in lockstep: one T and one number of decisions for the whole batch (the
//! decisions fall on the same steps), each with its own initial hyperparameters and its own
//! hidden-eval flag. An instance whose loss is not finite skips that step exactly as the
//! unbatched loop does (its state is put back after the batched step); one that can no longer
//! recover stops recording ([`Trace::stopped_at`]) while the others go on.

use lhopt_core::action::NUM_REGISTERS;
use lhopt_core::{
    Action, DecisionInputs, FeatureSet, Hyperparams, OBS_DIM, Observer, Restart, RunConfig,
    StepReductions, StepStatus,
};
use tch::{Device, Kind, Tensor};

use super::ciao::{BatchedCiao, InstanceSnapshot};
use super::tasks::BatchedTask;
use crate::env::{DecisionRecord, EpisodeConfig, Trace};
use crate::error::{Error, Result};

/// A policy acting for K environments at once.
pub trait BatchedAgent {
    /// Forgets the previous episodes (recurrent state, records); `k` environments follow.
    fn reset(&mut self, k: usize);
    /// The actions for the raw observations of the environments in `active` (one forward for
    /// all); `obs[i]` belongs to environment `active[i]`.
    fn act(&mut self, active: &[usize], obs: &[[f32; OBS_DIM]]) -> Vec<Action>;
}

/// Runs the K instances of `task` for one episode each, instance i configured by `cfgs[i]`.
///
/// # Errors
/// When `cfgs` does not have one entry per instance, the entries disagree on T or the number of
/// decisions, or the observer refuses the configuration.
pub fn run_batched_episode(
    task: &mut dyn BatchedTask,
    cfgs: &[EpisodeConfig],
    agent: &mut dyn BatchedAgent,
) -> Result<Vec<Trace>> {
    let k = task.specs().len();
    let Some(first) = cfgs.first() else {
        return Err(Error::Usage(
            "a batched episode needs K ≥ 1 instances".into(),
        ));
    };
    if cfgs.len() != k
        || cfgs
            .iter()
            .any(|c| (c.total_steps, c.decisions) != (first.total_steps, first.decisions))
    {
        return Err(Error::Usage(format!(
            "a batched episode runs its {k} instances in lockstep: one episode config each, all with the same T and decisions"
        )));
    }
    let config = RunConfig {
        total_steps: first.total_steps,
        decisions: first.decisions,
    };
    let mut observers = cfgs
        .iter()
        .map(|c| Observer::new(config, c.initial, FeatureSet::CURRENT).map_err(Error::Core))
        .collect::<Result<Vec<_>>>()?;
    agent.reset(k);
    let params: Vec<Tensor> = task
        .parameters()
        .iter()
        .map(Tensor::shallow_clone)
        .collect();
    let buffers: Vec<Tensor> = task.buffers().iter().map(Tensor::shallow_clone).collect();
    let mut ciao = BatchedCiao::new(&params);
    let mut registers: Vec<[Option<InstanceSnapshot>; NUM_REGISTERS]> =
        (0..k).map(|_| Default::default()).collect();
    let at_last_decision: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let mut h: Vec<Hyperparams> = observers.iter().map(Observer::hyper).collect();
    let mut traces: Vec<Trace> = vec![Trace::default(); k];
    for (trace, e) in traces.iter_mut().zip(task.eval_losses()) {
        trace.evals.push((0, e));
    }
    let mut interval_start = vec![0usize; k];
    let mut running = vec![true; k];

    for step in 0..config.total_steps {
        let want = (0..k).any(|i| running[i] && observers[i].wants_reductions());
        let losses = forward_backward(task, &params);
        // Running instances whose state this step must not change: those with a non-finite loss.
        let mut skip: Vec<usize> = Vec::new();
        let mut stopping: Vec<usize> = Vec::new();
        for (i, &loss) in losses.iter().enumerate().filter(|&(i, _)| running[i]) {
            traces[i].train_losses.push(loss);
            if !loss.is_finite() {
                traces[i].nonfinite_steps += 1;
                if !instance_finite(&params, i) && registers[i].iter().all(Option::is_none) {
                    stopping.push(i);
                } else {
                    skip.push(i);
                }
            }
        }
        // An instance that stops is evaluated now, as the unbatched loop evaluates it after its
        // break; from then on nothing reads its state, so it needs no snapshot and restore on
        // every later step (which cost two copies of each of its tensors per step).
        if !stopping.is_empty() {
            let evals = task.eval_losses();
            for &i in &stopping {
                traces[i].stopped_at = Some(step);
                traces[i].evals.push((step + 1, evals[i]));
                traces[i].final_eval_loss = evals[i];
                running[i] = false;
            }
        }
        let saved: Vec<(usize, InstanceSnapshot)> = skip
            .iter()
            .map(|&i| (i, ciao.snapshot(i, &params, &buffers)))
            .collect();
        let reports = ciao.step(&params, &h, want);
        for (i, snapshot) in &saved {
            ciao.restore(*i, &params, &buffers, snapshot);
        }

        let mut due = Vec::new();
        for i in (0..k).filter(|&i| running[i]) {
            let loss = losses[i];
            let report = reports.as_ref().filter(|_| loss.is_finite()).map(|r| &r[i]);
            let status = observers[i].observe_step(
                loss,
                report.map(|r| StepReductions {
                    tensors: &r.tensors,
                    clipped: r.clipped,
                }),
            );
            if status == StepStatus::DecisionDue {
                due.push(i);
            }
        }
        if due.is_empty() {
            continue;
        }

        let done = step + 1;
        let evals = task.eval_losses();
        let (norms, distances) = norms_and_distances(&params, &at_last_decision);
        let obs: Vec<[f32; OBS_DIM]> = due
            .iter()
            .map(|&i| {
                let hidden = cfgs[i].hide_eval;
                observers[i].observation(&DecisionInputs {
                    param_norm: norms[i] as f32,
                    displacement: distances[i] as f32,
                    eval_loss: if hidden { f32::NAN } else { evals[i] as f32 },
                })
            })
            .collect();
        let actions = agent.act(&due, &obs);
        for ((&i, action), obs) in due.iter().zip(actions).zip(obs) {
            traces[i].evals.push((done, evals[i]));
            let decision = observers[i].apply(&action);
            h[i] = decision.hyper;
            apply_restart(
                decision.restart,
                &mut registers[i],
                &mut ciao,
                i,
                &params,
                &buffers,
            );
            let interval = &traces[i].train_losses[interval_start[i]..];
            let train_loss = interval.iter().sum::<f32>() / interval.len().max(1) as f32;
            traces[i].decisions.push(DecisionRecord {
                step: done,
                progress: observers[i].progress(),
                obs: obs.to_vec(),
                action,
                hyper: h[i],
                restart: decision.restart,
                train_loss,
                eval_loss: evals[i],
            });
            interval_start[i] = traces[i].train_losses.len();
        }
        // After any restart: the next displacement is measured from where training resumes.
        tch::no_grad(|| {
            for (d, s) in at_last_decision.iter().zip(&params) {
                d.shallow_clone().copy_(s);
            }
        });
    }
    finish(task, &mut traces);
    Ok(traces)
}

/// Zeroes the gradients, takes every instance's next loss and back-propagates the finite ones
/// (instances are independent, so the sum's gradient is each instance's own). Returns the losses.
pub(super) fn forward_backward(task: &mut dyn BatchedTask, params: &[Tensor]) -> Vec<f32> {
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let losses = task.train_losses();
    let host = Vec::<f32>::try_from(losses.detach().to_device(Device::Cpu)).unwrap_or_default();
    if host.iter().any(|l| l.is_finite()) {
        let finite = losses.isfinite();
        losses
            .where_self(&finite, &losses.zeros_like())
            .sum(Kind::Float)
            .backward();
    }
    host
}

/// Final evaluation of every instance, reusing the one of the last step unless a load or swap at
/// the last decision moved the model after it (an instance that stopped early was evaluated when
/// it stopped).
fn finish(task: &mut dyn BatchedTask, traces: &mut [Trace]) {
    let moved = |r: Restart| matches!(r, Restart::Load(_) | Restart::Swap(_));
    let fresh = |t: &Trace| {
        let done = t.train_losses.len() as u64;
        let stale = t.stopped_at.is_none() && t.decisions.last().is_some_and(|d| moved(d.restart));
        t.evals
            .last()
            .filter(|&&(s, _)| s == done && !stale)
            .map(|&(_, l)| l)
    };
    let evals = traces
        .iter()
        .any(|t| fresh(t).is_none())
        .then(|| task.eval_losses());
    for (i, trace) in traces.iter_mut().enumerate() {
        let done = trace.train_losses.len() as u64;
        trace.final_eval_loss = match fresh(trace) {
            Some(loss) => loss,
            None => {
                let loss = evals.as_ref().map_or(f64::NAN, |e| e[i]);
                trace.evals.push((done, loss));
                loss
            }
        };
    }
}

/// Carries out instance `i`'s checkpoint-register operation.
///
/// # Panics
/// On a load or swap of an empty register (the observer never asks for one: a bug).
fn apply_restart(
    restart: Restart,
    registers: &mut [Option<InstanceSnapshot>],
    ciao: &mut BatchedCiao,
    i: usize,
    params: &[Tensor],
    buffers: &[Tensor],
) {
    const IN_SYNC: &str = "the observer loads only registers the runtime has saved";
    match restart {
        Restart::None => {}
        Restart::Save(r) => registers[usize::from(r)] = Some(ciao.snapshot(i, params, buffers)),
        Restart::Load(r) => {
            let saved = registers[usize::from(r)].as_ref().expect(IN_SYNC);
            ciao.restore(i, params, buffers, saved);
        }
        Restart::Swap(r) => {
            let current = ciao.snapshot(i, params, buffers);
            let saved = registers[usize::from(r)].replace(current).expect(IN_SYNC);
            ciao.restore(i, params, buffers, &saved);
        }
    }
}

/// Per instance ‖θ‖ and ‖θ − θ_prev‖ over all tensors, read back in one transfer.
fn norms_and_distances(params: &[Tensor], prev: &[Tensor]) -> (Vec<f64>, Vec<f64>) {
    let _guard = tch::no_grad_guard();
    let sq = |t: Tensor| {
        t.square()
            .flatten(1, -1)
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
    };
    let norms: Vec<Tensor> = params.iter().map(|p| sq(p.detach())).collect();
    let dists: Vec<Tensor> = params
        .iter()
        .zip(prev)
        .map(|(p, q)| sq(p.detach() - q))
        .collect();
    let both = Tensor::stack(
        &[
            Tensor::stack(&norms, 0).sum_dim_intlist([0i64].as_slice(), false, Kind::Double),
            Tensor::stack(&dists, 0).sum_dim_intlist([0i64].as_slice(), false, Kind::Double),
        ],
        0,
    )
    .sqrt();
    let k = params[0].size()[0] as usize;
    let host = Vec::<f64>::try_from(both.to_device(Device::Cpu).view([-1]))
        .unwrap_or_else(|_| vec![f64::NAN; 2 * k]);
    let (n, d) = host.split_at(k);
    (n.to_vec(), d.to_vec())
}

/// Whether every parameter element of instance `i` is finite.
fn instance_finite(params: &[Tensor], i: usize) -> bool {
    let _guard = tch::no_grad_guard();
    params
        .iter()
        .all(|p| p.get(i as i64).isfinite().all().int64_value(&[]) != 0)
}
