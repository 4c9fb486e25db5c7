//! Model building blocks shared by the task families, with weights drawn from the task's seeded
//! RNG (PyTorch's default initialisation rules) instead of libtorch's global RNG.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::sampling::normal;

/// Creates a model's parameters and buffers, recording them in creation order.
pub(crate) struct ParamStore {
    rng: ChaCha8Rng,
    device: Device,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
}

impl ParamStore {
    pub(crate) fn new(rng: ChaCha8Rng, device: Device) -> Self {
        ParamStore {
            rng,
            device,
            params: Vec::new(),
            buffers: Vec::new(),
        }
    }

    fn tensor(&self, values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values)
            .reshape(shape)
            .to_device(self.device)
    }

    fn leaf(&mut self, values: &[f32], shape: &[i64]) -> Tensor {
        let t = self.tensor(values, shape).set_requires_grad(true);
        self.params.push(t.shallow_clone());
        t
    }

    /// A trainable tensor uniform in `[-bound, bound]`.
    pub(crate) fn uniform(&mut self, shape: &[i64], bound: f64) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n)
            .map(|_| self.rng.gen_range(-bound..bound) as f32)
            .collect();
        self.leaf(&values, shape)
    }

    /// A trainable tensor normal with standard deviation `std`.
    pub(crate) fn normal(&mut self, shape: &[i64], std: f32) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let values: Vec<f32> = (0..n).map(|_| std * normal(&mut self.rng)).collect();
        self.leaf(&values, shape)
    }

    /// A trainable tensor filled with `value`.
    pub(crate) fn constant(&mut self, shape: &[i64], value: f32) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        self.leaf(&vec![value; n], shape)
    }

    /// A non-trainable state tensor filled with `value`.
    pub(crate) fn buffer(&mut self, shape: &[i64], value: f32) -> Tensor {
        let n = shape.iter().product::<i64>() as usize;
        let t = self.tensor(&vec![value; n], shape);
        self.buffers.push(t.shallow_clone());
        t
    }

    /// The parameters and buffers, in creation order.
    pub(crate) fn finish(self) -> (Vec<Tensor>, Vec<Tensor>) {
        (self.params, self.buffers)
    }
}

/// Fully connected layer, PyTorch `nn.Linear` initialisation.
pub(crate) struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub(crate) fn new(ps: &mut ParamStore, inputs: i64, outputs: i64) -> Self {
        let bound = 1.0 / (inputs as f64).sqrt();
        Linear {
            w: ps.uniform(&[outputs, inputs], bound),
            b: ps.uniform(&[outputs], bound),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, Some(&self.b))
    }
}

/// 2-D convolution with "same" padding for odd kernels, PyTorch `nn.Conv2d` initialisation.
pub(crate) struct Conv2d {
    w: Tensor,
    b: Tensor,
}

impl Conv2d {
    pub(crate) fn new(ps: &mut ParamStore, inputs: i64, outputs: i64, kernel: i64) -> Self {
        let bound = 1.0 / ((inputs * kernel * kernel) as f64).sqrt();
        Conv2d {
            w: ps.uniform(&[outputs, inputs, kernel, kernel], bound),
            b: ps.uniform(&[outputs], bound),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let pad = self.w.size()[2] / 2;
        x.conv2d(&self.w, Some(&self.b), [1, 1], [pad, pad], [1, 1], 1)
    }
}

/// Lookup table, PyTorch `nn.Embedding` initialisation (standard normal).
pub(crate) struct Embedding {
    w: Tensor,
}

impl Embedding {
    pub(crate) fn new(ps: &mut ParamStore, count: i64, dim: i64) -> Self {
        Self::new_normal(ps, count, dim, 1.0)
    }

    /// Entries normal with standard deviation `std`.
    pub(crate) fn new_normal(ps: &mut ParamStore, count: i64, dim: i64, std: f32) -> Self {
        Embedding {
            w: ps.normal(&[count, dim], std),
        }
    }

    pub(crate) fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.w, ids, -1, false, false)
    }
}

/// Elementwise non-linearity of a sampled model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// max(0, x).
    Relu,
    /// tanh(x).
    Tanh,
    /// Exact (erf) GELU.
    Gelu,
    /// x·σ(x).
    Silu,
}

impl Activation {
    pub(crate) const ALL: [Activation; 4] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Silu,
    ];

    pub(crate) fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu("none"),
            Activation::Silu => x.silu(),
        }
    }
}

/// Which normalisation follows a hidden layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormKind {
    /// No normalisation.
    None,
    /// Batch norm (running statistics in eval mode).
    Batch,
    /// Layer norm (group norm with one group for feature maps).
    Layer,
}

impl NormKind {
    pub(crate) const ALL: [NormKind; 3] = [NormKind::None, NormKind::Batch, NormKind::Layer];
}

/// ε of the batch and layer norms.
pub(crate) const NORM_EPS: f64 = 1e-5;
/// Momentum of the batch norms' running statistics.
pub(crate) const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// A normalisation layer with a learned per-channel affine, over `[..., C]` (layer norm over the
/// last axis), `[N, C]` or `[N, C, H, W]` (batch norm per channel; layer norm over C, H, W).
pub(crate) enum Norm {
    None,
    Batch {
        gain: Tensor,
        bias: Tensor,
        mean: Tensor,
        var: Tensor,
    },
    Layer {
        gain: Tensor,
        bias: Tensor,
    },
}

impl Norm {
    pub(crate) fn new(ps: &mut ParamStore, kind: NormKind, channels: i64) -> Self {
        match kind {
            NormKind::None => Norm::None,
            NormKind::Batch => Norm::Batch {
                gain: ps.constant(&[channels], 1.0),
                bias: ps.constant(&[channels], 0.0),
                mean: ps.buffer(&[channels], 0.0),
                var: ps.buffer(&[channels], 1.0),
            },
            NormKind::Layer => Norm::Layer {
                gain: ps.constant(&[channels], 1.0),
                bias: ps.constant(&[channels], 0.0),
            },
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        const EPS: f64 = NORM_EPS;
        match self {
            Norm::None => x.shallow_clone(),
            Norm::Batch {
                gain,
                bias,
                mean,
                var,
            } => x.batch_norm(
                Some(gain),
                Some(bias),
                Some(mean),
                Some(var),
                train,
                BATCH_NORM_MOMENTUM,
                EPS,
                false,
            ),
            Norm::Layer { gain, bias } if x.dim() == 4 => {
                x.group_norm(1, Some(gain), Some(bias), EPS, false)
            }
            Norm::Layer { gain, bias } => {
                x.layer_norm([gain.size()[0]], Some(gain), Some(bias), EPS, false)
            }
        }
    }
}

/// Inverted dropout with a mask drawn from the task's RNG (identity when `p == 0`).
pub(crate) fn dropout(x: &Tensor, p: f64, rng: &mut ChaCha8Rng) -> Tensor {
    if p <= 0.0 {
        return x.shallow_clone();
    }
    let mut mask = Vec::with_capacity(x.numel());
    dropout_mask(x.numel(), p, rng, &mut mask);
    x * Tensor::from_slice(&mask)
        .reshape(x.size())
        .to_device(x.device())
}

/// Appends `n` entries of an inverted-dropout mask (0 with probability `p`, else 1/(1 − p)),
/// drawn as [`dropout`] draws them, so batched instances reproduce the unbatched masks.
pub(crate) fn dropout_mask(n: usize, p: f64, rng: &mut ChaCha8Rng, out: &mut Vec<f32>) {
    let keep = (1.0 / (1.0 - p)) as f32;
    out.extend((0..n).map(|_| if rng.r#gen::<f64>() < p { 0.0 } else { keep }));
}

/// Recurrent cell type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellKind {
    /// Elman RNN with tanh.
    Rnn,
    /// Gated recurrent unit.
    Gru,
    /// Long short-term memory.
    Lstm,
}

impl CellKind {
    pub(crate) const ALL: [CellKind; 3] = [CellKind::Rnn, CellKind::Gru, CellKind::Lstm];

    pub(crate) fn gates(self) -> i64 {
        match self {
            CellKind::Rnn => 1,
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        }
    }
}

/// A stacked unidirectional RNN/GRU/LSTM running libtorch's fused kernels, batch first.
pub(crate) struct Recurrent {
    kind: CellKind,
    layers: i64,
    hidden: i64,
    /// Per layer: w_ih, w_hh, b_ih, b_hh (libtorch's flat order).
    weights: Vec<Tensor>,
}

impl Recurrent {
    /// PyTorch's initialisation: everything uniform in ±1/sqrt(hidden).
    pub(crate) fn new(
        ps: &mut ParamStore,
        kind: CellKind,
        inputs: i64,
        hidden: i64,
        layers: i64,
    ) -> Self {
        let bound = 1.0 / (hidden as f64).sqrt();
        let rows = kind.gates() * hidden;
        let mut weights = Vec::new();
        for layer in 0..layers {
            let width = if layer == 0 { inputs } else { hidden };
            weights.push(ps.uniform(&[rows, width], bound));
            weights.push(ps.uniform(&[rows, hidden], bound));
            weights.push(ps.uniform(&[rows], bound));
            weights.push(ps.uniform(&[rows], bound));
        }
        Recurrent {
            kind,
            layers,
            hidden,
            weights,
        }
    }

    /// `x: [B, T, inputs]` → outputs of the last layer `[B, T, hidden]`, from a zero state.
    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h0 = Tensor::zeros(
            [self.layers, x.size()[0], self.hidden],
            (Kind::Float, x.device()),
        );
        match self.kind {
            CellKind::Rnn => {
                x.rnn_tanh(
                    &h0,
                    &self.weights,
                    true,
                    self.layers,
                    0.0,
                    train,
                    false,
                    true,
                )
                .0
            }
            CellKind::Gru => {
                x.gru(
                    &h0,
                    &self.weights,
                    true,
                    self.layers,
                    0.0,
                    train,
                    false,
                    true,
                )
                .0
            }
            CellKind::Lstm => {
                let c0 = h0.zeros_like();
                x.lstm(
                    &[h0, c0],
                    &self.weights,
                    true,
                    self.layers,
                    0.0,
                    train,
                    false,
                    true,
                )
                .0
            }
        }
    }
}
