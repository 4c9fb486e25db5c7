//! Batched task instances (issue 10): K independent instances of one task configuration trained
//! as one tensor program, so libtorch's per-op cost is paid once per step for all K.
//!
//! - [`tasks`]: the batched families (noisy quadratic, image MLP, algorithmic RNN).
//! - [`ciao`]: CIAO with per-instance hyperparameters, clipping, trust ratios, reductions and
//!   checkpoint registers.
//! - [`mod@env`]: one lockstep episode of K instances, each with its own core `Observer`.
//! - [`mod@reference`]: a configuration's tuned reference, its learning rates as one batch.
//! - [`rollout`]: batched rollouts for meta-training, reporting episodes as the unbatched worker.

pub mod ciao;
pub mod env;
pub mod reference;
pub mod rollout;
pub mod tasks;

#[cfg(test)]
mod tests;
