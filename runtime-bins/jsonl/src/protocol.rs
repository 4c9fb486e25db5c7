//! The wire format of PROTOCOL.md: what the runtime sends ([`Request`]) and what the process
//! answers ([`Reply`]). Parsing enforces the number rules: every float is a JSON number that
//! stays finite as `f32`, or a non-finite value spelled `"NaN"`, `"Infinity"`, `"-Infinity"` or
//! `null` (NaN), because a diverging run's statistics are real input the policy reacts to.

use lhopt_core::{Hyperparams, Restart, TensorReductions};
use serde::{Deserialize, Serialize};

/// Protocol version announced in the `ready` line.
pub const PROTOCOL_VERSION: u32 = 1;

/// One line from the runtime.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// An inner step has finished.
    Step {
        /// 0-based step number.
        step: u64,
        /// Training loss of the step (may be non-finite, see PROTOCOL.md).
        #[serde(deserialize_with = "number::deserialize")]
        loss: f32,
        /// Per-tensor reductions, when the controller asked for them.
        #[serde(default)]
        reductions: Option<Reductions>,
    },
    /// The runtime-side inputs of the decision that is due.
    Decide {
        /// Global parameter norm.
        #[serde(deserialize_with = "number::deserialize")]
        param_norm: f32,
        /// Norm of the parameter change since the previous decision.
        #[serde(deserialize_with = "number::deserialize")]
        displacement: f32,
        /// Eval loss; absent or null when the runtime has none.
        #[serde(default = "nan", deserialize_with = "number::deserialize")]
        eval_loss: f32,
    },
}

/// The `reductions` object of a step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reductions {
    /// Whether gradient clipping fired.
    pub clipped: bool,
    /// One entry per parameter tensor.
    pub tensors: Vec<Tensor>,
}

/// One tensor's reductions (spec §2), field for field [`TensorReductions`]. It serialises too
/// (non-finite values as the strings the process reads), so a Rust runtime (and this crate's
/// tests and benches) encodes the line the way the process reads it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Tensor {
    pub numel: u64,
    #[serde(with = "number")]
    pub grad_norm: f32,
    #[serde(with = "number")]
    pub mhat_norm: f32,
    #[serde(with = "number")]
    pub mhat_minus_grad_norm: f32,
    #[serde(with = "number")]
    pub param_norm: f32,
    #[serde(with = "number")]
    pub update_norm: f32,
    #[serde(with = "number")]
    pub lr_p: f32,
    #[serde(with = "number")]
    pub grad_dot_mhat: f32,
    #[serde(with = "number")]
    pub grad_dot_param: f32,
    #[serde(with = "number")]
    pub grad_dot_update: f32,
    #[serde(with = "number")]
    pub count_v_gt_eps: f32,
    #[serde(with = "number")]
    pub sum_log_abs_update: f32,
}

impl From<&Tensor> for TensorReductions {
    fn from(t: &Tensor) -> Self {
        TensorReductions {
            numel: t.numel,
            grad_norm: t.grad_norm,
            mhat_norm: t.mhat_norm,
            mhat_minus_grad_norm: t.mhat_minus_grad_norm,
            param_norm: t.param_norm,
            update_norm: t.update_norm,
            lr_p: t.lr_p,
            grad_dot_mhat: t.grad_dot_mhat,
            grad_dot_param: t.grad_dot_param,
            grad_dot_update: t.grad_dot_update,
            count_v_gt_eps: t.count_v_gt_eps,
            sum_log_abs_update: t.sum_log_abs_update,
        }
    }
}

impl From<&TensorReductions> for Tensor {
    fn from(r: &TensorReductions) -> Self {
        Tensor {
            numel: r.numel,
            grad_norm: r.grad_norm,
            mhat_norm: r.mhat_norm,
            mhat_minus_grad_norm: r.mhat_minus_grad_norm,
            param_norm: r.param_norm,
            update_norm: r.update_norm,
            lr_p: r.lr_p,
            grad_dot_mhat: r.grad_dot_mhat,
            grad_dot_param: r.grad_dot_param,
            grad_dot_update: r.grad_dot_update,
            count_v_gt_eps: r.count_v_gt_eps,
            sum_log_abs_update: r.sum_log_abs_update,
        }
    }
}

/// One line from the process.
#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Start-up: the run the process is set up for.
    Ready {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The policy's [pre, hidden, post] sizes.
        preset: [usize; 3],
        /// Inner steps of the run.
        total_steps: u64,
        /// Decisions in the run.
        decisions: u32,
        /// Hyperparameters to start with.
        hyper: Hyperparams,
        /// Whether step 0 should carry reductions.
        want_reductions: bool,
    },
    /// A step was recorded.
    Ack {
        /// The step's number.
        step: u64,
        /// What the runtime must send next.
        status: Status,
        /// Whether the next step should carry reductions.
        want_reductions: bool,
    },
    /// A decision was made.
    Decision {
        /// 1-based decision number.
        decision: u32,
        /// The step after which it was made.
        after_step: u64,
        /// Hyperparameters for the next interval (finite, inside bounds).
        hyper: Hyperparams,
        /// Checkpoint-register request: perform it before the next step, and after the last
        /// decision before the final evaluation.
        restart: RestartOp,
        /// Whether the next step should carry reductions.
        want_reductions: bool,
        /// Whether this was the run's last decision after its last step (K divides T): apply
        /// the restart, then stop; no further step is accepted.
        finished: bool,
        /// Set when the policy could not decide (its recurrent state overflowed): `hyper` is
        /// the hyperparameters in force, `restart` is `none`, and the run goes on.
        #[serde(skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// A line was rejected and had no effect.
    Error {
        /// 1-based input line number (0 for start-up errors).
        line: u64,
        /// What was wrong and what to send instead.
        message: String,
    },
}

/// Step outcome in an `ack`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Send the next step.
    Continue,
    /// Send a `decide` line.
    DecisionDue,
    /// The run is over.
    Finished,
}

/// The restart request as `{"op": "save", "register": 0}`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct RestartOp {
    /// `none`, `save`, `load` or `swap`.
    pub op: &'static str,
    /// Register 0..2; absent for `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<u8>,
}

impl From<Restart> for RestartOp {
    fn from(r: Restart) -> Self {
        let (op, register) = match r {
            Restart::None => ("none", None),
            Restart::Save(i) => ("save", Some(i)),
            Restart::Load(i) => ("load", Some(i)),
            Restart::Swap(i) => ("swap", Some(i)),
        };
        RestartOp { op, register }
    }
}

fn nan() -> f32 {
    f32::NAN
}

/// A float on the wire: a JSON number that stays finite as `f32`, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"` or `null` (NaN). JSON has no non-finite numbers, so they are spelled out.
pub mod number {
    use serde::de::{self, Deserializer};
    use serde::ser::Serializer;

    /// Writes finite values as numbers and the others as the strings [`deserialize`] reads.
    pub fn serialize<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        match *x {
            x if x.is_finite() => s.serialize_f32(x),
            x if x.is_nan() => s.serialize_str("NaN"),
            f32::INFINITY => s.serialize_str("Infinity"),
            _ => s.serialize_str("-Infinity"),
        }
    }

    /// Reads a number (finite as `f32`), `null`, `"NaN"`, `"Infinity"` or `"-Infinity"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
        d.deserialize_any(Number)
    }

    struct Number;

    impl de::Visitor<'_> for Number {
        type Value = f32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, null, \"NaN\", \"Infinity\" or \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, x: f64) -> Result<f32, E> {
            let y = x as f32;
            if y.is_finite() {
                Ok(y)
            } else {
                Err(E::custom(format_args!(
                    "{x:e} overflows a 32-bit float; write \"Infinity\" or \"-Infinity\" if \
                     the value really is infinite"
                )))
            }
        }
        fn visit_i64<E: de::Error>(self, x: i64) -> Result<f32, E> {
            self.visit_f64(x as f64)
        }
        fn visit_u64<E: de::Error>(self, x: u64) -> Result<f32, E> {
            self.visit_f64(x as f64)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<f32, E> {
            match s {
                "NaN" => Ok(f32::NAN),
                "Infinity" => Ok(f32::INFINITY),
                "-Infinity" => Ok(f32::NEG_INFINITY),
                // Never echo the string itself: it may be megabytes long.
                _ => Err(E::custom(format_args!(
                    "a string of {} bytes where a number is expected; the only strings \
                     allowed are \"NaN\", \"Infinity\" and \"-Infinity\"",
                    s.len()
                ))),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<f32, E> {
            Ok(f32::NAN)
        }
        fn visit_none<E: de::Error>(self) -> Result<f32, E> {
            Ok(f32::NAN)
        }
    }
}
