//! The reference inner optimizer (spec §1) on plain `f32` slices, producing the reductions of
//! spec §2, so a runtime without a tensor library can use the controller as is.
//!
//! Adam family with an AdaMax-style second moment, weight decay inside the update, global
//! gradient clipping against a decaying rolling max of the gradient norm, and a LAMB trust ratio
//! for tensors with two or more dimensions. Bias correction is kept as state, so changing β1 or
//! the LAMB β mid-run stays exact.

use crate::error::Error;
use crate::hyper::Hyperparams;
use crate::math::{LnSum, LnSumLanes};
use crate::moments::ema_update;
use crate::reductions::TensorReductions;

/// Added to the gradient norm before dividing by it in the clip factor.
pub const CLIP_NORM_EPS: f32 = 1e-6;
/// Below this, ‖p‖ or the update-norm EMA is treated as zero and the trust ratio is not applied.
pub const TRUST_MIN_NORM: f32 = 1e-8;
/// Lower limit of the LAMB trust ratio.
pub const TRUST_FLOOR: f32 = 1e-3;
/// δ of the `Σ ln(|u| + δ)` reduction.
pub const LOG_UPDATE_DELTA: f32 = 1e-8;

/// Per-tensor optimizer state besides the `m` and `v` buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TensorState {
    /// First-moment bias correction, `bc1 ← bc1·(1 − ombeta1) + ombeta1` (starts at 0).
    pub bc1: f32,
    /// EMA of ‖u‖ for the trust ratio, before bias correction.
    pub un_ema: f32,
    /// Bias correction of `un_ema`.
    pub un_bc: f32,
}

/// Optimizer state shared by all tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CiaoState {
    /// Decaying rolling max of the global gradient norm (starts at 0).
    pub rolling_max: f32,
}

/// One parameter tensor with its gradient and optimizer buffers, borrowed for one step (all the
/// same length). A runtime that keeps its parameters elsewhere lends them this way each step;
/// one that can hand them over keeps a [`Tensor`] per tensor instead.
#[derive(Debug)]
pub struct ParamSlot<'a> {
    /// Parameters, updated in place.
    pub param: &'a mut [f32],
    /// Gradient; scaled in place when the clip fires.
    pub grad: &'a mut [f32],
    /// First moment.
    pub m: &'a mut [f32],
    /// Running max of |g| (AdaMax-style second moment).
    pub v: &'a mut [f32],
    /// Bias corrections.
    pub state: &'a mut TensorState,
    /// Whether the tensor has two or more dimensions (gets the trust ratio).
    pub is_matrix: bool,
}

/// One parameter tensor that owns its parameters, gradient and optimizer state, so it lives
/// across steps: `B` is `Vec<f32>` in a program with a heap, an array or a `&'static mut [f32]`
/// without one. A checkpoint register is a clone of every `Tensor` (and the [`CiaoState`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<B> {
    /// Parameters, updated in place.
    pub param: B,
    /// Gradient: write it before each [`step`]; scaled in place when the clip fires.
    pub grad: B,
    /// First moment.
    pub m: B,
    /// Running max of |g| (AdaMax-style second moment).
    pub v: B,
    /// Bias corrections.
    pub state: TensorState,
    /// Whether the tensor has two or more dimensions (gets the trust ratio).
    pub is_matrix: bool,
}

impl<B: AsMut<[f32]> + Clone> Tensor<B> {
    /// A tensor starting at `param`, with zero gradient and moments.
    pub fn new(param: B, is_matrix: bool) -> Self {
        let mut zeros = param.clone();
        zeros.as_mut().fill(0.0);
        Tensor {
            param,
            grad: zeros.clone(),
            m: zeros.clone(),
            v: zeros,
            state: TensorState::default(),
            is_matrix,
        }
    }
}

/// What [`step`] updates: a borrowed [`ParamSlot`] or an owned [`Tensor`].
pub trait AsSlot {
    /// The tensor's buffers, borrowed for one step.
    fn as_slot(&mut self) -> ParamSlot<'_>;
}

impl AsSlot for ParamSlot<'_> {
    fn as_slot(&mut self) -> ParamSlot<'_> {
        ParamSlot {
            param: self.param,
            grad: self.grad,
            m: self.m,
            v: self.v,
            state: self.state,
            is_matrix: self.is_matrix,
        }
    }
}

impl<B: AsMut<[f32]>> AsSlot for Tensor<B> {
    fn as_slot(&mut self) -> ParamSlot<'_> {
        ParamSlot {
            param: self.param.as_mut(),
            grad: self.grad.as_mut(),
            m: self.m.as_mut(),
            v: self.v.as_mut(),
            state: &mut self.state,
            is_matrix: self.is_matrix,
        }
    }
}

/// What one [`step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The parameters were updated; `clipped` says whether the global clip fired.
    Applied {
        /// Whether the global gradient clip fired.
        clipped: bool,
    },
    /// A gradient was NaN or infinite (or their global norm overflowed): nothing changed, not
    /// the parameters, the moments or the rolling max, and no reductions were written. Report
    /// the step's loss to the controller without reductions, as for a step that was not sampled.
    Skipped,
}

impl StepOutcome {
    /// Whether the clip fired (false for a skipped step).
    pub fn clipped(self) -> bool {
        matches!(self, StepOutcome::Applied { clipped: true })
    }

    /// Whether the parameters were updated.
    pub fn applied(self) -> bool {
        matches!(self, StepOutcome::Applied { .. })
    }
}

fn sum_squares(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

/// Checks every length [`step`] relies on before it changes anything.
fn check_lengths<S: AsSlot>(
    slots: &mut [S],
    reductions: Option<&[TensorReductions]>,
) -> Result<(), Error> {
    if let Some(r) = reductions
        && r.len() != slots.len()
    {
        return Err(Error::LengthMismatch {
            which: "reductions",
            tensor: 0,
            found: r.len(),
            expected: slots.len(),
        });
    }
    for (tensor, slot) in slots.iter_mut().enumerate() {
        let s = slot.as_slot();
        let expected = s.param.len();
        for (which, found) in [("grad", s.grad.len()), ("m", s.m.len()), ("v", s.v.len())] {
            if found != expected {
                return Err(Error::LengthMismatch {
                    which,
                    tensor,
                    found,
                    expected,
                });
            }
        }
    }
    Ok(())
}

/// One inner step over all tensors. With `reductions` (one entry per tensor; computing them
/// costs a little per element, so pass `None` on steps that are not sampled) it writes each
/// tensor's [`TensorReductions`], which describe the gradient the optimizer used, that is after
/// clipping.
///
/// Errors ([`Error::LengthMismatch`], nothing changed): a tensor whose `grad`, `m` or `v` length
/// differs from its `param`, or a `reductions` slice whose length is not the number of tensors.
/// A non-finite gradient skips the step ([`StepOutcome::Skipped`]), as the trainer does.
pub fn step<S: AsSlot>(
    slots: &mut [S],
    h: &Hyperparams,
    st: &mut CiaoState,
    reductions: Option<&mut [TensorReductions]>,
) -> Result<StepOutcome, Error> {
    check_lengths(slots, reductions.as_deref())?;
    let grad_norm = libm::sqrtf(
        slots
            .iter_mut()
            .map(|s| sum_squares(s.as_slot().grad))
            .sum(),
    );
    if !grad_norm.is_finite() {
        return Ok(StepOutcome::Skipped);
    }
    st.rolling_max = grad_norm.max(st.rolling_max * (1.0 - h.clip_ombeta));
    let c = h.clip_frac * st.rolling_max / (grad_norm + CLIP_NORM_EPS);
    let clipped = c < 1.0;
    let mut outputs = reductions.map(|r| r.iter_mut());
    for slot in slots.iter_mut() {
        let mut slot = slot.as_slot();
        if clipped {
            slot.grad.iter_mut().for_each(|g| *g *= c);
        }
        let out = outputs.as_mut().and_then(|o| o.next());
        tensor_step(&mut slot, h, out);
    }
    Ok(StepOutcome::Applied { clipped })
}

fn tensor_step(slot: &mut ParamSlot<'_>, h: &Hyperparams, out: Option<&mut TensorReductions>) {
    let st = &mut *slot.state;
    st.bc1 = st.bc1 * (1.0 - h.ombeta1) + h.ombeta1;
    let bc1 = st.bc1;
    let update = |m: f32, v: f32, p: f32| (m / bc1) / (v + h.eps) + h.wd * p;
    let want = out.is_some();

    let mut r = TensorReductions {
        numel: slot.param.len() as u64,
        ..TensorReductions::default()
    };
    let (mut u_sq, mut p_sq, mut g_sq, mut mhat_sq, mut diff_sq) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut ln_sum = LnSum::new();
    for (((p, g), m), v) in slot
        .param
        .iter()
        .zip(slot.grad.iter())
        .zip(slot.m.iter_mut())
        .zip(slot.v.iter_mut())
    {
        *m = (1.0 - h.ombeta1) * *m + h.ombeta1 * g;
        *v = ((1.0 - h.ombeta2) * *v).max(g.abs());
        let u = update(*m, *v, *p);
        u_sq += u * u;
        p_sq += p * p;
        if want {
            let mhat = *m / bc1;
            g_sq += g * g;
            mhat_sq += mhat * mhat;
            diff_sq += (mhat - g) * (mhat - g);
            r.grad_dot_mhat += g * mhat;
            r.grad_dot_update += g * u;
            if *v > h.eps {
                r.count_v_gt_eps += 1.0;
            }
            ln_sum.push(u.abs() + LOG_UPDATE_DELTA);
        }
    }
    let update_norm = libm::sqrtf(u_sq);
    let param_norm = libm::sqrtf(p_sq);

    let mut lr_p = h.lr;
    if slot.is_matrix {
        ema_update(&mut st.un_ema, &mut st.un_bc, h.lamb_ombeta, update_norm);
        let un = st.un_ema / st.un_bc;
        if param_norm >= TRUST_MIN_NORM && un >= TRUST_MIN_NORM {
            lr_p *= (param_norm / un).max(TRUST_FLOOR);
        }
    }

    for (((p, g), m), v) in slot
        .param
        .iter_mut()
        .zip(slot.grad.iter())
        .zip(slot.m.iter())
        .zip(slot.v.iter())
    {
        *p -= lr_p * update(*m, *v, *p);
        if want {
            r.grad_dot_param += g * *p;
        }
    }

    if let Some(out) = out {
        r.sum_log_abs_update = ln_sum.value();
        r.grad_norm = libm::sqrtf(g_sq);
        r.mhat_norm = libm::sqrtf(mhat_sq);
        r.mhat_minus_grad_norm = libm::sqrtf(diff_sq);
        r.param_norm = param_norm;
        r.update_norm = update_norm;
        r.lr_p = lr_p;
        *out = r;
    }
}

/// What one tensor's CIAO step leaves behind, for a runtime that runs the update itself and keeps
/// `u` (the Python package's torch optimizer): all the same length.
#[derive(Clone, Copy, Debug)]
pub struct StepBuffers<'a> {
    /// The gradient the step used (after clipping).
    pub grad: &'a [f32],
    /// First moment after the step.
    pub m: &'a [f32],
    /// Second moment after the step.
    pub v: &'a [f32],
    /// The update `u` before the learning rate.
    pub update: &'a [f32],
    /// Parameters after the step.
    pub param: &'a [f32],
}

/// Elements per chunk of [`element_reductions`]: independent sums that vectorise.
const SUM_LANES: usize = 8;
/// Chunks per block of [`element_reductions`]: a block of the five buffers (10 KB) stays in the
/// L1 cache while seven short loops run over it, each with one sum. One loop with all seven
/// sums measured three times slower: the compiler shuffled lanes instead of vectorising it.
const BLOCK_CHUNKS: usize = 64;

type Chunks<'a> = &'a [[f32; SUM_LANES]];

/// The reductions of spec §2 that take a pass over the elements, from a step's buffers and its
/// first-moment bias correction `bc1`: `numel`, ‖m̂‖, ‖m̂ − g‖, g·m̂, g·p, g·u, #(v > eps) and
/// Σ ln(|u| + δ). The runtime knows the rest from its update (‖g‖, ‖p‖ before the step, ‖u‖,
/// `lr_p`) and leaves them as they are in `out`. Sums run in [`SUM_LANES`] interleaved lanes, so
/// they round differently from [`step`]'s serial ones (the same values to float32 rounding).
///
/// Errors ([`Error::LengthMismatch`], `out` unchanged): a buffer whose length differs from
/// `param`'s.
pub fn element_reductions(
    b: &StepBuffers<'_>,
    bc1: f32,
    eps: f32,
    out: &mut TensorReductions,
) -> Result<(), Error> {
    let n = b.param.len();
    for (which, found) in [
        ("grad", b.grad.len()),
        ("m", b.m.len()),
        ("v", b.v.len()),
        ("update", b.update.len()),
    ] {
        if found != n {
            return Err(Error::LengthMismatch {
                which,
                tensor: 0,
                found,
                expected: n,
            });
        }
    }
    let mut s = LaneSums::new(1.0 / bc1, eps);
    let ((g, g_rest), (m, m_rest), (v, v_rest), (u, u_rest), (p, p_rest)) = (
        b.grad.as_chunks::<SUM_LANES>(),
        b.m.as_chunks::<SUM_LANES>(),
        b.v.as_chunks::<SUM_LANES>(),
        b.update.as_chunks::<SUM_LANES>(),
        b.param.as_chunks::<SUM_LANES>(),
    );
    for ((((g, m), v), u), p) in g
        .chunks(BLOCK_CHUNKS)
        .zip(m.chunks(BLOCK_CHUNKS))
        .zip(v.chunks(BLOCK_CHUNKS))
        .zip(u.chunks(BLOCK_CHUNKS))
        .zip(p.chunks(BLOCK_CHUNKS))
    {
        s.add_block(g, m, v, u, p);
    }
    // The last elements padded to a chunk with values that add exactly nothing: g = m = p = 0,
    // v = −∞ (never above eps) and u = 1 (|u| + δ rounds to 1, whose ln is 0).
    let pad = |rest: &[f32], fill: f32| {
        let mut chunk = [fill; SUM_LANES];
        chunk.iter_mut().zip(rest).for_each(|(c, x)| *c = *x);
        [chunk]
    };
    s.add_block(
        &pad(g_rest, 0.0),
        &pad(m_rest, 0.0),
        &pad(v_rest, f32::NEG_INFINITY),
        &pad(u_rest, 1.0),
        &pad(p_rest, 0.0),
    );
    let sum_log = s.ln_sum.value().unwrap_or_else(|| {
        // A non-finite u: the serial sum gives logf's answer for it.
        let mut all = LnSum::new();
        b.update
            .iter()
            .for_each(|u| all.push(u.abs() + LOG_UPDATE_DELTA));
        all.value()
    });
    let inv_bc1 = s.inv_bc1;
    let total = |x: [f32; SUM_LANES]| x.iter().sum::<f32>();
    out.numel = n as u64;
    out.mhat_norm = libm::sqrtf(total(s.m_sq)) * inv_bc1;
    out.mhat_minus_grad_norm = libm::sqrtf(total(s.diff_sq));
    out.grad_dot_mhat = total(s.grad_dot_m) * inv_bc1;
    out.grad_dot_param = total(s.grad_dot_param);
    out.grad_dot_update = total(s.grad_dot_update);
    out.count_v_gt_eps = total(s.count_v_gt_eps);
    out.sum_log_abs_update = sum_log;
    Ok(())
}

/// The per-lane sums of [`element_reductions`], with the step's `1 / bc1` and `eps`.
struct LaneSums {
    inv_bc1: f32,
    eps: f32,
    m_sq: [f32; SUM_LANES],
    diff_sq: [f32; SUM_LANES],
    grad_dot_m: [f32; SUM_LANES],
    grad_dot_param: [f32; SUM_LANES],
    grad_dot_update: [f32; SUM_LANES],
    count_v_gt_eps: [f32; SUM_LANES],
    ln_sum: LnSumLanes<SUM_LANES>,
}

impl LaneSums {
    fn new(inv_bc1: f32, eps: f32) -> Self {
        let zeros = [0.0; SUM_LANES];
        LaneSums {
            inv_bc1,
            eps,
            m_sq: zeros,
            diff_sq: zeros,
            grad_dot_m: zeros,
            grad_dot_param: zeros,
            grad_dot_update: zeros,
            count_v_gt_eps: zeros,
            ln_sum: LnSumLanes::new(),
        }
    }

    /// Adds a block of chunks (all five the same length).
    fn add_block(
        &mut self,
        g: Chunks<'_>,
        m: Chunks<'_>,
        v: Chunks<'_>,
        u: Chunks<'_>,
        p: Chunks<'_>,
    ) {
        let (inv_bc1, eps) = (self.inv_bc1, self.eps);
        lane_sums(&mut self.m_sq, m, m, |m, _| m * m);
        lane_sums(&mut self.diff_sq, m, g, |m, g| {
            (m * inv_bc1 - g) * (m * inv_bc1 - g)
        });
        lane_sums(&mut self.grad_dot_m, g, m, |g, m| g * m);
        lane_sums(&mut self.grad_dot_param, g, p, |g, p| g * p);
        lane_sums(&mut self.grad_dot_update, g, u, |g, u| g * u);
        lane_sums(&mut self.count_v_gt_eps, v, v, |v, _| {
            if v > eps { 1.0 } else { 0.0 }
        });
        self.ln_sum
            .push_chunks(u.iter().map(|u| u.map(|u| u.abs() + LOG_UPDATE_DELTA)));
    }
}

/// `sum[l] += f(a[k][l], b[k][l])` over the chunks `k`: one sum, lanes side by side.
#[inline(always)]
fn lane_sums(
    sum: &mut [f32; SUM_LANES],
    a: Chunks<'_>,
    b: Chunks<'_>,
    f: impl Fn(f32, f32) -> f32,
) {
    for (a, b) in a.iter().zip(b) {
        for ((s, &a), &b) in sum.iter_mut().zip(a).zip(b) {
            *s += f(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern crate std;
    use std::vec::Vec;

    /// A tensor at `param` whose next gradient is `grad`.
    fn tensor(param: &[f32], grad: &[f32], is_matrix: bool) -> Tensor<Vec<f32>> {
        let mut t = Tensor::new(param.to_vec(), is_matrix);
        t.grad.copy_from_slice(grad);
        t
    }

    fn close(a: impl Into<f64>, b: f64) -> bool {
        (a.into() - b).abs() <= 1e-5 * b.abs().max(1e-3)
    }

    fn assert_reductions(r: &TensorReductions, e: [f64; 12]) {
        let got = r.to_array();
        for (i, (g, e)) in got.iter().zip(e).enumerate() {
            // ‖m̂ − g‖ is exactly 0 in f64 at the first step; f32 leaves rounding noise.
            let ok = if e == 0.0 {
                g.abs() < 1e-6
            } else {
                close(*g, e)
            };
            assert!(ok, "reduction {i}: {g} vs {e}");
        }
    }

    /// Expected values from a direct f64 transcription of the spec §1 pseudo-code.
    #[test]
    fn two_steps_match_the_spec_computed_by_hand() {
        let h = Hyperparams {
            lr: 0.1,
            ombeta1: 0.1,
            ombeta2: 0.01,
            eps: 1e-6,
            wd: 0.01,
            clip_frac: 0.8,
            clip_ombeta: 0.01,
            lamb_ombeta: 0.05,
        };
        let mut ts = [
            tensor(&[1.0, -2.0], &[0.5, 1.0], false),
            tensor(&[0.5, 0.25, -0.5, 1.0], &[0.1, -0.2, 0.0, 0.3], true),
        ];
        let mut st = CiaoState::default();
        let mut red = [TensorReductions::default(); 2];
        let clipped = step(&mut ts, &h, &mut st, Some(&mut red))
            .unwrap()
            .clipped();
        // G = √(0.25 + 1 + 0.01 + 0.04 + 0.09) = 1.17898, clip 0.8·G / (G + 1e-6) < 1.
        assert!(clipped);
        assert!(close(st.rolling_max, 1.178_982_612_255_159_7));
        for (a, e) in ts[0]
            .param
            .iter()
            .zip([0.899_000_249_999_587, -2.097_999_875_000_050_4])
        {
            assert!(close(*a, e), "{a} vs {e}");
        }
        let e1 = [
            0.427_772_917_882_837_2,
            0.321_688_516_508_517_76,
            -0.499_640_656_813_608_64,
            0.927_412_975_800_608_9,
        ];
        for (a, e) in ts[1].param.iter().zip(e1) {
            assert!(close(*a, e), "{a} vs {e}");
        }
        assert!(close(ts[1].m[3], 0.023_999_979_643_482_956));
        assert!(close(ts[1].v[1], 0.159_999_864_289_886_38));
        assert!(close(ts[1].state.un_ema, 0.086_964_220_231_426_7));
        assert_eq!(
            (ts[0].state.un_ema, ts[0].state.un_bc),
            (0.0, 0.0),
            "vectors get no trust ratio"
        );
        assert_reductions(
            &red[0],
            [
                2.0,
                0.894_426_432_357_317_7,
                0.894_426_432_357_317_7,
                0.0,
                2.236_067_977_499_79,
                1.407_299_719_326_746,
                0.1,
                0.799_998_642_899_439_3,
                -1.318_798_681_409_763_4,
                1.187_996_992_356_156_2,
                2.0,
                -0.010_256_107_116_246_926,
            ],
        );
        assert_reductions(
            &red[1],
            [
                4.0,
                0.299_332_337_051_540_7,
                0.299_332_337_051_540_7,
                0.0,
                1.25,
                1.739_284_404_628_534,
                0.071_868_637_278_270_06,
                0.089_599_848_004_737_19,
                0.205_330_610_822_259_23,
                0.482_396_590_856_923_9,
                3.0,
                -5.285_903_423_328_096,
            ],
        );

        // Second step: a small gradient no longer reaches the decayed rolling max.
        ts[0].grad.copy_from_slice(&[0.05, -0.1]);
        ts[1].grad.copy_from_slice(&[0.01, 0.02, -0.03, 0.0]);
        let clipped = step(&mut ts, &h, &mut st, Some(&mut red))
            .unwrap()
            .clipped();
        assert!(!clipped);
        assert!(close(st.rolling_max, 1.167_192_786_132_608_1));
        for (a, e) in ts[0]
            .param
            .iter()
            .zip([0.843_609_090_385_214_7, -2.137_103_306_036_351])
        {
            assert!(close(*a, e), "{a} vs {e}");
        }
        let e1 = [
            0.379_962_522_271_923_84,
            0.357_276_439_047_958_25,
            -0.453_388_483_768_091_3,
            0.884_952_390_635_436_3,
        ];
        for (a, e) in ts[1].param.iter().zip(e1) {
            assert!(close(*a, e), "{a} vs {e}");
        }
        assert_reductions(
            &red[0],
            [
                2.0,
                0.111_803_398_874_989_5,
                0.391_211_978_709_898_77,
                0.457_417_724_404_757_36,
                2.282_499_709_747_966,
                0.678_030_890_316_629,
                0.1,
                -0.021_842_081_156_756_135,
                0.255_890_785_122_895_87,
                -0.011_407_851_229_114_675,
                2.0,
                -1.529_710_107_646_843_6,
            ],
        );
        assert_reductions(
            &red[1],
            [
                4.0,
                0.037_416_573_867_739_42,
                0.138_907_371_185_016_34,
                0.146_612_604_645_779_94,
                1.181_612_789_602_381_8,
                0.994_430_887_106_049,
                0.087_055_596_747_753_95,
                -0.000_399_999_035_743_929_74,
                0.024_546_808_516_721_14,
                0.013_254_870_907_718_107,
                4.0,
                -2.844_253_640_123_661,
            ],
        );
    }

    #[test]
    fn trust_ratio_is_floored_and_skipped_for_zero_parameters() {
        let h = Hyperparams {
            lr: 0.5,
            ..Hyperparams::INITIAL
        };
        let run = |param: [f32; 4]| {
            let mut red = [TensorReductions::default()];
            step(
                &mut [tensor(&param, &[1.0; 4], true)],
                &h,
                &mut CiaoState::default(),
                Some(&mut red),
            )
            .unwrap();
            red[0].lr_p
        };
        assert_eq!(run([0.0; 4]), 0.5, "‖p‖ = 0: no trust ratio");
        assert_eq!(
            run([1e-6; 4]),
            0.5 * TRUST_FLOOR,
            "tiny ‖p‖ / ‖u‖ is floored"
        );
    }

    #[test]
    fn reductions_feed_finite_inner_features() {
        let mut red = [TensorReductions::default()];
        let clipped = step(
            &mut [tensor(&[0.3; 6], &[0.2, -0.1, 0.4, 0.0, 0.1, -0.3], true)],
            &Hyperparams::INITIAL,
            &mut CiaoState::default(),
            Some(&mut red),
        )
        .unwrap()
        .clipped();
        let f = crate::reductions::inner_features(&red[0], clipped);
        assert!(f.iter().all(|x| x.is_finite()));
        // First step: m̂ = g exactly in exact arithmetic, so cos(g, m̂) = 1.
        assert!((f[6] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn mismatched_lengths_are_errors_that_change_nothing() {
        let h = Hyperparams::INITIAL;
        let mut ts = [
            tensor(&[1.0, 2.0], &[0.1, 0.2], false),
            tensor(&[3.0], &[0.3], false),
        ];
        let before = ts.clone();
        let mut st = CiaoState::default();
        // A reductions buffer longer than the tensors used to average default entries in.
        for n in [1, 3] {
            let mut red = [TensorReductions::default(); 3];
            assert_eq!(
                step(&mut ts, &h, &mut st, Some(&mut red[..n])),
                Err(Error::LengthMismatch {
                    which: "reductions",
                    tensor: 0,
                    found: n,
                    expected: 2
                })
            );
        }
        ts[1].m.push(0.0);
        let mut broken = ts.clone();
        assert_eq!(
            step(&mut broken, &h, &mut st, None),
            Err(Error::LengthMismatch {
                which: "m",
                tensor: 1,
                found: 2,
                expected: 1
            })
        );
        ts[1].m.pop();
        assert_eq!(ts, before);
        assert_eq!(broken[0], before[0]);
        assert_eq!(st, CiaoState::default());
    }

    #[test]
    fn a_non_finite_gradient_skips_the_step_and_keeps_the_rolling_max() {
        let h = Hyperparams::INITIAL;
        let mut st = CiaoState::default();
        let mut ts = [tensor(&[1.0, 2.0], &[0.1, 0.2], true)];
        assert!(step(&mut ts, &h, &mut st, None).unwrap().applied());
        let (after_one, st_one) = (ts.clone(), st);
        for bad in [f32::NAN, f32::INFINITY, 1e30] {
            ts[0].grad.copy_from_slice(&[0.1, bad]);
            let mut red = [TensorReductions::default()];
            assert_eq!(
                step(&mut ts, &h, &mut st, Some(&mut red)),
                Ok(StepOutcome::Skipped),
                "{bad}"
            );
            assert_eq!(ts[0].param, after_one[0].param);
            assert_eq!(
                (ts[0].m.clone(), ts[0].v.clone()),
                (after_one[0].m.clone(), after_one[0].v.clone())
            );
            assert_eq!(st, st_one, "the rolling max is untouched");
            assert_eq!(red[0], TensorReductions::default(), "no reductions written");
        }
        ts[0].grad.copy_from_slice(&[0.1, 0.2]);
        assert!(step(&mut ts, &h, &mut st, None).unwrap().applied());
        assert!(ts[0].param.iter().all(|p| p.is_finite()));
    }

    #[test]
    fn owned_tensors_and_borrowed_slots_take_the_same_step() {
        let h = Hyperparams::INITIAL;
        let mut owned = [tensor(
            &[0.5, -0.25, 1.0, 2.0],
            &[0.3, -0.1, 0.2, 0.4],
            true,
        )];
        let mut copy = owned[0].clone();
        let (mut a, mut b) = (CiaoState::default(), CiaoState::default());
        for _ in 0..3 {
            let x = step(&mut owned, &h, &mut a, None).unwrap();
            let slot = ParamSlot {
                param: &mut copy.param,
                grad: &mut copy.grad,
                m: &mut copy.m,
                v: &mut copy.v,
                state: &mut copy.state,
                is_matrix: true,
            };
            assert_eq!(step(&mut [slot], &h, &mut b, None).unwrap(), x);
            owned[0].grad.copy_from_slice(&[0.3, -0.1, 0.2, 0.4]);
            copy.grad.copy_from_slice(&[0.3, -0.1, 0.2, 0.4]);
        }
        assert_eq!(owned[0], copy);
    }

    /// A reproducible sequence in [−1, 1).
    fn noise(seed: u32, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `element_reductions` over a step's buffers gives [`step`]'s own reductions, for every
    /// length of the last chunk.
    #[test]
    fn element_reductions_agree_with_the_step() {
        let h = Hyperparams {
            wd: 0.01,
            ..Hyperparams::INITIAL
        };
        for n in (1..=20).chain([257, 1003]) {
            let mut ts = [tensor(&noise(1, n), &noise(2, n), true)];
            let mut st = CiaoState::default();
            let mut red = [TensorReductions::default()];
            for k in 0..3 {
                ts[0].grad.copy_from_slice(&noise(3 + k, n));
                let before = ts[0].param.clone();
                step(&mut ts, &h, &mut st, Some(&mut red)).unwrap();
                let t = &ts[0];
                let bc1 = t.state.bc1;
                let update: Vec<f32> = (t.m.iter().zip(&t.v).zip(&before))
                    .map(|((m, v), p)| (m / bc1) / (v + h.eps) + h.wd * p)
                    .collect();
                let buffers = StepBuffers {
                    grad: &t.grad,
                    m: &t.m,
                    v: &t.v,
                    update: &update,
                    param: &t.param,
                };
                let mut got = red[0];
                got.numel = 0;
                element_reductions(&buffers, bc1, h.eps, &mut got).unwrap();
                let (got, want) = (got.to_array(), red[0].to_array());
                for (i, (g, w)) in got.iter().zip(want).enumerate() {
                    // Sums of n float32 terms in a different order; ‖m̂ − g‖ is a difference.
                    let scale = if i == 3 {
                        1e-3
                    } else {
                        1e-5 * (n as f64).sqrt()
                    };
                    assert!(
                        (g - w).abs() <= scale * w.abs().max(1.0),
                        "n {n}, field {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn element_reductions_follow_logf_for_a_non_finite_update_and_check_lengths() {
        let (one, two) = ([1.0; 9], [2.0; 9]);
        let mut update = [0.5; 9];
        update[4] = f32::INFINITY;
        let b = StepBuffers {
            grad: &one,
            m: &one,
            v: &one,
            update: &update,
            param: &two,
        };
        let mut r = TensorReductions::default();
        element_reductions(&b, 1.0, 1e-8, &mut r).unwrap();
        assert_eq!(r.sum_log_abs_update, f32::INFINITY);
        assert_eq!(
            (r.numel, r.count_v_gt_eps, r.grad_dot_param),
            (9, 9.0, 18.0)
        );
        let short = StepBuffers { v: &one[..8], ..b };
        let before = r;
        assert_eq!(
            element_reductions(&short, 1.0, 1e-8, &mut r),
            Err(Error::LengthMismatch {
                which: "v",
                tensor: 0,
                found: 8,
                expected: 9
            })
        );
        assert_eq!(r, before);
    }
}
