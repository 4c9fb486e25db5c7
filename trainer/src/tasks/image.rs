//! Image classification (10 classes) with an MLP or a small CNN on Fashion-MNIST (28×28) or the
//! 8×8 digits: sampled depth, width, activation, normalisation (batch/layer/none) and dropout.

use lhopt_data::Images;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::nn::{Activation, Conv2d, Linear, Norm, NormKind, ParamStore, dropout};
use super::sampling::{choose, log_uniform_int, permutation};
use super::{Scale, Task, TaskSpec, task_rng};
use crate::error::{Error, Result};

/// Examples per forward pass when evaluating, bounding peak memory.
pub(crate) const EVAL_CHUNK: i64 = 1000;
/// The task's RNG streams of minibatch order and of dropout masks.
pub(crate) const BATCH_STREAM: u64 = 1;
pub(crate) const MASK_STREAM: u64 = 3;

/// Which image dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSet {
    /// Fashion-MNIST, 28×28 grey levels, 60k train / 10k test.
    FashionMnist,
    /// The 8×8 handwritten digits (1797 images, grey levels 0–16).
    Digits,
    /// Fashion-MNIST downsampled to 8×8 by area averaging: the tiny-image variant small-compute
    /// learned optimizers train on (not drawn by the sampler; chosen explicitly).
    FashionMnist8,
}

/// The network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arch {
    /// `hidden_layers` fully connected layers of `width` units.
    Mlp {
        /// Hidden layers (1–7).
        hidden_layers: u64,
        /// Units per hidden layer.
        width: u64,
    },
    /// `conv_layers` 3×3 convolutions with `channels` maps, each followed by 2×2 max pooling
    /// while the map is at least 4 wide, then a linear classifier.
    Cnn {
        /// Convolution layers.
        conv_layers: u64,
        /// Feature maps per layer.
        channels: u64,
    },
}

impl Arch {
    /// Whether this is the CNN family.
    pub fn is_cnn(&self) -> bool {
        matches!(self, Arch::Cnn { .. })
    }
}

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The data.
    pub dataset: ImageSet,
    /// The network.
    pub arch: Arch,
    /// Hidden non-linearity.
    pub activation: Activation,
    /// Normalisation after each hidden layer.
    pub norm: NormKind,
    /// Dropout probability before each linear layer after the first (0 = none).
    pub dropout: f64,
    /// Examples per minibatch.
    pub batch: u64,
    /// Held-out examples evaluated (a fixed prefix of the held-out split).
    pub eval_examples: u64,
}

impl Config {
    /// Spec §8 ranges: 1–7 layers of width 32–512, batch 50–200 (CPU: ≤ 3 layers of ≤ 256).
    pub fn sample_mlp(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (max_layers, max_width) = match scale {
            Scale::Cpu => (3, 256),
            Scale::Gpu => (7, 512),
        };
        let arch = Arch::Mlp {
            hidden_layers: rng.gen_range(1..=max_layers),
            width: log_uniform_int(rng, 32, max_width),
        };
        Self::sample_common(rng, scale, arch)
    }

    /// A small CNN: 1–3 conv layers of 8–64 maps (CPU: ≤ 2 layers of ≤ 16 maps).
    pub fn sample_cnn(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (max_layers, max_channels) = match scale {
            Scale::Cpu => (2, 16),
            Scale::Gpu => (3, 64),
        };
        let arch = Arch::Cnn {
            conv_layers: rng.gen_range(1..=max_layers),
            channels: log_uniform_int(rng, 8, max_channels),
        };
        Self::sample_common(rng, scale, arch)
    }

    fn sample_common(rng: &mut ChaCha8Rng, scale: Scale, arch: Arch) -> Self {
        let (max_batch, eval_examples) = match scale {
            Scale::Cpu => (128, 2000),
            Scale::Gpu => (200, 10_000),
        };
        Config {
            dataset: *choose(rng, &[ImageSet::FashionMnist, ImageSet::Digits]),
            arch,
            activation: *choose(rng, &Activation::ALL),
            norm: *choose(rng, &NormKind::ALL),
            dropout: if rng.gen_bool(0.5) {
                0.0
            } else {
                rng.gen_range(0.05..0.5)
            },
            batch: log_uniform_int(rng, 50, max_batch),
            eval_examples,
        }
    }
}

/// Classes of both datasets.
const CLASSES: i64 = lhopt_data::CLASSES as i64;
/// Digits held out (of 1797), by a fixed shuffle the same for every task.
const DIGITS_HELD_OUT: usize = 297;
/// Seed of the digits' train/held-out shuffle.
const DIGITS_SPLIT_SEED: u64 = 0xD161;

/// A dataset in memory, as the tasks consume it: square images of the same size in both splits.
#[derive(Clone, Debug)]
pub struct ImageData {
    /// Training examples.
    pub train: Images,
    /// Held-out examples.
    pub eval: Images,
}

impl ImageData {
    /// Fashion-MNIST (train / test) or the digits (a fixed split) from the dataset cache.
    pub fn load(set: ImageSet, data: &lhopt_data::DataDir) -> Result<Self> {
        Ok(match set {
            ImageSet::FashionMnist => ImageData {
                train: data.fashion_mnist(lhopt_data::Split::Train)?,
                eval: data.fashion_mnist(lhopt_data::Split::Test)?,
            },
            ImageSet::FashionMnist8 => ImageData {
                train: downsample(&data.fashion_mnist(lhopt_data::Split::Train)?, 8),
                eval: downsample(&data.fashion_mnist(lhopt_data::Split::Test)?, 8),
            },
            ImageSet::Digits => {
                let all = data.digits()?;
                let order = permutation(&mut ChaCha8Rng::seed_from_u64(DIGITS_SPLIT_SEED), all.n);
                let held_out = DIGITS_HELD_OUT.min(all.n / 2);
                ImageData {
                    eval: subset(&all, &order[..held_out]),
                    train: subset(&all, &order[held_out..]),
                }
            }
        })
    }

    /// Checks that both splits hold square images of one size with labels in range.
    fn validate(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::BadData {
                dataset: "images",
                reason,
            })
        };
        let (t, e) = (&self.train, &self.eval);
        if t.rows != t.cols || (t.rows, t.cols, t.max_value) != (e.rows, e.cols, e.max_value) {
            return bad(format!(
                "train images are {}x{} (max {}), held-out {}x{} (max {}); both must be the same square size",
                t.rows, t.cols, t.max_value, e.rows, e.cols, e.max_value
            ));
        }
        for (name, split) in [("train", t), ("held-out", e)] {
            if split.n == 0
                || split.labels.len() != split.n
                || split.pixels.len() != split.n * split.rows * split.cols
            {
                return bad(format!(
                    "{name} split: {} images, {} labels, {} pixels",
                    split.n,
                    split.labels.len(),
                    split.pixels.len()
                ));
            }
            if let Some(l) = split.labels.iter().find(|&&l| i64::from(l) >= CLASSES) {
                return bad(format!("{name} split has label {l}, expected 0..{CLASSES}"));
            }
        }
        Ok(())
    }
}

/// `images` shrunk to `side`×`side` by averaging the source pixels each output pixel covers (the
/// windows of an adaptive average pool), rounded back to the same grey levels.
fn downsample(images: &Images, side: usize) -> Images {
    let (rows, cols) = (images.rows, images.cols);
    let window = |i: usize, n: usize| (i * n / side)..((i + 1) * n).div_ceil(side);
    let mut pixels = Vec::with_capacity(images.n * side * side);
    for image in images.pixels.chunks_exact(rows * cols) {
        for i in 0..side {
            for j in 0..side {
                let (mut sum, mut count) = (0u32, 0u32);
                for r in window(i, rows) {
                    for c in window(j, cols) {
                        sum += u32::from(image[r * cols + c]);
                        count += 1;
                    }
                }
                pixels.push((sum as f32 / count as f32).round() as u8);
            }
        }
    }
    Images {
        rows: side,
        cols: side,
        pixels,
        labels: images.labels.clone(),
        ..*images
    }
}

/// The images at `ids`, in that order.
fn subset(all: &Images, ids: &[i64]) -> Images {
    let size = all.rows * all.cols;
    Images {
        n: ids.len(),
        pixels: ids
            .iter()
            .flat_map(|&i| &all.pixels[i as usize * size..][..size])
            .copied()
            .collect(),
        labels: ids.iter().map(|&i| all.labels[i as usize]).collect(),
        ..*all
    }
}

/// The network, holding shallow copies of the parameters.
enum Network {
    Mlp {
        hidden: Vec<(Linear, Norm)>,
        out: Linear,
    },
    Cnn {
        convs: Vec<(Conv2d, Norm, bool)>,
        out: Linear,
    },
}

impl Network {
    /// Draws the network's parameters from `ps`, in a fixed creation order.
    fn new(ps: &mut ParamStore, config: &Config, side: i64) -> Self {
        match config.arch {
            Arch::Mlp {
                hidden_layers,
                width,
            } => {
                let width = width as i64;
                let hidden = (0..hidden_layers)
                    .map(|l| {
                        let inputs = if l == 0 { side * side } else { width };
                        (
                            Linear::new(ps, inputs, width),
                            Norm::new(ps, config.norm, width),
                        )
                    })
                    .collect();
                Network::Mlp {
                    hidden,
                    out: Linear::new(ps, width, CLASSES),
                }
            }
            Arch::Cnn {
                conv_layers,
                channels,
            } => {
                let channels = channels as i64;
                let mut map = side;
                let convs = (0..conv_layers)
                    .map(|l| {
                        let inputs = if l == 0 { 1 } else { channels };
                        let pool = map >= 4;
                        if pool {
                            map /= 2;
                        }
                        (
                            Conv2d::new(ps, inputs, channels, 3),
                            Norm::new(ps, config.norm, channels),
                            pool,
                        )
                    })
                    .collect();
                Network::Cnn {
                    convs,
                    out: Linear::new(ps, channels * map * map, CLASSES),
                }
            }
        }
    }
}

/// The initial parameters and buffers of the image task `spec` on `side`×`side` images, as
/// [`ImageTask::new`] draws them.
pub(crate) fn initial_state(
    spec: &TaskSpec,
    config: &Config,
    side: i64,
    device: Device,
) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut ps = ParamStore::new(task_rng(spec, 0), device);
    Network::new(&mut ps, config, side);
    ps.finish()
}

/// A dataset as tensors: pixel bytes `[N, side²]` and labels, the held-out split cut to the
/// configuration's `eval_examples`.
pub(crate) struct ImageTensors {
    pub(crate) train_x: Tensor,
    pub(crate) train_y: Tensor,
    pub(crate) eval_x: Tensor,
    pub(crate) eval_y: Tensor,
}

impl ImageTensors {
    pub(crate) fn new(data: &ImageData, config: &Config, device: Device) -> Self {
        let side = data.train.rows as i64;
        let to_x = |s: &Images| {
            Tensor::from_slice(&s.pixels)
                .reshape([-1, side * side])
                .to_device(device)
        };
        let to_y = |s: &Images| {
            Tensor::from_slice(&s.labels)
                .to_kind(Kind::Int64)
                .to_device(device)
        };
        let eval_n = (config.eval_examples as usize).min(data.eval.n) as i64;
        ImageTensors {
            train_x: to_x(&data.train),
            train_y: to_y(&data.train),
            eval_x: to_x(&data.eval).narrow(0, 0, eval_n),
            eval_y: to_y(&data.eval).narrow(0, 0, eval_n),
        }
    }
}

/// Minibatch indices: epochs of a seeded shuffle of the training split.
pub(crate) struct BatchOrder {
    order: Vec<i64>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl BatchOrder {
    pub(crate) fn new(rng: ChaCha8Rng) -> Self {
        BatchOrder {
            order: Vec::new(),
            cursor: 0,
            rng,
        }
    }

    /// The next `batch` indices into `n` training examples (`batch` at most `n`).
    pub(crate) fn next(&mut self, n: usize, batch: usize) -> &[i64] {
        if self.cursor + batch > self.order.len() {
            self.order = permutation(&mut self.rng, n);
            self.cursor = 0;
        }
        self.cursor += batch;
        &self.order[self.cursor - batch..self.cursor]
    }
}

/// A built image classification task.
pub struct ImageTask {
    spec: TaskSpec,
    config: Config,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    net: Network,
    side: i64,
    max_level: f64,
    train_x: Tensor,
    train_y: Tensor,
    eval_x: Tensor,
    eval_y: Tensor,
    batches: BatchOrder,
    masks: ChaCha8Rng,
}

impl ImageTask {
    /// Builds the network and moves the data (as bytes) to `device`.
    pub fn new(spec: TaskSpec, config: &Config, data: ImageData, device: Device) -> Result<Self> {
        data.validate()?;
        let side = data.train.rows as i64;
        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let net = Network::new(&mut ps, config, side);
        let (params, buffers) = ps.finish();
        let tensors = ImageTensors::new(&data, config, device);
        Ok(ImageTask {
            config: config.clone(),
            params,
            buffers,
            net,
            side,
            max_level: f64::from(data.train.max_value),
            train_x: tensors.train_x,
            train_y: tensors.train_y,
            eval_x: tensors.eval_x,
            eval_y: tensors.eval_y,
            batches: BatchOrder::new(task_rng(&spec, BATCH_STREAM)),
            masks: task_rng(&spec, MASK_STREAM),
            spec,
        })
    }

    /// Logits for byte images `[N, side²]`.
    fn logits(&mut self, pixels: &Tensor, train: bool) -> Tensor {
        let x = pixels.to_kind(Kind::Float) / self.max_level;
        let act = self.config.activation;
        let p = if train { self.config.dropout } else { 0.0 };
        match &self.net {
            Network::Mlp { hidden, out } => {
                let mut h = x;
                for (i, (linear, norm)) in hidden.iter().enumerate() {
                    if i > 0 {
                        h = dropout(&h, p, &mut self.masks);
                    }
                    h = act.apply(&norm.forward(&linear.forward(&h), train));
                }
                out.forward(&dropout(&h, p, &mut self.masks))
            }
            Network::Cnn { convs, out } => {
                let mut h = x.reshape([-1, 1, self.side, self.side]);
                for (conv, norm, pool) in convs {
                    h = act.apply(&norm.forward(&conv.forward(&h), train));
                    if *pool {
                        h = h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
                    }
                }
                out.forward(&dropout(&h.flatten(1, -1), p, &mut self.masks))
            }
        }
    }

    /// Next minibatch indices: epochs of a seeded shuffle.
    fn next_batch(&mut self) -> Tensor {
        let n = self.train_y.size()[0] as usize;
        let batch = (self.config.batch as usize).min(n);
        Tensor::from_slice(self.batches.next(n, batch)).to_device(self.train_y.device())
    }
}

impl Task for ImageTask {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn buffers(&self) -> &[Tensor] {
        &self.buffers
    }

    fn train_loss(&mut self) -> Tensor {
        let idx = self.next_batch();
        let (x, y) = (
            self.train_x.index_select(0, &idx),
            self.train_y.index_select(0, &idx),
        );
        self.logits(&x, true).cross_entropy_for_logits(&y)
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        let n = self.eval_y.size()[0];
        let mut total = Tensor::zeros([], (Kind::Float, self.eval_y.device()));
        for start in (0..n).step_by(EVAL_CHUNK as usize) {
            let len = EVAL_CHUNK.min(n - start);
            let x = self.eval_x.narrow(0, start, len);
            let y = self.eval_y.narrow(0, start, len);
            let loss = self.logits(&x, false).cross_entropy_for_logits(&y);
            total += loss * len as f64;
        }
        total.double_value(&[]) / n as f64
    }
}
