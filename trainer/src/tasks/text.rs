//! Spam/ham classification of e-mail bodies by a recurrent network: lower-cased word tokens
//! (vocabulary = the most frequent training words), a window of `bptt` tokens per example, the
//! last hidden state to one logit. A fixed fifth of the e-mails is held out.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use super::nn::{CellKind, Embedding, Linear, ParamStore, Recurrent};
use super::sampling::{choose, log_uniform_int, permutation};
use super::{Scale, Task, TaskSpec, task_rng};
use crate::error::{Error, Result};

/// Token id of padding (short e-mails are padded on the left).
const PAD: i64 = 0;
/// Token id of words outside the vocabulary.
const UNKNOWN: i64 = 1;
/// Seed of the train/held-out split, the same for every task so eval losses are comparable.
const SPLIT_SEED: u64 = 0x5A5A;
/// Longest word kept; longer runs of letters are usually encoded payloads.
const MAX_WORD: usize = 24;

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Recurrent cell.
    pub cell: CellKind,
    /// Word embedding size.
    pub embedding: u64,
    /// Hidden units.
    pub hidden: u64,
    /// Tokens per example.
    pub bptt: u64,
    /// Examples per minibatch.
    pub batch: u64,
    /// Words in the vocabulary (besides padding and unknown).
    pub vocab: u64,
}

impl Config {
    /// Spec §8 ranges: embedding 32–128, bptt 8–32 (CPU: embedding and hidden ≤ 64).
    pub fn sample(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (max_width, max_batch, vocab) = match scale {
            Scale::Cpu => (64, 64, 2000),
            Scale::Gpu => (128, 128, 10_000),
        };
        Config {
            cell: *choose(rng, &CellKind::ALL),
            embedding: log_uniform_int(rng, 32, max_width),
            hidden: log_uniform_int(rng, 32, max_width),
            bptt: log_uniform_int(rng, 8, 32),
            batch: log_uniform_int(rng, 32, max_batch),
            vocab,
        }
    }
}

/// One labelled document.
#[derive(Clone, Debug)]
pub struct Document {
    /// Text (e-mail body).
    pub text: Vec<u8>,
    /// The target.
    pub spam: bool,
}

/// The corpus split into training and held-out documents.
#[derive(Clone, Debug)]
pub struct TextData {
    /// Training documents.
    pub train: Vec<Document>,
    /// Held-out documents.
    pub eval: Vec<Document>,
}

impl TextData {
    /// Splits `docs` with a fixed shuffle: one fifth held out.
    pub fn split(docs: Vec<Document>) -> Self {
        let order = permutation(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED), docs.len());
        let held_out = docs.len() / 5;
        let mut slots: Vec<Option<Document>> = docs.into_iter().map(Some).collect();
        let mut take = |ids: &[i64]| -> Vec<Document> {
            ids.iter()
                .filter_map(|&i| slots[i as usize].take())
                .collect()
        };
        let eval = take(&order[..held_out]);
        let train = take(&order[held_out..]);
        TextData { train, eval }
    }

    /// The SpamAssassin e-mails from the dataset cache, headers stripped.
    pub fn load(data: &lhopt_data::DataDir) -> Result<Self> {
        let docs = data
            .spam_assassin()?
            .into_iter()
            .map(|e| Document {
                spam: e.is_spam(),
                text: body(&e.bytes).to_vec(),
            })
            .collect();
        Ok(Self::split(docs))
    }
}

/// The body of a raw e-mail: everything after the first blank line (all of it if there is none).
fn body(raw: &[u8]) -> &[u8] {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => &raw[a.min(b)..],
        (Some(a), None) | (None, Some(a)) => &raw[a..],
        (None, None) => raw,
    }
}

/// Lower-cased runs of ASCII letters and digits.
fn words(text: &[u8]) -> impl Iterator<Item = String> + '_ {
    text.split(|b| !b.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() <= MAX_WORD)
        .map(|w| String::from_utf8_lossy(w).to_ascii_lowercase())
}

/// Word → id for the `size` most frequent training words (ties by word, for determinism).
fn vocabulary(docs: &[Document], size: usize) -> HashMap<String, i64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for doc in docs {
        for w in words(&doc.text) {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(size)
        .enumerate()
        .map(|(i, (w, _))| (w, i as i64 + 2))
        .collect()
}

fn encode(doc: &Document, vocab: &HashMap<String, i64>) -> Vec<i64> {
    words(&doc.text)
        .map(|w| vocab.get(&w).copied().unwrap_or(UNKNOWN))
        .collect()
}

/// `bptt` tokens of `tokens` from `start`, left-padded when the document is shorter.
fn window(tokens: &[i64], start: usize, bptt: usize, out: &mut Vec<i64>) {
    let taken = &tokens[start.min(tokens.len())..][..bptt.min(tokens.len().saturating_sub(start))];
    out.extend(std::iter::repeat_n(PAD, bptt - taken.len()));
    out.extend_from_slice(taken);
}

/// A built spam classification task.
pub struct TextRnn {
    spec: TaskSpec,
    config: Config,
    params: Vec<Tensor>,
    embedding: Embedding,
    rnn: Recurrent,
    head: Linear,
    train: Vec<(Vec<i64>, f32)>,
    eval_x: Tensor,
    eval_y: Tensor,
    device: Device,
    batches: ChaCha8Rng,
}

impl TextRnn {
    /// Tokenises the data and builds the model.
    pub fn new(spec: TaskSpec, config: &Config, data: TextData, device: Device) -> Result<Self> {
        if data.train.is_empty() || data.eval.is_empty() {
            return Err(Error::BadData {
                dataset: "spam-assassin",
                reason: format!(
                    "{} training and {} held-out e-mails; both must be non-empty",
                    data.train.len(),
                    data.eval.len()
                ),
            });
        }
        let vocab = vocabulary(&data.train, config.vocab as usize);
        let encode_all = |docs: &[Document]| -> Vec<(Vec<i64>, f32)> {
            docs.iter()
                .map(|d| (encode(d, &vocab), if d.spam { 1.0 } else { 0.0 }))
                .collect()
        };
        let train = encode_all(&data.train);
        let eval = encode_all(&data.eval);
        let bptt = config.bptt as usize;
        let mut eval_tokens = Vec::with_capacity(eval.len() * bptt);
        for (tokens, _) in &eval {
            window(tokens, 0, bptt, &mut eval_tokens);
        }
        let eval_labels: Vec<f32> = eval.iter().map(|(_, y)| *y).collect();

        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let (emb, hidden) = (config.embedding as i64, config.hidden as i64);
        let embedding = Embedding::new(&mut ps, config.vocab as i64 + 2, emb);
        let rnn = Recurrent::new(&mut ps, config.cell, emb, hidden, 1);
        let head = Linear::new(&mut ps, hidden, 1);
        let (params, _) = ps.finish();
        Ok(TextRnn {
            spec: spec.clone(),
            config: config.clone(),
            params,
            embedding,
            rnn,
            head,
            train,
            eval_x: Tensor::from_slice(&eval_tokens)
                .reshape([-1, bptt as i64])
                .to_device(device),
            eval_y: Tensor::from_slice(&eval_labels).to_device(device),
            device,
            batches: task_rng(&spec, 1),
        })
    }

    fn loss(&self, tokens: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let states = self.rnn.forward(&self.embedding.forward(tokens), train);
        let last = states.select(1, -1);
        self.head
            .forward(&last)
            .squeeze_dim(-1)
            .binary_cross_entropy_with_logits::<Tensor>(labels, None, None, Reduction::Mean)
    }
}

impl Task for TextRnn {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_loss(&mut self) -> Tensor {
        let bptt = self.config.bptt as usize;
        let mut tokens = Vec::with_capacity(self.config.batch as usize * bptt);
        let mut labels = Vec::with_capacity(self.config.batch as usize);
        for _ in 0..self.config.batch {
            let (doc, label) = &self.train[self.batches.gen_range(0..self.train.len())];
            let start = self.batches.gen_range(0..=doc.len().saturating_sub(bptt));
            window(doc, start, bptt, &mut tokens);
            labels.push(*label);
        }
        let x = Tensor::from_slice(&tokens)
            .reshape([-1, bptt as i64])
            .to_device(self.device);
        let y = Tensor::from_slice(&labels).to_device(self.device);
        self.loss(&x, &y, true)
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        self.loss(&self.eval_x, &self.eval_y, false)
            .to_kind(Kind::Double)
            .double_value(&[])
    }
}
