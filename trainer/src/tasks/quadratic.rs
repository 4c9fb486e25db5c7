//! Noisy quadratic bowl: L(x) = mean_i h_i (x_i − ξ_i)² / 2 with curvatures h_i log-spaced over
//! the conditioning number and a fresh Gaussian target offset ξ ~ N(0, noise²) every step. The
//! held-out loss is the noise-free bowl (ξ = 0).

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::sampling::{log_uniform, log_uniform_int, normal};
use super::{Scale, Task, TaskSpec, nn::ParamStore, task_rng};

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Number of coordinates.
    pub dims: u64,
    /// Ratio of the largest to the smallest curvature.
    pub conditioning: f64,
    /// Standard deviation of the per-step target noise.
    pub noise: f64,
}

impl Config {
    /// Spec §8 ranges: dims 10–10k, conditioning 100–30k, noise 0.1–3 (CPU: dims ≤ 1000).
    pub fn sample(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let max_dims = match scale {
            Scale::Cpu => 1000,
            Scale::Gpu => 10_000,
        };
        Config {
            dims: log_uniform_int(rng, 10, max_dims),
            conditioning: log_uniform(rng, 100.0, 30_000.0),
            noise: log_uniform(rng, 0.1, 3.0),
        }
    }
}

/// A built noisy quadratic task.
pub struct Quadratic {
    spec: TaskSpec,
    noise: f64,
    params: Vec<Tensor>,
    curvature: Tensor,
    rng: ChaCha8Rng,
}

impl Quadratic {
    /// Starts at x ~ N(0, 1) per coordinate.
    pub fn new(spec: TaskSpec, config: &Config, device: Device) -> Self {
        let n = config.dims as i64;
        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let _x = ps.normal(&[n], 1.0); // the only parameter, params[0]
        let (params, _) = ps.finish();
        // h_i = conditioning^(-i/(n-1)), from 1 down to 1/conditioning.
        let curvature =
            Tensor::linspace(0.0, -config.conditioning.ln(), n, (Kind::Float, device)).exp();
        let rng = task_rng(&spec, 1);
        Quadratic {
            spec,
            noise: config.noise,
            params,
            curvature,
            rng,
        }
    }

    /// Appends the next step's target offsets ξ (one per coordinate) to `out`.
    pub(crate) fn draw_target(&mut self, out: &mut Vec<f32>) {
        let n = self.curvature.numel();
        out.extend((0..n).map(|_| self.noise as f32 * normal(&mut self.rng)));
    }

    /// The curvatures h_i.
    pub(crate) fn curvature(&self) -> &Tensor {
        &self.curvature
    }

    fn loss(&self, target: Option<&Tensor>) -> Tensor {
        let x = &self.params[0];
        let diff = match target {
            Some(t) => x - t,
            None => x.shallow_clone(),
        };
        (diff.square() * &self.curvature).mean(Kind::Float) * 0.5
    }
}

impl Task for Quadratic {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_loss(&mut self) -> Tensor {
        let mut noise = Vec::with_capacity(self.curvature.numel());
        self.draw_target(&mut noise);
        let target = Tensor::from_slice(&noise).to_device(self.curvature.device());
        self.loss(Some(&target))
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        self.loss(None).double_value(&[])
    }
}
