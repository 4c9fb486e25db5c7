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

/// Why [`Sequenced::decide`] gave no decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecideError {
    /// The call was out of order; nothing changed.
    Order(OrderError),
    /// The core refused the decision ([`Error::PolicyDiverged`]): the interval is closed, the
    /// hyperparameters are held, and the run goes on with the next step.
    Core(Error),
}

impl core::fmt::Display for DecideError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecideError::Order(e) => e.fmt(f),
            DecideError::Core(e) => e.fmt(f),
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
/// effect to chance: for runtimes whose calls come from outside Rust (C, JSON lines). Where the
/// run stands is read from the controller itself, so a restored state (of any run length)
/// carries its call order with it.
pub struct Sequenced<S> {
    inner: S,
}

impl<S: Steer> Sequenced<S> {
    /// Wraps a controller.
    pub fn new(inner: S) -> Self {
        Sequenced { inner }
    }

    /// Steps recorded so far (the 0-based number of the next step).
    pub fn steps_done(&self) -> u64 {
        self.inner.observer().step()
    }

    /// Inner steps of the run (of the restored one, after a restore).
    pub fn total_steps(&self) -> u64 {
        self.inner.observer().config().total_steps
    }

    /// Whether the run is over: every step recorded and no decision left to make.
    pub fn is_finished(&self) -> bool {
        self.phase() == Phase::Finished
    }

    /// Whether the next step should report reductions; while a decision is due, whether the
    /// step after it should (false once the run is over).
    pub fn wants_reductions(&self) -> bool {
        self.inner.wants_reductions()
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
        Ok(self.inner.observe(train_loss, reductions))
    }

    /// Makes the decision that is due.
    pub fn decide(&mut self, inputs: &DecisionInputs) -> Result<Decision, DecideError> {
        self.expect(Phase::DecisionDue)
            .map_err(DecideError::Order)?;
        self.inner.decide(inputs).map_err(DecideError::Core)
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

    /// Restores a saved state, its run length included, and resumes the call order where the
    /// saved run stood (a decision announced but not yet made is due again).
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.inner.restore_state(bytes)
    }

    fn phase(&self) -> Phase {
        let observer = self.inner.observer();
        if observer.decision_due() {
            Phase::DecisionDue
        } else if observer.is_finished() {
            Phase::Finished
        } else {
            Phase::Stepping
        }
    }

    fn expect(&self, wanted: Phase) -> Result<(), OrderError> {
        let steps_done = self.steps_done();
        match self.phase() {
            p if p == wanted => Ok(()),
            Phase::Finished => Err(OrderError::Finished {
                total_steps: self.total_steps(),
            }),
            Phase::DecisionDue => Err(OrderError::DecisionDue {
                after_step: steps_done.saturating_sub(1),
            }),
            Phase::Stepping => Err(OrderError::NoDecisionDue {
                next_step: steps_done,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;

    use lhopt_core::{Controller, Hyperparams, RunConfig};

    use super::*;

    fn run(total_steps: u64, decisions: u32) -> Sequenced<Controller<32, 32, 32>> {
        let cfg = RunConfig {
            total_steps,
            decisions,
        };
        let ctl = Controller::holding(cfg, Hyperparams::INITIAL).unwrap();
        Sequenced::new(ctl)
    }

    const INPUTS: DecisionInputs = DecisionInputs {
        param_norm: 1.0,
        displacement: 0.1,
        eval_loss: 1.0,
    };

    #[test]
    fn a_state_of_another_run_length_continues_with_its_own_length() {
        let mut long = run(1000, 10);
        for _ in 0..150 {
            if long.observe(1.0, None).unwrap() == StepStatus::DecisionDue {
                long.decide(&INPUTS).unwrap();
            }
        }
        let mut buf = vec![0u8; long.state_max_len()];
        let n = long.save_state(&mut buf).unwrap();
        let mut short = run(100, 10);
        short.restore_state(&buf[..n]).unwrap();
        assert_eq!((short.steps_done(), short.total_steps()), (150, 1000));
        let mut decisions = 1;
        while !short.is_finished() {
            if short.observe(1.0, None).unwrap() == StepStatus::DecisionDue {
                short.decide(&INPUTS).unwrap();
                decisions += 1;
            }
        }
        assert_eq!((short.steps_done(), decisions), (1000, 10));
        assert_eq!(
            short.observe(1.0, None),
            Err(OrderError::Finished { total_steps: 1000 })
        );
    }

    #[test]
    fn calls_out_of_order_are_refused_and_k_dividing_t_finishes_after_the_last_decision() {
        let mut r = run(4, 2);
        assert_eq!(
            r.decide(&INPUTS),
            Err(DecideError::Order(OrderError::NoDecisionDue {
                next_step: 0
            }))
        );
        assert_eq!(r.observe(1.0, None), Ok(StepStatus::Continue));
        assert_eq!(r.observe(1.0, None), Ok(StepStatus::DecisionDue));
        assert_eq!(
            r.observe(1.0, None),
            Err(OrderError::DecisionDue { after_step: 1 })
        );
        r.decide(&INPUTS).unwrap();
        r.observe(1.0, None).unwrap();
        assert_eq!(r.observe(1.0, None), Ok(StepStatus::DecisionDue));
        assert!(!r.is_finished(), "the last decision is still to make");
        r.decide(&INPUTS).unwrap();
        assert!(r.is_finished());
        assert!(!r.wants_reductions());
    }
}
