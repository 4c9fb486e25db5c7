//! lhopt-core: the `no_std`, allocation-free LHOPT controller.
//!
//! LHOPT ("A Generalizable Approach to Learning Optimizers", Almeida et al. 2021) steers the
//! hyperparameters of a hand-designed inner optimizer with a small recurrent policy that only sees
//! unitless statistics of the training run. This crate holds everything a training runtime needs
//! to be steered by a frozen policy:
//!
//! - [`reductions`]: the per-tensor statistics a runtime hands over, and the 13 inner features;
//! - [`observation`]: the outer features and the 166-number observation vector ([`Observer`]);
//! - [`policy`]: the layer-norm LSTM policy network with compile-time sizes;
//! - [`action`] and [`hyper`]: the action heads and the hyperparameters they change;
//! - [`format`]: the frozen-policy file (postcard + CRC-32), see `FORMAT.md`;
//! - [`controller`]: the embedding API that ties these together;
//! - [`preset`]: choosing the network sizes at run time from a policy file's header;
//! - [`ciao`]: a reference inner optimizer on plain `f32` slices that produces the reductions.
//!
//! The crate has no heap, no `unsafe` and no reachable panic on the decode and decision paths.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod action;
pub mod ciao;
pub mod controller;
pub mod crc32;
pub mod error;
pub mod format;
pub mod hyper;
pub mod math;
pub mod moments;
pub mod observation;
pub mod policy;
pub mod preset;
pub mod reductions;
pub mod weights;

pub use action::{Action, Decision, HEAD_SIZES, NUM_ACTION_LOGITS, NUM_HEADS, Restart, apply};
pub use controller::{Controller, Mode};
pub use error::Error;
pub use format::{FrozenPolicy, PolicyHeader, encoded_len, read_header};
pub use hyper::{BOUNDS, Hyperparams, NUM_HYPERS};
pub use observation::{
    DecisionInputs, FEATURE_SET_VERSION, FeatureSet, OBS_DIM, Observer, RunConfig, StepReductions,
    StepStatus,
};
pub use policy::{LstmState, Medium, Paper, PolicyNet, Rng, Small, Tiny, greedy, log_prob, sample};
pub use preset::{Preset, WithPreset};
pub use reductions::{NUM_INNER_FEATURES, TensorReductions, inner_features};
pub use weights::{GateMatrix, Matrix, PANEL, Packed, PackedMatrix, Vector};

/// The Rust snippets of the project README, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
