//! The spec §5 policy network in tch, built from primitives so that it is exactly the function the
//! core evaluates (core-api.md "policy"): input normalisation → dense + ReLU → layer-norm LSTM →
//! dense + ReLU → linear head. The actor's head gives the 40 action logits; the critic is a twin
//! whose input is the observation plus privileged inputs and whose head gives one value.
//!
//! Everything runs batched over `[batch, time, features]`; acting is the same code with
//! batch = time = 1.

use lhopt_core::{NUM_ACTION_LOGITS, OBS_DIM};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Layer-norm epsilon of the core (biased variance, like `torch.layer_norm`).
const LN_EPS: f64 = 1e-5;
/// Input-normalisation epsilon of the core: x̂ = clamp((x − μ)/sqrt(σ² + 1e-5), −clip, clip).
const NORM_EPS: f64 = 1e-5;

/// Layer sizes; the core's presets are `Tiny` (32), `Small` (64), `Medium` (128), `Paper` (256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySizes {
    /// Width of the dense layer before the LSTM.
    pub pre: usize,
    /// LSTM hidden size.
    pub hidden: usize,
    /// Width of the dense layer after the LSTM.
    pub post: usize,
}

impl PolicySizes {
    /// The core's `Tiny` preset.
    pub const TINY: Self = Self::uniform(32);
    /// The core's `Small` preset.
    pub const SMALL: Self = Self::uniform(64);
    /// The core's `Medium` preset.
    pub const MEDIUM: Self = Self::uniform(128);
    /// The core's `Paper` preset.
    pub const PAPER: Self = Self::uniform(256);

    const fn uniform(n: usize) -> Self {
        Self {
            pre: n,
            hidden: n,
            post: n,
        }
    }

    /// The preset with this (case-insensitive) name.
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tiny" => Some(Self::TINY),
            "small" => Some(Self::SMALL),
            "medium" => Some(Self::MEDIUM),
            "paper" => Some(Self::PAPER),
            _ => None,
        }
    }
}

/// Running mean and variance over a stream of vectors (Chan et al. parallel merge, in f64).
/// Serves the input normalisation and the value-target normalisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningMoments {
    /// Number of vectors seen.
    pub count: f64,
    /// Per-coordinate mean.
    pub mean: Vec<f64>,
    /// Per-coordinate sum of squared deviations.
    pub m2: Vec<f64>,
}

impl RunningMoments {
    /// Empty statistics of `dim` coordinates (mean 0, variance 1 until data arrives).
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Merges a batch of rows, each of length `dim`, given flattened.
    pub fn update(&mut self, rows: &[f32]) {
        let dim = self.mean.len();
        let n = (rows.len() / dim) as f64;
        if n == 0.0 {
            return;
        }
        for (j, (mean, m2)) in self.mean.iter_mut().zip(&mut self.m2).enumerate() {
            let col = rows.iter().skip(j).step_by(dim).map(|&x| x as f64);
            let bmean = col.clone().sum::<f64>() / n;
            let bm2: f64 = col.map(|x| (x - bmean).powi(2)).sum();
            let total = self.count + n;
            let delta = bmean - *mean;
            *mean += delta * n / total;
            *m2 += bm2 + delta * delta * self.count * n / total;
        }
        self.count += n;
    }

    /// Population variance per coordinate (1 before any data, so an untrained net sees raw inputs).
    pub fn var(&self) -> Vec<f64> {
        if self.count == 0.0 {
            return vec![1.0; self.mean.len()];
        }
        self.m2.iter().map(|m2| m2 / self.count).collect()
    }
}

/// Frozen-at-use input statistics: x̂ = clamp((x − mean)/sqrt(var + 1e-5), −clip, clip). The
/// tensors are not trained by gradient; the learner copies [`RunningMoments`] into them.
#[derive(Debug)]
struct InputNorm {
    mean: Tensor,
    var: Tensor,
    clip: f64,
}

impl InputNorm {
    fn new(p: &nn::Path, dim: usize, clip: f64) -> Self {
        Self {
            mean: p.zeros_no_train("mean", &[dim as i64]),
            var: p.ones_no_train("var", &[dim as i64]),
            clip,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        ((x - &self.mean) / (&self.var + NORM_EPS).sqrt()).clamp(-self.clip, self.clip)
    }

    fn set(&mut self, m: &RunningMoments) {
        let _guard = tch::no_grad_guard();
        let dev = self.mean.device();
        let mean: Vec<f32> = m.mean.iter().map(|&x| x as f32).collect();
        let var: Vec<f32> = m.var().iter().map(|&x| x as f32).collect();
        self.mean.copy_(&Tensor::from_slice(&mean).to_device(dev));
        self.var.copy_(&Tensor::from_slice(&var).to_device(dev));
    }
}

/// LSTM state `(h, c)`, each `[batch, hidden]`.
#[derive(Debug)]
pub struct LstmState {
    /// Hidden output.
    pub h: Tensor,
    /// Cell.
    pub c: Tensor,
}

impl LstmState {
    /// The all-zero state every episode starts from.
    pub fn zeros(batch: usize, hidden: usize, device: Device) -> Self {
        let z = Tensor::zeros([batch as i64, hidden as i64], (Kind::Float, device));
        Self {
            h: z.shallow_clone(),
            c: z,
        }
    }

    /// States given as flat rows of `hidden` floats (h and c), stacked into a batch.
    pub fn from_rows(h: &[f32], c: &[f32], hidden: usize, device: Device) -> Self {
        let shape = [(h.len() / hidden) as i64, hidden as i64];
        Self {
            h: Tensor::from_slice(h).view(shape).to_device(device),
            c: Tensor::from_slice(c).view(shape).to_device(device),
        }
    }

    /// Batch row 0 as plain vectors `(h, c)`.
    pub fn row0(&self) -> (Vec<f32>, Vec<f32>) {
        let get = |t: &Tensor| {
            Vec::<f32>::try_from(t.get(0).to_device(Device::Cpu).contiguous()).unwrap_or_default()
        };
        (get(&self.h), get(&self.c))
    }
}

/// Layer-norm LSTM: gates = LN_x(Wx·x) + LN_h(Wh·h) + b, split i, f, g, o;
/// c' = σ(f)c + σ(i)tanh(g); h' = σ(o)tanh(LN_c(c')).
#[derive(Debug)]
struct LnLstm {
    wx: Tensor,
    wh: Tensor,
    b: Tensor,
    ln_x: nn::LayerNorm,
    ln_h: nn::LayerNorm,
    ln_c: nn::LayerNorm,
}

impl LnLstm {
    fn new(p: &nn::Path, input: usize, hidden: usize) -> Self {
        let (i, h, g) = (input as i64, hidden as i64, 4 * hidden as i64);
        let bound = 1.0 / (hidden as f64).sqrt();
        let uniform = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let ln = |name: &str, n: i64| {
            nn::layer_norm(
                p / name,
                vec![n],
                nn::LayerNormConfig {
                    eps: LN_EPS,
                    ..Default::default()
                },
            )
        };
        // Forget-gate bias 1: remember by default at the start of training.
        let b = p.zeros("b", &[g]);
        tch::no_grad(|| {
            let _ = b.narrow(0, h, h).fill_(1.0);
        });
        Self {
            wx: p.var("wx", &[g, i], uniform),
            wh: p.var("wh", &[g, h], uniform),
            b,
            ln_x: ln("ln_x", g),
            ln_h: ln("ln_h", g),
            ln_c: ln("ln_c", h),
        }
    }

    /// Runs over `xs: [batch, time, input]` from `state`; returns `[batch, time, hidden]` and the
    /// final state.
    fn seq(&self, xs: &Tensor, state: &LstmState) -> (Tensor, LstmState) {
        // The input half of the gates does not depend on the recurrence: one batched matmul.
        let gx = self.ln_x.forward(&xs.matmul(&self.wx.tr())) + &self.b;
        let (mut h, mut c) = (state.h.shallow_clone(), state.c.shallow_clone());
        let mut outs = Vec::with_capacity(xs.size()[1] as usize);
        for t in 0..xs.size()[1] {
            let gates = gx.select(1, t) + self.ln_h.forward(&h.matmul(&self.wh.tr()));
            let g = gates.chunk(4, -1);
            c = g[1].sigmoid() * &c + g[0].sigmoid() * g[2].tanh();
            h = g[3].sigmoid() * self.ln_c.forward(&c).tanh();
            outs.push(h.shallow_clone());
        }
        (Tensor::stack(&outs, 1), LstmState { h, c })
    }
}

/// One recurrent network of spec §5 with its own input statistics and output width.
#[derive(Debug)]
pub struct RecurrentNet {
    norm: InputNorm,
    pre: nn::Linear,
    lstm: LnLstm,
    post: nn::Linear,
    head: nn::Linear,
    sizes: PolicySizes,
}

impl RecurrentNet {
    /// A freshly initialised network from `input` features to `output` numbers; the head is
    /// scaled by `head_gain` (small for the actor, so the first policy is near uniform).
    pub fn new(
        p: &nn::Path,
        sizes: PolicySizes,
        input: usize,
        output: usize,
        head_gain: f64,
        norm_clip: f64,
    ) -> Self {
        let lin = |name: &str, i: usize, o: usize| {
            nn::linear(p / name, i as i64, o as i64, Default::default())
        };
        let head = lin("head", sizes.post, output);
        tch::no_grad(|| {
            let _ = head.ws.shallow_clone().g_mul_scalar_(head_gain);
            if let Some(bs) = &head.bs {
                let _ = bs.shallow_clone().zero_();
            }
        });
        Self {
            norm: InputNorm::new(&(p / "norm"), input, norm_clip),
            pre: lin("pre", input, sizes.pre),
            lstm: LnLstm::new(&(p / "lstm"), sizes.pre, sizes.hidden),
            post: lin("post", sizes.hidden, sizes.post),
            head,
            sizes,
        }
    }

    /// `[batch, time, input]` raw inputs → `[batch, time, output]`, and the final LSTM state.
    pub fn forward(&self, raw: &Tensor, state: &LstmState) -> (Tensor, LstmState) {
        let x = self.pre.forward(&self.norm.forward(raw)).relu();
        let (hs, state) = self.lstm.seq(&x, state);
        (self.head.forward(&self.post.forward(&hs).relu()), state)
    }

    /// One step for one run: raw input vector → output vector, advancing `state` (batch 1).
    pub fn step(&self, raw: &[f32], state: &mut LstmState) -> Vec<f32> {
        let _guard = tch::no_grad_guard();
        let dev = state.h.device();
        let x = Tensor::from_slice(raw).view([1, 1, -1]).to_device(dev);
        let (out, next) = self.forward(&x, state);
        *state = next;
        Vec::<f32>::try_from(out.view([-1]).to_device(Device::Cpu)).expect("float output")
    }

    /// Copies running statistics into the frozen input normalisation.
    pub fn set_input_stats(&mut self, m: &RunningMoments) {
        self.norm.set(m);
    }

    /// The layer sizes.
    pub fn sizes(&self) -> PolicySizes {
        self.sizes
    }

    /// The input-normalisation clip.
    pub fn norm_clip(&self) -> f64 {
        self.norm.clip
    }

    /// Named weights in the core's layout order and naming (core-api.md "Weight layout"), as
    /// CPU float tensors; `norm.clip` is returned by [`Self::norm_clip`].
    pub fn core_weights(&self) -> Vec<(&'static str, Tensor)> {
        let cpu = |t: &Tensor| {
            t.detach()
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous()
        };
        let ln = |l: &nn::LayerNorm| {
            (
                cpu(l.ws.as_ref().expect("affine")),
                cpu(l.bs.as_ref().expect("affine")),
            )
        };
        let (lx_g, lx_b) = ln(&self.lstm.ln_x);
        let (lh_g, lh_b) = ln(&self.lstm.ln_h);
        let (lc_g, lc_b) = ln(&self.lstm.ln_c);
        let bias = |l: &nn::Linear| cpu(l.bs.as_ref().expect("linear bias"));
        vec![
            ("pre.w", cpu(&self.pre.ws)),
            ("pre.b", bias(&self.pre)),
            ("lstm.wx", cpu(&self.lstm.wx)),
            ("lstm.wh", cpu(&self.lstm.wh)),
            ("lstm.b", cpu(&self.lstm.b)),
            ("lstm.ln_x.gain", lx_g),
            ("lstm.ln_x.bias", lx_b),
            ("lstm.ln_h.gain", lh_g),
            ("lstm.ln_h.bias", lh_b),
            ("lstm.ln_c.gain", lc_g),
            ("lstm.ln_c.bias", lc_b),
            ("post.w", cpu(&self.post.ws)),
            ("post.b", bias(&self.post)),
            ("heads.w", cpu(&self.head.ws)),
            ("heads.b", bias(&self.head)),
            ("norm.mean", cpu(&self.norm.mean)),
            ("norm.var", cpu(&self.norm.var)),
        ]
    }
}

/// Actor (the policy that is exported) and critic (training only) in one variable store.
#[derive(Debug)]
pub struct ActorCritic {
    /// All trainable and statistics tensors, named `actor.*` and `critic.*`.
    pub vs: nn::VarStore,
    /// OBS_DIM → 40 logits.
    pub actor: RecurrentNet,
    /// OBS_DIM + privileged → 1 value (in normalised value units).
    pub critic: RecurrentNet,
}

/// Initial scale of the actor's head: near-uniform first policy.
const ACTOR_HEAD_GAIN: f64 = 0.01;

impl ActorCritic {
    /// A fresh actor-critic on `device`; the critic takes `privileged` extra inputs.
    pub fn new(device: Device, sizes: PolicySizes, privileged: usize, norm_clip: f64) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let actor = RecurrentNet::new(
            &(&root / "actor"),
            sizes,
            OBS_DIM,
            NUM_ACTION_LOGITS,
            ACTOR_HEAD_GAIN,
            norm_clip,
        );
        let critic = RecurrentNet::new(
            &(&root / "critic"),
            sizes,
            OBS_DIM + privileged,
            1,
            1.0,
            norm_clip,
        );
        Self { vs, actor, critic }
    }

    /// All variables (trainable and statistics) as name → CPU float vector, sorted by name:
    /// what workers receive and checkpoints store.
    pub fn to_named(&self) -> Vec<(String, Vec<f32>)> {
        let mut vars: Vec<(String, Vec<f32>)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, t)| {
                let v = Vec::<f32>::try_from(
                    t.detach()
                        .to_device(Device::Cpu)
                        .to_kind(Kind::Float)
                        .view([-1]),
                )
                .expect("float variable");
                (k, v)
            })
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Loads variables written by [`Self::to_named`]; fails on a missing name or a size mismatch.
    pub fn load_named(&mut self, named: &[(String, Vec<f32>)]) -> crate::error::Result<()> {
        let vars = self.vs.variables();
        let _guard = tch::no_grad_guard();
        for (name, t) in &vars {
            let Some((_, data)) = named.iter().find(|(n, _)| n == name) else {
                return Err(crate::error::Error::Checkpoint(format!(
                    "variable {name} missing"
                )));
            };
            if data.len() as i64 != t.numel() as i64 {
                return Err(crate::error::Error::Checkpoint(format!(
                    "variable {name}: {} values, the network has {} (different sizes?)",
                    data.len(),
                    t.numel()
                )));
            }
            t.shallow_clone()
                .copy_(&Tensor::from_slice(data).view_as(t).to_device(t.device()));
        }
        Ok(())
    }
}
