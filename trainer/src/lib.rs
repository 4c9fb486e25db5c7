//! lhopt-trainer: inner tasks on tch, PPO meta-training, export to the core's frozen format.
pub mod device;
pub mod error;
pub mod optim;

pub use error::{Error, Result};
