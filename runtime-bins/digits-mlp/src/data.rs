//! Classification data as the trainer wants it: features scaled to [0, 1], a train and an eval
//! split, random minibatches.

use lhopt_data::Images;

use crate::mlp::SplitMix;

/// A labelled data set split into train and eval parts.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Features per example.
    pub features: usize,
    /// Number of classes (labels are `0..classes`).
    pub classes: usize,
    /// Train features, example after example.
    pub train_x: Vec<f32>,
    /// Train labels.
    pub train_y: Vec<u8>,
    /// Eval features.
    pub eval_x: Vec<f32>,
    /// Eval labels.
    pub eval_y: Vec<u8>,
}

impl Dataset {
    /// Splits labelled images: a seeded shuffle, then `eval_fraction` of them held out for eval.
    pub fn from_images(images: &Images, eval_fraction: f32, seed: u64) -> Self {
        let features = images.rows * images.cols;
        let scale = 1.0 / f32::from(images.max_value.max(1));
        let x: Vec<f32> = images
            .pixels
            .iter()
            .map(|&p| f32::from(p) * scale)
            .collect();
        let classes = usize::from(lhopt_data::CLASSES);
        Self::split(features, classes, &x, &images.labels, eval_fraction, seed)
    }

    /// A generated stand-in with the digits' shape, for tests and benchmarks: `n` noisy 8×8
    /// copies of ten random prototypes.
    pub fn synthetic(n: usize, seed: u64) -> Self {
        const FEATURES: usize = 64;
        const CLASSES: usize = 10;
        let mut rng = SplitMix::new(seed);
        let prototypes: Vec<f32> = (0..CLASSES * FEATURES).map(|_| rng.uniform()).collect();
        let mut x = Vec::with_capacity(n * FEATURES);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let class = i % CLASSES;
            let proto = &prototypes[class * FEATURES..(class + 1) * FEATURES];
            x.extend(
                proto
                    .iter()
                    .map(|&p| (p + 0.3 * rng.normal()).clamp(0.0, 1.0)),
            );
            y.push(class as u8);
        }
        Self::split(FEATURES, CLASSES, &x, &y, 0.2, seed)
    }

    fn split(
        features: usize,
        classes: usize,
        x: &[f32],
        y: &[u8],
        eval_fraction: f32,
        seed: u64,
    ) -> Self {
        let n = y.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = SplitMix::new(seed ^ 0x5EED_DA7A);
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let n_eval = ((n as f32 * eval_fraction) as usize).clamp(1, n.saturating_sub(1));
        let (eval, train) = order.split_at(n_eval);
        let gather_x = |idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| &x[i * features..(i + 1) * features])
                .copied()
                .collect()
        };
        let gather_y = |idx: &[usize]| -> Vec<u8> { idx.iter().map(|&i| y[i]).collect() };
        Dataset {
            features,
            classes,
            train_x: gather_x(train),
            train_y: gather_y(train),
            eval_x: gather_x(eval),
            eval_y: gather_y(eval),
        }
    }

    /// Fills `x` and `y` with `batch` train examples drawn uniformly with replacement.
    pub fn sample_train_batch(
        &self,
        rng: &mut SplitMix,
        batch: usize,
        x: &mut Vec<f32>,
        y: &mut Vec<u8>,
    ) {
        x.clear();
        y.clear();
        for _ in 0..batch {
            let i = rng.below(self.train_y.len());
            x.extend_from_slice(&self.train_x[i * self.features..(i + 1) * self.features]);
            y.push(self.train_y[i]);
        }
    }
}
