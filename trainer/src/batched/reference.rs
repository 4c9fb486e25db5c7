//! A configuration's tuned reference ([`MetaTask::reference`]: AdamW at each of the grid's
//! learning rates, constant, for T steps) as one batched program. The learning rates are the
//! instances of one batched task, every instance the same configuration (same seed, so the same
//! initialisation, weight rescaling, batches and noise), each trained by AdamW at its own rate.
//! With batched rollouts an episode costs a fraction of an unbatched one, and five sequential
//! reference runs per configuration took most of a batched meta-train's time (README, "Batched
//! task instances"); as one program they cost about one run of the batched task.

use tch::{Device, Tensor};

use super::ciao::bcast;
use super::env::forward_backward;
use super::tasks::{self, BatchedTask};
use crate::baseline::LEARNING_RATES;
use crate::error::Result;
use crate::meta_task::{MetaTask, ReferenceCache};
use crate::optim::AdamW;
use crate::pool::Pool;
use crate::reward::ReferenceCurve;

/// [`MetaTask::reference`] of `t` (same cache, same key), its runs computed by [`runs`].
pub fn reference(
    t: &MetaTask,
    pool: &Pool,
    cache: &ReferenceCache,
) -> Result<Option<ReferenceCurve>> {
    t.reference_with(cache, |eval_at| runs(t, pool, &LEARNING_RATES, eval_at))
}

/// The evaluation traces of `t` trained by AdamW at each of `lrs` (constant) for `t.steps`
/// steps, as [`crate::baseline::train_adamw`] records them one run at a time: evaluations before
/// the steps in `eval_at` and at the end; a run whose loss is not finite stops there and is
/// evaluated as it stands.
pub fn runs(
    t: &MetaTask,
    pool: &Pool,
    lrs: &[f64],
    eval_at: &[u64],
) -> Result<Vec<Vec<(u64, f64)>>> {
    let specs = vec![t.spec.clone(); lrs.len()];
    let mut task = tasks::build(&specs, pool.device, &pool.data)?;
    for i in 0..lrs.len() {
        let views: Vec<Tensor> = task.parameters().iter().map(|p| p.get(i as i64)).collect();
        t.rescale_weights(&views);
    }
    Ok(train(task.as_mut(), lrs, t.steps, eval_at))
}

/// [`runs`] on a built batch, instance k at `lrs[k]`.
pub(super) fn train(
    task: &mut dyn BatchedTask,
    lrs: &[f64],
    steps: u64,
    eval_at: &[u64],
) -> Vec<Vec<(u64, f64)>> {
    let params: Vec<Tensor> = task
        .parameters()
        .iter()
        .map(Tensor::shallow_clone)
        .collect();
    let mut adamw = BatchedAdamW::new(&params, lrs);
    let mut marks: Vec<u64> = eval_at.iter().copied().filter(|&s| s < steps).collect();
    marks.sort_unstable();
    marks.dedup();
    let mut marks = marks.into_iter().peekable();
    let mut evals: Vec<Vec<(u64, f64)>> = vec![Vec::new(); lrs.len()];
    let mut running = vec![true; lrs.len()];
    for step in 0..steps {
        if marks.next_if_eq(&step).is_some() {
            record(&mut evals, &running, step, &task.eval_losses());
        }
        let losses = forward_backward(task, &params);
        let stopping: Vec<bool> = losses
            .iter()
            .zip(&running)
            .map(|(l, &r)| r && !l.is_finite())
            .collect();
        if stopping.contains(&true) {
            // The unbatched run breaks here and evaluates the model as this step left it.
            record(&mut evals, &stopping, step + 1, &task.eval_losses());
            for (r, s) in running.iter_mut().zip(&stopping) {
                *r &= !s;
            }
            if !running.contains(&true) {
                return evals;
            }
        }
        // A stopped instance is stepped along with the rest (its gradients are zero), but
        // nothing reads it again.
        adamw.step(&params);
    }
    record(&mut evals, &running, steps, &task.eval_losses());
    evals
}

/// Appends `(step, losses[i])` to the trace of every instance `i` that `which` selects.
fn record(evals: &mut [Vec<(u64, f64)>], which: &[bool], step: u64, losses: &[f64]) {
    for ((trace, &on), &loss) in evals.iter_mut().zip(which).zip(losses) {
        if on {
            trace.push((step, loss));
        }
    }
}

/// [`AdamW`] for K stacked instances, instance k at its own constant learning rate: the same
/// arithmetic, its scalar factors (rounded to f32 from the same f64 values) as K-vectors.
struct BatchedAdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
    lrs: Vec<f64>,
    /// `[K]` decoupled weight-decay factors 1 − lr_k · wd.
    decay: Tensor,
}

impl BatchedAdamW {
    fn new(params: &[Tensor], lrs: &[f64]) -> Self {
        let device = params.first().map_or(Device::Cpu, Tensor::device);
        let decay: Vec<f32> = lrs
            .iter()
            .map(|lr| (1.0 - lr * AdamW::WEIGHT_DECAY) as f32)
            .collect();
        BatchedAdamW {
            m: params.iter().map(|p| p.zeros_like().detach()).collect(),
            v: params.iter().map(|p| p.zeros_like().detach()).collect(),
            t: 0,
            lrs: lrs.to_vec(),
            decay: Tensor::from_slice(&decay).to_device(device),
        }
    }

    fn step(&mut self, params: &[Tensor]) {
        let _guard = tch::no_grad_guard();
        self.t += 1;
        let bc1 = 1.0 - AdamW::BETA1.powi(self.t);
        let bc2_sqrt = (1.0 - AdamW::BETA2.powi(self.t)).sqrt();
        let step_size: Vec<f32> = self.lrs.iter().map(|lr| (lr / bc1) as f32).collect();
        let step_size = Tensor::from_slice(&step_size).to_device(self.decay.device());
        for ((p, m), v) in params.iter().zip(&mut self.m).zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let mut p = p.shallow_clone();
            let _ = p.g_mul_(&bcast(&self.decay, &p));
            let _ = m.lerp_(&g, 1.0 - AdamW::BETA1);
            let _ = v
                .g_mul_scalar_(AdamW::BETA2)
                .addcmul_(&(&g * (1.0 - AdamW::BETA2)), &g);
            let denom = v.sqrt() / bc2_sqrt + AdamW::EPS;
            let _ = p.g_sub_(&(&*m / denom * bcast(&step_size, &p)));
        }
    }
}
