//! CIAO (spec §1) over K independent instances stacked along a leading dimension: every tensor is
//! `[K, ...]`, every hyperparameter a K-vector broadcast over it, and the global clip, the trust
//! ratio and the reductions are per instance. The arithmetic is [`crate::optim::Ciao`]'s, op for
//! op, so that instance k follows the unbatched optimizer given instance k's gradients; the tests
//! hold it to that and to the core's slice CIAO.

use lhopt_core::Hyperparams;
use tch::{Kind, Tensor};

use lhopt_core::ciao::{CLIP_NORM_EPS, LOG_UPDATE_DELTA, TRUST_FLOOR, TRUST_MIN_NORM};

use crate::optim::{REDUCTIONS_PER_TENSOR, StepReport, tensor_reductions};

/// Per-instance coefficients derived on the host in f64 and rounded to f32 once, exactly as the
/// unbatched optimizer's scalar arguments are; columns of the `[COEFFS, K]` tensor of a step.
#[derive(Clone, Copy)]
enum Coeff {
    OmBeta1,
    OneMinusOmBeta2,
    Eps,
    Bc1,
    InvBc1,
    Wd,
    NegLr,
    LambOmBeta,
    OneMinusLambOmBeta,
    UnBc,
    ClipDecay,
    ClipFrac,
}
const COEFFS: usize = 12;

/// Per-tensor state; `m` and `v` are `[K, ...]`, `un_ema` is `[K]`.
struct Slot {
    m: Tensor,
    v: Tensor,
    un_ema: Tensor,
    /// Whether the unbatched tensor (without the leading K) has two or more dimensions.
    is_matrix: bool,
}

/// CIAO for K stacked instances.
pub struct BatchedCiao {
    k: usize,
    slots: Vec<Slot>,
    /// `[K]` rolling max of each instance's global gradient norm.
    rolling_max: Tensor,
    /// Per-instance bias corrections on the host (the same for every tensor of an instance, as
    /// in the unbatched optimizer, where they are per tensor but always updated together).
    bc1: Vec<f64>,
    un_bc: Vec<f64>,
}

/// One instance's parameters, buffers and optimizer state, deep-copied: a checkpoint register.
pub struct InstanceSnapshot {
    tensors: Vec<Tensor>,
    bc1: f64,
    un_bc: f64,
}

impl BatchedCiao {
    /// Fresh state for stacked `params` (each `[K, ...]`).
    ///
    /// # Panics
    /// If `params` is empty or the tensors disagree on K.
    pub fn new(params: &[Tensor]) -> Self {
        let k = params.first().expect("BatchedCiao needs parameters").size()[0];
        assert!(
            params.iter().all(|p| p.dim() >= 1 && p.size()[0] == k),
            "every stacked parameter has the same leading K"
        );
        let device = params[0].device();
        let slots = params
            .iter()
            .map(|p| Slot {
                m: p.zeros_like().detach(),
                v: p.zeros_like().detach(),
                un_ema: Tensor::zeros([k], (Kind::Float, device)),
                is_matrix: p.dim() >= 3,
            })
            .collect();
        BatchedCiao {
            k: k as usize,
            slots,
            rolling_max: Tensor::zeros([k], (Kind::Float, device)),
            bc1: vec![0.0; k as usize],
            un_bc: vec![0.0; k as usize],
        }
    }

    /// Instances K.
    pub fn instances(&self) -> usize {
        self.k
    }

    /// One spec §1 step of every instance, instance k with hyperparameters `h[k]`, on stacked
    /// `params` whose gradients are populated. With `want_reductions`, each instance's reductions
    /// come back (all K in one transfer); otherwise the step never waits for the device.
    ///
    /// # Panics
    /// If `h` does not have K entries or `params` is not the list this optimizer was made for.
    pub fn step(
        &mut self,
        params: &[Tensor],
        h: &[Hyperparams],
        want_reductions: bool,
    ) -> Option<Vec<StepReport>> {
        assert_eq!(h.len(), self.k, "one set of hyperparameters per instance");
        assert_eq!(params.len(), self.slots.len(), "a different parameter list");
        let _guard = tch::no_grad_guard();
        let device = params[0].device();
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() { g } else { p.zeros_like() }
            })
            .collect();

        // Host-side per-instance scalars, advanced as the unbatched optimizer advances its own.
        let mut host = vec![0f32; COEFFS * self.k];
        for (i, hk) in h.iter().enumerate() {
            let ob1 = f64::from(hk.ombeta1);
            let lo = f64::from(hk.lamb_ombeta);
            self.bc1[i] = self.bc1[i] * (1.0 - ob1) + ob1;
            self.un_bc[i] = self.un_bc[i] * (1.0 - lo) + lo;
            let mut set = |c: Coeff, x: f64| host[c as usize * self.k + i] = x as f32;
            set(Coeff::OmBeta1, ob1);
            set(Coeff::OneMinusOmBeta2, 1.0 - f64::from(hk.ombeta2));
            set(Coeff::Eps, f64::from(hk.eps));
            set(Coeff::Bc1, self.bc1[i]);
            set(Coeff::InvBc1, 1.0 / self.bc1[i]);
            set(Coeff::Wd, f64::from(hk.wd));
            set(Coeff::NegLr, -f64::from(hk.lr));
            set(Coeff::LambOmBeta, lo);
            set(Coeff::OneMinusLambOmBeta, 1.0 - lo);
            set(Coeff::UnBc, self.un_bc[i]);
            set(Coeff::ClipDecay, 1.0 - f64::from(hk.clip_ombeta));
            set(Coeff::ClipFrac, f64::from(hk.clip_frac));
        }
        let coeffs = Tensor::from_slice(&host)
            .view([COEFFS as i64, self.k as i64])
            .to_device(device);
        let c = |which: Coeff| coeffs.get(which as i64);
        let norms_k = |t: &Tensor| t.flatten(1, -1).norm_scalaropt_dim(2, [1], false);
        let sums_k = |t: &Tensor| {
            t.flatten(1, -1)
                .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        };

        // Per-instance global clip, decided on the device.
        let norms: Vec<Tensor> = grads.iter().map(norms_k).collect();
        let global_norm = Tensor::stack(&norms, 0).norm_scalaropt_dim(2, [0], false);
        self.rolling_max = global_norm.maximum(&(&self.rolling_max * c(Coeff::ClipDecay)));
        let scale =
            (&self.rolling_max * c(Coeff::ClipFrac)) / (&global_norm + f64::from(CLIP_NORM_EPS));
        let clipped = scale.lt(1.0);
        let scale = scale.clamp_max(1.0);
        for g in &grads {
            let _ = g.shallow_clone().g_mul_(&bcast(&scale, g));
        }

        let neg_lr = c(Coeff::NegLr);
        let mut rows = Vec::with_capacity(if want_reductions { params.len() } else { 0 });
        for ((p, g), s) in params.iter().zip(&grads).zip(&mut self.slots) {
            let _ = s.m.lerp_tensor_(g, &bcast(&c(Coeff::OmBeta1), g));
            let _ = s.v.g_mul_(&bcast(&c(Coeff::OneMinusOmBeta2), g));
            let _ = s.v.maximum_out(&s.v, &g.abs());
            let mut u = &s.m / (&s.v + bcast(&c(Coeff::Eps), g));
            let _ = u
                .g_mul_(&bcast(&c(Coeff::InvBc1), g))
                .g_add_(&(p * bcast(&c(Coeff::Wd), g)));

            let param_norm_before = want_reductions.then(|| norms_k(p));
            let neg_lr_p = if s.is_matrix {
                let _ = s
                    .un_ema
                    .g_mul_(&c(Coeff::OneMinusLambOmBeta))
                    .g_add_(&(norms_k(&u) * c(Coeff::LambOmBeta)));
                let un = &s.un_ema / c(Coeff::UnBc);
                let pn = norms_k(p);
                let trusted = pn
                    .ge(f64::from(TRUST_MIN_NORM))
                    .logical_and(&un.ge(f64::from(TRUST_MIN_NORM)));
                let ratio = (&pn / &un).clamp_min(f64::from(TRUST_FLOOR));
                ratio.where_self(&trusted, &ratio.ones_like()) * &neg_lr
            } else {
                neg_lr.shallow_clone()
            };
            let _ = p.shallow_clone().addcmul_(&u, &bcast(&neg_lr_p, p));

            if let Some(param_norm) = param_norm_before {
                let mhat = &s.m / bcast(&c(Coeff::Bc1), g);
                let values = [
                    norms_k(g),
                    norms_k(&mhat),
                    norms_k(&(&mhat - g)),
                    param_norm,
                    norms_k(&u),
                    -&neg_lr_p,
                    sums_k(&(g * &mhat)),
                    sums_k(&(g * p)),
                    sums_k(&(g * &u)),
                    sums_k(&s.v.gt_tensor(&bcast(&c(Coeff::Eps), g))),
                    sums_k(&(u.abs() + f64::from(LOG_UPDATE_DELTA)).log()),
                ];
                rows.push(Tensor::stack(&values, 1)); // [K, 11]
            }
        }
        want_reductions.then(|| read_reports(params, &rows, &clipped, self.k))
    }

    /// Deep copies of instance `i`'s parameters, `buffers` and optimizer state.
    pub fn snapshot(&self, i: usize, params: &[Tensor], buffers: &[Tensor]) -> InstanceSnapshot {
        let _guard = tch::no_grad_guard();
        InstanceSnapshot {
            tensors: self
                .instance_tensors(params, buffers)
                .map(|t| t.get(i as i64).copy())
                .collect(),
            bc1: self.bc1[i],
            un_bc: self.un_bc[i],
        }
    }

    /// Writes `snapshot` back into instance `i` of `params`, `buffers` and this optimizer.
    ///
    /// # Panics
    /// If the tensor lists do not match the ones the snapshot was taken from.
    pub fn restore(
        &mut self,
        i: usize,
        params: &[Tensor],
        buffers: &[Tensor],
        snapshot: &InstanceSnapshot,
    ) {
        let _guard = tch::no_grad_guard();
        let dsts: Vec<Tensor> = self.instance_tensors(params, buffers).collect();
        assert_eq!(
            dsts.len(),
            snapshot.tensors.len(),
            "snapshot of other tensors"
        );
        for (dst, src) in dsts.iter().zip(&snapshot.tensors) {
            dst.get(i as i64).copy_(src);
        }
        self.bc1[i] = snapshot.bc1;
        self.un_bc[i] = snapshot.un_bc;
    }

    /// Every stacked tensor that makes up an instance's state, in a fixed order.
    fn instance_tensors<'a>(
        &'a self,
        params: &'a [Tensor],
        buffers: &'a [Tensor],
    ) -> impl Iterator<Item = Tensor> + 'a {
        params
            .iter()
            .chain(buffers)
            .chain(self.slots.iter().flat_map(|s| [&s.m, &s.v, &s.un_ema]))
            .chain(std::iter::once(&self.rolling_max))
            .map(Tensor::shallow_clone)
    }
}

/// A `[K]` vector viewed to broadcast over a `[K, ...]` tensor.
pub(super) fn bcast(x: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![1i64; like.dim()];
    shape[0] = x.size()[0];
    x.view(shape.as_slice())
}

/// Reads every instance's reductions and clip flag back in one transfer.
fn read_reports(params: &[Tensor], rows: &[Tensor], clipped: &Tensor, k: usize) -> Vec<StepReport> {
    let all = Tensor::cat(
        &[
            Tensor::stack(rows, 1).view([-1]), // [K, tensors, 11]
            clipped.to_kind(Kind::Float).view([-1]),
        ],
        0,
    );
    let host = Vec::<f32>::try_from(all.to_device(tch::Device::Cpu)).expect("reductions are f32");
    let (values, flags) = host.split_at(host.len() - k);
    values
        .chunks_exact(params.len() * REDUCTIONS_PER_TENSOR)
        .zip(flags)
        .map(|(instance, &flag)| StepReport {
            clipped: flag > 0.5,
            tensors: params
                .iter()
                .zip(instance.chunks_exact(REDUCTIONS_PER_TENSOR))
                .map(|(p, r)| tensor_reductions((p.numel() / k) as u64, r))
                .collect(),
        })
        .collect()
}
