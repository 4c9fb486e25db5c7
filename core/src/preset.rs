//! Picking the network sizes at run time from a policy file's header.
//!
//! [`FrozenPolicy`](crate::FrozenPolicy) and [`Controller`](crate::Controller) take their sizes
//! as const generics, so firmware pays for one preset only. A program that accepts any policy
//! file reads its [`Preset`] and hands the code to run to [`Preset::run`] as a [`WithPreset`]:
//! one generic function, instantiated for each preset, and no allocation.
//!
//! ```
//! use lhopt_core::{Controller, Error, Hyperparams, Preset, RunConfig, WithPreset};
//!
//! struct Steps(RunConfig);
//! impl WithPreset for Steps {
//!     type Output = Result<u64, Error>;
//!     fn run<const PRE: usize, const H: usize, const POST: usize>(self) -> Self::Output {
//!         let ctrl = Controller::<PRE, H, POST>::holding(self.0, Hyperparams::INITIAL)?;
//!         Ok(ctrl.observer().interval()) // in a program: `ctrl.load(file, ..)` and train
//!     }
//! }
//! # let mut file = vec![0u8; lhopt_core::FrozenPolicy::<32, 32, 32>::MAX_ENCODED_LEN];
//! # let n = lhopt_core::FrozenPolicy::<32, 32, 32>::holding().encode(&mut file)?;
//! # let file = &file[..n]; // a Tiny policy file
//! let preset = Preset::of_file(file)?;
//! assert_eq!(preset, Preset::Tiny);
//! let cfg = RunConfig { total_steps: 100, decisions: 10 };
//! assert_eq!(preset.run(Steps(cfg))?, 10);
//! # Ok::<(), Error>(())
//! ```

use crate::error::Error;
use crate::format::{PolicyHeader, read_header};

/// The network sizes this build compiles: pre = hidden = post.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    /// 32/32/32 ([`crate::Tiny`]).
    Tiny,
    /// 64/64/64 ([`crate::Small`]).
    Small,
    /// 128/128/128 ([`crate::Medium`]).
    Medium,
    /// 256/256/256, the paper's size ([`crate::Paper`]).
    Paper,
}

/// Code generic over the network sizes, run by [`Preset::run`] with the sizes of a preset.
pub trait WithPreset {
    /// What the code returns.
    type Output;
    /// Runs with `PolicyNet<PRE, H, POST>`'s sizes.
    fn run<const PRE: usize, const H: usize, const POST: usize>(self) -> Self::Output;
}

impl Preset {
    /// Every preset, smallest first.
    pub const ALL: [Preset; 4] = [Preset::Tiny, Preset::Small, Preset::Medium, Preset::Paper];

    /// The `[pre, hidden, post]` sizes.
    pub const fn sizes(self) -> [usize; 3] {
        let n = match self {
            Preset::Tiny => 32,
            Preset::Small => 64,
            Preset::Medium => 128,
            Preset::Paper => 256,
        };
        [n, n, n]
    }

    /// The preset a header names; [`Error::UnknownPreset`] for sizes that are none of them.
    pub fn of(header: &PolicyHeader) -> Result<Preset, Error> {
        let sizes = [header.pre, header.hidden, header.post].map(usize::from);
        Self::ALL
            .into_iter()
            .find(|p| p.sizes() == sizes)
            .ok_or(Error::UnknownPreset {
                pre: header.pre,
                hidden: header.hidden,
                post: header.post,
            })
    }

    /// The preset of a policy file, from its checked header ([`read_header`]).
    pub fn of_file(bytes: &[u8]) -> Result<Preset, Error> {
        Self::of(&read_header(bytes)?)
    }

    /// Runs `code` with this preset's sizes.
    pub fn run<C: WithPreset>(self, code: C) -> C::Output {
        match self {
            Preset::Tiny => code.run::<32, 32, 32>(),
            Preset::Small => code.run::<64, 64, 64>(),
            Preset::Medium => code.run::<128, 128, 128>(),
            Preset::Paper => code.run::<256, 256, 256>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FrozenPolicy;

    struct Sizes;
    impl WithPreset for Sizes {
        type Output = [usize; 3];
        fn run<const PRE: usize, const H: usize, const POST: usize>(self) -> [usize; 3] {
            [PRE, H, POST]
        }
    }

    #[test]
    fn each_preset_runs_with_its_own_sizes_and_others_are_named() {
        for p in Preset::ALL {
            assert_eq!(p.run(Sizes), p.sizes());
        }
        let mut header = FrozenPolicy::<32, 32, 32>::holding().header().clone();
        assert_eq!(Preset::of(&header), Ok(Preset::Tiny));
        header.hidden = 48;
        assert_eq!(
            Preset::of(&header),
            Err(Error::UnknownPreset {
                pre: 32,
                hidden: 48,
                post: 32
            })
        );
        assert_eq!(
            Preset::of_file(b"LHPX"),
            Err(Error::Truncated {
                needed: 10,
                found: 4
            })
        );
    }
}
