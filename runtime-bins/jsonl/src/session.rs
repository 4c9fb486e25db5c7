//! One run's conversation: checks each request against where the run is, feeds the controller,
//! and answers with exactly one [`Reply`]. A rejected line changes nothing.

use std::io::{self, BufRead};

use lhopt_core::{DecisionInputs, RunConfig, StepReductions, StepStatus, TensorReductions};
use lhopt_embed::sequenced::{DecideError, Sequenced};
use lhopt_embed::steer::Steer;

use crate::protocol::{PROTOCOL_VERSION, Reply, Request, RestartOp, Status};

/// Longest error message sent back: a message quoting a huge input line is cut here.
pub const MAX_MESSAGE_BYTES: usize = 512;

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
            run: Sequenced::new(ctrl),
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

    /// Handles one input line as read (without its newline) and returns its answer (none for a
    /// blank line). A line that is not UTF-8 is answered with an error, like any bad line.
    pub fn handle_bytes(&mut self, bytes: &[u8]) -> Option<Reply> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.handle_line(text),
            Err(e) => Some(self.reject(format!(
                "the line is not UTF-8 text (invalid byte at offset {}); send JSON in UTF-8",
                e.valid_up_to()
            ))),
        }
    }

    /// Answers a line that was too long to read whole (`len` bytes, more than `limit`).
    pub fn reject_long_line(&mut self, len: usize, limit: usize) -> Reply {
        self.reject(format!(
            "the line is {len} bytes long, more than the limit of {limit} (--max-line-bytes); \
             it was skipped"
        ))
    }

    /// Handles one input line and returns its answer (none for a blank line).
    pub fn handle_line(&mut self, text: &str) -> Option<Reply> {
        if text.trim().is_empty() {
            self.line += 1;
            return None;
        }
        Some(match parse(text).and_then(|request| self.handle(request)) {
            Ok(reply) => {
                self.line += 1;
                reply
            }
            Err(message) => self.reject(message),
        })
    }

    /// Counts the line and answers it with `message`, cut to [`MAX_MESSAGE_BYTES`].
    fn reject(&mut self, mut message: String) -> Reply {
        self.line += 1;
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = message.len() - cut;
            message.truncate(cut);
            message.push_str(&format!("… ({dropped} more bytes)"));
        }
        Reply::Error {
            line: self.line,
            message,
        }
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
                let inputs = DecisionInputs {
                    param_norm,
                    displacement,
                    eval_loss,
                };
                let (hyper, restart, warning) = match self.run.decide(&inputs) {
                    Ok(d) => (d.hyper, d.restart.into(), None),
                    Err(DecideError::Order(e)) => return Err(e.to_string()),
                    // The interval is closed all the same: answer with what stays in force.
                    Err(DecideError::Core(e)) => (
                        self.run.hyper(),
                        RestartOp::from(lhopt_core::Restart::None),
                        Some(e.to_string()),
                    ),
                };
                self.decisions += 1;
                Ok(Reply::Decision {
                    decision: self.decisions,
                    after_step: self.run.steps_done() - 1,
                    hyper,
                    restart,
                    want_reductions: self.run.wants_reductions(),
                    finished: self.run.is_finished(),
                    warning,
                })
            }
        }
    }
}

/// Reads one line into `buf` (without its `\n`), keeping at most `limit` bytes of it: `None` at
/// the end of input, otherwise the line's full length, which exceeds `limit` when the rest was
/// skipped. Memory stays bounded whatever the peer sends.
pub fn read_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut len = 0;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((len > 0).then_some(len));
        }
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        len += part.len();
        input.consume(used);
        if done {
            return Ok(Some(len));
        }
    }
}

/// Parses a request, explaining the common mistakes.
fn parse(text: &str) -> Result<Request, String> {
    serde_json::from_str(text).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            let hint = if text.contains("NaN") || text.contains("Infinity") {
                "; non-finite numbers are written \"NaN\", \"Infinity\", \"-Infinity\" or null"
            } else {
                ""
            };
            format!("not valid JSON ({e}){hint}")
        } else {
            format!("not a valid request ({e}); see PROTOCOL.md")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_measured_and_the_next_line_is_intact() {
        let text = format!("{}\nshort\r\nlast", "x".repeat(10_000));
        let mut input = io::BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, &mut buf, 100).unwrap(), Some(10_000));
        assert_eq!(buf.len(), 100);
        assert_eq!(read_line(&mut input, &mut buf, 100).unwrap(), Some(6));
        assert_eq!(buf, b"short\r");
        assert_eq!(read_line(&mut input, &mut buf, 100).unwrap(), Some(4));
        assert_eq!(read_line(&mut input, &mut buf, 100).unwrap(), None);
    }
}
