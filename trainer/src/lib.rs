//! lhopt-trainer: inner tasks on tch, PPO meta-training, export to the core's frozen format.
pub mod device;
pub mod error;

pub use error::{Error, Result};
pub mod alternatives;
pub mod baseline;
pub mod batched;
pub mod cli;
pub mod distributed;
pub mod env;
pub mod eval;
pub mod export;
pub mod imitate;
pub mod meta_task;
pub mod meta_train;
pub mod optim;
pub mod plot;
pub mod policy_net;
pub mod pool;
pub mod ppo;
pub mod progress;
pub mod reward;
pub mod tasks;
