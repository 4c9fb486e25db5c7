//! The wire format of PROTOCOL.md: what the runtime sends ([`Request`]) and what the process
//! answers ([`Reply`]). Parsing enforces the number rules (finite, representable as `f32`).

use lhopt_core::{Hyperparams, Restart, TensorReductions};
use serde::de::{self, Deserializer};
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
        #[serde(deserialize_with = "loss")]
        loss: f32,
        /// Per-tensor reductions, when the controller asked for them.
        #[serde(default)]
        reductions: Option<Reductions>,
    },
    /// The runtime-side inputs of the decision that is due.
    Decide {
        /// Global parameter norm.
        #[serde(deserialize_with = "finite")]
        param_norm: f32,
        /// Norm of the parameter change since the previous decision.
        #[serde(deserialize_with = "finite")]
        displacement: f32,
        /// Eval loss; absent or null when the runtime has none.
        #[serde(default = "nan", deserialize_with = "loss")]
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

/// One tensor's reductions (spec §2), field for field [`TensorReductions`]. It serialises too,
/// so a Rust runtime (and this crate's tests and benches) encodes the line the way the process
/// reads it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Tensor {
    pub numel: u64,
    #[serde(deserialize_with = "finite")]
    pub grad_norm: f32,
    #[serde(deserialize_with = "finite")]
    pub mhat_norm: f32,
    #[serde(deserialize_with = "finite")]
    pub mhat_minus_grad_norm: f32,
    #[serde(deserialize_with = "finite")]
    pub param_norm: f32,
    #[serde(deserialize_with = "finite")]
    pub update_norm: f32,
    #[serde(deserialize_with = "finite")]
    pub lr_p: f32,
    #[serde(deserialize_with = "finite")]
    pub grad_dot_mhat: f32,
    #[serde(deserialize_with = "finite")]
    pub grad_dot_param: f32,
    #[serde(deserialize_with = "finite")]
    pub grad_dot_update: f32,
    #[serde(deserialize_with = "finite")]
    pub count_v_gt_eps: f32,
    #[serde(deserialize_with = "finite")]
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
        /// Checkpoint-register request.
        restart: RestartOp,
        /// Whether the next step should carry reductions.
        want_reductions: bool,
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

/// A JSON number that stays finite as `f32`.
fn finite<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let x = f64::deserialize(d)?;
    to_f32(x).ok_or_else(|| de::Error::custom(format_args!("{x:e} is not a finite 32-bit float")))
}

/// A loss: a finite number, `null` (NaN), or one of the strings "NaN", "Infinity", "-Infinity".
fn loss<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    struct Loss;
    impl de::Visitor<'_> for Loss {
        type Value = f32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number, null, \"NaN\", \"Infinity\" or \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, x: f64) -> Result<f32, E> {
            to_f32(x).ok_or_else(|| {
                E::custom(format_args!(
                    "loss {x:e} overflows a 32-bit float; write \"Infinity\" if it diverged"
                ))
            })
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
                _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<f32, E> {
            Ok(f32::NAN)
        }
        fn visit_none<E: de::Error>(self) -> Result<f32, E> {
            Ok(f32::NAN)
        }
    }
    d.deserialize_any(Loss)
}

fn to_f32(x: f64) -> Option<f32> {
    let y = x as f32;
    y.is_finite().then_some(y)
}
