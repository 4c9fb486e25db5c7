//! What the example runtimes (pure-Rust digits, C API, JSON lines, firmware) share, so each of
//! them stays about its own host:
//!
//! - [`steer`]: the controller calls a runtime makes, as a trait with the policy sizes erased, and
//!   (with feature `std`) [`steer::load_any`] to open whichever preset a policy file names;
//! - [`sequenced`]: a controller wrapper that refuses calls made out of order, for runtimes whose
//!   calls come from outside Rust;
//! - [`scenario`]: a fixed, synthetic input sequence that every example replays in its tests, so
//!   their decisions can be compared bit for bit with the core library's;
//! - [`untrained`]: seeded, randomly initialised policies encoded with the core's own encoder,
//!   used until a trained default policy ships.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod scenario;
pub mod sequenced;
pub mod steer;
pub mod untrained;
