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
    /// Makes the decision that [`Steer::observe`] announced as due.
    fn decide(&mut self, inputs: &DecisionInputs) -> Decision;
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
    fn decide(&mut self, inputs: &DecisionInputs) -> Decision {
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

/// A call made out of order: what the run expected instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// `observe` while the decision announced after step `after_step` (0-based) is still due.
    DecisionDue {
        /// The step after which the decision is due.
        after_step: u64,
    },
    /// `decide` while no decision is due; step `next_step` is expected.
    NoDecisionDue {
        /// The next step the run expects.
        next_step: u64,
    },
    /// Any call after all `total_steps` steps were recorded.
    Finished {
        /// Steps in the run.
        total_steps: u64,
    },
}

impl core::fmt::Display for OrderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OrderError::DecisionDue { after_step } => write!(
                f,
                "a decision is due after step {after_step}: make it before the next step"
            ),
            OrderError::NoDecisionDue { next_step } => write!(
                f,
                "no decision is due: record step {next_step} first (a decision follows the step \
                 that announced it)"
            ),
            OrderError::Finished { total_steps } => write!(
                f,
                "the run has finished ({total_steps} steps recorded); start a new controller"
            ),
        }
    }
}

/// Where a run is between two calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stepping,
    DecisionDue,
    Finished,
}

/// A controller that refuses calls made out of order ([`OrderError`]) instead of leaving their
/// effect to chance: for runtimes whose calls come from outside Rust (C, JSON lines).
pub struct Sequenced<S> {
    inner: S,
    total_steps: u64,
    steps_done: u64,
    phase: Phase,
}

impl<S: Steer> Sequenced<S> {
    /// Wraps a freshly created controller for a run of `total_steps` steps.
    pub fn new(inner: S, total_steps: u64) -> Self {
        Sequenced {
            inner,
            total_steps,
            steps_done: 0,
            phase: Phase::Stepping,
        }
    }

    /// Steps recorded so far (the 0-based number of the next step).
    pub fn steps_done(&self) -> u64 {
        self.steps_done
    }

    /// Whether the next step should report reductions (false while no step is expected).
    pub fn wants_reductions(&self) -> bool {
        self.phase == Phase::Stepping && self.inner.wants_reductions()
    }

    /// Whether [`Sequenced::observe`] would accept a step now.
    pub fn can_observe(&self) -> Result<(), OrderError> {
        self.expect(Phase::Stepping)
    }

    /// Records one step, unless a decision is due or the run is over.
    pub fn observe(
        &mut self,
        train_loss: f32,
        reductions: Option<StepReductions<'_>>,
    ) -> Result<StepStatus, OrderError> {
        self.expect(Phase::Stepping)?;
        let status = self.inner.observe(train_loss, reductions);
        self.steps_done += 1;
        self.phase = match status {
            StepStatus::DecisionDue => Phase::DecisionDue,
            _ => self.after_step(),
        };
        Ok(status)
    }

    /// Makes the decision that is due.
    pub fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, OrderError> {
        self.expect(Phase::DecisionDue)?;
        let decision = self.inner.decide(inputs);
        self.phase = self.after_step();
        Ok(decision)
    }

    /// The hyperparameters in force.
    pub fn hyper(&self) -> Hyperparams {
        self.inner.hyper()
    }

    /// A buffer size that always holds [`Sequenced::save_state`]'s output.
    pub fn state_max_len(&self) -> usize {
        self.inner.state_max_len()
    }

    /// Writes the controller's whole state into `buf`; returns the bytes written.
    pub fn save_state(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.inner.save_state(buf)
    }

    /// Restores a saved state and resumes the call order where the saved run stood (a decision
    /// announced but not yet made is due again).
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.restore_state(bytes)?;
        let observer = self.inner.observer();
        self.steps_done = observer.step();
        // Decisions are announced after steps I, 2I, ..., K*I.
        let announced = observer
            .step()
            .checked_div(observer.interval())
            .unwrap_or(0)
            .min(u64::from(observer.config().decisions));
        self.phase = if announced > u64::from(observer.decision_index()) {
            Phase::DecisionDue
        } else {
            self.after_step()
        };
        Ok(())
    }

    fn expect(&self, wanted: Phase) -> Result<(), OrderError> {
        match self.phase {
            p if p == wanted => Ok(()),
            Phase::Finished => Err(OrderError::Finished {
                total_steps: self.total_steps,
            }),
            Phase::DecisionDue => Err(OrderError::DecisionDue {
                after_step: self.steps_done - 1,
            }),
            Phase::Stepping => Err(OrderError::NoDecisionDue {
                next_step: self.steps_done,
            }),
        }
    }

    fn after_step(&self) -> Phase {
        if self.steps_done >= self.total_steps {
            Phase::Finished
        } else {
            Phase::Stepping
        }
    }
}

#[cfg(feature = "std")]
pub use load::{LoadError, Loaded, load_any};

#[cfg(feature = "std")]
mod load {
    use std::boxed::Box;
    use std::fmt;

    use lhopt_core::{
        Controller, Decision, DecisionInputs, Error, FrozenPolicy, Hyperparams, Mode, Observer,
        RunConfig, StepReductions, StepStatus, read_header,
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
        /// The file or the run configuration was rejected by the core.
        Core(Error),
        /// The file is valid but its sizes are none of the compiled-in presets.
        UnknownPreset([usize; 3]),
        /// The operating system refused the thread the controller is built on.
        Thread(std::io::Error),
    }

    impl fmt::Display for LoadError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                LoadError::Core(e) => e.fmt(f),
                LoadError::Thread(e) => write!(f, "cannot start the loader thread: {e}"),
                LoadError::UnknownPreset([pre, h, post]) => write!(
                    f,
                    "policy sizes pre={pre} hidden={h} post={post} are not a preset this build \
                     knows (Tiny 32, Small 64, Medium 128, Paper 256, all three equal)"
                ),
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
        fn decide(&mut self, inputs: &DecisionInputs) -> Decision {
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

    /// Builds one preset's controller.
    type Build =
        fn(&[u8], RunConfig, Hyperparams, Mode) -> Result<Box<dyn Steer + Send>, LoadError>;

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
        let header = read_header(policy)?;
        let preset = [
            usize::from(header.pre),
            usize::from(header.hidden),
            usize::from(header.post),
        ];
        let build: Build = match preset {
            [32, 32, 32] => boxed::<32, 32, 32>,
            [64, 64, 64] => boxed::<64, 64, 64>,
            [128, 128, 128] => boxed::<128, 128, 128>,
            [256, 256, 256] => boxed::<256, 256, 256>,
            other => return Err(LoadError::UnknownPreset(other)),
        };
        let controller = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("lhopt-load".into())
                .stack_size(BUILD_STACK)
                .spawn_scoped(scope, || build(policy, cfg, initial, mode))
                .map_err(LoadError::Thread)?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        Ok(Loaded { controller, preset })
    }

    /// One preset's controller, boxed. Not inlined, so each preset's large stack frame exists
    /// only while that preset is built.
    #[inline(never)]
    fn boxed<const PRE: usize, const H: usize, const POST: usize>(
        policy: &[u8],
        cfg: RunConfig,
        initial: Hyperparams,
        mode: Mode,
    ) -> Result<Box<dyn Steer + Send>, LoadError> {
        let frozen = FrozenPolicy::<PRE, H, POST>::decode(policy)?;
        Ok(Box::new(Controller::new(frozen, cfg, initial, mode)?))
    }
}
