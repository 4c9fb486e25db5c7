//! `lhopt._lhopt`: the core controller for Python. Thin on purpose: every computation is the
//! core's (through `lhopt-embed`'s size-erased, call-order-checking wrapper); this file only turns
//! Python values into core types and core errors into Python exceptions.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use lhopt_core::ciao::{self, CiaoState, ParamSlot, TensorState};
use lhopt_core::{
    Decision, DecisionInputs, Error as CoreError, Hyperparams, Mode, NUM_HYPERS, Restart,
    RunConfig, StepReductions, StepStatus, TensorReductions, read_header,
};
use lhopt_embed::sequenced::{DecideError, OrderError as CoreOrderError, Sequenced};
use lhopt_embed::steer::{LoadError, Steer, load_any};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

create_exception!(
    lhopt,
    LhoptError,
    PyValueError,
    "A policy file, saved state or run configuration the core rejected; the message says why."
);
create_exception!(
    lhopt,
    NonFiniteLossError,
    PyValueError,
    "A NaN or infinite training loss, refused by a controller made with nonfinite='raise' (the \
     default); the step was not recorded and nothing changed."
);
create_exception!(
    lhopt,
    OrderError,
    PyRuntimeError,
    "A controller call made out of order (a step while a decision is due, a decision when none \
     is due, anything after the last step); the call had no effect."
);

/// The shipped policy, so `Controller()` works without a file.
const DEFAULT_POLICY: &[u8] = include_bytes!("../../policies/default.lhp");

/// Fields of one tensor's reductions, in the order `observe` takes them.
const REDUCTION_FIELDS: [&str; 12] = [
    "numel",
    "grad_norm",
    "mhat_norm",
    "mhat_minus_grad_norm",
    "param_norm",
    "update_norm",
    "lr_p",
    "grad_dot_mhat",
    "grad_dot_param",
    "grad_dot_update",
    "count_v_gt_eps",
    "sum_log_abs_update",
];

fn core_err(e: CoreError) -> PyErr {
    LhoptError::new_err(e.to_string())
}

fn order_err(e: CoreOrderError) -> PyErr {
    OrderError::new_err(e.to_string())
}

fn load_err(e: LoadError) -> PyErr {
    LhoptError::new_err(e.to_string())
}

/// A policy given as bytes, a path, or `None` for the shipped one.
fn policy_bytes(policy: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let Some(policy) = policy.filter(|p| !p.is_none()) else {
        return Ok(DEFAULT_POLICY.to_vec());
    };
    if let Ok(bytes) = policy.extract::<Vec<u8>>() {
        return Ok(bytes);
    }
    match policy.extract::<PathBuf>() {
        Ok(path) => std::fs::read(&path).map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!(
                "cannot read policy file {}: {e}",
                path.display()
            ))
        }),
        Err(_) => Err(PyTypeError::new_err(format!(
            "policy must be None, bytes or a path, not {}",
            policy.get_type().name()?
        ))),
    }
}

fn hyper_dict<'py>(py: Python<'py>, h: &Hyperparams) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, value) in Hyperparams::NAMES.iter().zip(h.to_array()) {
        d.set_item(name, value)?;
    }
    Ok(d)
}

/// A run's starting hyperparameters: `start` (the policy's), with the entries of `overrides`
/// replaced.
fn initial_hyper(
    start: Hyperparams,
    overrides: Option<&Bound<'_, PyDict>>,
) -> PyResult<Hyperparams> {
    let mut values = start.to_array();
    for (key, value) in overrides.into_iter().flat_map(|d| d.iter()) {
        let name: String = key.extract()?;
        let Some(i) = Hyperparams::NAMES.iter().position(|n| *n == name) else {
            return Err(PyValueError::new_err(format!(
                "unknown hyperparameter {name:?}; the names are {}",
                Hyperparams::NAMES.join(", ")
            )));
        };
        let v: f32 = value.extract()?;
        if !v.is_finite() {
            return Err(PyValueError::new_err(format!(
                "initial {name} must be finite, got {v}"
            )));
        }
        values[i] = v;
    }
    Ok(Hyperparams::from_array(values))
}

/// What `observe` does with a NaN or infinite training loss.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NonFinite {
    /// Refuse it with `NonFiniteLossError`, recording nothing: in a Python loop such a loss is
    /// far more often a bug (bad data, a log of zero) than a run worth steering.
    Raise,
    /// The core's contract: record it as the divergence signal the policy reacts to.
    Report,
}

impl NonFinite {
    fn parse(s: &str) -> PyResult<Self> {
        match s {
            "raise" => Ok(NonFinite::Raise),
            "report" => Ok(NonFinite::Report),
            other => Err(PyValueError::new_err(format!(
                "nonfinite must be 'raise' or 'report', not {other:?}"
            ))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            NonFinite::Raise => "raise",
            NonFinite::Report => "report",
        }
    }
}

fn parse_mode(mode: &str, seed: Option<u64>) -> PyResult<Mode> {
    match (mode, seed) {
        ("greedy", None) => Ok(Mode::Greedy),
        ("greedy", Some(_)) => Err(PyValueError::new_err(
            "seed is only used with mode='sample'",
        )),
        ("sample", Some(seed)) => Ok(Mode::Sample { seed }),
        ("sample", None) => Err(PyValueError::new_err(
            "mode='sample' needs a seed, so that runs are reproducible",
        )),
        (other, _) => Err(PyValueError::new_err(format!(
            "mode must be 'greedy' or 'sample', not {other:?}"
        ))),
    }
}

fn tensor_reductions(row: &[f64; 12], index: usize) -> PyResult<TensorReductions> {
    let numel = row[0];
    if !(numel >= 0.0 && numel.fract() == 0.0 && numel < u64::MAX as f64) {
        return Err(PyValueError::new_err(format!(
            "reductions of tensor {index}: numel must be a non-negative whole number, got {numel}"
        )));
    }
    let f = |i: usize| row[i] as f32;
    Ok(TensorReductions {
        numel: numel as u64,
        grad_norm: f(1),
        mhat_norm: f(2),
        mhat_minus_grad_norm: f(3),
        param_norm: f(4),
        update_norm: f(5),
        lr_p: f(6),
        grad_dot_mhat: f(7),
        grad_dot_param: f(8),
        grad_dot_update: f(9),
        count_v_gt_eps: f(10),
        sum_log_abs_update: f(11),
    })
}

fn restart_dict<'py>(py: Python<'py>, r: Restart) -> PyResult<Bound<'py, PyDict>> {
    let (op, register) = match r {
        Restart::None => ("none", None),
        Restart::Save(r) => ("save", Some(r)),
        Restart::Load(r) => ("load", Some(r)),
        Restart::Swap(r) => ("swap", Some(r)),
    };
    let d = PyDict::new(py);
    d.set_item("op", op)?;
    d.set_item("register", register)?;
    Ok(d)
}

type Run = Sequenced<Box<dyn Steer + Send>>;

/// A frozen LHOPT policy steering one training run of `total_steps` inner steps, with a decision
/// every `total_steps // decisions` steps.
#[pyclass(module = "lhopt._lhopt")]
struct Controller {
    // A mutex because the core controller is not `Sync`; calls are microseconds.
    run: Mutex<Run>,
    config: RunConfig,
    /// The policy file, for checking saved states before restoring them.
    policy: Vec<u8>,
    preset: [usize; 3],
    nonfinite: NonFinite,
    name: String,
    card: String,
    feature_set: u16,
}

impl Controller {
    /// Refuses a NaN or infinite loss unless the controller reports them; `run` is locked.
    fn check_loss(&self, run: &Run, loss: f64) -> PyResult<()> {
        if self.nonfinite == NonFinite::Report || (loss as f32).is_finite() {
            return Ok(());
        }
        Err(NonFiniteLossError::new_err(format!(
            "the training loss of step {} is {loss}{}; the step was not recorded and nothing \
             changed. Skip the batch (catch this error and go on: the step does not count), or \
             fix its cause (a learning rate too high, bad data, a log of zero); to let the policy \
             see the divergence and react to it (it may restore a checkpoint), pass \
             nonfinite='report' to LHOPT or Controller",
            run.steps_done(),
            if loss.is_finite() {
                ", beyond float32"
            } else {
                ""
            },
        )))
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        // A panic cannot happen while the lock is held (the core does not panic), so a poisoned
        // lock still holds a consistent controller.
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl Controller {
    #[new]
    #[pyo3(signature = (policy=None, *, total_steps, decisions, mode="greedy", seed=None, initial=None, nonfinite="raise"))]
    fn new(
        policy: Option<&Bound<'_, PyAny>>,
        total_steps: u64,
        decisions: u32,
        mode: &str,
        seed: Option<u64>,
        initial: Option<&Bound<'_, PyDict>>,
        nonfinite: &str,
    ) -> PyResult<Self> {
        let bytes = policy_bytes(policy)?;
        let mode = parse_mode(mode, seed)?;
        let nonfinite = NonFinite::parse(nonfinite)?;
        let config = RunConfig {
            total_steps,
            decisions,
        };
        let header = read_header(&bytes).map_err(core_err)?;
        let initial = initial_hyper(header.start(), initial)?;
        let loaded = load_any(&bytes, config, initial, mode).map_err(load_err)?;
        Ok(Controller {
            run: Mutex::new(Sequenced::new(loaded.controller)),
            config,
            policy: bytes,
            preset: loaded.preset,
            nonfinite,
            name: header.name.as_str().to_owned(),
            card: header.card.as_str().to_owned(),
            feature_set: header.feature_set_version,
        })
    }

    /// Records one finished inner step: its training loss and, when `wants_reductions` was true
    /// before the step, one row of 12 numbers per parameter tensor (see `REDUCTION_FIELDS`) and
    /// whether the gradient clip fired. Returns "continue", "decision_due" or "finished". A loss
    /// that is NaN or infinite as a float32 raises `NonFiniteLossError` and records nothing,
    /// unless the controller was made with `nonfinite="report"`.
    #[pyo3(signature = (loss, reductions=None, clipped=false))]
    fn observe(
        &self,
        loss: f64,
        reductions: Option<Vec<[f64; 12]>>,
        clipped: bool,
    ) -> PyResult<&'static str> {
        let tensors = reductions
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, row)| tensor_reductions(row, i))
            .collect::<PyResult<Vec<_>>>()?;
        let mut run = self.run();
        run.can_observe().map_err(order_err)?;
        if reductions.is_some() && !run.wants_reductions() {
            return Err(OrderError::new_err(format!(
                "step {} is not sampled: pass reductions only when wants_reductions is true",
                run.steps_done()
            )));
        }
        self.check_loss(&run, loss)?;
        let given = reductions.is_some().then_some(StepReductions {
            tensors: &tensors,
            clipped,
        });
        let status = run.observe(loss as f32, given).map_err(order_err)?;
        Ok(match status {
            StepStatus::Continue => "continue",
            StepStatus::DecisionDue => "decision_due",
            StepStatus::Finished => "finished",
        })
    }

    /// Raises `OrderError` unless `observe` would accept a step now and, given the step's
    /// `loss`, `NonFiniteLossError` where `observe` would refuse it. Nothing else happens: a
    /// runtime calls it before changing anything it cannot take back.
    #[pyo3(signature = (loss=None))]
    fn check_step(&self, loss: Option<f64>) -> PyResult<()> {
        let run = self.run();
        run.can_observe().map_err(order_err)?;
        loss.map_or(Ok(()), |loss| self.check_loss(&run, loss))
    }

    /// Makes the decision that `observe` announced: `param_norm` is the global parameter norm,
    /// `displacement` the norm of the parameter change since the previous decision (since the
    /// start at the first), `eval_loss` an eval loss or None. Returns
    /// `{"hyper": {...}, "restart": {"op": "none"|"save"|"load"|"swap", "register": int|None}}`.
    #[pyo3(signature = (param_norm, displacement, eval_loss=None))]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        param_norm: f64,
        displacement: f64,
        eval_loss: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        for (name, v) in [("param_norm", param_norm), ("displacement", displacement)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(PyValueError::new_err(format!(
                    "{name} must be finite and non-negative, got {v}"
                )));
            }
        }
        let inputs = DecisionInputs {
            param_norm: param_norm as f32,
            displacement: displacement as f32,
            eval_loss: eval_loss.map_or(f32::NAN, |l| l as f32),
        };
        let mut run = self.run();
        // A policy whose state stopped being finite holds the hyperparameters and the run goes
        // on (the core's contract); the reply says so instead of raising mid-training.
        let (Decision { hyper, restart }, warning) = match run.decide(&inputs) {
            Ok(d) => (d, None),
            Err(DecideError::Order(e)) => return Err(order_err(e)),
            Err(DecideError::Core(e)) => {
                let held = Decision {
                    hyper: run.hyper(),
                    restart: Restart::None,
                };
                (held, Some(e.to_string()))
            }
        };
        drop(run);
        let d = PyDict::new(py);
        d.set_item("hyper", hyper_dict(py, &hyper)?)?;
        d.set_item("restart", restart_dict(py, restart)?)?;
        d.set_item("warning", warning)?;
        Ok(d)
    }

    /// The hyperparameters in force, by name.
    #[getter]
    fn hyper<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = self.run().hyper();
        hyper_dict(py, &h)
    }

    /// Whether the next step should pass its reductions to `observe`.
    #[getter]
    fn wants_reductions(&self) -> bool {
        self.run().wants_reductions()
    }

    /// Steps recorded so far.
    #[getter]
    fn step(&self) -> u64 {
        self.run().steps_done()
    }

    /// Inner steps of the run.
    #[getter]
    fn total_steps(&self) -> u64 {
        self.config.total_steps
    }

    /// Decisions in the run.
    #[getter]
    fn decisions(&self) -> u32 {
        self.config.decisions
    }

    /// What `observe` does with a NaN or infinite loss: "raise" or "report".
    #[getter]
    fn nonfinite(&self) -> &'static str {
        self.nonfinite.name()
    }

    /// The policy's [pre, hidden, post] layer sizes.
    #[getter]
    fn preset(&self) -> [usize; 3] {
        self.preset
    }

    /// The policy's name, from its file header.
    #[getter]
    fn policy_name(&self) -> &str {
        &self.name
    }

    /// The policy's short card, from its file header.
    #[getter]
    fn policy_card(&self) -> &str {
        &self.card
    }

    /// The observation definition the policy was trained on (1 or 2).
    #[getter]
    fn feature_set(&self) -> u16 {
        self.feature_set
    }

    /// The whole run state (observations so far, recurrent state, PRNG) as
    /// `{"state": bytes}`; restore it into a controller made with the same policy and schedule.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let run = self.run();
        let mut buf = vec![0u8; run.state_max_len()];
        let n = run.save_state(&mut buf).map_err(core_err)?;
        let d = PyDict::new(py);
        d.set_item("state", PyBytes::new(py, &buf[..n]))?;
        Ok(d)
    }

    /// Restores a `state_dict()`; on any error the controller is unchanged.
    fn load_state_dict(&self, state_dict: &Bound<'_, PyDict>) -> PyResult<()> {
        let Some(state) = state_dict.get_item("state")? else {
            return Err(PyValueError::new_err(
                "not a controller state_dict: the 'state' entry is missing",
            ));
        };
        let bytes: Vec<u8> = state.extract()?;
        // Checked on a scratch controller first: the core checks the policy, the schedule is
        // this binding's promise (the call-order wrapper keeps the one it was made with).
        let mut probe = load_any(
            &self.policy,
            self.config,
            Hyperparams::INITIAL,
            Mode::Greedy,
        )
        .map_err(load_err)?
        .controller;
        probe.restore_state(&bytes).map_err(core_err)?;
        let saved = probe.observer().config();
        if saved != self.config {
            return Err(LhoptError::new_err(format!(
                "saved state is for a run of {} steps with {} decisions, this controller was \
                 made for {} steps with {} decisions",
                saved.total_steps, saved.decisions, self.config.total_steps, self.config.decisions
            )));
        }
        self.run().restore_state(&bytes).map_err(core_err)
    }

    fn __repr__(&self) -> String {
        let run = self.run();
        format!(
            "Controller(policy={:?}, total_steps={}, decisions={}, step={})",
            self.name,
            self.config.total_steps,
            self.config.decisions,
            run.steps_done()
        )
    }
}

/// The core's reference CIAO on `f32` slices (`lhopt_core::ciao::step`), run over a whole gradient
/// sequence: for checking other implementations against it. `grads[t][i]` is tensor `i`'s gradient
/// at step `t`, `hypers[t]` the eight hyperparameters of step `t`. Returns the final parameters,
/// each step's reduction rows and each step's clip flag.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn ciao_reference(
    mut params: Vec<Vec<f32>>,
    is_matrix: Vec<bool>,
    grads: Vec<Vec<Vec<f32>>>,
    hypers: Vec<[f32; NUM_HYPERS]>,
) -> PyResult<(Vec<Vec<f32>>, Vec<Vec<[f64; 12]>>, Vec<bool>)> {
    if is_matrix.len() != params.len() || hypers.len() != grads.len() {
        return Err(PyValueError::new_err(
            "params and is_matrix, grads and hypers must have the same lengths",
        ));
    }
    let n = params.len();
    let mut m: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut v = m.clone();
    let mut states = vec![TensorState::default(); n];
    let mut st = CiaoState::default();
    let mut all_rows = Vec::with_capacity(grads.len());
    let mut flags = Vec::with_capacity(grads.len());
    for (t, (mut step_grads, h)) in grads.into_iter().zip(hypers).enumerate() {
        let lengths_match = step_grads.len() == n
            && step_grads
                .iter()
                .zip(&params)
                .all(|(g, p)| g.len() == p.len());
        if !lengths_match {
            return Err(PyValueError::new_err(format!(
                "step {t}: one gradient per parameter tensor, of the same length"
            )));
        }
        let mut slots: Vec<ParamSlot<'_>> = params
            .iter_mut()
            .zip(step_grads.iter_mut())
            .zip(m.iter_mut().zip(v.iter_mut()))
            .zip(states.iter_mut().zip(&is_matrix))
            .map(|(((param, grad), (m, v)), (state, &is_matrix))| ParamSlot {
                param,
                grad,
                m,
                v,
                state,
                is_matrix,
            })
            .collect();
        let mut reductions = vec![TensorReductions::default(); n];
        let clipped = ciao::step(
            &mut slots,
            &Hyperparams::from_array(h),
            &mut st,
            Some(&mut reductions),
        );
        all_rows.push(reductions.iter().map(TensorReductions::to_array).collect());
        flags.push(clipped.map_err(core_err)?.clipped());
    }
    Ok((params, all_rows, flags))
}

/// The reductions of one sampled step that take a pass over the elements
/// (`lhopt_core::ciao::element_reductions`), for `lhopt.torch`'s CPU path: one fused pass per
/// tensor instead of about fifteen torch ops. Each entry of `tensors` is
/// `(numel, grad, m, v, update, param)`, the last five the `data_ptr()` of contiguous float32
/// CPU tensors of `numel` elements that stay alive and unchanged during the call (the caller,
/// `lhopt.torch.CIAO`, checks that; these are not checked here beyond null and alignment, so the
/// function is private). Returns one row per tensor in `REDUCTION_FIELDS` order, with the fields
/// the pass does not compute (‖g‖, ‖p‖, ‖u‖, `lr_p`) at 0 for the caller to fill in.
#[pyfunction(name = "_element_reductions")]
fn element_reductions(tensors: Vec<[usize; 6]>, bc1: f32, eps: f32) -> PyResult<Vec<[f64; 12]>> {
    tensors
        .iter()
        .map(|&[numel, grad, m, v, update, param]| {
            let slice = |address: usize| -> PyResult<&[f32]> {
                if numel == 0 {
                    return Ok(&[]); // an empty tensor's data pointer may be null
                }
                if address == 0 || !address.is_multiple_of(std::mem::align_of::<f32>()) {
                    return Err(PyValueError::new_err(format!(
                        "not the data of a float32 tensor: address {address:#x}"
                    )));
                }
                // SAFETY: the caller passes the data pointer of a live, contiguous float32 CPU
                // tensor of `numel` elements that nothing writes during this call (it holds the
                // GIL and runs no other code meanwhile); non-null and aligned as checked above.
                Ok(unsafe { std::slice::from_raw_parts(address as *const f32, numel) })
            };
            let buffers = ciao::StepBuffers {
                grad: slice(grad)?,
                m: slice(m)?,
                v: slice(v)?,
                update: slice(update)?,
                param: slice(param)?,
            };
            let mut r = TensorReductions::default();
            ciao::element_reductions(&buffers, bc1, eps, &mut r).map_err(core_err)?;
            Ok(r.to_array())
        })
        .collect()
}

/// The LHOPT core for Python: `Controller`, the shipped policy, the hyperparameter and reduction
/// names, and the core's reference CIAO. `lhopt` re-exports it; `lhopt.torch` builds on it.
#[pymodule]
fn _lhopt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Controller>()?;
    m.add_function(wrap_pyfunction!(ciao_reference, m)?)?;
    m.add_function(wrap_pyfunction!(element_reductions, m)?)?;
    m.add("LhoptError", py.get_type::<LhoptError>())?;
    m.add("OrderError", py.get_type::<OrderError>())?;
    m.add("NonFiniteLossError", py.get_type::<NonFiniteLossError>())?;
    m.add("DEFAULT_POLICY", PyBytes::new(py, DEFAULT_POLICY))?;
    m.add("HYPER_NAMES", Hyperparams::NAMES)?;
    m.add("REDUCTION_FIELDS", REDUCTION_FIELDS)?;
    m.add("INITIAL_HYPER", hyper_dict(py, &Hyperparams::INITIAL)?)?;
    // The reference CIAO's constants, so the torch CIAO uses the same numbers.
    m.add("CLIP_NORM_EPS", ciao::CLIP_NORM_EPS)?;
    m.add("TRUST_MIN_NORM", ciao::TRUST_MIN_NORM)?;
    m.add("TRUST_FLOOR", ciao::TRUST_FLOOR)?;
    m.add("LOG_UPDATE_DELTA", ciao::LOG_UPDATE_DELTA)?;
    Ok(())
}
