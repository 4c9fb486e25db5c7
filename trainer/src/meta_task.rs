//! What meta-training trains on (spec §6, §6a): a sampled *task configuration*, that is a family's
//! task, the run length T, the number of decisions K and a per-tensor rescaling of the initial
//! weights, together with its tuned reference curve (reward version 2), computed once per
//! configuration and cached on disk so that imitation, meta-training and their resumes share it.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::baseline::{self, LEARNING_RATES, Schedule};
use crate::error::{Error, Result};
use crate::export::write_atomic;
use crate::pool::Pool;
use crate::ppo::rollout::RolloutConfig;
use crate::reward::{self, ReferenceCurve};
use crate::tasks::{self, Task, TaskSpec};

/// Bumped whenever the meaning of a cached reference changes; older files are recomputed.
const REFERENCE_FORMAT: u32 = 1;

/// One sampled task configuration of a run's task sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaTask {
    /// Position in the run's task sequence.
    pub index: u64,
    /// Seed of everything sampled for this configuration.
    pub seed: u64,
    /// The inner task.
    pub spec: TaskSpec,
    /// Inner steps T.
    pub steps: u64,
    /// Decisions K.
    pub decisions: u32,
    /// Each parameter tensor's initial values are multiplied by a factor drawn log-uniform in
    /// [1/weight_scale, weight_scale] (1 = no augmentation), so that the best learning rate moves
    /// and a memorised schedule fails: the policy has to read its features.
    pub weight_scale: f64,
}

impl MetaTask {
    /// Configuration `index` of the task sequence of a run seeded `run_seed`.
    pub fn sample(cfg: &RolloutConfig, run_seed: u64, index: u64) -> MetaTask {
        let seed = mix(run_seed, index);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let family = cfg.families[rng.gen_range(0..cfg.families.len())];
        let spec = tasks::sample(family, seed, cfg.scale);
        let hi = cfg.max_steps.max(1);
        let lo = cfg.min_steps.clamp(1, hi);
        let steps = log_uniform_u64(&mut rng, lo, hi).min(spec.steps).max(1);
        let (lo, hi) = cfg.decisions;
        let most = (steps / cfg.min_interval.max(1)).max(1) as u32;
        let decisions = log_uniform_u64(&mut rng, u64::from(lo.max(1)), u64::from(hi.max(lo)))
            .min(u64::from(most))
            .max(1) as u32;
        MetaTask {
            index,
            seed,
            spec,
            steps,
            decisions,
            weight_scale: cfg.weight_scale.max(1.0),
        }
    }

    /// A filesystem-safe identifier of the configuration (the reference cache key).
    pub fn key(&self) -> String {
        format!("{}-T{}-w{}", self.spec.key(), self.steps, self.weight_scale)
    }

    /// Builds the task with its augmented initial weights (the same every time).
    pub fn build(&self, pool: &Pool) -> Result<Box<dyn Task>> {
        let task = pool.build(&self.spec)?;
        self.rescale_weights(task.parameters());
        Ok(task)
    }

    /// Multiplies each of the task's parameter tensors `params` by its augmentation factor (see
    /// [`Self::weight_scale`]), in place.
    pub(crate) fn rescale_weights(&self, params: &[tch::Tensor]) {
        if self.weight_scale > 1.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, u64::MAX));
            let log_range = self.weight_scale.ln();
            let _guard = tch::no_grad_guard();
            for p in params {
                let factor = rng.gen_range(-log_range..=log_range).exp();
                let _ = p.shallow_clone().g_mul_scalar_(factor);
            }
        }
    }

    /// The tuned reference of this configuration (spec §6): AdamW at each of the grid's learning
    /// rates with a constant schedule for T steps, evaluated at
    /// [`reward::reference_eval_steps`], point-wise best, fitted. Read from `cache` when it was
    /// computed before. `None` when no power law fits (a configuration nothing learns on).
    pub fn reference(&self, pool: &Pool, cache: &ReferenceCache) -> Result<Option<ReferenceCurve>> {
        self.reference_with(cache, |eval_at| {
            LEARNING_RATES
                .iter()
                .map(|&lr| {
                    let mut task = self.build(pool)?;
                    let trace = baseline::train_adamw(
                        task.as_mut(),
                        lr,
                        Schedule::Constant,
                        self.steps,
                        eval_at,
                    );
                    Ok(trace.evals)
                })
                .collect()
        })
    }

    /// [`Self::reference`] with the runs computed by `runs(eval_at)` on a cache miss: one trace
    /// of evaluations per learning rate of [`LEARNING_RATES`], in that order, each taken after
    /// the step counts in `eval_at` and at the end ([`crate::batched::reference`] computes them
    /// as one batched program).
    pub fn reference_with(
        &self,
        cache: &ReferenceCache,
        runs: impl FnOnce(&[u64]) -> Result<Vec<Vec<(u64, f64)>>>,
    ) -> Result<Option<ReferenceCurve>> {
        let points = match cache.load(&self.key())? {
            Some(points) => points,
            None => {
                let runs = runs(&reward::reference_eval_steps(self.steps))?;
                let points = reward::pointwise_best(&runs);
                cache.store(&self.key(), &points)?;
                points
            }
        };
        Ok(ReferenceCurve::fit(&points, self.steps).ok())
    }

    /// Inner steps a reference costs to compute (for the throughput counters).
    pub fn reference_steps(&self) -> u64 {
        self.steps * LEARNING_RATES.len() as u64
    }
}

/// The point-wise best reference losses of task configurations, one small JSON file each, in
/// `$LHOPT_CACHE/references/`.
#[derive(Clone, Debug)]
pub struct ReferenceCache {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredReference {
    version: u32,
    key: String,
    points: Vec<(u64, f64)>,
}

impl ReferenceCache {
    /// The cache at `root`.
    pub fn at(root: impl Into<PathBuf>) -> ReferenceCache {
        ReferenceCache { root: root.into() }
    }

    /// `$LHOPT_CACHE/references` (default `~/.cache/lhopt/references`).
    pub fn from_env() -> Result<ReferenceCache> {
        Ok(Self::at(baseline::cache_dir()?.join("references")))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(format!("{key}.json"))
    }

    /// The stored points of `key`; `None` when missing, unreadable or of another format.
    pub fn load(&self, key: &str) -> Result<Option<Vec<(u64, f64)>>> {
        let path = self.path(key);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        Ok(serde_json::from_str::<StoredReference>(&text)
            .ok()
            .filter(|r| r.version == REFERENCE_FORMAT && r.key == key)
            .map(|r| r.points))
    }

    /// Stores the points of `key` (finite losses only: JSON has no NaN), atomically.
    pub fn store(&self, key: &str, points: &[(u64, f64)]) -> Result<()> {
        let stored = StoredReference {
            version: REFERENCE_FORMAT,
            key: key.to_owned(),
            points: points.to_vec(),
        };
        let json = serde_json::to_string(&stored).expect("references serialise");
        write_atomic(&self.path(key), json.as_bytes())
    }
}

fn log_uniform_u64(rng: &mut impl Rng, lo: u64, hi: u64) -> u64 {
    let x = rng
        .gen_range((lo as f64).ln()..((hi + 1) as f64).ln())
        .exp();
    (x.floor() as u64).clamp(lo, hi)
}

/// A 64-bit mix of a seed and an index (SplitMix64 finaliser), for independent streams.
pub fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_configurations_respect_the_ranges_and_are_reproducible() {
        let cfg = RolloutConfig::default();
        for i in 0..200 {
            let t = MetaTask::sample(&cfg, 7, i);
            assert!(t.steps >= cfg.min_steps.min(t.spec.steps) && t.steps <= cfg.max_steps);
            assert!(t.decisions >= 1 && u64::from(t.decisions) * cfg.min_interval <= t.steps);
            assert!(!t.spec.family.is_held_out());
            assert_eq!(t, MetaTask::sample(&cfg, 7, i));
        }
        // T is spread over its range, not pinned at the top.
        let short = (0..200)
            .filter(|&i| MetaTask::sample(&cfg, 7, i).steps < cfg.max_steps / 2)
            .count();
        assert!(short > 20, "{short} of 200 below T/2");
    }

    #[test]
    fn references_round_trip_and_other_keys_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReferenceCache::at(dir.path());
        let points = vec![(0, 2.3), (5, 1.5), (300, 0.25)];
        assert_eq!(cache.load("a").unwrap(), None);
        cache.store("a", &points).unwrap();
        assert_eq!(cache.load("a").unwrap(), Some(points));
        assert_eq!(cache.load("b").unwrap(), None);
        std::fs::write(cache.path("a"), "{ torn").unwrap();
        assert_eq!(cache.load("a").unwrap(), None);
    }
}
