//! Adam for the PPO update with global grad-norm clipping and state that checkpoints can store
//! (tch's built-in optimizer hides its moments, so a resumed run would restart them from zero).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Adam (β1 0.9, β2 0.999, ε 1e-8, no weight decay) over a fixed, ordered parameter list.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    steps: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// The optimizer's state as plain data, parameter order as given to [`Adam::new`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken (for bias correction).
    pub steps: u64,
    /// First moments, flattened.
    pub m: Vec<Vec<f32>>,
    /// Second moments, flattened.
    pub v: Vec<Vec<f32>>,
}

impl Adam {
    /// Zero moments for `params`.
    pub fn new(params: &[Tensor], lr: f64) -> Self {
        let zeros = || params.iter().map(|p| p.zeros_like().detach()).collect();
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// Scales all gradients so their global norm is at most `max_norm`, then takes one Adam step.
    /// Returns the gradient norm before clipping.
    pub fn clip_and_step(&mut self, params: &[Tensor], max_norm: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
        let sq: Vec<Tensor> = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| g.pow_tensor_scalar(2).sum(Kind::Float))
            .collect();
        let norm = Tensor::stack(&sq, 0)
            .sum(Kind::Float)
            .sqrt()
            .double_value(&[]);
        let scale = if norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let bc1 = 1.0 - self.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - self.beta2.powi(self.steps as i32);
        for ((p, g), (m, v)) in params
            .iter()
            .zip(&grads)
            .zip(self.m.iter_mut().zip(&mut self.v))
        {
            if !g.defined() {
                continue;
            }
            let g = g * scale;
            m.copy_(&(&*m * self.beta1 + &g * (1.0 - self.beta1)));
            v.copy_(&(&*v * self.beta2 + (&g * &g) * (1.0 - self.beta2)));
            let update = (&*m / bc1) / ((&*v / bc2).sqrt() + self.eps) * self.lr;
            let _ = p.shallow_clone().g_sub_(&update);
        }
        norm
    }

    /// The state as plain vectors (for checkpoints).
    pub fn state(&self) -> AdamState {
        let flat = |ts: &[Tensor]| {
            ts.iter()
                .map(|t| {
                    Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).view([-1]))
                        .expect("float moments")
                })
                .collect()
        };
        AdamState {
            steps: self.steps,
            m: flat(&self.m),
            v: flat(&self.v),
        }
    }

    /// Restores a state from [`Adam::state`]; `None` when it does not fit the parameters.
    pub fn restore(&mut self, s: &AdamState) -> Option<()> {
        let fits = |src: &[Vec<f32>], dst: &[Tensor]| {
            src.len() == dst.len() && src.iter().zip(dst).all(|(a, t)| a.len() == t.numel())
        };
        if !fits(&s.m, &self.m) || !fits(&s.v, &self.v) {
            return None;
        }
        let _guard = tch::no_grad_guard();
        for (src, dst) in
            s.m.iter()
                .zip(&mut self.m)
                .chain(s.v.iter().zip(&mut self.v))
        {
            dst.copy_(&Tensor::from_slice(src).view_as(dst).to_device(dst.device()));
        }
        self.steps = s.steps;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        // Bias-corrected Adam's first step is lr·g/(|g| + ε) per coordinate.
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = Adam::new(&[p.shallow_clone()], 0.1);
        (&p * Tensor::from_slice(&[3.0f32, -0.5]))
            .sum(Kind::Float)
            .backward();
        let norm = opt.clip_and_step(&[p.shallow_clone()], 100.0);
        assert!((norm - (9.0f64 + 0.25).sqrt()).abs() < 1e-5);
        let after = Vec::<f32>::try_from(p.detach()).unwrap();
        assert!(
            (after[0] - 0.9).abs() < 1e-5 && (after[1] + 1.9).abs() < 1e-5,
            "{after:?}"
        );
    }

    #[test]
    fn clipping_scales_the_gradient_and_state_round_trips() {
        let p = Tensor::from_slice(&[0.0f32; 3]).set_requires_grad(true);
        let mut opt = Adam::new(&[p.shallow_clone()], 0.01);
        (&p * Tensor::from_slice(&[30.0f32, 40.0, 0.0]))
            .sum(Kind::Float)
            .backward();
        assert!((opt.clip_and_step(&[p.shallow_clone()], 5.0) - 50.0).abs() < 1e-4);
        let s = opt.state();
        // Clipped to norm 5: m = 0.1·(3, 4, 0).
        assert!((s.m[0][0] - 0.3).abs() < 1e-5 && (s.m[0][1] - 0.4).abs() < 1e-5);
        let mut fresh = Adam::new(&[p.shallow_clone()], 0.01);
        fresh.restore(&s).unwrap();
        assert_eq!(fresh.state().m, s.m);
        assert_eq!(fresh.state().steps, 1);
    }
}
