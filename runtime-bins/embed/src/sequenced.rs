//! Call-order checking for controllers driven from outside Rust (C, JSON lines): a step while a
//! decision is due, a decision when none is due, or anything after the last step is refused with
//! an [`OrderError`] instead of being left to chance.

use lhopt_core::{Decision, DecisionInputs, Error, Hyperparams, StepReductions, StepStatus};

use crate::steer::Steer;

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
