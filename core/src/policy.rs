//! The policy network (spec §5), its action selection, and a small seeded PRNG.
//!
//! `obs → dense(PRE) + ReLU → layer-norm LSTM(H) → dense(POST) + ReLU → 40 logits`, split into
//! one categorical head per action (see [`crate::action::HEAD_SIZES`]). Sizes are const
//! generics, so a decision allocates nothing and every buffer lives on the stack.
//!
//! Layer-norm LSTM: `gates = LN_x(W_x·x) + LN_h(W_h·h) + b` (4H wide, gate order i, f, g, o),
//! `c' = σ(f)⊙c + σ(i)⊙tanh(g)`, `h' = σ(o)⊙tanh(LN_c(c'))`. Layer norms use ε = 1e-5 and the
//! biased variance, like `torch.nn.functional.layer_norm`. Inputs are normalised first:
//! `x̂ = clamp((x − mean) / sqrt(var + 1e-5), −clip, clip)`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::action::{Action, HEAD_OFFSETS, HEAD_SIZES, NUM_ACTION_LOGITS};
use crate::math::{clamp, finite_or_zero, non_negative, sigmoid_tanh, times_sigmoid};
use crate::observation::OBS_DIM;
use crate::weights::{
    GateMatrix, Matrix, Packed, PackedMatrix, Vector, deserialize_flat, serialize_flat,
};

/// Epsilon of every layer norm and of the input normalisation.
pub const NORM_EPS: f32 = 1e-5;

/// Input clip used by [`PolicyNet::neutral`].
pub const DEFAULT_INPUT_CLIP: f32 = 5.0;

/// The policy's weights and frozen input-normalisation statistics.
///
/// Field order is the file order; names in [`PolicyNet::for_each_param`] follow the trainer's
/// export names (`pre.w`, `lstm.wx`, ..., `norm.clip`).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyNet<const PRE: usize, const H: usize, const POST: usize> {
    /// `pre.w`, `[PRE][OBS_DIM]`.
    pub pre_w: PackedMatrix<PRE, OBS_DIM>,
    /// `pre.b`.
    pub pre_b: Vector<PRE>,
    /// `lstm.wx`, `[4H][PRE]`.
    pub lstm_wx: GateMatrix<H, PRE>,
    /// `lstm.wh`, `[4H][H]`.
    pub lstm_wh: GateMatrix<H, H>,
    /// `lstm.b`, `[4H]`.
    pub lstm_b: Matrix<4, H>,
    /// `lstm.ln_x.gain`, `[4H]`.
    pub ln_x_gain: Matrix<4, H>,
    /// `lstm.ln_x.bias`, `[4H]`.
    pub ln_x_bias: Matrix<4, H>,
    /// `lstm.ln_h.gain`, `[4H]`.
    pub ln_h_gain: Matrix<4, H>,
    /// `lstm.ln_h.bias`, `[4H]`.
    pub ln_h_bias: Matrix<4, H>,
    /// `lstm.ln_c.gain`, `[H]`.
    pub ln_c_gain: Vector<H>,
    /// `lstm.ln_c.bias`, `[H]`.
    pub ln_c_bias: Vector<H>,
    /// `post.w`, `[POST][H]`.
    pub post_w: PackedMatrix<POST, H>,
    /// `post.b`.
    pub post_b: Vector<POST>,
    /// `heads.w`, `[40][POST]`.
    pub heads_w: PackedMatrix<NUM_ACTION_LOGITS, POST>,
    /// `heads.b`.
    pub heads_b: Vector<NUM_ACTION_LOGITS>,
    /// `norm.mean`: frozen per-input mean.
    pub norm_mean: Vector<OBS_DIM>,
    /// `norm.var`: frozen per-input variance (≥ 0).
    pub norm_var: Vector<OBS_DIM>,
    /// `norm.clip`: clip of the normalised inputs (> 0).
    pub norm_clip: f32,
}

/// Tiny preset: 32/32/32.
pub type Tiny = PolicyNet<32, 32, 32>;
/// Small preset: 64/64/64.
pub type Small = PolicyNet<64, 64, 64>;
/// Medium preset: 128/128/128.
pub type Medium = PolicyNet<128, 128, 128>;
/// The paper's size: 256/256/256.
pub type Paper = PolicyNet<256, 256, 256>;

/// Whether `x` may be a value of the stored tensor `name`: finite, and ≥ 0 for a variance and
/// > 0 for the input clip ([`PolicyNet::is_valid`] over a whole network).
pub(crate) fn valid_param(name: &str, x: f32) -> bool {
    x.is_finite()
        && match name {
            "norm.var" => x >= 0.0,
            "norm.clip" => x > 0.0,
            _ => true,
        }
}

/// The recurrent state carried between decisions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LstmState<const H: usize> {
    /// Hidden state.
    pub h: [f32; H],
    /// Cell state.
    pub c: [f32; H],
}

impl<const H: usize> LstmState<H> {
    /// Zeros, the state at the start of a run.
    pub const ZERO: Self = Self {
        h: [0.0; H],
        c: [0.0; H],
    };
}

impl<const H: usize> Default for LstmState<H> {
    /// [`LstmState::ZERO`].
    fn default() -> Self {
        Self::ZERO
    }
}

impl<const H: usize> Serialize for LstmState<H> {
    /// `h` then `c`, as `2H` flat `f32`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_flat(serializer, 2 * H, self.h.iter().chain(&self.c))
    }
}

impl<'de, const H: usize> Deserialize<'de> for LstmState<H> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = Self::default();
        deserialize_flat(
            deserializer,
            2 * H,
            state.h.iter_mut().chain(state.c.iter_mut()),
        )?;
        Ok(state)
    }
}

/// `out = W·x + b`.
fn affine<const R: usize, const C: usize>(
    w: &PackedMatrix<R, C>,
    b: &Vector<R>,
    x: &[f32; C],
) -> [f32; R] {
    let mut out = [0.0; R];
    w.matvec_into(x, &mut out);
    for (o, b) in out.iter_mut().zip(&b.0) {
        *o += b;
    }
    out
}

/// `out = ReLU(W·x + b)`.
fn affine_relu<const R: usize, const C: usize>(
    w: &PackedMatrix<R, C>,
    b: &Vector<R>,
    x: &[f32; C],
) -> [f32; R] {
    affine(w, b, x).map(non_negative)
}

/// Running sums of [`lane_sum`].
const SUM_LANES: usize = 8;

/// `Σ f(xᵢ)` in a fixed order that vectorises: eight running sums over the chunks of eight,
/// combined pairwise, then the remaining elements in order. (A single running sum is a chain
/// of dependent additions: the two in each layer norm took a tenth of a host decision.)
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let (chunks, tail) = x.as_chunks::<SUM_LANES>();
    let mut acc = [0.0; SUM_LANES];
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    let mut total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
    for &v in tail {
        total += f(v);
    }
    total
}

/// The mean and `1 / sqrt(var + ε)` (biased variance) of `x`: what a layer norm applies as
/// `(x − mean) · inv · gain + bias`.
fn norm_stats(x: &[f32]) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / libm::sqrtf(var + NORM_EPS))
}

impl<const PRE: usize, const H: usize, const POST: usize> PolicyNet<PRE, H, POST> {
    /// Number of stored numbers (weights, biases, gains, normalisation statistics, clip).
    pub const PARAMS: usize = crate::format::param_count(PRE, H, POST);

    /// Multiply-accumulates of one [`PolicyNet::forward`] (the four dense products and the two
    /// gate products).
    pub const MACS: usize =
        OBS_DIM * PRE + 4 * H * PRE + 4 * H * H + POST * H + NUM_ACTION_LOGITS * POST;

    /// Floating-point operations of one [`PolicyNet::forward`]: 2 per multiply-accumulate plus
    /// the element-wise work, counting each add, multiply, compare or transcendental as 1
    /// (input normalisation 4 per input, bias + ReLU 2 per dense output, the two 4H layer norms
    /// 7 per element, the gate sum 2 per element, the cell and hidden updates and their layer
    /// norm 16 per unit).
    pub const FLOPS: usize = 2 * Self::MACS
        + 4 * OBS_DIM
        + 2 * PRE
        + 2 * POST
        + NUM_ACTION_LOGITS
        + 2 * 7 * 4 * H
        + 2 * 4 * H
        + 16 * H;

    /// Zero weights, unit layer-norm gains, zero input mean, unit input variance and clip
    /// [`DEFAULT_INPUT_CLIP`]: every logit is 0 (uniform heads). The starting point for filling
    /// in trained weights with [`PolicyNet::for_each_param_mut`].
    pub const fn neutral() -> Self {
        Self {
            pre_w: PackedMatrix::zeroed(),
            pre_b: Vector::zeroed(),
            lstm_wx: GateMatrix::zeroed(),
            lstm_wh: GateMatrix::zeroed(),
            lstm_b: Matrix::zeroed(),
            ln_x_gain: Matrix::splat(1.0),
            ln_x_bias: Matrix::zeroed(),
            ln_h_gain: Matrix::splat(1.0),
            ln_h_bias: Matrix::zeroed(),
            ln_c_gain: Vector::splat(1.0),
            ln_c_bias: Vector::zeroed(),
            post_w: PackedMatrix::zeroed(),
            post_b: Vector::zeroed(),
            heads_w: PackedMatrix::zeroed(),
            heads_b: Vector::zeroed(),
            norm_mean: Vector::zeroed(),
            norm_var: Vector::splat(1.0),
            norm_clip: DEFAULT_INPUT_CLIP,
        }
    }

    /// Calls `f(name, values)` for every stored tensor in file order, with row-major values: a
    /// vector in one call, a weight matrix stored in panels ([`Packed`]) one row per call.
    pub fn for_each_param(&self, mut f: impl FnMut(&'static str, &[f32])) {
        self.pre_w.for_each_row(|row| f("pre.w", row));
        f("pre.b", self.pre_b.as_flat());
        self.lstm_wx.for_each_row(|row| f("lstm.wx", row));
        self.lstm_wh.for_each_row(|row| f("lstm.wh", row));
        f("lstm.b", self.lstm_b.as_flat());
        f("lstm.ln_x.gain", self.ln_x_gain.as_flat());
        f("lstm.ln_x.bias", self.ln_x_bias.as_flat());
        f("lstm.ln_h.gain", self.ln_h_gain.as_flat());
        f("lstm.ln_h.bias", self.ln_h_bias.as_flat());
        f("lstm.ln_c.gain", self.ln_c_gain.as_flat());
        f("lstm.ln_c.bias", self.ln_c_bias.as_flat());
        self.post_w.for_each_row(|row| f("post.w", row));
        f("post.b", self.post_b.as_flat());
        self.heads_w.for_each_row(|row| f("heads.w", row));
        f("heads.b", self.heads_b.as_flat());
        f("norm.mean", self.norm_mean.as_flat());
        f("norm.var", self.norm_var.as_flat());
        f("norm.clip", core::slice::from_ref(&self.norm_clip));
    }

    /// Calls `f(name, values)` once for every stored tensor in file order, with all its values
    /// row-major (to fill in exported weights). A weight matrix is rearranged into row-major
    /// order for the call and packed again after it ([`Packed::with_row_major`]).
    pub fn for_each_param_mut(&mut self, mut f: impl FnMut(&'static str, &mut [f32])) {
        self.pre_w.with_row_major(|v| f("pre.w", v));
        f("pre.b", self.pre_b.as_flat_mut());
        self.lstm_wx.with_row_major(|v| f("lstm.wx", v));
        self.lstm_wh.with_row_major(|v| f("lstm.wh", v));
        f("lstm.b", self.lstm_b.as_flat_mut());
        f("lstm.ln_x.gain", self.ln_x_gain.as_flat_mut());
        f("lstm.ln_x.bias", self.ln_x_bias.as_flat_mut());
        f("lstm.ln_h.gain", self.ln_h_gain.as_flat_mut());
        f("lstm.ln_h.bias", self.ln_h_bias.as_flat_mut());
        f("lstm.ln_c.gain", self.ln_c_gain.as_flat_mut());
        f("lstm.ln_c.bias", self.ln_c_bias.as_flat_mut());
        self.post_w.with_row_major(|v| f("post.w", v));
        f("post.b", self.post_b.as_flat_mut());
        self.heads_w.with_row_major(|v| f("heads.w", v));
        f("heads.b", self.heads_b.as_flat_mut());
        f("norm.mean", self.norm_mean.as_flat_mut());
        f("norm.var", self.norm_var.as_flat_mut());
        f("norm.clip", core::slice::from_mut(&mut self.norm_clip));
    }

    /// Fills every stored number from `values` in file order (as [`PolicyNet::for_each_param`]
    /// lists them), writing weight matrices straight into their panels: unlike
    /// [`PolicyNet::for_each_param_mut`] it needs no scratch, which matters on a small stack.
    pub(crate) fn fill_in_file_order(&mut self, values: &mut impl Iterator<Item = f32>) {
        fn copy(dst: &mut [f32], values: &mut impl Iterator<Item = f32>) {
            dst.iter_mut().zip(values).for_each(|(d, v)| *d = v);
        }
        self.pre_w.fill_row_major(values);
        copy(self.pre_b.as_flat_mut(), values);
        self.lstm_wx.fill_row_major(values);
        self.lstm_wh.fill_row_major(values);
        for gates in [
            &mut self.lstm_b,
            &mut self.ln_x_gain,
            &mut self.ln_x_bias,
            &mut self.ln_h_gain,
            &mut self.ln_h_bias,
        ] {
            copy(gates.as_flat_mut(), values);
        }
        copy(self.ln_c_gain.as_flat_mut(), values);
        copy(self.ln_c_bias.as_flat_mut(), values);
        self.post_w.fill_row_major(values);
        copy(self.post_b.as_flat_mut(), values);
        self.heads_w.fill_row_major(values);
        copy(self.heads_b.as_flat_mut(), values);
        copy(self.norm_mean.as_flat_mut(), values);
        copy(self.norm_var.as_flat_mut(), values);
        copy(core::slice::from_mut(&mut self.norm_clip), values);
    }

    /// Whether every number is finite, every variance ≥ 0 and the clip > 0 (what a loaded file
    /// must satisfy for [`PolicyNet::forward`] to stay finite on finite inputs).
    pub fn is_valid(&self) -> bool {
        let mut valid = true;
        self.for_each_param(|name, v| valid &= v.iter().all(|&x| valid_param(name, x)));
        valid
    }

    /// `1 / sqrt(var + 1e-5)` per input: the scale of the input normalisation. A
    /// [`crate::FrozenPolicy`] computes it once; [`PolicyNet::forward`] on every call.
    pub fn input_scale(&self) -> [f32; OBS_DIM] {
        self.norm_var.0.map(|v| 1.0 / libm::sqrtf(v + NORM_EPS))
    }

    /// The normalised input `clamp((x − mean) · scale, −clip, clip)` with `scale` from
    /// [`PolicyNet::input_scale`]; a non-finite input counts as 0 after normalisation.
    pub fn normalise(&self, obs_raw: &[f32; OBS_DIM], scale: &[f32; OBS_DIM]) -> [f32; OBS_DIM] {
        let clip = self.norm_clip;
        let mut out = [0.0; OBS_DIM];
        for (((o, x), m), s) in out
            .iter_mut()
            .zip(obs_raw)
            .zip(&self.norm_mean.0)
            .zip(scale)
        {
            let v = (x - m) * s;
            // Most inputs are inside the clip, which also makes them finite: one comparison.
            *o = if v.abs() <= clip {
                v
            } else {
                clamp(finite_or_zero(v), -clip, clip)
            };
        }
        out
    }

    /// One decision step: normalises `obs_raw`, advances `state`, returns the 40 logits.
    pub fn forward(
        &self,
        obs_raw: &[f32; OBS_DIM],
        state: &mut LstmState<H>,
    ) -> [f32; NUM_ACTION_LOGITS] {
        self.forward_normalised(&self.normalise(obs_raw, &self.input_scale()), state)
    }

    /// [`PolicyNet::forward`] after the input normalisation: `x` is the output of
    /// [`PolicyNet::normalise`].
    pub fn forward_normalised(
        &self,
        x: &[f32; OBS_DIM],
        state: &mut LstmState<H>,
    ) -> [f32; NUM_ACTION_LOGITS] {
        let pre = affine_relu(&self.pre_w, &self.pre_b, x);

        // The gate products, the four gate blocks as one `4H`-row product each; then
        // `LN_x(W_x·x) + (LN_h(W_h·h) + b)`, both layer norms and the sum in one pass, in place
        // of the first product.
        let mut gates = [[0.0; H]; 4];
        self.lstm_wx.matvec_into(&pre, gates.as_flattened_mut());
        let mut gh = [[0.0; H]; 4];
        self.lstm_wh.matvec_into(&state.h, gh.as_flattened_mut());
        let gh = gh.as_flattened();
        let ((mean_x, inv_x), (mean_h, inv_h)) = (norm_stats(gates.as_flattened()), norm_stats(gh));
        for ((((gate, h), b), (gain_x, bias_x)), (gain_h, bias_h)) in gates
            .as_flattened_mut()
            .iter_mut()
            .zip(gh)
            .zip(self.lstm_b.as_flat())
            .zip(
                self.ln_x_gain
                    .as_flat()
                    .iter()
                    .zip(self.ln_x_bias.as_flat()),
            )
            .zip(
                self.ln_h_gain
                    .as_flat()
                    .iter()
                    .zip(self.ln_h_bias.as_flat()),
            )
        {
            let x = (*gate - mean_x) * inv_x * gain_x + bias_x;
            *gate = x + ((h - mean_h) * inv_h * gain_h + bias_h + b);
        }
        let [i, f, g, o] = &gates;

        // The new state is written in place: copies of it were a tenth of the M4F's network
        // outside the products.
        for (((c, i), f), g) in state.c.iter_mut().zip(i).zip(f).zip(g) {
            *c = times_sigmoid(*c, *f) + sigmoid_tanh(*i, *g);
        }
        let (mean_c, inv_c) = norm_stats(&state.c);
        for ((((h, o), c), gain), bias) in state
            .h
            .iter_mut()
            .zip(o)
            .zip(&state.c)
            .zip(&self.ln_c_gain.0)
            .zip(&self.ln_c_bias.0)
        {
            *h = sigmoid_tanh(*o, (c - mean_c) * inv_c * gain + bias);
        }

        let post = affine_relu(&self.post_w, &self.post_b, &state.h);
        affine(&self.heads_w, &self.heads_b, &post)
    }
}

/// Each head's slice of the logits, in head order (`None` only if the tables were inconsistent).
fn head_logits(logits: &[f32; NUM_ACTION_LOGITS]) -> impl Iterator<Item = Option<&[f32]>> {
    HEAD_OFFSETS
        .iter()
        .zip(HEAD_SIZES)
        .map(move |(&o, n)| logits.get(o..o + n))
}

/// Index of the largest logit (first on ties, NaN ignored); `None` if none is a number.
fn argmax(head: &[f32]) -> Option<usize> {
    // `best` stays NaN until the first number, which the test then admits whatever it is: two
    // float comparisons per logit (`v > best || best.is_nan()` is one, "above or unordered"),
    // where an `Option` of the best pair cost some thirty instructions on the M4F.
    let (mut index, mut best) = (None, f32::NAN);
    for (i, &v) in head.iter().enumerate() {
        if !v.is_nan() && (v > best || best.is_nan()) {
            (index, best) = (Some(i), v);
        }
    }
    index
}

fn choice(index: Option<usize>, hold: u8) -> u8 {
    index.and_then(|i| u8::try_from(i).ok()).unwrap_or(hold)
}

/// The most likely choice of every head; a head whose logits are all NaN holds.
pub fn greedy(logits: &[f32; NUM_ACTION_LOGITS]) -> Action {
    let mut choices = Action::HOLD.choices;
    for (c, head) in choices.iter_mut().zip(head_logits(logits)) {
        *c = choice(head.and_then(argmax), *c);
    }
    Action { choices }
}

/// Samples every head from its softmax with `rng` (one draw per head, always, so the stream
/// stays aligned); a head whose logits give no finite distribution falls back to its argmax.
pub fn sample(logits: &[f32; NUM_ACTION_LOGITS], rng: &mut Rng) -> Action {
    let mut choices = Action::HOLD.choices;
    for (c, head) in choices.iter_mut().zip(head_logits(logits)) {
        let u = rng.next_f32();
        let Some(head) = head else { continue };
        let max = head.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = head.iter().map(|l| libm::expf(l - max)).sum();
        let mut picked = None;
        if total.is_finite() && total > 0.0 {
            let target = u * total;
            let mut cumulative = 0.0;
            for (i, l) in head.iter().enumerate() {
                cumulative += libm::expf(l - max);
                if target < cumulative {
                    picked = Some(i);
                    break;
                }
            }
            // Rounding can leave `target` at the very top: take the last choice.
            picked = picked.or(head.len().checked_sub(1));
        }
        *c = choice(picked.or_else(|| argmax(head)), *c);
    }
    Action { choices }
}

/// `ln π(a)`: the sum over heads of the log-softmax at the chosen index; −∞ for an out of range
/// choice.
pub fn log_prob(logits: &[f32; NUM_ACTION_LOGITS], action: &Action) -> f32 {
    let mut total = 0.0;
    for (&c, head) in action.choices.iter().zip(head_logits(logits)) {
        let Some(chosen) = head.and_then(|h| h.get(usize::from(c))) else {
            return f32::NEG_INFINITY;
        };
        let head = head.unwrap_or_default();
        let max = head.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = head.iter().map(|l| libm::expf(l - max)).sum();
        total += chosen - max - libm::logf(sum);
    }
    total
}

/// SplitMix64: a small, fast, seedable PRNG with a 64-bit state (no_std, no dependencies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (any value, including 0).
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform `f32` in [0, 1) with 24 random bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }
}

/// A network with small seeded random weights, valid statistics and gains near 1 (for tests).
#[cfg(test)]
pub(crate) fn random_net<const PRE: usize, const H: usize, const POST: usize>(
    seed: u64,
) -> PolicyNet<PRE, H, POST> {
    let mut rng = Rng::new(seed);
    let mut net = PolicyNet::neutral();
    net.for_each_param_mut(|name, values| {
        for v in values.iter_mut() {
            let u = rng.next_f32() * 2.0 - 1.0;
            *v = match name {
                "norm.var" => 0.5 + u.abs() * 2.0,
                "norm.clip" => 3.0,
                n if n.ends_with("gain") => 1.0 + 0.3 * u,
                _ => u * 0.5,
            };
        }
    });
    net
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    type Net = PolicyNet<5, 3, 4>;

    /// A direct f64 transcription of the spec's network, written independently of `forward`.
    fn reference(net: &Net, obs: &[f32; OBS_DIM], h: &mut [f64], c: &mut [f64]) -> Vec<f64> {
        let flat = |name: &str| {
            let mut out = Vec::new();
            net.for_each_param(|n, v| {
                if n == name {
                    out.extend(v.iter().map(|&x| x as f64));
                }
            });
            out
        };
        let dense = |w: &[f64], b: &[f64], x: &[f64]| -> Vec<f64> {
            (0..b.len())
                .map(|r| b[r] + (0..x.len()).map(|k| w[r * x.len() + k] * x[k]).sum::<f64>())
                .collect()
        };
        let ln = |x: &[f64], g: &[f64], b: &[f64]| -> Vec<f64> {
            let n = x.len() as f64;
            let m = x.iter().sum::<f64>() / n;
            let v = x.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / n;
            (0..x.len())
                .map(|i| (x[i] - m) / (v + 1e-5).sqrt() * g[i] + b[i])
                .collect()
        };
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let (mean, var, clip) = (flat("norm.mean"), flat("norm.var"), flat("norm.clip")[0]);
        let x: Vec<f64> = (0..OBS_DIM)
            .map(|i| ((obs[i] as f64 - mean[i]) / (var[i] + 1e-5).sqrt()).clamp(-clip, clip))
            .collect();
        let pre: Vec<f64> = dense(&flat("pre.w"), &flat("pre.b"), &x)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        let zeros = vec_zeros(12);
        let gx = ln(
            &dense(&flat("lstm.wx"), &zeros, &pre),
            &flat("lstm.ln_x.gain"),
            &flat("lstm.ln_x.bias"),
        );
        let gh = ln(
            &dense(&flat("lstm.wh"), &zeros, h),
            &flat("lstm.ln_h.gain"),
            &flat("lstm.ln_h.bias"),
        );
        let b = flat("lstm.b");
        let gates: Vec<f64> = (0..12).map(|k| gx[k] + gh[k] + b[k]).collect();
        for j in 0..3 {
            let (i, f, g) = (gates[j], gates[3 + j], gates[6 + j]);
            c[j] = sig(f) * c[j] + sig(i) * g.tanh();
        }
        let cn = ln(c, &flat("lstm.ln_c.gain"), &flat("lstm.ln_c.bias"));
        for j in 0..3 {
            h[j] = sig(gates[9 + j]) * cn[j].tanh();
        }
        let post: Vec<f64> = dense(&flat("post.w"), &flat("post.b"), h)
            .iter()
            .map(|v| v.max(0.0))
            .collect();
        dense(&flat("heads.w"), &flat("heads.b"), &post)
    }

    fn vec_zeros(n: usize) -> Vec<f64> {
        std::vec![0.0; n]
    }

    #[test]
    fn forward_matches_an_independent_f64_reference_over_several_steps() {
        let net = random_net(7);
        let mut rng = Rng::new(99);
        let mut state = LstmState::<3>::default();
        let (mut h, mut c) = (vec_zeros(3), vec_zeros(3));
        for _ in 0..5 {
            let mut obs = [0.0; OBS_DIM];
            for o in obs.iter_mut() {
                *o = rng.next_f32() * 8.0 - 4.0;
            }
            let logits = net.forward(&obs, &mut state);
            let expected = reference(&net, &obs, &mut h, &mut c);
            for (a, b) in logits.iter().zip(&expected) {
                assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
            }
            for (a, b) in state.h.iter().zip(&h) {
                assert!((*a as f64 - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn neutral_net_gives_uniform_logits_and_counts_params() {
        let net = Net::neutral();
        assert!(net.is_valid());
        let mut state = LstmState::default();
        assert_eq!(
            net.forward(&[1.0; OBS_DIM], &mut state),
            [0.0; NUM_ACTION_LOGITS]
        );
        let mut count = 0;
        net.for_each_param(|_, v| count += v.len());
        assert_eq!(count, Net::PARAMS);
    }

    #[test]
    fn normalisation_clamps_and_zeroes_non_finite_inputs() {
        let mut net = Net::neutral();
        net.norm_mean.0[0] = 1.0;
        net.norm_var.0[0] = 4.0 - 1e-5;
        let mut obs = [0.0; OBS_DIM];
        obs[0] = 5.0;
        obs[1] = 100.0;
        obs[2] = f32::NAN;
        let x = net.normalise(&obs, &net.input_scale());
        assert_eq!(&x[..3], &[2.0, DEFAULT_INPUT_CLIP, 0.0]);
    }

    #[test]
    fn invalid_statistics_are_detected() {
        let mut net = Net::neutral();
        net.norm_var.0[3] = -1.0;
        assert!(!net.is_valid());
        let mut net = Net::neutral();
        net.lstm_wh.set(3, 2, f32::INFINITY); // gate f, unit 0, input 2

        assert!(!net.is_valid());
        let mut net = Net::neutral();
        net.norm_clip = 0.0;
        assert!(!net.is_valid());
    }

    #[test]
    fn greedy_picks_the_first_maximum_per_head() {
        let mut logits = [0.0; NUM_ACTION_LOGITS];
        logits[5] = 2.0; // lr head: choice 5
        logits[7 + 2] = 1.0; // wd: 2
        logits[10] = f32::NAN; // eps: NaN ignored, ties at 0 → first finite = 1
        logits[19 + 4] = -1.0; // clip_frac: 0
        logits[30 + 9] = 3.0; // restart: 9
        let a = greedy(&logits);
        assert_eq!(a.choices, [5, 2, 1, 0, 0, 0, 0, 0, 9]);
        let all_nan = [f32::NAN; NUM_ACTION_LOGITS];
        assert_eq!(greedy(&all_nan), Action::HOLD);
    }

    #[test]
    fn log_prob_is_the_sum_of_head_log_softmaxes() {
        let uniform = [0.0; NUM_ACTION_LOGITS];
        let expected: f32 = HEAD_SIZES.iter().map(|&n| -(n as f32).ln()).sum();
        assert!((log_prob(&uniform, &Action::HOLD) - expected).abs() < 1e-5);
        let mut logits = uniform;
        logits[0] = 2.0_f32.ln(); // lr head: weights 2,1,1,1,1,1,1 → p(0) = 2/8
        let mut a = Action::HOLD;
        a.choices[0] = 0;
        let rest: f32 = HEAD_SIZES[1..].iter().map(|&n| -(n as f32).ln()).sum();
        assert!((log_prob(&logits, &a) - (0.25_f32.ln() + rest)).abs() < 1e-5);
        a.choices[2] = 3;
        assert_eq!(log_prob(&logits, &a), f32::NEG_INFINITY);
    }

    #[test]
    fn sampling_follows_the_softmax_and_is_reproducible() {
        let mut logits = [0.0; NUM_ACTION_LOGITS];
        logits[7] = 3.0_f32.ln(); // wd head: p = 3/5, 1/5, 1/5
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 3];
        let n = 20_000;
        for _ in 0..n {
            let a = sample(&logits, &mut rng);
            counts[a.choices[1] as usize] += 1;
        }
        let p0 = counts[0] as f32 / n as f32;
        assert!((p0 - 0.6).abs() < 0.02, "{p0}");
        let (mut r1, mut r2) = (Rng::new(42), Rng::new(42));
        for _ in 0..10 {
            assert_eq!(sample(&logits, &mut r1), sample(&logits, &mut r2));
        }
        // A head with an infinite logit falls back to its argmax.
        logits[0] = f32::INFINITY;
        assert_eq!(sample(&logits, &mut r1).choices[0], 0);
    }

    #[test]
    fn rng_matches_the_splitmix64_reference_and_stays_in_range() {
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        for _ in 0..1000 {
            let u = r.next_f32();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn lstm_state_round_trips_through_postcard() {
        let mut s = LstmState::<40>::default();
        for (i, (h, c)) in s.h.iter_mut().zip(s.c.iter_mut()).enumerate() {
            *h = i as f32;
            *c = -(i as f32);
        }
        let mut buf = [0u8; 400];
        let bytes = postcard::to_slice(&s, &mut buf).unwrap();
        assert_eq!(bytes.len(), 320);
        assert_eq!(postcard::from_bytes::<LstmState<40>>(bytes).unwrap(), s);
        assert!(postcard::from_bytes::<LstmState<40>>(&bytes[..300]).is_err());
    }
}
