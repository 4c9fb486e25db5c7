//! The optimizers users pick instead of tuning a schedule, as controllers of `lhopt eval`:
//! Schedule-Free AdamW (Defazio et al. 2024) and Prodigy (Mishchenko & Defazio 2024), on tch, at
//! the defaults their PyPI packages publish (`schedulefree` 1.4.1, `prodigyopt` 1.1.2). Both match
//! their package on a fixed float32 problem within the tolerance stated in
//! `trainer/tests/alternatives.rs`, whose fixture `trainer/tests/fixtures/gen_alternatives.py`
//! wrote with the packages themselves.

use tch::{Kind, Tensor};

use crate::baseline::Schedule;
use crate::env::{Trace, train_plain};
use crate::tasks::{Task, TaskSpec};

/// Schedule-Free AdamW as `schedulefree.AdamWScheduleFree`: training moves y, an interpolation
/// between the plain AdamW iterate z and the average x of the z's; evaluations belong at x
/// ([`ScheduleFreeAdamW::averaged`]). The package's defaults: weight decay 0, r = 0 (no
/// polynomial weighting), weight_lr_power 2 (each z weighted by the largest lr so far, squared).
pub struct ScheduleFreeAdamW {
    z: Vec<Tensor>,
    v: Vec<Tensor>,
    warmup_steps: u64,
    /// Steps taken.
    k: u64,
    /// Sum of the averaging weights so far.
    weight_sum: f64,
    /// Largest learning rate so far (warmup only raises it).
    lr_max: f64,
}

impl ScheduleFreeAdamW {
    /// The package's default learning rate.
    pub const LR: f64 = 0.0025;
    /// β1: the interpolation weight of y between x and z.
    pub const BETA1: f64 = 0.9;
    /// β2 of the second moment.
    pub const BETA2: f64 = 0.999;
    /// ε outside the square root.
    pub const EPS: f64 = 1e-8;
    /// Warmup as a fraction of the run: the package recommends warmup without a default length
    /// (its `warmup_steps` defaults to 0); 2% is the `warmup_factor` of every configuration the
    /// authors published for their AlgoPerf entries.
    pub const WARMUP_FRACTION: f64 = 0.02;

    /// Fresh state for `params`; the learning rate rises linearly over the first `warmup_steps`.
    pub fn new(params: &[Tensor], warmup_steps: u64) -> Self {
        ScheduleFreeAdamW {
            z: deep_copies(params),
            v: params.iter().map(|p| p.zeros_like().detach()).collect(),
            warmup_steps,
            k: 0,
            weight_sum: 0.0,
            lr_max: 0.0,
        }
    }

    /// Warmup steps of a run of `total_steps` ([`Self::WARMUP_FRACTION`], rounded down).
    pub fn warmup_for(total_steps: u64) -> u64 {
        (Self::WARMUP_FRACTION * total_steps as f64).floor() as u64
    }

    /// One step on `params` (the point y) with populated gradients; an undefined gradient leaves
    /// its tensor alone, as the package skips parameters without one.
    pub fn step(&mut self, params: &[Tensor]) {
        let _guard = tch::no_grad_guard();
        let k = self.k as f64;
        let warmup = if self.k < self.warmup_steps {
            (k + 1.0) / self.warmup_steps as f64
        } else {
            1.0
        };
        let lr = Self::LR * warmup;
        self.lr_max = self.lr_max.max(lr);
        let weight = self.lr_max * self.lr_max;
        self.weight_sum += weight;
        // Weight of this step's z in the running average x.
        let ckp1 = weight / self.weight_sum;
        let bias_correction2 = 1.0 - Self::BETA2.powf(k + 1.0);
        for ((y, z), v) in params.iter().zip(&mut self.z).zip(&mut self.v) {
            let g = y.grad();
            if !g.defined() {
                continue;
            }
            let _ = v
                .g_mul_scalar_(Self::BETA2)
                .addcmul_(&(&g * (1.0 - Self::BETA2)), &g);
            let denom = (&*v / bias_correction2).sqrt() + Self::EPS;
            let u = g / denom;
            // y moves to the new interpolation between x and z without forming x.
            let mut y = y.shallow_clone();
            let _ = y.lerp_(z, ckp1);
            let _ = y.g_add_(&(&u * (lr * (Self::BETA1 * (1.0 - ckp1) - 1.0))));
            let _ = z.g_sub_(&(u * lr));
        }
        self.k += 1;
    }

    /// The averaged point x for the current `params` (y): where the package's `eval()` puts the
    /// model, and what a held-out loss should see.
    pub fn averaged(&self, params: &[Tensor]) -> Vec<Tensor> {
        params
            .iter()
            .zip(&self.z)
            .map(|(y, z)| {
                let x = y.detach().copy();
                to_average(&x, z);
                x
            })
            .collect()
    }
}

/// Moves Schedule-Free's y to x in place, given z: y = (1 − β1)·z + β1·x, solved for x, with the
/// same interpolation the package's `eval()` uses.
fn to_average(y: &Tensor, z: &Tensor) {
    let _guard = tch::no_grad_guard();
    let _ = y
        .shallow_clone()
        .lerp_(z, 1.0 - 1.0 / ScheduleFreeAdamW::BETA1);
}

/// Prodigy as `prodigyopt.Prodigy` at its defaults: Adam whose step size d·lr is estimated on
/// the fly, starting from d0 = 1e-6 and only growing; lr = 1 (the package's advice), β3 = √β2,
/// no bias correction, no safeguard warmup, unlimited growth rate, weight decay 0.
pub struct Prodigy {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Running, decaying sum of d-weighted gradients: the denominator of d̂.
    s: Vec<Tensor>,
    /// The parameters at the start, from which the distance travelled is measured.
    p0: Vec<Tensor>,
    d: f64,
    /// Running, decaying sum of d-weighted ⟨g, p0 − p⟩: the numerator of d̂.
    d_numerator: f64,
}

impl Prodigy {
    /// The package's learning-rate multiplier of d.
    pub const LR: f64 = 1.0;
    /// β1.
    pub const BETA1: f64 = 0.9;
    /// β2.
    pub const BETA2: f64 = 0.999;
    /// ε, scaled by d inside the update.
    pub const EPS: f64 = 1e-8;
    /// Initial estimate of d.
    pub const D0: f64 = 1e-6;

    /// Fresh state for `params`.
    pub fn new(params: &[Tensor]) -> Self {
        let zeros = || params.iter().map(|p| p.zeros_like().detach()).collect();
        Prodigy {
            m: zeros(),
            v: zeros(),
            s: zeros(),
            p0: deep_copies(params),
            d: Self::D0,
            d_numerator: 0.0,
        }
    }

    /// The current step-size estimate d.
    pub fn d(&self) -> f64 {
        self.d
    }

    /// One step at learning rate `lr` (a schedule's factor times [`Self::LR`]) on `params` with
    /// populated gradients; an undefined gradient leaves its tensor alone. Reads two scalars per
    /// tensor back from the device, in one transfer: the estimate of d is decided on the host.
    pub fn step(&mut self, params: &[Tensor], lr: f64) {
        let _guard = tch::no_grad_guard();
        let (d, beta3) = (self.d, Self::BETA2.sqrt());
        let dlr = d * lr;
        let mut live = Vec::with_capacity(params.len());
        let mut dots = Vec::with_capacity(params.len());
        let mut s_sums = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            dots.push(
                g.reshape([-1])
                    .dot(&(&self.p0[i] - p.detach()).reshape([-1])),
            );
            let _ = self.m[i]
                .g_mul_scalar_(Self::BETA1)
                .g_add_(&(&g * (d * (1.0 - Self::BETA1))));
            let _ = self.v[i]
                .g_mul_scalar_(Self::BETA2)
                .addcmul_(&(&g * (d * d * (1.0 - Self::BETA2))), &g);
            let _ = self.s[i]
                .g_mul_scalar_(beta3)
                .g_add_(&(g * ((d / Self::D0) * dlr)));
            s_sums.push(self.s[i].abs().sum(Kind::Float));
            live.push(i);
        }
        if live.is_empty() {
            return;
        }
        let host = Vec::<f32>::try_from(
            Tensor::stack(&[Tensor::stack(&dots, 0), Tensor::stack(&s_sums, 0)], 0)
                .to_device(tch::Device::Cpu)
                .reshape([-1]),
        )
        .expect("f32 reductions");
        let (dots, s_sums) = host.split_at(live.len());
        // Accumulated in f64 in parameter order, as the package sums Python floats.
        let delta_numerator = dots
            .iter()
            .fold(0.0, |acc, &x| acc + (d / Self::D0) * dlr * f64::from(x));
        let d_denom = s_sums.iter().fold(0.0, |acc, &x| acc + f64::from(x));
        if d_denom == 0.0 {
            // Nothing but zero gradients so far: d̂ would be 0/0, and the package takes no step.
            return;
        }
        self.d_numerator = self.d_numerator * beta3 + delta_numerator;
        let d_hat = self.d_numerator / d_denom;
        // With an unlimited growth rate the package's d is the running max of d̂ (from d0).
        self.d = self.d.max(d_hat);
        for &i in &live {
            let denom = self.v[i].sqrt() + self.d * Self::EPS;
            let _ = params[i]
                .shallow_clone()
                .addcdiv_(&(&self.m[i] * -dlr), &denom);
        }
    }
}

fn deep_copies(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(|t| t.detach().copy()).collect()
}

/// An optimizer users pick instead of a tuned schedule, run at its published defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alternative {
    /// Schedule-Free AdamW, warmup over the first 2% of the run, evaluated at its average x.
    ScheduleFree,
    /// Prodigy at a constant lr = 1.
    Prodigy,
    /// Prodigy with the lr multiplier on half a cosine from 1 to 0 over the run (the package's
    /// recommended scheduler, `CosineAnnealingLR` with `T_max` = the run's steps).
    ProdigyCosine,
}

impl Alternative {
    /// All of them, in table order.
    pub const ALL: [Alternative; 3] = [
        Alternative::ScheduleFree,
        Alternative::Prodigy,
        Alternative::ProdigyCosine,
    ];

    /// Name in the CLI, tables and legends.
    pub fn name(self) -> &'static str {
        match self {
            Alternative::ScheduleFree => "schedule-free",
            Alternative::Prodigy => "prodigy",
            Alternative::ProdigyCosine => "prodigy-cosine",
        }
    }

    /// Parses [`Alternative::name`].
    pub fn from_name(name: &str) -> Option<Alternative> {
        Alternative::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Trains `task` for `steps` steps with this optimizer, evaluating after the step counts in
    /// `eval_at` and at the end (Schedule-Free at its averaged point).
    pub fn run(self, task: &mut dyn Task, steps: u64, eval_at: &[u64]) -> Trace {
        let params: Vec<Tensor> = task
            .parameters()
            .iter()
            .map(Tensor::shallow_clone)
            .collect();
        match self {
            Alternative::ScheduleFree => {
                let mut opt = ScheduleFreeAdamW::new(&params, ScheduleFreeAdamW::warmup_for(steps));
                let mut at_x = AtAveragedPoint {
                    task,
                    z: opt.z.iter().map(Tensor::shallow_clone).collect(),
                };
                train_plain(&mut at_x, steps, eval_at, |_, params| opt.step(params))
            }
            Alternative::Prodigy | Alternative::ProdigyCosine => {
                let cosine = self == Alternative::ProdigyCosine;
                let mut opt = Prodigy::new(&params);
                train_plain(task, steps, eval_at, |step, params| {
                    let factor = if cosine {
                        Schedule::Cosine.factor(step, steps)
                    } else {
                        1.0
                    };
                    opt.step(params, Prodigy::LR * factor);
                })
            }
        }
    }
}

/// A task seen through Schedule-Free's eyes: training runs at the parameters as they are (y),
/// the held-out loss and metrics at the average x. The parameters are moved to x only for the
/// evaluation and then restored bit for bit, so evaluating never changes the training path.
/// Batch-norm statistics stay those gathered at y (the package leaves recomputing them at x to
/// the user).
struct AtAveragedPoint<'a> {
    task: &'a mut dyn Task,
    /// Schedule-Free's z, sharing storage with the optimizer's, so it sees every step.
    z: Vec<Tensor>,
}

impl AtAveragedPoint<'_> {
    fn at_x<T>(&mut self, evaluate: impl FnOnce(&mut dyn Task) -> T) -> T {
        let y = deep_copies(self.task.parameters());
        for (p, z) in self.task.parameters().iter().zip(&self.z) {
            to_average(p, z);
        }
        let out = evaluate(&mut *self.task);
        let _guard = tch::no_grad_guard();
        for (p, y) in self.task.parameters().iter().zip(&y) {
            p.shallow_clone().copy_(y);
        }
        out
    }
}

impl Task for AtAveragedPoint<'_> {
    fn spec(&self) -> &TaskSpec {
        self.task.spec()
    }
    fn parameters(&self) -> &[Tensor] {
        self.task.parameters()
    }
    fn buffers(&self) -> &[Tensor] {
        self.task.buffers()
    }
    fn train_loss(&mut self) -> Tensor {
        self.task.train_loss()
    }
    fn eval_loss(&mut self) -> f64 {
        self.at_x(|task| task.eval_loss())
    }
    fn metrics(&mut self) -> Vec<(&'static str, f64)> {
        self.at_x(|task| task.metrics())
    }
}
