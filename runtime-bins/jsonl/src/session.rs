//! One run's conversation: checks each request against where the run is, feeds the controller,
//! and answers with exactly one [`Reply`]. A rejected line changes nothing.

use lhopt_core::{DecisionInputs, RunConfig, StepReductions, StepStatus, TensorReductions};
use lhopt_embed::sequenced::Sequenced;
use lhopt_embed::steer::Steer;

use crate::protocol::{PROTOCOL_VERSION, Reply, Request, Status};

/// A controller and the protocol state around it.
pub struct Session {
    run: Sequenced<Box<dyn Steer + Send>>,
    cfg: RunConfig,
    preset: [usize; 3],
    decisions: u32,
    line: u64,
}

impl Session {
    /// A session for a run of `cfg` steered by `ctrl` (a policy with `preset` sizes).
    pub fn new(ctrl: Box<dyn Steer + Send>, cfg: RunConfig, preset: [usize; 3]) -> Self {
        Session {
            run: Sequenced::new(ctrl, cfg.total_steps),
            cfg,
            preset,
            decisions: 0,
            line: 0,
        }
    }

    /// The `ready` line announcing the run.
    pub fn ready(&self) -> Reply {
        Reply::Ready {
            protocol: PROTOCOL_VERSION,
            preset: self.preset,
            total_steps: self.cfg.total_steps,
            decisions: self.cfg.decisions,
            hyper: self.run.hyper(),
            want_reductions: self.run.wants_reductions(),
        }
    }

    /// Handles one input line and returns its answer (none for a blank line).
    pub fn handle_line(&mut self, text: &str) -> Option<Reply> {
        self.line += 1;
        if text.trim().is_empty() {
            return None;
        }
        Some(match parse(text).and_then(|request| self.handle(request)) {
            Ok(reply) => reply,
            Err(message) => Reply::Error {
                line: self.line,
                message,
            },
        })
    }

    fn handle(&mut self, request: Request) -> Result<Reply, String> {
        match request {
            Request::Step {
                step,
                loss,
                reductions,
            } => {
                self.run.can_observe().map_err(|e| e.to_string())?;
                let expected = self.run.steps_done();
                if step != expected {
                    return Err(format!(
                        "expected step {expected}, got step {step}: steps are numbered from 0 \
                         without gaps"
                    ));
                }
                let tensors: Vec<TensorReductions> = reductions
                    .as_ref()
                    .map(|r| r.tensors.iter().map(TensorReductions::from).collect())
                    .unwrap_or_default();
                let given = reductions.as_ref().map(|r| StepReductions {
                    tensors: &tensors,
                    clipped: r.clipped,
                });
                let status = match self.run.observe(loss, given).map_err(|e| e.to_string())? {
                    StepStatus::Continue => Status::Continue,
                    StepStatus::DecisionDue => Status::DecisionDue,
                    StepStatus::Finished => Status::Finished,
                };
                Ok(Reply::Ack {
                    step,
                    status,
                    want_reductions: self.run.wants_reductions(),
                })
            }
            Request::Decide {
                param_norm,
                displacement,
                eval_loss,
            } => {
                let decision = self
                    .run
                    .decide(&DecisionInputs {
                        param_norm,
                        displacement,
                        eval_loss,
                    })
                    .map_err(|e| e.to_string())?;
                self.decisions += 1;
                Ok(Reply::Decision {
                    decision: self.decisions,
                    after_step: self.run.steps_done() - 1,
                    hyper: decision.hyper,
                    restart: decision.restart.into(),
                    want_reductions: self.run.wants_reductions(),
                })
            }
        }
    }
}

/// Parses a request, explaining the common mistakes.
fn parse(text: &str) -> Result<Request, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            let hint = if text.contains("NaN") || text.contains("Infinity") {
                "; non-finite losses are written \"NaN\", \"Infinity\" or null"
            } else {
                ""
            };
            format!("not valid JSON ({e}){hint}")
        } else {
            format!("not a valid request ({e}); see PROTOCOL.md")
        }
    })
}
