//! Byte-level transformer language model on the Shakespeare corpus: pre-norm causal
//! self-attention blocks with a GELU MLP, learned positions, next-byte cross-entropy. The last
//! tenth of the corpus is held out.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::nn::{Embedding, Linear, Norm, NormKind, ParamStore};
use super::sampling::{choose, log_uniform_int};
use super::{Scale, Task, TaskSpec, task_rng};
use crate::error::{Error, Result};

/// Byte vocabulary.
const VOCAB: i64 = 256;
/// Standard deviation of the token and position embeddings (GPT-2's choice).
const EMBED_STD: f32 = 0.02;

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Transformer blocks.
    pub layers: u64,
    /// Model width (a multiple of `heads`).
    pub width: u64,
    /// Attention heads.
    pub heads: u64,
    /// Context length in bytes.
    pub bptt: u64,
    /// Sequences per minibatch.
    pub batch: u64,
    /// Held-out windows evaluated.
    pub eval_windows: u64,
}

impl Config {
    /// Spec §8 ranges: 1–3 layers, width 64–128, 2–8 heads, bptt 16–128 (CPU: width 32–64,
    /// 2–4 heads, bptt 16–64, batch ≤ 32).
    pub fn sample(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (widths, heads, max_bptt, max_batch, eval_windows): (&[u64], &[u64], _, _, _) =
            match scale {
                Scale::Cpu => (&[32, 48, 64], &[2, 4], 64, 32, 64),
                Scale::Gpu => (&[64, 96, 128], &[2, 4, 8], 128, 64, 512),
            };
        Config {
            layers: rng.gen_range(1..=3),
            width: *choose(rng, widths),
            heads: *choose(rng, heads),
            bptt: log_uniform_int(rng, 16, max_bptt),
            batch: log_uniform_int(rng, 8, max_batch),
            eval_windows,
        }
    }
}

/// The corpus split into training and held-out bytes.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// First nine tenths.
    pub train: Vec<u8>,
    /// Last tenth.
    pub eval: Vec<u8>,
}

impl Corpus {
    /// Splits `text`: the last tenth is held out.
    pub fn split(text: &[u8]) -> Self {
        let cut = text.len() - text.len() / 10;
        Corpus {
            train: text[..cut].to_vec(),
            eval: text[cut..].to_vec(),
        }
    }

    /// The Shakespeare corpus from the dataset cache.
    pub fn load(data: &lhopt_data::DataDir) -> Result<Self> {
        Ok(Self::split(&data.shakespeare()?))
    }
}

struct Block {
    ln1: Norm,
    qkv: Linear,
    proj: Linear,
    ln2: Norm,
    fc: Linear,
    out: Linear,
}

impl Block {
    /// Pre-norm residual block: causal multi-head self-attention, then a 4x GELU MLP.
    fn forward(&self, h: &Tensor, heads: i64) -> Tensor {
        let (b, t, width) = h.size3().expect("[batch, time, width] activations");
        let qkv = self.qkv.forward(&self.ln1.forward(h, true));
        let split = |i: i64| {
            qkv.narrow(2, i * width, width)
                .reshape([b, t, heads, -1])
                .transpose(1, 2)
        };
        let attn = Tensor::scaled_dot_product_attention::<Tensor>(
            &split(0),
            &split(1),
            &split(2),
            None,
            0.0,
            true,
            None,
            false,
        );
        let h = h + self
            .proj
            .forward(&attn.transpose(1, 2).reshape([b, t, width]));
        let mlp = self
            .out
            .forward(&self.fc.forward(&self.ln2.forward(&h, true)).gelu("none"));
        h + mlp
    }
}

/// A built language-model task.
pub struct CharLm {
    spec: TaskSpec,
    config: Config,
    params: Vec<Tensor>,
    tokens: Embedding,
    positions: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    head: Linear,
    train: Tensor,
    eval_x: Tensor,
    eval_y: Tensor,
    batches: ChaCha8Rng,
}

impl CharLm {
    /// Builds the model; the corpus moves to `device` as bytes.
    pub fn new(spec: TaskSpec, config: &Config, corpus: Corpus, device: Device) -> Result<Self> {
        let (width, bptt) = (config.width as i64, config.bptt as i64);
        if config.heads == 0 || width % config.heads as i64 != 0 {
            return Err(Error::InvalidSpec(format!(
                "width {width} is not a multiple of {} heads",
                config.heads
            )));
        }
        let window = bptt as usize + 1;
        for (name, part) in [("training", &corpus.train), ("held-out", &corpus.eval)] {
            if part.len() < window {
                return Err(Error::BadData {
                    dataset: "shakespeare",
                    reason: format!(
                        "{name} text has {} bytes, fewer than one window of {window}",
                        part.len()
                    ),
                });
            }
        }
        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let tokens = Embedding::new_normal(&mut ps, VOCAB, width, EMBED_STD);
        let positions = ps.normal(&[bptt, width], EMBED_STD);
        let blocks = (0..config.layers)
            .map(|_| Block {
                ln1: Norm::new(&mut ps, NormKind::Layer, width),
                qkv: Linear::new(&mut ps, width, 3 * width),
                proj: Linear::new(&mut ps, width, width),
                ln2: Norm::new(&mut ps, NormKind::Layer, width),
                fc: Linear::new(&mut ps, width, 4 * width),
                out: Linear::new(&mut ps, 4 * width, width),
            })
            .collect();
        let ln_f = Norm::new(&mut ps, NormKind::Layer, width);
        let head = Linear::new(&mut ps, width, VOCAB);
        let (params, _) = ps.finish();

        // Fixed held-out windows, evenly spaced over the held-out text.
        let count = config.eval_windows.max(1) as usize;
        let last_start = corpus.eval.len() - window;
        let start = |i: usize| {
            if count > 1 {
                last_start * i / (count - 1)
            } else {
                0
            }
        };
        let eval: Vec<u8> = (0..count)
            .flat_map(|i| corpus.eval[start(i)..][..window].to_vec())
            .collect();
        let eval = Tensor::from_slice(&eval)
            .reshape([count as i64, window as i64])
            .to_kind(Kind::Int64)
            .to_device(device);
        Ok(CharLm {
            spec: spec.clone(),
            config: config.clone(),
            params,
            tokens,
            positions,
            blocks,
            ln_f,
            head,
            train: Tensor::from_slice(&corpus.train).to_device(device),
            eval_x: eval.narrow(1, 0, bptt),
            eval_y: eval.narrow(1, 1, bptt),
            batches: task_rng(&spec, 1),
        })
    }

    /// Logits `[B, T, 256]` for bytes `[B, T]`.
    fn logits(&self, x: &Tensor) -> Tensor {
        let t = x.size()[1];
        let h = self.tokens.forward(x) + self.positions.narrow(0, 0, t);
        let h = self
            .blocks
            .iter()
            .fold(h, |h, block| block.forward(&h, self.config.heads as i64));
        self.head.forward(&self.ln_f.forward(&h, true))
    }

    fn loss(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.logits(x)
            .view([-1, VOCAB])
            .cross_entropy_for_logits(&y.reshape([-1]))
    }
}

impl Task for CharLm {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_loss(&mut self) -> Tensor {
        let window = self.config.bptt as i64 + 1;
        let last_start = self.train.size()[0] - window;
        let starts: Vec<i64> = (0..self.config.batch)
            .map(|_| self.batches.gen_range(0..=last_start))
            .collect();
        let offsets = Tensor::arange(window, (Kind::Int64, self.train.device()));
        let idx = Tensor::from_slice(&starts)
            .to_device(self.train.device())
            .unsqueeze(1)
            + offsets.unsqueeze(0);
        let batch = self.train.take(&idx).to_kind(Kind::Int64);
        let bptt = self.config.bptt as i64;
        self.loss(&batch.narrow(1, 0, bptt), &batch.narrow(1, 1, bptt))
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        self.loss(&self.eval_x, &self.eval_y).double_value(&[])
    }
}
