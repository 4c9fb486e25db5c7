//! The inner training tasks of spec §8: their specifications, the sampler over the task
//! distribution, and the [`Task`] trait every family implements.
//!
//! A task is a deterministic function of its [`TaskSpec`]: weights, batch order, noise and dropout
//! masks come from a ChaCha RNG seeded by the spec, never from libtorch's global RNG, so building
//! the same spec twice gives the same loss sequence whatever other threads do.

pub mod algorithmic;
pub mod image;
pub mod lm;
pub mod ncf;
pub(crate) mod nn;
pub mod quadratic;
pub(crate) mod sampling;
pub mod synthetic;
pub mod text;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::{Error, Result};
pub use nn::{Activation, CellKind, NormKind};
use sampling::log_uniform_int;

/// A task family of spec §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// Noisy quadratic bowl, no model.
    NoisyQuadratic,
    /// Parity / binary addition with a recurrent network.
    Algorithmic,
    /// MLP on Fashion-MNIST or 8x8 digits.
    ImageMlp,
    /// Small CNN on Fashion-MNIST or 8x8 digits.
    ImageCnn,
    /// Recurrent spam/ham classifier on e-mails (held out from meta-training: a second unseen
    /// family for the held-out table, of a modality no training family has).
    TextRnn,
    /// Byte-level transformer language model on Shakespeare.
    CharLm,
    /// Neural collaborative filtering on MovieLens-100K (held out from meta-training).
    Ncf,
}

impl Family {
    /// Every family, held-out ones included.
    pub const ALL: [Family; 7] = [
        Family::NoisyQuadratic,
        Family::Algorithmic,
        Family::ImageMlp,
        Family::ImageCnn,
        Family::TextRnn,
        Family::CharLm,
        Family::Ncf,
    ];
    /// The families meta-training samples from (all but the held-out ones).
    pub const TRAINING: [Family; 5] = [
        Family::NoisyQuadratic,
        Family::Algorithmic,
        Family::ImageMlp,
        Family::ImageCnn,
        Family::CharLm,
    ];

    /// Short lowercase name, used in keys, file names and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Family::NoisyQuadratic => "quadratic",
            Family::Algorithmic => "algorithmic",
            Family::ImageMlp => "image-mlp",
            Family::ImageCnn => "image-cnn",
            Family::TextRnn => "text-rnn",
            Family::CharLm => "char-lm",
            Family::Ncf => "ncf",
        }
    }

    /// Parses [`Family::name`].
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Range of the default inner-step count T. On CPU it is sized by the measured cost of a
    /// step (trainer/benches/steps.rs) so an episode stays under about half a minute.
    pub fn steps_range(self, scale: Scale) -> (u64, u64) {
        match (scale, self) {
            (Scale::Cpu, Family::NoisyQuadratic | Family::Ncf) => (200, 2000),
            (Scale::Cpu, Family::ImageMlp | Family::ImageCnn) => (200, 1000),
            (Scale::Cpu, Family::Algorithmic | Family::TextRnn) => (200, 800),
            (Scale::Cpu, Family::CharLm) => (200, 500),
            (Scale::Gpu, Family::CharLm) => (1000, 10_000),
            (Scale::Gpu, _) => (2000, 20_000),
        }
    }

    /// Held out from meta-training, used only to test generalisation.
    pub fn is_held_out(self) -> bool {
        !Family::TRAINING.contains(&self)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How large sampled tasks are: `Cpu` narrows the ranges of spec §8 so an episode takes seconds
/// on one core; `Gpu` uses the paper's full ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scale {
    /// Narrow ranges, seconds per episode on one CPU thread.
    Cpu,
    /// Full ranges of spec §8, minutes per episode on a GPU.
    Gpu,
}

/// The sampled configuration of one task, one variant per family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TaskConfig {
    /// See [`quadratic::Config`].
    NoisyQuadratic(quadratic::Config),
    /// See [`algorithmic::Config`].
    Algorithmic(algorithmic::Config),
    /// See [`image::Config`] (MLP or CNN).
    Image(image::Config),
    /// See [`text::Config`].
    TextRnn(text::Config),
    /// See [`lm::Config`].
    CharLm(lm::Config),
    /// See [`ncf::Config`].
    Ncf(ncf::Config),
}

/// Everything needed to rebuild a task exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The family; always the one `config` belongs to.
    pub family: Family,
    /// Seeds weights, batch order, noise and dropout masks.
    pub seed: u64,
    /// The sampled family configuration.
    pub config: TaskConfig,
    /// Default number of inner steps T for this task.
    pub steps: u64,
}

impl TaskSpec {
    /// A stable, filesystem-safe identifier of the whole spec (baseline cache key): the family, the
    /// seed, the steps and a 64-bit FNV-1a hash of the spec's JSON form.
    pub fn key(&self) -> String {
        let json = serde_json::to_string(self).expect("a TaskSpec always serialises");
        let hash = json.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{}-s{}-t{}-{hash:016x}", self.family, self.seed, self.steps)
    }
}

/// Samples a task of `family`: a deterministic function of `(family, seed, scale)`.
pub fn sample(family: Family, seed: u64, scale: Scale) -> TaskSpec {
    // Mix the family into the stream so the same seed gives unrelated draws per family.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(family as u64);
    let config = match family {
        Family::NoisyQuadratic => {
            TaskConfig::NoisyQuadratic(quadratic::Config::sample(&mut rng, scale))
        }
        Family::Algorithmic => {
            TaskConfig::Algorithmic(algorithmic::Config::sample(&mut rng, scale))
        }
        Family::ImageMlp => TaskConfig::Image(image::Config::sample_mlp(&mut rng, scale)),
        Family::ImageCnn => TaskConfig::Image(image::Config::sample_cnn(&mut rng, scale)),
        Family::TextRnn => TaskConfig::TextRnn(text::Config::sample(&mut rng, scale)),
        Family::CharLm => TaskConfig::CharLm(lm::Config::sample(&mut rng, scale)),
        Family::Ncf => TaskConfig::Ncf(ncf::Config::sample(&mut rng, scale)),
    };
    let (lo, hi) = family.steps_range(scale);
    let steps = log_uniform_int(&mut rng, lo, hi);
    TaskSpec {
        family,
        seed,
        config,
        steps,
    }
}

/// Samples a meta-training task: the family is drawn uniformly from [`Family::TRAINING`] by the
/// seed, then [`sample`] draws its configuration.
pub fn sample_training(seed: u64, scale: Scale) -> TaskSpec {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    let family = *sampling::choose(&mut rng, &Family::TRAINING);
    sample(family, seed, scale)
}

/// One inner training problem, owned by a single thread (tensors are not `Sync`).
pub trait Task: Send {
    /// The spec this task was built from.
    fn spec(&self) -> &TaskSpec;
    /// The trainable leaves (requires_grad), always in the same order.
    fn parameters(&self) -> &[Tensor];
    /// Non-trainable state that checkpoints must carry too (batch-norm running statistics).
    fn buffers(&self) -> &[Tensor] {
        &[]
    }
    /// Loss on the next training minibatch (deterministic from the seed), a scalar with its graph.
    fn train_loss(&mut self) -> Tensor;
    /// Mean loss on the fixed held-out split, without gradients, in evaluation mode.
    fn eval_loss(&mut self) -> f64;
    /// Extra held-out metrics, e.g. hit ratio@10 and NDCG@10 for NCF.
    fn metrics(&mut self) -> Vec<(&'static str, f64)> {
        vec![]
    }
}

/// Builds the task `spec` describes on `device`, loading real data from `data` when the family
/// needs it.
pub fn build(spec: &TaskSpec, device: Device, data: &lhopt_data::DataDir) -> Result<Box<dyn Task>> {
    let mismatch = || {
        Error::InvalidSpec(format!(
            "family {} does not match its config {:?}; re-sample the spec",
            spec.family, spec.config
        ))
    };
    Ok(match (&spec.config, spec.family) {
        (TaskConfig::NoisyQuadratic(c), Family::NoisyQuadratic) => {
            Box::new(quadratic::Quadratic::new(spec.clone(), c, device))
        }
        (TaskConfig::Algorithmic(c), Family::Algorithmic) => {
            Box::new(algorithmic::Algorithmic::new(spec.clone(), c, device))
        }
        (TaskConfig::Image(c), Family::ImageMlp | Family::ImageCnn) => {
            if c.arch.is_cnn() != (spec.family == Family::ImageCnn) {
                return Err(mismatch());
            }
            let images = image::ImageData::load(c.dataset, data)?;
            Box::new(image::ImageTask::new(spec.clone(), c, images, device)?)
        }
        (TaskConfig::TextRnn(c), Family::TextRnn) => Box::new(text::TextRnn::new(
            spec.clone(),
            c,
            text::TextData::load(data)?,
            device,
        )?),
        (TaskConfig::CharLm(c), Family::CharLm) => Box::new(lm::CharLm::new(
            spec.clone(),
            c,
            lm::Corpus::load(data)?,
            device,
        )?),
        (TaskConfig::Ncf(c), Family::Ncf) => Box::new(ncf::NcfTask::new(
            spec.clone(),
            c,
            ncf::Interactions::load(data)?,
            device,
        )?),
        _ => return Err(mismatch()),
    })
}

/// The seeded RNG of a task's own stream `stream` (weights, batches, noise and eval split use
/// separate streams so changing one does not shift the others).
pub(crate) fn task_rng(spec: &TaskSpec, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(stream);
    rng
}
