//! Small generated stand-ins for the real datasets, with learnable structure, so tests and
//! benchmarks can build every family without the download. Same formats as the loaders return.

use std::collections::BTreeSet;

use lhopt_data::{DataDir, Email, Images, Rating, SpamGroup, Split};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

use super::image::{ImageData, ImageSet};
use super::lm::Corpus;
use super::ncf::Interactions;
use super::text::{Document, TextData};
use super::{Task, TaskConfig, TaskSpec, algorithmic, image, lm, ncf, quadratic, text};
use crate::error::Result;

const SPAM_WORDS: [&str; 6] = ["free", "money", "winner", "offer", "click", "cash"];
const HAM_WORDS: [&str; 6] = ["meeting", "project", "report", "lunch", "team", "code"];
const SHARED_WORDS: [&str; 4] = ["the", "and", "to", "you"];

/// `n` images: one fixed random template per class plus 30% noise.
pub fn images(side: usize, max_value: u8, n: usize, seed: u64) -> Images {
    let mut templates = ChaCha8Rng::seed_from_u64(99);
    let templates: Vec<Vec<f32>> = (0..lhopt_data::CLASSES)
        .map(|_| {
            (0..side * side)
                .map(|_| templates.gen_range(0.0..1.0))
                .collect()
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n)
        .map(|_| rng.gen_range(0..lhopt_data::CLASSES))
        .collect();
    let pixels = labels
        .iter()
        .flat_map(|&l| templates[usize::from(l)].clone())
        .map(|t| {
            let x = 0.7 * t + 0.3 * rng.gen_range(0.0..1.0f32);
            (x * f32::from(max_value)).round() as u8
        })
        .collect();
    Images {
        n,
        rows: side,
        cols: side,
        max_value,
        pixels,
        labels,
    }
}

/// Train (600) and held-out (200) images shaped like `set`.
pub fn image_data(set: ImageSet) -> ImageData {
    let (side, max_value) = match set {
        ImageSet::FashionMnist => (28, 255),
        ImageSet::FashionMnist8 => (8, 255),
        ImageSet::Digits => (8, 16),
    };
    ImageData {
        train: images(side, max_value, 600, 1),
        eval: images(side, max_value, 200, 2),
    }
}

/// `n` documents, 40% spam, each mixing its class's words with shared ones.
pub fn documents(n: usize, seed: u64) -> Vec<Document> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let spam = rng.gen_bool(0.4);
            let own = if spam { &SPAM_WORDS } else { &HAM_WORDS };
            let len = rng.gen_range(5..60);
            let words: Vec<&str> = (0..len)
                .map(|_| {
                    let pool: &[&str] = if rng.gen_bool(0.5) {
                        own
                    } else {
                        &SHARED_WORDS
                    };
                    pool[rng.gen_range(0..pool.len())]
                })
                .collect();
            Document {
                text: words.join(" ").into_bytes(),
                spam,
            }
        })
        .collect()
}

/// About 27 kB of two alternating verse lines.
pub fn text_corpus() -> Vec<u8> {
    let lines = [
        "to be or not to be, that is the question.\n",
        "all the world's a stage.\n",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    (0..800)
        .flat_map(|_| lines[rng.gen_range(0..2)].bytes())
        .collect()
}

/// 120 users rating 25 items each, odd users odd items and even users even ones (1-based ids,
/// 200 items, timestamps increasing with the item id).
pub fn ratings() -> Vec<Rating> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    for user in 1..=120u32 {
        let mut items = BTreeSet::new();
        while items.len() < 25 {
            items.insert(2 * rng.gen_range(0..100u32) + user % 2 + 1);
        }
        for (t, item) in items.into_iter().enumerate() {
            out.push(Rating {
                user,
                item,
                rating: 4.0,
                timestamp: 1000 + t as u64,
            });
        }
    }
    out
}

/// Builds the task `spec` describes on generated data instead of the dataset cache.
pub fn build(spec: &TaskSpec, device: Device) -> Result<Box<dyn Task>> {
    let s = spec.clone();
    Ok(match &spec.config {
        TaskConfig::NoisyQuadratic(c) => Box::new(quadratic::Quadratic::new(s, c, device)),
        TaskConfig::Algorithmic(c) => Box::new(algorithmic::Algorithmic::new(s, c, device)),
        TaskConfig::Image(c) => {
            Box::new(image::ImageTask::new(s, c, image_data(c.dataset), device)?)
        }
        TaskConfig::TextRnn(c) => Box::new(text::TextRnn::new(
            s,
            c,
            TextData::split(documents(300, 3)),
            device,
        )?),
        TaskConfig::CharLm(c) => Box::new(lm::CharLm::new(
            s,
            c,
            Corpus::split(&text_corpus()),
            device,
        )?),
        TaskConfig::Ncf(c) => Box::new(ncf::NcfTask::new(
            s,
            c,
            Interactions::from_ratings(&ratings())?,
            device,
        )?),
    })
}

/// Writes small generated versions of all five datasets into `data`, in the cache's formats.
pub fn fill_data_dir(data: &DataDir) -> Result<()> {
    data.store_fashion_mnist(Split::Train, &images(28, 255, 100, 1))?;
    data.store_fashion_mnist(Split::Test, &images(28, 255, 50, 2))?;
    data.store_digits(&images(8, 16, 120, 3))?;
    data.store_shakespeare(&[("hamlet", text_corpus().as_slice())])?;
    let mail: Vec<Email> = documents(40, 4)
        .into_iter()
        .map(|d| {
            let group = if d.spam {
                SpamGroup::ALL[3]
            } else {
                SpamGroup::ALL[0]
            };
            Email {
                group,
                bytes: [b"Subject: hi\n\n".as_slice(), &d.text].concat(),
            }
        })
        .collect();
    data.store_spam_assassin(&mail)?;
    data.store_movielens_100k(&ratings())?;
    Ok(())
}
