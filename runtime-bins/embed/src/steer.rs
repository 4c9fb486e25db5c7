//! The controller calls a training runtime makes, with the policy's compile-time sizes erased.
//!
//! [`lhopt_core::Controller`] is generic over the network sizes so firmware pays for exactly one
//! preset. A host program usually learns the preset from the policy file; [`Steer`] lets it hold
//! any of them behind one type, and [`load_any`] (feature `std`) opens the file's preset.

use lhopt_core::{
    Controller, Decision, DecisionInputs, Error, Hyperparams, Observer, StepReductions, StepStatus,
};

/// One inner step at a time in, a [`Decision`] out when one is due: the whole embedding API.
pub trait Steer {
    /// Whether the step about to run should report its per-tensor reductions.
    fn wants_reductions(&self) -> bool;
    /// Records one finished inner step.
    fn observe(&mut self, train_loss: f32, reductions: Option<StepReductions<'_>>) -> StepStatus;
    /// Makes the decision that [`Steer::observe`] announced as due ([`Controller::decide`]).
    fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, Error>;
    /// The hyperparameters in force.
    fn hyper(&self) -> Hyperparams;
    /// The run's observer (step, decisions made, schedule).
    fn observer(&self) -> &Observer;
    /// A buffer size that always holds [`Steer::save_state`]'s output.
    fn state_max_len(&self) -> usize;
    /// Writes the controller's whole state into `buf`; returns the bytes written.
    fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error>;
    /// Replaces the controller's state by one written by [`Steer::save_state`].
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

impl<const PRE: usize, const H: usize, const POST: usize> Steer for Controller<PRE, H, POST> {
    fn wants_reductions(&self) -> bool {
        Controller::wants_reductions(self)
    }
    fn observe(&mut self, train_loss: f32, reductions: Option<StepReductions<'_>>) -> StepStatus {
        Controller::observe(self, train_loss, reductions)
    }
    fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, Error> {
        Controller::decide(self, inputs)
    }
    fn hyper(&self) -> Hyperparams {
        Controller::hyper(self)
    }
    fn observer(&self) -> &Observer {
        Controller::observer(self)
    }
    fn state_max_len(&self) -> usize {
        Self::STATE_MAX_LEN
    }
    fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error> {
        Controller::save_state(self, buf)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        Controller::restore_state(self, bytes)
    }
}

/// Where the policy file `policy` was trained to start ([`lhopt_core::PolicyHeader::start`]):
/// the hyperparameters to start a run from when the user gives none. The spec's initial values
/// when the bytes are not a policy file (loading them then says why).
pub fn policy_start(policy: &[u8]) -> Hyperparams {
    lhopt_core::read_header(policy).map_or(Hyperparams::INITIAL, |h| h.start())
}

#[cfg(feature = "std")]
pub use load::{LoadError, Loaded, load_any};

#[cfg(feature = "std")]
mod load {
    use std::boxed::Box;
    use std::fmt;

    use lhopt_core::{
        Controller, Decision, DecisionInputs, Error, FrozenPolicy, Hyperparams, Mode, Observer,
        Preset, RunConfig, StepReductions, StepStatus, WithPreset,
    };

    use super::Steer;

    /// A controller for whichever preset a policy file holds.
    pub struct Loaded {
        /// The controller, sizes erased.
        pub controller: Box<dyn Steer + Send>,
        /// The policy's [pre, hidden, post] sizes.
        pub preset: [usize; 3],
    }

    /// Why a policy file could not be turned into a controller.
    #[derive(Debug)]
    pub enum LoadError {
        /// The file or the run configuration was rejected by the core (a valid file whose sizes
        /// are no preset included: [`Error::UnknownPreset`]).
        Core(Error),
        /// The operating system refused the thread the controller is built on.
        Thread(std::io::Error),
    }

    impl fmt::Display for LoadError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                LoadError::Core(e) => e.fmt(f),
                LoadError::Thread(e) => write!(f, "cannot start the loader thread: {e}"),
            }
        }
    }

    impl std::error::Error for LoadError {}

    impl<S: Steer + ?Sized> Steer for Box<S> {
        fn wants_reductions(&self) -> bool {
            (**self).wants_reductions()
        }
        fn observe(
            &mut self,
            train_loss: f32,
            reductions: Option<StepReductions<'_>>,
        ) -> StepStatus {
            (**self).observe(train_loss, reductions)
        }
        fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, Error> {
            (**self).decide(inputs)
        }
        fn hyper(&self) -> Hyperparams {
            (**self).hyper()
        }
        fn observer(&self) -> &Observer {
            (**self).observer()
        }
        fn state_max_len(&self) -> usize {
            (**self).state_max_len()
        }
        fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error> {
            (**self).save_state(buf)
        }
        fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
            (**self).restore_state(bytes)
        }
    }

    impl From<Error> for LoadError {
        fn from(e: Error) -> Self {
            LoadError::Core(e)
        }
    }

    /// Stack for building a controller: the core decodes a policy by value, so building one
    /// holds a few copies of its weights on the stack (about 3 MiB each for Paper).
    const BUILD_STACK: usize = 64 << 20;

    /// Decodes `policy` with the preset its header names and starts a controller for `cfg`.
    ///
    /// The controller is built on a short-lived thread with a large stack, so loading works from
    /// any caller's thread (C hosts, test threads) whatever the preset.
    pub fn load_any(
        policy: &[u8],
        cfg: RunConfig,
        initial: Hyperparams,
        mode: Mode,
    ) -> Result<Loaded, LoadError> {
        let preset = Preset::of_file(policy)?;
        let build = Build {
            policy,
            cfg,
            initial,
            mode,
        };
        let controller = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lhopt-load".into())
                .stack_size(BUILD_STACK)
                .spawn_scoped(scope, || preset.run(build))
                .map_err(LoadError::Thread)?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        let preset = preset.sizes();
        Ok(Loaded { controller, preset })
    }

    /// Builds the controller of whichever preset [`Preset::run`] picks.
    struct Build<'a> {
        policy: &'a [u8],
        cfg: RunConfig,
        initial: Hyperparams,
        mode: Mode,
    }

    impl WithPreset for Build<'_> {
        type Output = Result<Box<dyn Steer + Send>, LoadError>;

        /// Not inlined, so each preset's large stack frame exists only while that preset is
        /// built.
        #[inline(never)]
        fn run<const PRE: usize, const H: usize, const POST: usize>(self) -> Self::Output {
            let frozen = FrozenPolicy::<PRE, H, POST>::decode(self.policy)?;
            Ok(Box::new(Controller::new(
                frozen,
                self.cfg,
                self.initial,
                self.mode,
            )?))
        }
    }
}
