//! Neural collaborative filtering on MovieLens-100K (held out from meta-training): GMF or NeuMF
//! trained on implicit feedback with sampled negatives, evaluated by the standard leave-one-out
//! protocol (each user's latest interaction against 99 unseen items): eval loss (binary
//! cross-entropy over the 100 candidates), hit ratio@10 and NDCG@10.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use super::nn::{Embedding, Linear, ParamStore};
use super::sampling::{choose, log_uniform_int, permutation};
use super::{Scale, Task, TaskSpec, task_rng};
use crate::error::{Error, Result};

/// Unseen items ranked against each held-out interaction.
const EVAL_NEGATIVES: usize = 99;
/// Ranking cut-off of the metrics.
const TOP_K: i64 = 10;
/// Seed of the eval negatives, the same for every task so metrics are comparable.
const EVAL_SEED: u64 = 0x004E_4346;
/// Standard deviation of the embeddings (the NCF paper's N(0, 0.01)).
const EMBED_STD: f32 = 0.01;

/// Which model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NcfModel {
    /// Generalised matrix factorisation: a linear layer on the product of the two embeddings.
    Gmf,
    /// GMF and an MLP over the concatenated embeddings (separate embeddings), fused by a linear layer.
    NeuMf,
}

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The model.
    pub model: NcfModel,
    /// Embedding size.
    pub factors: u64,
    /// NeuMF MLP layers (halving widths from 2·factors).
    pub mlp_layers: u64,
    /// Positive interactions per minibatch.
    pub batch: u64,
    /// Sampled negatives per positive.
    pub negatives: u64,
}

impl Config {
    /// Factors 8–64, 1–3 MLP layers, batch 128–1024 (CPU: factors ≤ 32, batch ≤ 512).
    pub fn sample(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (max_factors, max_batch) = match scale {
            Scale::Cpu => (32, 512),
            Scale::Gpu => (64, 1024),
        };
        Config {
            model: *choose(rng, &[NcfModel::Gmf, NcfModel::NeuMf]),
            factors: log_uniform_int(rng, 8, max_factors),
            mlp_layers: rng.gen_range(1..=3),
            batch: log_uniform_int(rng, 128, max_batch),
            negatives: 4,
        }
    }
}

/// Implicit-feedback interactions with a leave-one-out split, ids 0-based.
#[derive(Clone, Debug)]
pub struct Interactions {
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Training `(user, item)` pairs.
    pub train: Vec<(u32, u32)>,
    /// Per evaluated user: the held-out item followed by its unseen negatives.
    pub eval: Vec<(u32, Vec<u32>)>,
    /// Every item each user interacted with (train and held out).
    pub seen: Vec<HashSet<u32>>,
}

impl Interactions {
    /// Builds the split from ratings (1-based ids, as in MovieLens): each user's latest rating
    /// (the later one in file order on equal timestamps) is held out if the user has at least
    /// two, and ranked against 99 items the user never rated (a fixed draw).
    pub fn from_ratings(ratings: &[lhopt_data::Rating]) -> Result<Self> {
        let bad = |reason: String| Error::BadData {
            dataset: "movielens-100k",
            reason,
        };
        if ratings.iter().any(|r| r.user == 0 || r.item == 0) {
            return Err(bad("user and item ids must be 1-based".into()));
        }
        let users = ratings.iter().map(|r| r.user as usize).max().unwrap_or(0);
        let items = ratings.iter().map(|r| r.item as usize).max().unwrap_or(0);
        if items < EVAL_NEGATIVES + 2 {
            return Err(bad(format!(
                "{items} items; need more than {} to rank against",
                EVAL_NEGATIVES + 1
            )));
        }
        let mut per_user: Vec<Vec<(u64, u32)>> = vec![Vec::new(); users];
        for r in ratings {
            per_user[r.user as usize - 1].push((r.timestamp, r.item - 1));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(EVAL_SEED);
        let (mut train, mut eval, mut seen) = (Vec::new(), Vec::new(), Vec::with_capacity(users));
        for (user, history) in per_user.iter().enumerate() {
            let user_seen: HashSet<u32> = history.iter().map(|&(_, i)| i).collect();
            // Latest by timestamp, the last in file order among equals.
            let latest = history
                .iter()
                .enumerate()
                .max_by_key(|(pos, (t, _))| (*t, *pos))
                .map(|(pos, _)| pos);
            match latest {
                Some(held) if history.len() >= 2 && items - user_seen.len() >= EVAL_NEGATIVES => {
                    let mut candidates = vec![history[held].1];
                    while candidates.len() <= EVAL_NEGATIVES {
                        let item = rng.gen_range(0..items as u32);
                        if !user_seen.contains(&item) && !candidates.contains(&item) {
                            candidates.push(item);
                        }
                    }
                    eval.push((user as u32, candidates));
                    train.extend(
                        history
                            .iter()
                            .enumerate()
                            .filter(|&(p, _)| p != held)
                            .map(|(_, &(_, i))| (user as u32, i)),
                    );
                }
                _ => train.extend(history.iter().map(|&(_, i)| (user as u32, i))),
            }
            seen.push(user_seen);
        }
        if eval.is_empty() || train.is_empty() {
            return Err(bad(
                "no user has two ratings to split into train and held out".into(),
            ));
        }
        Ok(Interactions {
            users,
            items,
            train,
            eval,
            seen,
        })
    }

    /// MovieLens-100K from the dataset cache.
    pub fn load(data: &lhopt_data::DataDir) -> Result<Self> {
        Self::from_ratings(&data.movielens_100k()?)
    }
}

/// GMF or NeuMF.
struct Model {
    gmf_users: Embedding,
    gmf_items: Embedding,
    mlp: Option<(Embedding, Embedding, Vec<Linear>)>,
    out: Linear,
}

impl Model {
    fn new(ps: &mut ParamStore, config: &Config, users: i64, items: i64) -> Self {
        let k = config.factors as i64;
        let gmf_users = Embedding::new_normal(ps, users, k, EMBED_STD);
        let gmf_items = Embedding::new_normal(ps, items, k, EMBED_STD);
        let (mlp, fused) = match config.model {
            NcfModel::Gmf => (None, k),
            NcfModel::NeuMf => {
                let u = Embedding::new_normal(ps, users, k, EMBED_STD);
                let i = Embedding::new_normal(ps, items, k, EMBED_STD);
                let mut width = 2 * k;
                let layers = (0..config.mlp_layers)
                    .map(|_| {
                        let next = (width / 2).max(1);
                        let layer = Linear::new(ps, width, next);
                        width = next;
                        layer
                    })
                    .collect();
                (Some((u, i, layers)), k + width)
            }
        };
        Model {
            gmf_users,
            gmf_items,
            mlp,
            out: Linear::new(ps, fused, 1),
        }
    }

    /// Logits for `(users, items)` id tensors of equal shape.
    fn logits(&self, users: &Tensor, items: &Tensor) -> Tensor {
        let gmf = self.gmf_users.forward(users) * self.gmf_items.forward(items);
        let features = match &self.mlp {
            None => gmf,
            Some((u, i, layers)) => {
                let mut h = Tensor::cat(&[u.forward(users), i.forward(items)], -1);
                for layer in layers {
                    h = layer.forward(&h).relu();
                }
                Tensor::cat(&[gmf, h], -1)
            }
        };
        self.out.forward(&features).squeeze_dim(-1)
    }
}

/// A built NCF task.
pub struct NcfTask {
    spec: TaskSpec,
    config: Config,
    params: Vec<Tensor>,
    model: Model,
    data: Interactions,
    eval_users: Tensor,
    eval_items: Tensor,
    eval_labels: Tensor,
    order: Vec<i64>,
    cursor: usize,
    device: Device,
    batches: ChaCha8Rng,
}

impl NcfTask {
    /// Builds the model and the fixed evaluation candidates.
    pub fn new(
        spec: TaskSpec,
        config: &Config,
        data: Interactions,
        device: Device,
    ) -> Result<Self> {
        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let model = Model::new(&mut ps, config, data.users as i64, data.items as i64);
        let (params, _) = ps.finish();
        let candidates = (EVAL_NEGATIVES + 1) as i64;
        let users: Vec<i64> = data
            .eval
            .iter()
            .flat_map(|(u, c)| std::iter::repeat_n(i64::from(*u), c.len()))
            .collect();
        let items: Vec<i64> = data
            .eval
            .iter()
            .flat_map(|(_, c)| c.iter().map(|&i| i64::from(i)))
            .collect();
        let labels: Vec<f32> = (0..items.len())
            .map(|j| if j as i64 % candidates == 0 { 1.0 } else { 0.0 })
            .collect();
        let to = |v: &[i64]| {
            Tensor::from_slice(v)
                .reshape([-1, candidates])
                .to_device(device)
        };
        Ok(NcfTask {
            spec: spec.clone(),
            config: config.clone(),
            params,
            model,
            eval_users: to(&users),
            eval_items: to(&items),
            eval_labels: Tensor::from_slice(&labels)
                .reshape([-1, candidates])
                .to_device(device),
            data,
            order: Vec::new(),
            cursor: 0,
            device,
            batches: task_rng(&spec, 1),
        })
    }

    fn eval_logits(&self) -> Tensor {
        self.model.logits(&self.eval_users, &self.eval_items)
    }
}

impl Task for NcfTask {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Binary cross-entropy on `batch` training positives, each with `negatives` items the user
    /// never rated.
    fn train_loss(&mut self) -> Tensor {
        let n = self.data.train.len();
        let batch = (self.config.batch as usize).min(n);
        if self.cursor + batch > self.order.len() {
            self.order = permutation(&mut self.batches, n);
            self.cursor = 0;
        }
        let per_positive = 1 + self.config.negatives as usize;
        let (mut users, mut items, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for &j in &self.order[self.cursor..self.cursor + batch] {
            let (u, i) = self.data.train[j as usize];
            users.extend(std::iter::repeat_n(i64::from(u), per_positive));
            items.push(i64::from(i));
            labels.push(1.0f32);
            let seen = &self.data.seen[u as usize];
            for _ in 0..self.config.negatives {
                let negative = loop {
                    let item = self.batches.gen_range(0..self.data.items as u32);
                    if !seen.contains(&item) {
                        break item;
                    }
                };
                items.push(i64::from(negative));
                labels.push(0.0);
            }
        }
        self.cursor += batch;
        let to = |v: &[i64]| Tensor::from_slice(v).to_device(self.device);
        let y = Tensor::from_slice(&labels).to_device(self.device);
        self.model
            .logits(&to(&users), &to(&items))
            .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, Reduction::Mean)
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        self.eval_logits()
            .binary_cross_entropy_with_logits::<Tensor>(
                &self.eval_labels,
                None,
                None,
                Reduction::Mean,
            )
            .double_value(&[])
    }

    /// `hit_ratio@10` and `ndcg@10` of the current model (ranked by `rank_metrics`).
    fn metrics(&mut self) -> Vec<(&'static str, f64)> {
        let _guard = tch::no_grad_guard();
        let values = rank_metrics(&self.eval_logits());
        vec![("hit_ratio@10", values[0]), ("ndcg@10", values[1])]
    }
}

/// `[hit_ratio@10, ndcg@10]` from `[users, 1 + negatives]` scores (the held-out item first): the
/// held-out item's rank among its candidates, ties and non-finite negatives counted against it,
/// and a non-finite held-out score a miss, so a diverged model scores 0 rather than a perfect 1.
fn rank_metrics(scores: &Tensor) -> [f64; 2] {
    let positive = scores.narrow(1, 0, 1);
    let negatives = scores.narrow(1, 1, scores.size()[1] - 1);
    let rank = negatives
        .ge_tensor(&positive)
        .logical_or(&negatives.isnan())
        .sum_dim_intlist(1, false, Kind::Float);
    let hit = rank
        .lt(TOP_K as f64)
        .logical_and(&positive.squeeze_dim(1).isfinite())
        .to_kind(Kind::Float);
    let ndcg = &hit / (rank + 2.0).log2();
    let both = Tensor::stack(&[hit.mean(Kind::Float), ndcg.mean(Kind::Float)], 0);
    let values = Vec::<f64>::try_from(both.to_kind(Kind::Double).to_device(Device::Cpu))
        .expect("two f64 metrics");
    [values[0], values[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_metrics_count_ties_and_non_finite_scores_against_the_held_out_item() {
        let nan = f32::NAN;
        // 12 candidates each: the held-out item first.
        let rows: [[f32; 12]; 4] = [
            // Beaten by one negative: rank 1, a hit, NDCG 1/log2(3).
            [0.5, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
            // Ties count against it: rank 11, a miss.
            [0.5; 12],
            // A diverged model: the held-out score is NaN, a miss.
            [nan; 12],
            // NaN negatives count against it: rank 10, a miss.
            [0.5, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, 0.1],
        ];
        let scores = Tensor::from_slice(rows.as_flattened()).view([4, 12]);
        let [hit, ndcg] = rank_metrics(&scores);
        assert!((hit - 0.25).abs() < 1e-6, "hit ratio {hit}");
        assert!((ndcg - 0.25 / 3f64.log2()).abs() < 1e-6, "ndcg {ndcg}");
    }
}
