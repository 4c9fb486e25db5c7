//! A pure-Rust training runtime steered by a frozen LHOPT policy: a small MLP on the 8×8
//! digits, trained with the core's reference inner optimizer on plain slices. No tensor
//! library, no libtorch: copy [`train::train_steered`] to steer your own training loop.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod data;
pub mod mlp;
pub mod train;
