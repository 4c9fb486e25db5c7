//! C API for the LHOPT controller. The header `include/lhopt.h` is generated from this file by
//! cbindgen (see `build.rs`) and committed; `examples/replay.c` shows the calls in order.
//!
//! Every exported function checks its pointers, runs its body under a panic guard and answers
//! with an [`LhoptStatus`]; details of the last failure are kept per thread for
//! [`lhopt_last_error`].

use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

use lhopt_core::{
    DecisionInputs, Hyperparams, Mode, Restart, RunConfig, StepReductions, StepStatus,
    TensorReductions,
};
use lhopt_embed::sequenced::{DecideError, Sequenced};
use lhopt_embed::steer::{Steer, load_any};

/// Result of every fallible call.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LhoptStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was NULL.
    NullArgument = 1,
    /// The policy bytes are not a valid policy file (truncated, corrupt, wrong version or sizes).
    InvalidPolicy = 2,
    /// An argument is out of range (e.g. zero decisions, reductions with zero tensors).
    InvalidArgument = 3,
    /// The output buffer is too small; `*written` holds the size needed.
    BufferTooSmall = 4,
    /// The saved state bytes do not fit this controller.
    InvalidState = 5,
    /// The call is out of order (a step while a decision is due, a decision when none is due,
    /// anything after the last step).
    WrongOrder = 6,
    /// A bug inside lhopt (a caught panic); please report it with lhopt_last_error's text.
    Internal = 7,
    /// The policy's recurrent state overflowed at this decision (its weights are too large for
    /// these inputs): no decision was made, the hyperparameters in force are kept, and the run
    /// continues with the next step. Another policy file is needed for real steering.
    PolicyDiverged = 8,
}

/// What to do after a step.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LhoptStepStatus {
    /// Run the next step.
    Continue = 0,
    /// Call lhopt_controller_decide before the next step.
    DecisionDue = 1,
    /// The run's last step was recorded.
    Finished = 2,
}

/// The checkpoint-register request of a decision.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LhoptRestartOp {
    /// Keep training.
    None = 0,
    /// Copy parameters and optimizer state into the register.
    Save = 1,
    /// Restore parameters and optimizer state from the register.
    Load = 2,
    /// Save into the register and load what it held before.
    Swap = 3,
}

/// A decision: the hyperparameters for the next interval and the checkpoint request.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LhoptDecision {
    /// Finite and inside their bounds.
    pub hyper: Hyperparams,
    /// The checkpoint-register operation to perform before the next step.
    pub restart: LhoptRestartOp,
    /// The register (0..2) the operation applies to; 0 for LHOPT_RESTART_OP_NONE.
    pub restart_register: u8,
}

impl From<lhopt_core::Decision> for LhoptDecision {
    fn from(d: lhopt_core::Decision) -> Self {
        let (restart, restart_register) = match d.restart {
            Restart::None => (LhoptRestartOp::None, 0),
            Restart::Save(r) => (LhoptRestartOp::Save, r),
            Restart::Load(r) => (LhoptRestartOp::Load, r),
            Restart::Swap(r) => (LhoptRestartOp::Swap, r),
        };
        LhoptDecision {
            hyper: d.hyper,
            restart,
            restart_register,
        }
    }
}

/// A controller steering one training run (opaque).
pub struct LhoptController {
    run: Sequenced<Box<dyn Steer + Send>>,
}

/// A failed call: its status and what to tell the caller.
struct Failure(LhoptStatus, String);

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `body` under a panic guard, records its failure message and returns its status.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> LhoptStatus {
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return LhoptStatus::Ok,
        Ok(Err(Failure(status, message))) => (status, message),
        Err(_) => (
            LhoptStatus::Internal,
            "internal error (caught panic) in lhopt".to_owned(),
        ),
    };
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
    status
}

fn null(name: &str) -> Failure {
    Failure(
        LhoptStatus::NullArgument,
        format!("argument `{name}` is NULL"),
    )
}

/// # Safety
/// `p` is NULL or valid for reads of a `T` for `'a`.
unsafe fn as_ref<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_ref() }.ok_or_else(|| null(name))
}

/// # Safety
/// `p` is NULL or valid for reads and writes of a `T` for `'a`, with no other reference to it.
unsafe fn as_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller's contract; NULL is checked here.
    unsafe { p.as_mut() }.ok_or_else(|| null(name))
}

/// # Safety
/// `p` is NULL or valid for reads of `len` `T`s for `'a`.
unsafe fn as_slice<'a, T>(p: *const T, len: usize, name: &str) -> Result<&'a [T], Failure> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller promises `len` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Creates a controller for a run of `total_steps` inner steps with `decisions` decisions,
/// steered by the policy file in `policy[0..policy_len]` (any preset; the bytes are copied).
/// `initial` gives the starting hyperparameters (NULL: where the policy was trained to start,
/// the spec's initial values at the file's start lr).
/// `sample_seed` NULL takes the greedy action; otherwise actions are sampled with that seed.
/// On success `*out` owns the new controller; release it with lhopt_controller_free.
///
/// # Safety
/// `policy` must be valid for `policy_len` bytes; `initial` and `sample_seed` NULL or valid;
/// `out` valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_new(
    policy: *const u8,
    policy_len: usize,
    total_steps: u64,
    decisions: u32,
    initial: *const Hyperparams,
    sample_seed: *const u64,
    out: *mut *mut LhoptController,
) -> LhoptStatus {
    guard(|| {
        // SAFETY (all three): the caller's contract above.
        let bytes = unsafe { as_slice(policy, policy_len, "policy") }?;
        let out = unsafe { as_mut(out, "out") }?;
        let initial = unsafe { initial.as_ref() }
            .copied()
            .unwrap_or_else(|| lhopt_embed::steer::policy_start(bytes));
        let mode = match unsafe { sample_seed.as_ref() } {
            None => Mode::Greedy,
            Some(&seed) => Mode::Sample { seed },
        };
        let cfg = RunConfig {
            total_steps,
            decisions,
        };
        let loaded = load_any(bytes, cfg, initial, mode).map_err(|e| {
            let status = match e {
                lhopt_embed::steer::LoadError::Core(lhopt_core::Error::InvalidConfig(_)) => {
                    LhoptStatus::InvalidArgument
                }
                _ => LhoptStatus::InvalidPolicy,
            };
            Failure(status, e.to_string())
        })?;
        let ctrl = LhoptController {
            run: Sequenced::new(loaded.controller),
        };
        *out = Box::into_raw(Box::new(ctrl));
        Ok(())
    })
}

/// Releases a controller made by lhopt_controller_new. NULL is a no-op.
///
/// # Safety
/// `ctrl` is NULL or a controller from lhopt_controller_new not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_free(ctrl: *mut LhoptController) {
    if !ctrl.is_null() {
        // SAFETY: made by Box::into_raw in lhopt_controller_new, freed once (caller's contract).
        drop(unsafe { Box::from_raw(ctrl) });
    }
}

/// Sets `*out` to whether the step about to run should pass its reductions to
/// lhopt_controller_observe (about every 4th step, as the policy's feature set says). Asked
/// while a decision is due, it answers for the step after the decision.
///
/// # Safety
/// `ctrl` is a live controller or NULL; `out` valid for one write or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_wants_reductions(
    ctrl: *const LhoptController,
    out: *mut bool,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_ref(ctrl, "ctrl") }?;
        *unsafe { as_mut(out, "out") }? = ctrl.run.wants_reductions();
        Ok(())
    })
}

/// Records one finished inner step: its training loss (NaN or infinite if it diverged) and,
/// when asked for, the per-tensor reductions `tensors[0..n_tensors]` and the clipping flag.
/// Pass `tensors` NULL and `n_tensors` 0 on steps without reductions.
/// `*status` says whether a decision is now due.
///
/// # Safety
/// `ctrl` live or NULL; `tensors` NULL or valid for `n_tensors` elements; `status` valid or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_observe(
    ctrl: *mut LhoptController,
    train_loss: f32,
    tensors: *const TensorReductions,
    n_tensors: usize,
    clipped: bool,
    status: *mut LhoptStepStatus,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_mut(ctrl, "ctrl") }?;
        let status = unsafe { as_mut(status, "status") }?;
        let reductions = match (tensors.is_null(), n_tensors) {
            (true, 0) => None,
            (false, 0) => {
                return Err(Failure(
                    LhoptStatus::InvalidArgument,
                    "`tensors` is set but `n_tensors` is 0: pass NULL for a step without \
                     reductions"
                        .to_owned(),
                ));
            }
            // SAFETY: the caller's contract above; NULL with n > 0 is reported by as_slice.
            (_, n) => Some(StepReductions {
                tensors: unsafe { as_slice(tensors, n, "tensors") }?,
                clipped,
            }),
        };
        let step = ctrl
            .run
            .observe(train_loss, reductions)
            .map_err(|e| Failure(LhoptStatus::WrongOrder, e.to_string()))?;
        *status = match step {
            StepStatus::Continue => LhoptStepStatus::Continue,
            StepStatus::DecisionDue => LhoptStepStatus::DecisionDue,
            StepStatus::Finished => LhoptStepStatus::Finished,
        };
        Ok(())
    })
}

/// Makes the decision that lhopt_controller_observe announced. `param_norm` is the global
/// parameter norm, `displacement` the norm of the parameter change since the previous decision
/// (measured from where training resumed after that decision's restart), `eval_loss` the eval
/// loss or NaN if the runtime has none. Perform the decision's restart before the next step;
/// after the last decision (lhopt_controller_finished then says so) perform it too, before any
/// final evaluation. LHOPT_STATUS_POLICY_DIVERGED: no decision, keep the hyperparameters in
/// force and continue.
///
/// # Safety
/// `ctrl` live or NULL; `out` valid for one write or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_decide(
    ctrl: *mut LhoptController,
    param_norm: f32,
    displacement: f32,
    eval_loss: f32,
    out: *mut LhoptDecision,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_mut(ctrl, "ctrl") }?;
        let out = unsafe { as_mut(out, "out") }?;
        let inputs = DecisionInputs {
            param_norm,
            displacement,
            eval_loss,
        };
        let decision = ctrl.run.decide(&inputs).map_err(|e| {
            let status = match e {
                DecideError::Order(_) => LhoptStatus::WrongOrder,
                DecideError::Core(lhopt_core::Error::PolicyDiverged) => LhoptStatus::PolicyDiverged,
                DecideError::Core(_) => LhoptStatus::Internal,
            };
            Failure(status, e.to_string())
        })?;
        *out = decision.into();
        Ok(())
    })
}

/// Writes the hyperparameters in force to `*out`.
///
/// # Safety
/// `ctrl` live or NULL; `out` valid for one write or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_hyper(
    ctrl: *const LhoptController,
    out: *mut Hyperparams,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_ref(ctrl, "ctrl") }?;
        *unsafe { as_mut(out, "out") }? = ctrl.run.hyper();
        Ok(())
    })
}

/// Sets `*out` to whether the run is over: every step recorded and no decision left to make.
/// Check it before each step and a run takes exactly `total_steps` steps; when the number of
/// decisions divides `total_steps`, the last step answers DECISION_DUE and the run is finished
/// once that decision is made.
///
/// # Safety
/// `ctrl` live or NULL; `out` valid for one write or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_finished(
    ctrl: *const LhoptController,
    out: *mut bool,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_ref(ctrl, "ctrl") }?;
        *unsafe { as_mut(out, "out") }? = ctrl.run.is_finished();
        Ok(())
    })
}

/// Saves the controller's whole state into `buf[0..capacity]` and sets `*written` to its
/// length. If the buffer is too small, returns LHOPT_STATUS_BUFFER_TOO_SMALL with `*written`
/// set to a capacity that always suffices (so a first call with capacity 0 asks for the size),
/// and leaves `buf` untouched.
///
/// # Safety
/// `ctrl` live or NULL; `buf` NULL (only with capacity 0) or valid for `capacity` bytes;
/// `written` valid for one write or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_save_state(
    ctrl: *const LhoptController,
    buf: *mut u8,
    capacity: usize,
    written: *mut usize,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_ref(ctrl, "ctrl") }?;
        let written = unsafe { as_mut(written, "written") }?;
        let buf: &mut [u8] = if capacity == 0 {
            &mut []
        } else if buf.is_null() {
            return Err(null("buf"));
        } else {
            // SAFETY: non-NULL and valid for `capacity` bytes (caller's contract).
            unsafe { std::slice::from_raw_parts_mut(buf, capacity) }
        };
        match ctrl.run.save_state(buf) {
            Ok(n) => {
                *written = n;
                Ok(())
            }
            Err(lhopt_core::Error::BufferTooSmall { .. }) => {
                let needed = ctrl.run.state_max_len();
                *written = needed;
                Err(Failure(
                    LhoptStatus::BufferTooSmall,
                    format!("saving the state needs a buffer of {needed} bytes, got {capacity}"),
                ))
            }
            Err(e) => Err(Failure(LhoptStatus::Internal, e.to_string())),
        }
    })
}

/// Restores a state saved by lhopt_controller_save_state from a controller with the same
/// policy; the run then continues exactly as the saved one would have, with the saved run's
/// total_steps and decisions (whatever this controller was created with). Every field is
/// checked; on error the controller is unchanged.
///
/// # Safety
/// `ctrl` live or NULL; `state` NULL or valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_controller_restore_state(
    ctrl: *mut LhoptController,
    state: *const u8,
    len: usize,
) -> LhoptStatus {
    guard(|| {
        // SAFETY: the caller's contract above.
        let ctrl = unsafe { as_mut(ctrl, "ctrl") }?;
        let bytes = unsafe { as_slice(state, len, "state") }?;
        ctrl.run
            .restore_state(bytes)
            .map_err(|e| Failure(LhoptStatus::InvalidState, e.to_string()))
    })
}

/// Copies the message of this thread's last failure, NUL-terminated and truncated to
/// `capacity` bytes, into `buf`; returns the message length plus one (the capacity that fits it
/// whole). With `buf` NULL or `capacity` 0 it only returns that length. Messages say what was
/// wrong and what to do.
///
/// # Safety
/// `buf` is NULL or valid for `capacity` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lhopt_last_error(buf: *mut c_char, capacity: usize) -> usize {
    LAST_ERROR.with(|e| {
        let message = e.borrow();
        let bytes = message.as_bytes();
        if !buf.is_null() && capacity > 0 {
            let n = bytes.len().min(capacity - 1);
            // SAFETY: `buf` is valid for `capacity` > n bytes (caller's contract); the source is
            // a distinct Rust allocation.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                *buf.add(n) = 0;
            }
        }
        bytes.len() + 1
    })
}

/// A static, NUL-terminated name for a status code (e.g. "LHOPT_STATUS_NULL_ARGUMENT").
#[unsafe(no_mangle)]
pub extern "C" fn lhopt_status_name(status: i32) -> *const c_char {
    let name: &'static [u8] = match status {
        0 => b"LHOPT_STATUS_OK\0",
        1 => b"LHOPT_STATUS_NULL_ARGUMENT\0",
        2 => b"LHOPT_STATUS_INVALID_POLICY\0",
        3 => b"LHOPT_STATUS_INVALID_ARGUMENT\0",
        4 => b"LHOPT_STATUS_BUFFER_TOO_SMALL\0",
        5 => b"LHOPT_STATUS_INVALID_STATE\0",
        6 => b"LHOPT_STATUS_WRONG_ORDER\0",
        7 => b"LHOPT_STATUS_INTERNAL\0",
        8 => b"LHOPT_STATUS_POLICY_DIVERGED\0",
        _ => b"unknown lhopt status\0",
    };
    name.as_ptr().cast()
}
