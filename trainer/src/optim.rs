//! The inner optimizers on tch tensors: CIAO (spec §1), steered by a controller, and plain AdamW
//! for the tuned-baseline grid (spec §9).
//!
//! CIAO keeps every data-dependent quantity (rolling max gradient norm, clip decision, update-norm
//! EMA, trust ratio) on the parameters' device, so a step without reductions never waits for the
//! device. A sampled step reads all per-tensor reductions back in one transfer.

use lhopt_core::{Hyperparams, StepReductions, TensorReductions};
use tch::{Kind, Tensor};

/// Threshold of the LAMB trust ratio's norms and floor of the ratio (spec §1).
const LAMB_MIN_NORM: f64 = 1e-8;
const LAMB_MIN_RATIO: f64 = 1e-3;
/// Added to the global gradient norm before dividing the clip threshold by it.
const CLIP_NORM_EPS: f64 = 1e-6;
/// δ inside log(|u| + δ) of the reductions.
const LOG_DELTA: f64 = 1e-8;
/// Scalars per tensor in the reduction readback, in [`TensorReductions`] field order after `numel`.
pub(crate) const REDUCTIONS_PER_TENSOR: usize = 11;

/// One spec §1 step's per-tensor reductions and the global clip flag (spec §2), read back together.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// Whether the gradients were scaled down by the clip.
    pub clipped: bool,
    /// Reductions per parameter tensor, in parameter order.
    pub tensors: Vec<TensorReductions>,
}

impl StepReport {
    /// The form the core's `Observer::observe_step` takes.
    pub fn as_step_reductions(&self) -> StepReductions<'_> {
        StepReductions {
            tensors: &self.tensors,
            clipped: self.clipped,
        }
    }
}

/// Per-tensor CIAO state.
struct Slot {
    m: Tensor,
    v: Tensor,
    /// EMA of ‖u‖ for the trust ratio (scalar, on the device; only matrices use it).
    un_ema: Tensor,
    /// Bias corrections: deterministic functions of the hyperparameter history, kept on the host.
    bc1: f64,
    un_bc: f64,
}

/// CIAO: Adam with an infinity-norm second moment, weight decay inside the update, gradient
/// clipping against a rolling max norm and a LAMB trust ratio for matrices (spec §1).
pub struct Ciao {
    slots: Vec<Slot>,
    /// Rolling max of the global gradient norm (scalar, on the device; starts at 0).
    rolling_max: Tensor,
}

/// Parameters, non-trainable buffers and full CIAO state, deep-copied: what a checkpoint register
/// holds. Restoring it makes training continue exactly as from the moment it was taken.
pub struct Snapshot {
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    un_ema: Vec<Tensor>,
    bc: Vec<(f64, f64)>,
    rolling_max: Tensor,
}

impl Ciao {
    /// Fresh state for `params` (zero moments, zero rolling max), on the parameters' devices.
    pub fn new(params: &[Tensor]) -> Self {
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        let slots = params
            .iter()
            .map(|p| Slot {
                m: p.zeros_like().detach(),
                v: p.zeros_like().detach(),
                un_ema: Tensor::zeros([], (Kind::Float, p.device())),
                bc1: 0.0,
                un_bc: 0.0,
            })
            .collect();
        Ciao {
            slots,
            rolling_max: Tensor::zeros([], (Kind::Float, device)),
        }
    }

    /// One spec §1 step on `params`, whose `.grad()` must be populated by a backward pass (an
    /// undefined gradient counts as zero). Reductions are computed and read back, in one
    /// transfer, only when `want_reductions`; otherwise the step does not synchronise with the
    /// device. Gradients are scaled in place when clipped.
    ///
    /// # Panics
    /// If `params` is not the list this optimizer was created with (length mismatch).
    pub fn step(
        &mut self,
        params: &[Tensor],
        h: &Hyperparams,
        want_reductions: bool,
    ) -> Option<StepReport> {
        assert_eq!(
            params.len(),
            self.slots.len(),
            "Ciao::step got a different parameter list"
        );
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() { g } else { p.zeros_like() }
            })
            .collect();

        // Global clip, decided on the device: scaling by exactly 1 leaves unclipped gradients as they are.
        let norms: Vec<Tensor> = grads.iter().map(Tensor::norm).collect();
        let global_norm = Tensor::stack(&norms, 0).norm();
        self.rolling_max =
            global_norm.maximum(&(&self.rolling_max * (1.0 - f64::from(h.clip_ombeta))));
        let scale = (&self.rolling_max * f64::from(h.clip_frac)) / (&global_norm + CLIP_NORM_EPS);
        let clipped = scale.lt(1.0);
        let scale = scale.clamp_max(1.0);
        for g in &grads {
            let _ = g.shallow_clone().g_mul_(&scale);
        }

        let (ob1, ob2) = (f64::from(h.ombeta1), f64::from(h.ombeta2));
        let device = params.first().map_or(tch::Device::Cpu, Tensor::device);
        // −lr as a device scalar, so every parameter update is one fused addcmul_.
        let neg_lr = Tensor::full([], -f64::from(h.lr), (Kind::Float, device));
        let mut rows = Vec::with_capacity(if want_reductions { params.len() } else { 0 });
        for ((p, g), s) in params.iter().zip(&grads).zip(&mut self.slots) {
            s.bc1 = s.bc1 * (1.0 - ob1) + ob1;
            let _ = s.m.lerp_(g, ob1);
            let _ = s.v.g_mul_scalar_(1.0 - ob2);
            let _ = s.v.maximum_out(&s.v, &g.abs());
            let mut u = &s.m / (&s.v + f64::from(h.eps));
            let _ = u.g_mul_scalar_(1.0 / s.bc1).g_add_(&(p * f64::from(h.wd)));

            let param_norm_before = want_reductions.then(|| p.norm());
            // Matrices scale the learning rate by the trust ratio, a device scalar.
            let trust_neg_lr = (p.dim() >= 2).then(|| {
                let lo = f64::from(h.lamb_ombeta);
                s.un_bc = s.un_bc * (1.0 - lo) + lo;
                let _ = s.un_ema.g_mul_scalar_(1.0 - lo).g_add_(&(u.norm() * lo));
                let un = &s.un_ema / s.un_bc;
                let pn = p.norm();
                let trusted = pn.ge(LAMB_MIN_NORM).logical_and(&un.ge(LAMB_MIN_NORM));
                let ratio = (&pn / &un).clamp_min(LAMB_MIN_RATIO);
                ratio.where_self(&trusted, &ratio.ones_like()) * &neg_lr
            });
            let neg_lr_p = trust_neg_lr.as_ref().unwrap_or(&neg_lr);
            let _ = p.shallow_clone().addcmul_(&u, neg_lr_p);

            if let Some(param_norm) = param_norm_before {
                let mhat = &s.m / s.bc1;
                let values = [
                    g.norm(),
                    mhat.norm(),
                    (&mhat - g).norm(),
                    param_norm,
                    u.norm(),
                    -neg_lr_p,
                    (g * &mhat).sum(Kind::Float),
                    (g * p).sum(Kind::Float),
                    (g * &u).sum(Kind::Float),
                    s.v.gt(f64::from(h.eps)).sum(Kind::Float),
                    (u.abs() + LOG_DELTA).log().sum(Kind::Float),
                ];
                rows.push(Tensor::stack(&values, 0));
            }
        }
        want_reductions.then(|| read_report(params, &rows, &clipped))
    }

    /// Deep copies of the parameters, `buffers` (e.g. batch-norm statistics) and the whole
    /// optimizer state.
    pub fn snapshot(&self, params: &[Tensor], buffers: &[Tensor]) -> Snapshot {
        Snapshot {
            params: deep_copies(params),
            buffers: deep_copies(buffers),
            m: deep_copies(self.slots.iter().map(|s| &s.m)),
            v: deep_copies(self.slots.iter().map(|s| &s.v)),
            un_ema: deep_copies(self.slots.iter().map(|s| &s.un_ema)),
            bc: self.slots.iter().map(|s| (s.bc1, s.un_bc)).collect(),
            rolling_max: self.rolling_max.copy(),
        }
    }

    /// Writes `snapshot` back into `params`, `buffers` (in place, so models sharing them see it)
    /// and this optimizer.
    ///
    /// # Panics
    /// If the tensor lists do not match the ones the snapshot was taken from.
    pub fn restore(&mut self, params: &[Tensor], buffers: &[Tensor], snapshot: &Snapshot) {
        assert_eq!(
            params.len(),
            snapshot.params.len(),
            "snapshot of a different parameter list"
        );
        assert_eq!(
            buffers.len(),
            snapshot.buffers.len(),
            "snapshot of a different buffer list"
        );
        let _guard = tch::no_grad_guard();
        let pairs = params
            .iter()
            .zip(&snapshot.params)
            .chain(buffers.iter().zip(&snapshot.buffers))
            .chain(self.slots.iter().map(|s| &s.m).zip(&snapshot.m))
            .chain(self.slots.iter().map(|s| &s.v).zip(&snapshot.v))
            .chain(self.slots.iter().map(|s| &s.un_ema).zip(&snapshot.un_ema));
        for (dst, src) in pairs {
            dst.shallow_clone().copy_(src);
        }
        for (s, &(bc1, un_bc)) in self.slots.iter_mut().zip(&snapshot.bc) {
            s.bc1 = bc1;
            s.un_bc = un_bc;
        }
        self.rolling_max = snapshot.rolling_max.copy();
    }
}

fn deep_copies<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Vec<Tensor> {
    tensors.into_iter().map(|t| t.detach().copy()).collect()
}

/// One tensor's reductions from its row of a readback (see [`REDUCTIONS_PER_TENSOR`]).
pub(crate) fn tensor_reductions(numel: u64, r: &[f32]) -> TensorReductions {
    TensorReductions {
        numel,
        grad_norm: r[0],
        mhat_norm: r[1],
        mhat_minus_grad_norm: r[2],
        param_norm: r[3],
        update_norm: r[4],
        lr_p: r[5],
        grad_dot_mhat: r[6],
        grad_dot_param: r[7],
        grad_dot_update: r[8],
        count_v_gt_eps: r[9],
        sum_log_abs_update: r[10],
    }
}

/// Reads the stacked per-tensor reductions and the clip flag back in one transfer.
fn read_report(params: &[Tensor], rows: &[Tensor], clipped: &Tensor) -> StepReport {
    let all = Tensor::cat(
        &[
            Tensor::stack(rows, 0).view([-1]),
            clipped.to_kind(Kind::Float).view([1]),
        ],
        0,
    );
    let host = Vec::<f32>::try_from(all.to_device(tch::Device::Cpu)).expect("reductions are f32");
    let (per_tensor, flag) = host.split_at(host.len() - 1);
    let tensors = params
        .iter()
        .zip(per_tensor.chunks_exact(REDUCTIONS_PER_TENSOR))
        .map(|(p, r)| tensor_reductions(p.numel() as u64, r))
        .collect();
    StepReport {
        clipped: flag[0] > 0.5,
        tensors,
    }
}

/// AdamW with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, decoupled weight decay 1e-2): the
/// optimizer of the tuned baseline grid; the learning rate comes from the schedule each step.
pub struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i32,
}

impl AdamW {
    /// β1.
    pub const BETA1: f64 = 0.9;
    /// β2.
    pub const BETA2: f64 = 0.999;
    /// ε.
    pub const EPS: f64 = 1e-8;
    /// Decoupled weight decay.
    pub const WEIGHT_DECAY: f64 = 1e-2;

    /// Fresh state for `params`.
    pub fn new(params: &[Tensor]) -> Self {
        AdamW {
            m: params.iter().map(|p| p.zeros_like().detach()).collect(),
            v: params.iter().map(|p| p.zeros_like().detach()).collect(),
            t: 0,
        }
    }

    /// One step with learning rate `lr` on `params` with populated gradients (undefined = zero).
    pub fn step(&mut self, params: &[Tensor], lr: f64) {
        let _guard = tch::no_grad_guard();
        self.t += 1;
        let bc1 = 1.0 - Self::BETA1.powi(self.t);
        let bc2_sqrt = (1.0 - Self::BETA2.powi(self.t)).sqrt();
        for ((p, m), v) in params.iter().zip(&mut self.m).zip(&mut self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let mut p = p.shallow_clone();
            let _ = p.g_mul_scalar_(1.0 - lr * Self::WEIGHT_DECAY);
            let _ = m.lerp_(&g, 1.0 - Self::BETA1);
            let _ = v
                .g_mul_scalar_(Self::BETA2)
                .addcmul_(&(&g * (1.0 - Self::BETA2)), &g);
            let denom = v.sqrt() / bc2_sqrt + Self::EPS;
            let _ = p.g_sub_(&(&*m / denom * (lr / bc1)));
        }
    }
}
