//! The outer features and the 166-number observation vector, feature sets 1 to 3 (spec §3).
//!
//! [`Observer`] is the runtime-statistics → observation half of the controller: it counts inner
//! steps, aggregates the inner features of sampled steps, keeps the CDF moments and the
//! checkpoint-register records, and applies actions to the hyperparameters.
//!
//! # Layout (version 1)
//!
//! | offset | inputs | n |
//! |---|---|---|
//! | [`OBS_PROGRESS`] | progress p | 1 |
//! | [`OBS_INNER`] | per inner feature j (spec §2 order): raw_j, then its 5 CDF features | 78 |
//! | [`OBS_LOSS_RATIO`] | is_nan, tanh(x), 5 CDF; x = ln(L_k / L_{k−1}) | 7 |
//! | [`OBS_UPDATE_RATIO`] | tanh(x), 5 CDF; x = ln(‖θ_k − θ_{k−1}‖ / ‖θ_{k−1} − θ_{k−2}‖) | 6 |
//! | [`OBS_NORM_RATIO`] | tanh(x), 5 CDF; x = ln(‖θ_k‖ / ‖θ_{k−1}‖) | 6 |
//! | [`OBS_TRAIN_LOSS`] | is_nan, is_inf, 5 CDF of ln L_k | 7 |
//! | [`OBS_EVAL_LOSS`] | is_nan, is_inf, 5 CDF of ln L_eval | 7 |
//! | [`OBS_CHECKPOINTS`] | per register r: tanh(ln(L_r / L_k)), progress at saving (−1 if empty); feature set 3 compares eval losses where it can | 6 |
//! | [`OBS_HYPER`] | ln(h / h_initial) per [`Hyperparams`] field, logit difference for clip_frac | 8 |
//! | [`OBS_PREV_ACTION`] | previous action, one-hot per head (all zero before the first) | 40 |
//!
//! CDF features use the time scales of [`CDF_SCALES`](crate::moments::CDF_SCALES), in that order.
//!
//! # Choices that are part of feature set version 1
//!
//! - `L_k` is the mean training loss over the interval. A NaN, −∞ or non-positive loss anywhere in
//!   the interval sets `is_nan`, +∞ sets `is_inf`; either makes `L_k` invalid.
//! - A series value that is undefined (an invalid loss, a ratio whose current or previous value
//!   is invalid, missing or non-positive, an interval without a sampled step) feeds `x = 0` to its
//!   tanh and CDF features and is **not** added to the CDF moments. In particular, at the first
//!   decision the three ratios have no previous value: they feed 0 without being added, and the
//!   loss ratio's `is_nan` stays 0 (nothing is wrong, the value is just not there yet). The loss
//!   ratio's `is_nan` is 1 when the current or previous `L` is invalid.
//! - Inner features are averaged over the tensors of a sampled step, then over the sampled steps
//!   of the interval; a step reported with an empty tensor list is not a sample.
//! - `h_initial` is the run's starting hyperparameters given to [`Observer::new`] (during training
//!   the perturbed ones), so the policy does not see the perturbation.
//! - A checkpoint register records `L_k` and `p_k` of the decision that saved into it; its loss
//!   feature is 0 when either loss is invalid.
//! - The previous-action one-hot holds the action the policy chose, even when a load or swap of
//!   an empty register turned its restart into a no-op.
//!
//! # Feature set 3: the registers' eval loss
//!
//! A register also records the eval loss of the decision that saved into it. Where that eval
//! loss and the current one are both valid (positive and finite), the register's loss feature is
//! tanh(ln(L_eval,r / L_eval,k)); otherwise it is feature set 2's training-loss comparison. The
//! training loss keeps falling while a run overfits, so only the eval loss tells a policy that
//! a saved point is better than the current one and worth loading.

use serde::{Deserialize, Serialize};

use crate::action::{self, Action, Decision, NUM_REGISTERS, Restart};
use crate::error::Error;
use crate::hyper::Hyperparams;
use crate::math::{finite_or_zero, logit};
use crate::moments::{CdfFeatures, NUM_CDF, WeightedMoments, progress_weights};
use crate::reductions::{NUM_INNER_FEATURES, TensorReductions, mean_inner_features};

/// Version of the observation definition that new policies are trained and exported with. A
/// policy file records the version it was trained on; [`FeatureSet`] lists those this build reads.
pub const FEATURE_SET_VERSION: u16 = FeatureSet::CURRENT.version();

/// The feature sets this build computes. They share the 166-number layout and the runtime
/// contract (which inner steps report reductions differs, and the controller answers that), so a
/// policy of any of them runs on the same runtime code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeatureSet {
    /// Reductions on every [`REDUCTION_PERIOD`]th *global* step, plus the last step of an
    /// interval that had none. The policies shipped before feature set 2 were trained on it.
    V1,
    /// Reductions on steps 0, 4, 8, … counted from the last decision (the official CIAO resets
    /// its counter at every outer step), so every interval is sampled from its first step on,
    /// whatever its length.
    V2,
    /// Feature set 2's sampling; a checkpoint register's loss feature compares eval losses where
    /// the run reported one both at the save and now (see the module docs).
    V3,
}

impl FeatureSet {
    /// The feature set new policies use.
    pub const CURRENT: FeatureSet = FeatureSet::V3;

    /// The number a policy file records.
    pub const fn version(self) -> u16 {
        match self {
            FeatureSet::V1 => 1,
            FeatureSet::V2 => 2,
            FeatureSet::V3 => 3,
        }
    }

    /// The feature set of a recorded version, `None` when this build does not compute it.
    pub const fn from_version(version: u16) -> Option<FeatureSet> {
        match version {
            1 => Some(FeatureSet::V1),
            2 => Some(FeatureSet::V2),
            3 => Some(FeatureSet::V3),
            _ => None,
        }
    }
}

/// Length of the observation vector.
pub const OBS_DIM: usize = 166;

/// Offset of progress.
pub const OBS_PROGRESS: usize = 0;
/// Offset of the inner features (13 × (raw + 5 CDF)).
pub const OBS_INNER: usize = 1;
/// Offset of the loss-ratio group.
pub const OBS_LOSS_RATIO: usize = OBS_INNER + NUM_INNER_FEATURES * (1 + NUM_CDF);
/// Offset of the update-ratio group.
pub const OBS_UPDATE_RATIO: usize = OBS_LOSS_RATIO + 2 + NUM_CDF;
/// Offset of the norm-ratio group.
pub const OBS_NORM_RATIO: usize = OBS_UPDATE_RATIO + 1 + NUM_CDF;
/// Offset of the train log-loss group.
pub const OBS_TRAIN_LOSS: usize = OBS_NORM_RATIO + 1 + NUM_CDF;
/// Offset of the eval log-loss group.
pub const OBS_EVAL_LOSS: usize = OBS_TRAIN_LOSS + 2 + NUM_CDF;
/// Offset of the checkpoint-register group.
pub const OBS_CHECKPOINTS: usize = OBS_EVAL_LOSS + 2 + NUM_CDF;
/// Offset of the hyperparameter group.
pub const OBS_HYPER: usize = OBS_CHECKPOINTS + 2 * NUM_REGISTERS;
/// Offset of the previous-action one-hot.
pub const OBS_PREV_ACTION: usize = OBS_HYPER + crate::hyper::NUM_HYPERS;

const _: () = assert!(OBS_PREV_ACTION + action::NUM_ACTION_LOGITS == OBS_DIM);

/// Index of `clip_frac` among the [`Hyperparams`] fields: its observation is a logit difference.
const CLIP_FRAC_INDEX: usize = 5;

/// Inner steps between sampled reductions.
pub const REDUCTION_PERIOD: u64 = 4;

/// The schedule of a run: `total_steps` inner steps, a decision every `total_steps / decisions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Inner steps T of the whole run.
    pub total_steps: u64,
    /// Number of decisions K.
    pub decisions: u32,
}

impl RunConfig {
    /// Inner steps per decision, `I = ⌊T / K⌋`; an error when `K = 0` or `T < K`.
    pub fn interval(&self) -> Result<u64, Error> {
        if self.decisions == 0 {
            return Err(Error::InvalidConfig("decisions must be at least 1"));
        }
        match self.total_steps / u64::from(self.decisions) {
            0 => Err(Error::InvalidConfig(
                "total_steps must be at least decisions (one inner step per decision)",
            )),
            i => Ok(i),
        }
    }
}

/// What the runtime reports once per decision, besides the per-step losses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecisionInputs {
    /// Global parameter norm ‖θ_k‖.
    pub param_norm: f32,
    /// ‖θ_k − θ_{k−1}‖, the displacement since the previous decision (since the start at the first).
    pub displacement: f32,
    /// Eval loss, or NaN when the runtime has no eval pass.
    pub eval_loss: f32,
}

/// The reductions of one sampled inner step.
#[derive(Clone, Copy, Debug)]
pub struct StepReductions<'a> {
    /// One entry per parameter tensor.
    pub tensors: &'a [TensorReductions],
    /// Whether the global gradient clip fired at this step.
    pub clipped: bool,
}

/// What the runtime should do after an inner step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Keep training.
    Continue,
    /// Call for an observation (or `Controller::decide`) now.
    DecisionDue,
    /// The run has reached `total_steps`; further steps are ignored.
    Finished,
}

/// Losses and progress recorded when a checkpoint register was saved.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    /// The interval's mean training loss (NaN when invalid).
    loss: f32,
    /// The eval loss the runtime reported, when it was positive and finite.
    eval: Option<f32>,
    progress: f32,
}

/// All outer-feature state of one run. Plain data: clone it, or serialise it with postcard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observer {
    config: RunConfig,
    feature_set: FeatureSet,
    interval: u64,
    initial: Hyperparams,
    hyper: Hyperparams,
    step: u64,
    decision_index: u32,
    last_progress: f32,
    // Accumulators of the current interval.
    /// Running mean of the interval's valid losses: a mean of finite values stays finite,
    /// where their sum can overflow (100 losses of 1e37).
    loss_mean: f32,
    /// Kahan compensation of `loss_mean`'s increments (intervals can be 10⁵ steps long).
    loss_compensation: f32,
    loss_count: u32,
    loss_saw_nan: bool,
    loss_saw_inf: bool,
    inner_sum: [f32; NUM_INNER_FEATURES],
    inner_samples: u32,
    // Values of the previous decision (None before the first; NaN when invalid).
    prev_train_loss: Option<f32>,
    /// The eval loss reported at the previous decision, when positive and finite: what a save
    /// records.
    prev_eval_loss: Option<f32>,
    prev_displacement: Option<f32>,
    prev_param_norm: Option<f32>,
    prev_action: Option<Action>,
    // CDF moments per series.
    inner_cdf: [CdfFeatures; NUM_INNER_FEATURES],
    loss_ratio_cdf: CdfFeatures,
    update_ratio_cdf: CdfFeatures,
    norm_ratio_cdf: CdfFeatures,
    train_loss_cdf: CdfFeatures,
    eval_loss_cdf: CdfFeatures,
    registers: [Option<Checkpoint>; NUM_REGISTERS],
}

/// A loss judged by the spec's rules: its log when it is positive and finite, otherwise flags.
#[derive(Clone, Copy)]
struct LossFlags {
    log: Option<f32>,
    is_nan: bool,
    is_inf: bool,
}

impl LossFlags {
    fn of(loss: f32) -> Self {
        let is_inf = loss == f32::INFINITY;
        let valid = loss.is_finite() && loss > 0.0;
        Self {
            log: valid.then(|| libm::logf(loss)),
            is_nan: !valid && !is_inf,
            is_inf,
        }
    }

    fn flag(b: bool) -> f32 {
        if b { 1.0 } else { 0.0 }
    }
}

/// `ln(now / prev)` for a positive series: `Ok(None)` when there is no previous value yet,
/// `Err(())` when either value is not positive and finite.
fn log_ratio(prev: Option<f32>, now: f32) -> Result<Option<f32>, ()> {
    let positive = |x: f32| x.is_finite() && x > 0.0;
    match prev {
        None => Ok(None),
        Some(prev) if positive(prev) && positive(now) => {
            Ok(Some(libm::logf(now) - libm::logf(prev)))
        }
        Some(_) => Err(()),
    }
}

/// The CDF features of `x` (added to the moments), or of 0 (not added) when `x` is undefined.
fn cdf_of(cdf: &mut CdfFeatures, x: Option<f32>, weights: &[f32; NUM_CDF]) -> [f32; NUM_CDF] {
    match x {
        Some(x) => cdf.observe(x, weights),
        None => cdf.transform(0.0),
    }
}

/// Fills the observation front to back; writes past the end are dropped (the layout constants
/// and a test keep the total at [`OBS_DIM`]).
struct ObsWriter<'a>(core::slice::IterMut<'a, f32>);

impl ObsWriter<'_> {
    fn push(&mut self, x: f32) {
        if let Some(slot) = self.0.next() {
            *slot = x;
        }
    }

    fn extend(&mut self, xs: &[f32]) {
        for &x in xs {
            self.push(x);
        }
    }
}

impl Observer {
    /// Largest postcard encoding of an `Observer`, in bytes (varints at their widest): the run
    /// config, feature set and interval (26), two hyperparameter sets (64), step, decision index and progress
    /// (19), the loss accumulators (15), the inner-feature accumulators (57), the previous values
    /// and action (30), 18 series × 5 scales × 3 moments (1080), the registers (42).
    pub const MAX_ENCODED_LEN: usize = 26 + 64 + 19 + 15 + 57 + 30 + 1080 + 42;

    /// A fresh run computing `feature_set` (the one the policy was trained on). `initial`
    /// (clamped to bounds) is both the starting hyperparameters and the reference `h_initial` of
    /// the hyperparameter features.
    pub fn new(
        config: RunConfig,
        initial: Hyperparams,
        feature_set: FeatureSet,
    ) -> Result<Self, Error> {
        let interval = config.interval()?;
        Ok(Self::start(
            config,
            interval,
            initial.clamped(),
            feature_set,
        ))
    }

    /// The observer of a run of no steps, already finished: the placeholder inside
    /// [`crate::Controller::empty`], which `load` replaces with a real run.
    pub(crate) const FINISHED: Self = Self::start(
        RunConfig {
            total_steps: 0,
            decisions: 1,
        },
        1,
        Hyperparams::INITIAL,
        FeatureSet::CURRENT,
    );

    /// A run at its first step, from a checked `interval` and in-bounds `initial`.
    const fn start(
        config: RunConfig,
        interval: u64,
        initial: Hyperparams,
        feature_set: FeatureSet,
    ) -> Self {
        Self {
            config,
            feature_set,
            interval,
            initial,
            hyper: initial,
            step: 0,
            decision_index: 0,
            last_progress: 0.0,
            loss_mean: 0.0,
            loss_compensation: 0.0,
            loss_count: 0,
            loss_saw_nan: false,
            loss_saw_inf: false,
            inner_sum: [0.0; NUM_INNER_FEATURES],
            inner_samples: 0,
            prev_train_loss: None,
            prev_eval_loss: None,
            prev_displacement: None,
            prev_param_norm: None,
            prev_action: None,
            inner_cdf: [CdfFeatures::EMPTY; NUM_INNER_FEATURES],
            loss_ratio_cdf: CdfFeatures::EMPTY,
            update_ratio_cdf: CdfFeatures::EMPTY,
            norm_ratio_cdf: CdfFeatures::EMPTY,
            train_loss_cdf: CdfFeatures::EMPTY,
            eval_loss_cdf: CdfFeatures::EMPTY,
            registers: [None; NUM_REGISTERS],
        }
    }

    /// Whether the inner step about to run should report reductions (see [`FeatureSet`]). In
    /// feature set 2 the steps after the last decision (when K does not divide T) are never
    /// sampled: no decision would read them. Asked while a decision is due, it answers for the
    /// step after that decision.
    pub fn wants_reductions(&self) -> bool {
        if self.step >= self.config.total_steps {
            return false;
        }
        match self.feature_set {
            FeatureSet::V1 => {
                let next = self.step + 1;
                // While a decision is pending the next step opens a fresh interval, whatever the
                // closing one sampled: asked at a `DecisionDue`, the answer is the same as after it.
                let samples = if self.decision_due() {
                    0
                } else {
                    self.inner_samples
                };
                next.is_multiple_of(REDUCTION_PERIOD)
                    || (next.is_multiple_of(self.interval) && samples == 0)
            }
            FeatureSet::V2 | FeatureSet::V3 => {
                // `checked_rem` keeps a zero interval (only in corrupted restored state) from
                // reaching a division panic.
                let decided = self.step / self.interval.max(1);
                decided < u64::from(self.config.decisions)
                    && self
                        .step
                        .checked_rem(self.interval)
                        .is_some_and(|s| s.is_multiple_of(REDUCTION_PERIOD))
            }
        }
    }

    /// The feature set this observer computes.
    pub fn feature_set(&self) -> FeatureSet {
        self.feature_set
    }

    /// Whether a decision was announced ([`StepStatus::DecisionDue`]) and not yet taken.
    pub fn decision_due(&self) -> bool {
        let announced = self
            .step
            .checked_div(self.interval)
            .unwrap_or(0)
            .min(u64::from(self.config.decisions));
        announced > u64::from(self.decision_index)
    }

    /// Whether the run is over: all T steps recorded and no decision left to take. A runtime
    /// that checks this before each inner step runs exactly T of them.
    pub fn is_finished(&self) -> bool {
        self.step >= self.config.total_steps && !self.decision_due()
    }

    /// Checks that every field is one a run can reach, for state read from outside (a restored
    /// controller): a bad field would otherwise surface as out-of-range hyperparameters or a
    /// broken schedule. The error names the first field found wrong.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |field| Err(Error::InvalidState(field));
        if self.config.interval() != Ok(self.interval) {
            return bad("interval: not total_steps / decisions of a valid run configuration");
        }
        if !self.initial.in_bounds() || !self.hyper.in_bounds() {
            return bad("hyperparameters: non-finite or outside their bounds");
        }
        if self.step > self.config.total_steps {
            return bad("step: beyond total_steps");
        }
        // Decisions taken: every announced one, or all but the one still due.
        let announced = (self.step / self.interval).min(u64::from(self.config.decisions));
        let taken = u64::from(self.decision_index);
        if taken > announced || taken + 1 < announced {
            return bad("decision_index: does not match the steps recorded");
        }
        let unit = |x: f32| (0.0..=1.0).contains(&x);
        if !unit(self.last_progress) {
            return bad("last_progress: outside [0, 1]");
        }
        let in_interval = self.step - taken * self.interval;
        if u64::from(self.loss_count) > in_interval
            || self.inner_samples > self.loss_count
            || !(self.loss_mean.is_finite() && self.loss_mean >= 0.0)
            || !self.loss_compensation.is_finite()
        {
            return bad(
                "interval accumulators: counts beyond the steps, or a non-finite mean loss",
            );
        }
        if self.prev_action.is_some_and(|a| !a.is_valid()) {
            return bad("previous action: a choice outside its head");
        }
        let series = self.inner_cdf.iter().chain([
            &self.loss_ratio_cdf,
            &self.update_ratio_cdf,
            &self.norm_ratio_cdf,
            &self.train_loss_cdf,
            &self.eval_loss_cdf,
        ]);
        if !series
            .flat_map(CdfFeatures::moments)
            .all(WeightedMoments::is_valid)
        {
            return bad("CDF moments: a total weight that is negative or not finite");
        }
        if self.registers.iter().flatten().any(|cp| !unit(cp.progress)) {
            return bad("checkpoint register: progress outside [0, 1]");
        }
        let positive = |loss: Option<f32>| loss.is_none_or(|l| LossFlags::of(l).log.is_some());
        if !positive(self.prev_eval_loss)
            || !self.registers.iter().flatten().all(|cp| positive(cp.eval))
        {
            return bad("eval loss: recorded but not a positive finite number");
        }
        Ok(())
    }

    /// Records one inner step: its training loss and, when sampled, its reductions.
    ///
    /// Returns [`StepStatus::DecisionDue`] after steps `I, 2I, …, K·I`, [`StepStatus::Finished`]
    /// after step `T` otherwise, and for every call once the run is over (such calls record
    /// nothing). When K divides T the last step is answered with `DecisionDue`, not `Finished`:
    /// make that decision, apply its restart, and stop; [`Observer::is_finished`] is then true.
    /// A loop `while !is_finished() { step; observe }` runs exactly T inner steps. While a
    /// decision is due, a step is not recorded: the answer is `DecisionDue` again until the
    /// decision is taken.
    ///
    /// Reductions are used only on the steps [`Observer::wants_reductions`] asked for; given on
    /// another step they are ignored. A step reported with an empty tensor list is no sample.
    ///
    /// A loss that is NaN, −∞ or ≤ 0 is read as "not a number" (it sets the interval's `is_nan`
    /// flag), +∞ sets `is_inf`; either makes the interval's mean loss invalid. Losses must be
    /// positive because the features take their logarithm.
    pub fn observe_step(
        &mut self,
        train_loss: f32,
        reductions: Option<StepReductions<'_>>,
    ) -> StepStatus {
        // A step observed while a decision is due would fold two intervals into one decision.
        if self.decision_due() {
            return StepStatus::DecisionDue;
        }
        if self.step >= self.config.total_steps {
            return StepStatus::Finished;
        }
        // Reductions of a step that was not asked for would weight the interval's mean towards
        // wherever the runtime happened to send them: they are not used.
        let reductions = reductions.filter(|_| self.wants_reductions());
        self.step += 1;
        self.loss_count = self.loss_count.saturating_add(1);
        if train_loss.is_finite() && train_loss > 0.0 {
            // mean += (x − mean) / n, Kahan-compensated. Both are positive and finite, so the
            // difference cannot overflow, and neither can the mean.
            let y = (train_loss - self.loss_mean) / self.loss_count as f32 - self.loss_compensation;
            let t = self.loss_mean + y;
            self.loss_compensation = (t - self.loss_mean) - y;
            self.loss_mean = t;
        } else if train_loss == f32::INFINITY {
            self.loss_saw_inf = true;
        } else {
            self.loss_saw_nan = true;
        }
        if let Some(features) = reductions.and_then(|r| mean_inner_features(r.tensors, r.clipped)) {
            for (s, f) in self.inner_sum.iter_mut().zip(features) {
                *s += f;
            }
            self.inner_samples = self.inner_samples.saturating_add(1);
        }
        // `is_multiple_of` and `checked_div` keep a zero interval (possible only in corrupted
        // restored state) from reaching a division panic.
        if self.step.is_multiple_of(self.interval)
            && self
                .step
                .checked_div(self.interval)
                .is_some_and(|k| k <= u64::from(self.config.decisions))
        {
            StepStatus::DecisionDue
        } else if self.step >= self.config.total_steps {
            StepStatus::Finished
        } else {
            StepStatus::Continue
        }
    }

    /// Closes the interval and returns the raw (un-normalised) observation; advances the CDF
    /// moments. Call once per [`StepStatus::DecisionDue`], then [`Observer::apply`].
    pub fn observation(&mut self, inputs: &DecisionInputs) -> [f32; OBS_DIM] {
        let mut out = [0.0; OBS_DIM];
        self.observation_into(inputs, &mut out);
        out
    }

    /// [`Observer::observation`] written into `out`: a caller that keeps the observation in a
    /// buffer of its own saves the copy of the returned array (some 570 instructions of a
    /// decision on the Cortex-M4F).
    pub fn observation_into(&mut self, inputs: &DecisionInputs, out: &mut [f32; OBS_DIM]) {
        let p = self.progress();
        let weights = progress_weights(p, p - self.last_progress);
        let mut w = ObsWriter(out.iter_mut());
        w.push(p);

        // Inner features: mean over the sampled steps of the interval.
        let inner = (self.inner_samples > 0).then(|| {
            let n = self.inner_samples as f32;
            self.inner_sum.map(|s| finite_or_zero(s / n))
        });
        for (j, cdf) in self.inner_cdf.iter_mut().enumerate() {
            let raw = inner.and_then(|f| f.get(j).copied());
            w.push(raw.unwrap_or(0.0));
            w.extend(&cdf_of(cdf, raw, &weights));
        }

        // Training loss of the interval, and its ratio to the previous one.
        let mean_loss = self.loss_mean;
        let loss = if self.loss_count == 0 || self.loss_saw_nan || self.loss_saw_inf {
            LossFlags {
                log: None,
                is_nan: self.loss_saw_nan || self.loss_count == 0,
                is_inf: self.loss_saw_inf,
            }
        } else {
            LossFlags::of(mean_loss)
        };
        let loss_now = if loss.log.is_some() {
            mean_loss
        } else {
            f32::NAN
        };
        let loss_ratio = log_ratio(self.prev_train_loss, loss_now);
        w.push(LossFlags::flag(loss_ratio.is_err()));
        let x = loss_ratio.ok().flatten();
        w.push(libm::tanhf(x.unwrap_or(0.0)));
        w.extend(&cdf_of(&mut self.loss_ratio_cdf, x, &weights));

        for (prev, now, cdf) in [
            (
                self.prev_displacement,
                inputs.displacement,
                &mut self.update_ratio_cdf,
            ),
            (
                self.prev_param_norm,
                inputs.param_norm,
                &mut self.norm_ratio_cdf,
            ),
        ] {
            let x = log_ratio(prev, now).ok().flatten();
            w.push(libm::tanhf(x.unwrap_or(0.0)));
            w.extend(&cdf_of(cdf, x, &weights));
        }

        let eval = LossFlags::of(inputs.eval_loss);
        for (l, cdf) in [
            (loss, &mut self.train_loss_cdf),
            (eval, &mut self.eval_loss_cdf),
        ] {
            w.push(LossFlags::flag(l.is_nan));
            w.push(LossFlags::flag(l.is_inf));
            w.extend(&cdf_of(cdf, l.log, &weights));
        }

        for register in &self.registers {
            match register {
                Some(cp) => {
                    let x = match (self.feature_set, cp.eval, eval.log) {
                        (FeatureSet::V3, Some(saved), Some(now)) => Some(libm::logf(saved) - now),
                        _ => log_ratio(Some(loss_now), cp.loss).ok().flatten(),
                    };
                    w.push(libm::tanhf(x.unwrap_or(0.0)));
                    w.push(cp.progress);
                }
                None => w.extend(&[0.0, -1.0]),
            }
        }

        let now = self.hyper.to_array();
        for (i, (h, h0)) in now.iter().zip(self.initial.to_array()).enumerate() {
            let x = if i == CLIP_FRAC_INDEX {
                logit(*h) - logit(h0)
            } else {
                libm::logf(*h) - libm::logf(h0)
            };
            w.push(finite_or_zero(x));
        }

        w.extend(
            &self
                .prev_action
                .map_or([0.0; action::NUM_ACTION_LOGITS], |a| a.one_hot()),
        );

        // Close the interval.
        self.last_progress = p;
        self.decision_index = self.decision_index.saturating_add(1);
        self.prev_train_loss = Some(loss_now);
        self.prev_eval_loss = eval.log.map(|_| inputs.eval_loss);
        self.prev_displacement = Some(inputs.displacement);
        self.prev_param_norm = Some(inputs.param_norm);
        self.loss_mean = 0.0;
        self.loss_compensation = 0.0;
        self.loss_count = 0;
        self.loss_saw_nan = false;
        self.loss_saw_inf = false;
        self.inner_sum = [0.0; NUM_INNER_FEATURES];
        self.inner_samples = 0;
    }

    /// Applies an action: new hyperparameters (clamped), the previous-action one-hot, and the
    /// checkpoint-register records. A load or swap of an empty register is a no-op, reported as
    /// [`Restart::None`].
    pub fn apply(&mut self, a: &Action) -> Decision {
        self.hyper = action::apply(&self.hyper, a);
        self.prev_action = Some(*a);
        let current = Checkpoint {
            loss: self.prev_train_loss.unwrap_or(f32::NAN),
            eval: self.prev_eval_loss,
            progress: self.last_progress,
        };
        let restart = self.update_registers(a.restart(), current);
        Decision {
            hyper: self.hyper,
            restart,
        }
    }

    /// Records a save or swap in its register and turns a load or swap of an empty register (or
    /// a register index out of range) into [`Restart::None`].
    fn update_registers(&mut self, requested: Restart, current: Checkpoint) -> Restart {
        let (Restart::Save(r) | Restart::Load(r) | Restart::Swap(r)) = requested else {
            return Restart::None;
        };
        let Some(slot) = self.registers.get_mut(usize::from(r)) else {
            return Restart::None;
        };
        let occupied = slot.is_some();
        match requested {
            Restart::Save(_) => *slot = Some(current),
            Restart::Swap(_) if occupied => *slot = Some(current),
            Restart::Load(_) if occupied => {}
            _ => return Restart::None,
        }
        requested
    }

    /// Current hyperparameters.
    pub fn hyper(&self) -> Hyperparams {
        self.hyper
    }

    /// The reference hyperparameters of the hyperparameter features.
    pub fn initial(&self) -> Hyperparams {
        self.initial
    }

    /// Inner steps observed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Progress `step / T` in [0, 1].
    pub fn progress(&self) -> f32 {
        self.step as f32 / self.config.total_steps as f32
    }

    /// Observations taken so far.
    pub fn decision_index(&self) -> u32 {
        self.decision_index
    }

    /// The run's schedule.
    pub fn config(&self) -> RunConfig {
        self.config
    }

    /// Inner steps per decision.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The last applied action, if any.
    pub fn previous_action(&self) -> Option<Action> {
        self.prev_action
    }
}

/// Edits of a valid observer that no run can reach, one per check of `validate`: what a
/// restored state with a valid CRC may still hold.
#[cfg(test)]
pub(crate) type Edit = (&'static str, fn(&mut Observer));

/// See [`Edit`].
#[cfg(test)]
pub(crate) fn unreachable_edits() -> [Edit; 15] {
    [
        ("NaN lr", |o| o.hyper.lr = f32::NAN),
        ("lr above its bound", |o| o.hyper.lr = 10.0),
        ("initial wd negative", |o| o.initial.wd = -1.0),
        ("step beyond T", |o| o.step = o.config.total_steps + 1),
        ("zero interval", |o| o.interval = 0),
        ("zero decisions", |o| o.config.decisions = 0),
        ("decisions ahead of the steps", |o| o.decision_index += 2),
        ("two decisions pending", |o| o.decision_index = 0),
        ("progress NaN", |o| o.last_progress = f32::NAN),
        ("infinite loss mean", |o| o.loss_mean = f32::INFINITY),
        ("previous action out of range", |o| {
            o.prev_action = Some(Action { choices: [9; 9] })
        }),
        ("infinite moment weight", |o| {
            o.train_loss_cdf = CdfFeatures::default();
            o.train_loss_cdf.add(1.0, &[f32::MAX; NUM_CDF]);
            o.train_loss_cdf.add(1.0, &[f32::MAX; NUM_CDF]);
        }),
        ("register progress 2", |o| {
            o.registers[1] = Some(Checkpoint {
                loss: 1.0,
                eval: Some(1.0),
                progress: 2.0,
            })
        }),
        ("register eval loss −1", |o| {
            o.registers[2] = Some(Checkpoint {
                loss: 1.0,
                eval: Some(-1.0),
                progress: 0.5,
            })
        }),
        ("previous eval loss NaN", |o| {
            o.prev_eval_loss = Some(f32::NAN)
        }),
    ]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::math::phi;
    use crate::reductions::inner_features;
    use crate::reductions::tests::example;

    fn observer(total_steps: u64, decisions: u32) -> Observer {
        let cfg = RunConfig {
            total_steps,
            decisions,
        };
        Observer::new(cfg, Hyperparams::INITIAL, FeatureSet::V1).unwrap()
    }

    /// Runs `interval` steps at a constant loss, sampling reductions when asked.
    fn run_interval(o: &mut Observer, loss: f32, clipped: bool) -> StepStatus {
        let tensors = [example()];
        let mut status = StepStatus::Continue;
        for _ in 0..o.interval() {
            let r = o.wants_reductions().then_some(StepReductions {
                tensors: &tensors,
                clipped,
            });
            status = o.observe_step(loss, r);
        }
        status
    }

    fn group(obs: &[f32; OBS_DIM], offset: usize, n: usize) -> &[f32] {
        &obs[offset..offset + n]
    }

    #[test]
    fn layout_offsets_add_up_to_the_spec_table() {
        assert_eq!(OBS_INNER, 1);
        assert_eq!(OBS_LOSS_RATIO, 79);
        assert_eq!(OBS_UPDATE_RATIO, 86);
        assert_eq!(OBS_NORM_RATIO, 92);
        assert_eq!(OBS_TRAIN_LOSS, 98);
        assert_eq!(OBS_EVAL_LOSS, 105);
        assert_eq!(OBS_CHECKPOINTS, 112);
        assert_eq!(OBS_HYPER, 118);
        assert_eq!(OBS_PREV_ACTION, 126);
    }

    #[test]
    fn schedule_reports_decisions_after_each_interval_and_then_finishes() {
        let mut o = observer(10, 3);
        assert_eq!(o.interval(), 3);
        let mut due = [0u64; 3];
        let mut n = 0;
        let mut wanted = [false; 10];
        for (step, w) in (1..=10).zip(wanted.iter_mut()) {
            *w = o.wants_reductions();
            match o.observe_step(1.0, None) {
                StepStatus::DecisionDue => {
                    due[n] = step;
                    n += 1;
                    o.observation(&DecisionInputs {
                        param_norm: 1.0,
                        displacement: 1.0,
                        eval_loss: f32::NAN,
                    });
                }
                StepStatus::Finished => assert_eq!(step, 10),
                StepStatus::Continue => {}
            }
        }
        assert_eq!(due, [3, 6, 9]);
        assert_eq!(o.observe_step(1.0, None), StepStatus::Finished);
        assert_eq!(o.step(), 10);
        assert!(!o.wants_reductions());
        // Every 4th step, plus the last step of an interval without a sample (none were given
        // here, so steps 3, 6 and 9 are asked for too).
        let expected = [
            false, false, true, true, false, true, false, true, true, false,
        ];
        assert_eq!(wanted, expected);
    }

    /// Which of the steps of a `total_steps`/`decisions` run feature sets 2 and 3 sample (the
    /// same steps: the assertion holds them together).
    fn v2_sampled(total_steps: u64, decisions: u32) -> Vec<u64> {
        let sampled = |fs| {
            let cfg = RunConfig {
                total_steps,
                decisions,
            };
            sampled_steps(Observer::new(cfg, Hyperparams::INITIAL, fs).unwrap())
        };
        let v2 = sampled(FeatureSet::V2);
        assert_eq!(v2, sampled(FeatureSet::V3));
        v2
    }

    fn sampled_steps(mut o: Observer) -> Vec<u64> {
        let total_steps = o.config().total_steps;
        let mut sampled = Vec::new();
        for step in 0..total_steps {
            if o.wants_reductions() {
                sampled.push(step);
            }
            if o.observe_step(1.0, None) == StepStatus::DecisionDue {
                o.observation(&DecisionInputs {
                    param_norm: 1.0,
                    displacement: 1.0,
                    eval_loss: f32::NAN,
                });
            }
        }
        sampled
    }

    #[test]
    fn feature_set_2_samples_steps_0_4_8_of_every_interval() {
        // I = 10: steps 0, 4, 8 of each interval, counted from the last decision.
        assert_eq!(v2_sampled(30, 3), [0, 4, 8, 10, 14, 18, 20, 24, 28]);
        // I = 3: the first step of each interval; nothing after the last decision (step 9).
        assert_eq!(v2_sampled(10, 3), [0, 3, 6]);
        // I = 6, not a multiple of 4: the phase restarts at every decision (v1 would sample
        // global steps 3, 7, 11, 15, ... instead).
        assert_eq!(v2_sampled(24, 4), [0, 4, 6, 10, 12, 16, 18, 22]);
    }

    #[test]
    fn feature_sets_round_trip_through_their_versions() {
        for fs in [FeatureSet::V1, FeatureSet::V2, FeatureSet::V3] {
            assert_eq!(FeatureSet::from_version(fs.version()), Some(fs));
        }
        assert_eq!(FeatureSet::from_version(0), None);
        assert_eq!(FeatureSet::from_version(4), None);
        assert_eq!(FEATURE_SET_VERSION, 3);
    }

    /// The register feature of register 0 at the second decision of a run that saved into it
    /// at the first, with training losses 2 then 1 and the given eval losses.
    fn register_feature(fs: FeatureSet, eval_at_save: f32, eval_now: f32) -> f32 {
        let cfg = RunConfig {
            total_steps: 8,
            decisions: 2,
        };
        let mut o = Observer::new(cfg, Hyperparams::INITIAL, fs).unwrap();
        let decide = |o: &mut Observer, loss: f32, eval_loss: f32| {
            run_interval(o, loss, false);
            o.observation(&DecisionInputs {
                param_norm: 1.0,
                displacement: 1.0,
                eval_loss,
            })
        };
        decide(&mut o, 2.0, eval_at_save);
        let save = Action {
            choices: [3, 1, 1, 1, 1, 2, 1, 1, 1],
        };
        assert_eq!(o.apply(&save).restart, Restart::Save(0));
        decide(&mut o, 1.0, eval_now)[OBS_CHECKPOINTS]
    }

    #[test]
    fn feature_set_3_compares_the_registers_eval_loss_where_both_are_reported() {
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        // The training loss halved (tanh(ln 2) = 0.6) while the eval loss doubled: an overfit
        // run, whose saved point is the better one.
        assert!(close(register_feature(FeatureSet::V3, 1.0, 2.0), -0.6));
        assert!(close(register_feature(FeatureSet::V2, 1.0, 2.0), 0.6));
        // Without an eval loss at either end, feature set 3 falls back to the training loss.
        for (at_save, now) in [
            (f32::NAN, 2.0),
            (1.0, f32::NAN),
            (0.0, 2.0),
            (1.0, f32::INFINITY),
        ] {
            assert!(close(register_feature(FeatureSet::V3, at_save, now), 0.6));
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let hp = Hyperparams::INITIAL;
        let zero = RunConfig {
            total_steps: 10,
            decisions: 0,
        };
        assert!(matches!(
            Observer::new(zero, hp, FeatureSet::CURRENT),
            Err(Error::InvalidConfig(_))
        ));
        let short = RunConfig {
            total_steps: 3,
            decisions: 4,
        };
        assert!(matches!(
            Observer::new(short, hp, FeatureSet::CURRENT),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn two_decisions_give_hand_computed_observations() {
        let mut o = observer(8, 2);
        assert_eq!(run_interval(&mut o, 2.0, false), StepStatus::DecisionDue);
        let obs1 = o.observation(&DecisionInputs {
            param_norm: 10.0,
            displacement: 1.0,
            eval_loss: 3.0,
        });
        assert_eq!(obs1[OBS_PROGRESS], 0.5);
        let raw = inner_features(&example(), false);
        for (j, r) in raw.iter().enumerate() {
            assert_eq!(obs1[OBS_INNER + 6 * j], *r, "raw inner feature {j}");
            assert_eq!(group(&obs1, OBS_INNER + 6 * j + 1, 5), &[0.5; 5]);
        }
        // First decision: no previous values, nothing in the moments yet.
        assert_eq!(
            group(&obs1, OBS_LOSS_RATIO, 7),
            &[0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(
            group(&obs1, OBS_UPDATE_RATIO, 6),
            &[0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(
            group(&obs1, OBS_NORM_RATIO, 6),
            &[0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(
            group(&obs1, OBS_TRAIN_LOSS, 7),
            &[0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(
            group(&obs1, OBS_EVAL_LOSS, 7),
            &[0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        assert_eq!(
            group(&obs1, OBS_CHECKPOINTS, 6),
            &[0.0, -1.0, 0.0, -1.0, 0.0, -1.0]
        );
        assert_eq!(group(&obs1, OBS_HYPER, 8), &[0.0; 8]);
        assert_eq!(group(&obs1, OBS_PREV_ACTION, 40), &[0.0; 40]);

        // lr ×2 and save into register 1.
        let action = Action {
            choices: [6, 1, 1, 1, 1, 2, 1, 1, 2],
        };
        let d = o.apply(&action);
        assert_eq!(d.restart, Restart::Save(1));
        assert_eq!(d.hyper.lr, 2e-3);

        // Second interval: loss halves, clipped, displacement halves, norm doubles, no eval.
        assert_eq!(run_interval(&mut o, 1.0, true), StepStatus::DecisionDue);
        let obs2 = o.observation(&DecisionInputs {
            param_norm: 20.0,
            displacement: 0.5,
            eval_loss: f32::NAN,
        });
        assert_eq!(obs2[OBS_PROGRESS], 1.0);
        // Inner feature 1 (clipped) went from 0 to 1 against a zero-variance history: Φ(10).
        assert_eq!(obs2[OBS_INNER], 1.0);
        assert_eq!(group(&obs2, OBS_INNER + 1, 5), &[phi(10.0); 5]);
        // Unchanged features sit at the mean of their history: Φ(0).
        assert_eq!(group(&obs2, OBS_INNER + 7, 5), &[0.5; 5]);
        // tanh(ln ½) = −0.6, tanh(ln 2) = 0.6; the first defined ratio meets empty moments.
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert_eq!(obs2[OBS_LOSS_RATIO], 0.0);
        assert!(close(obs2[OBS_LOSS_RATIO + 1], -0.6));
        assert_eq!(group(&obs2, OBS_LOSS_RATIO + 2, 5), &[0.5; 5]);
        assert!(close(obs2[OBS_UPDATE_RATIO], -0.6));
        assert!(close(obs2[OBS_NORM_RATIO], 0.6));
        // ln 1 = 0 is below the one previous sample ln 2 with zero variance: Φ(−10).
        assert_eq!(group(&obs2, OBS_TRAIN_LOSS, 2), &[0.0, 0.0]);
        assert_eq!(group(&obs2, OBS_TRAIN_LOSS + 2, 5), &[phi(-10.0); 5]);
        // Eval NaN: is_nan, and x = 0 against the one sample ln 3.
        assert_eq!(group(&obs2, OBS_EVAL_LOSS, 2), &[1.0, 0.0]);
        assert_eq!(group(&obs2, OBS_EVAL_LOSS + 2, 5), &[phi(-10.0); 5]);
        // Register 1 holds L = 2 saved at p = 0.5; now L = 1: tanh(ln 2) = 0.6.
        let cp = group(&obs2, OBS_CHECKPOINTS, 6);
        assert_eq!(
            [cp[0], cp[1], cp[3], cp[4], cp[5]],
            [0.0, -1.0, 0.5, 0.0, -1.0]
        );
        assert!(close(cp[2], 0.6));
        assert!(close(obs2[OBS_HYPER], core::f32::consts::LN_2));
        assert_eq!(group(&obs2, OBS_HYPER + 1, 7), &[0.0; 7]);
        assert_eq!(group(&obs2, OBS_PREV_ACTION, 40), &action.one_hot());
    }

    #[test]
    fn long_intervals_average_the_loss_accurately() {
        // 10⁶ steps of 0.1 in one interval: a plain f32 sum drifts by about 1%.
        let mut o = observer(1_000_000, 1);
        let mut plain = 0.0_f32;
        for _ in 0..1_000_000 {
            o.observe_step(0.1, None);
            plain += 0.1;
        }
        assert!((plain / 1e6 - 0.1).abs() > 1e-4, "the naive sum does drift");
        o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        let stored = o.prev_train_loss.unwrap();
        assert!((stored - 0.1).abs() < 1e-6, "{stored}");
    }

    #[test]
    fn bad_losses_set_flags_and_keep_the_observation_finite() {
        let mut o = observer(12, 3);
        let inputs = DecisionInputs {
            param_norm: f32::NAN,
            displacement: -1.0,
            eval_loss: f32::INFINITY,
        };
        for (loss, nan, inf) in [
            (f32::NAN, 1.0, 0.0),
            (f32::INFINITY, 0.0, 1.0),
            (-2.0, 1.0, 0.0),
        ] {
            run_interval(&mut o, loss, false);
            let obs = o.observation(&inputs);
            assert!(obs.iter().all(|x| x.is_finite()));
            assert_eq!(group(&obs, OBS_TRAIN_LOSS, 2), &[nan, inf]);
            assert_eq!(group(&obs, OBS_TRAIN_LOSS + 2, 5), &[0.5; 5], "never added");
            assert_eq!(group(&obs, OBS_EVAL_LOSS, 2), &[0.0, 1.0]);
            let undefined_previous = o.decision_index() > 1;
            assert_eq!(
                obs[OBS_LOSS_RATIO],
                if undefined_previous { 1.0 } else { 0.0 }
            );
        }
    }

    #[test]
    fn one_bad_step_invalidates_the_interval_loss() {
        let mut o = observer(4, 1);
        o.observe_step(1.0, None);
        o.observe_step(f32::NAN, None);
        o.observe_step(1.0, None);
        assert_eq!(o.observe_step(1.0, None), StepStatus::DecisionDue);
        let obs = o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        assert_eq!(group(&obs, OBS_TRAIN_LOSS, 2), &[1.0, 0.0]);
    }

    #[test]
    fn restart_registers_follow_save_load_and_swap() {
        let mut o = observer(100, 10);
        let inputs = DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        };
        let restart = |c: u8| {
            let mut a = Action::HOLD;
            a.choices[8] = c;
            a
        };
        run_interval(&mut o, 1.0, false);
        o.observation(&inputs);
        assert_eq!(o.apply(&restart(4)).restart, Restart::None, "load of empty");
        run_interval(&mut o, 1.0, false);
        o.observation(&inputs);
        assert_eq!(
            o.apply(&restart(7)).restart,
            Restart::None,
            "swap with empty"
        );
        run_interval(&mut o, 1.0, false);
        o.observation(&inputs);
        assert_eq!(o.apply(&restart(1)).restart, Restart::Save(0));
        run_interval(&mut o, 4.0, false);
        let obs = o.observation(&inputs);
        // Register 0: L = 1 at p = 0.3 against L = 4 now: tanh(ln ¼) = −15/17.
        assert!((obs[OBS_CHECKPOINTS] + 15.0 / 17.0).abs() < 1e-6);
        assert!((obs[OBS_CHECKPOINTS + 1] - 0.3).abs() < 1e-6);
        assert_eq!(o.apply(&restart(7)).restart, Restart::Swap(0));
        run_interval(&mut o, 1.0, false);
        let obs = o.observation(&inputs);
        // The swap stored L = 4 at p = 0.4.
        assert!((obs[OBS_CHECKPOINTS] - 15.0 / 17.0).abs() < 1e-6);
        assert!((obs[OBS_CHECKPOINTS + 1] - 0.4).abs() < 1e-6);
        assert_eq!(o.apply(&restart(4)).restart, Restart::Load(0));
        assert_eq!(o.apply(&restart(0)).restart, Restart::None);
    }

    #[test]
    fn max_encoded_len_bounds_the_widest_observer() {
        let mut o = observer(u64::MAX, u32::MAX);
        o.interval = u64::MAX;
        o.step = u64::MAX;
        o.decision_index = u32::MAX;
        o.loss_count = u32::MAX;
        o.inner_samples = u32::MAX;
        o.prev_train_loss = Some(1.0);
        o.prev_eval_loss = Some(1.0);
        o.prev_displacement = Some(1.0);
        o.prev_param_norm = Some(1.0);
        o.prev_action = Some(Action::HOLD);
        o.registers = [Some(Checkpoint {
            loss: 1.0,
            eval: Some(1.0),
            progress: 1.0,
        }); NUM_REGISTERS];
        let mut buf = [0u8; Observer::MAX_ENCODED_LEN + 1];
        let n = postcard::to_slice(&o, &mut buf).unwrap().len();
        assert_eq!(n, Observer::MAX_ENCODED_LEN);
    }

    #[test]
    fn hyper_features_are_relative_to_the_given_initial_values() {
        let start = Hyperparams {
            lr: 0.1,
            clip_frac: 0.5,
            ..Hyperparams::INITIAL
        };
        let cfg = RunConfig {
            total_steps: 4,
            decisions: 2,
        };
        let mut o = Observer::new(cfg, start, FeatureSet::CURRENT).unwrap();
        run_interval(&mut o, 1.0, false);
        let inputs = DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        };
        assert_eq!(group(&o.observation(&inputs), OBS_HYPER, 8), &[0.0; 8]);
        o.apply(&Action {
            choices: [0, 1, 1, 1, 1, 4, 1, 1, 0],
        });
        run_interval(&mut o, 1.0, false);
        let obs = o.observation(&inputs);
        assert!(
            (obs[OBS_HYPER] + core::f32::consts::LN_2).abs() < 1e-6,
            "lr × 0.5"
        );
        assert!((obs[OBS_HYPER + 5] - 1.0).abs() < 1e-5, "logit + 1");
    }

    #[test]
    fn huge_finite_losses_give_a_finite_mean() {
        // 100 steps of 1e37: their sum overflows f32, their mean does not.
        let mut o = observer(100, 1);
        for _ in 0..100 {
            o.observe_step(1e37, None);
        }
        let obs = o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        assert_eq!(
            group(&obs, OBS_TRAIN_LOSS, 2),
            &[0.0, 0.0],
            "neither NaN nor inf"
        );
        let mean = o.prev_train_loss.unwrap();
        assert!((mean / 1e37 - 1.0).abs() < 1e-6, "{mean}");
        // Extremes of f32 mixed: still the mean, to f32 precision.
        let mut o = observer(4, 1);
        for x in [f32::MAX, 1e-30, f32::MAX, 1e-30] {
            o.observe_step(x, None);
        }
        o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        let mean = o.prev_train_loss.unwrap();
        assert!((mean / (f32::MAX / 2.0) - 1.0).abs() < 1e-6, "{mean}");
    }

    #[test]
    fn a_varying_loss_is_averaged_to_f32_precision() {
        let mut o = observer(100_000, 1);
        let mut exact = 0.0_f64;
        for i in 0..100_000u32 {
            let x = 0.1 + (i % 97) as f32 * 0.013;
            exact += f64::from(x);
            o.observe_step(x, None);
        }
        o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        let got = f64::from(o.prev_train_loss.unwrap());
        let exact = exact / 1e5;
        assert!((got / exact - 1.0).abs() < 2e-7, "{got} vs {exact}");
    }

    #[test]
    fn asked_while_a_decision_is_due_wants_reductions_answers_for_the_next_step() {
        for fs in [FeatureSet::V1, FeatureSet::V2] {
            for (total_steps, decisions) in [(400, 16), (10, 10), (30, 3), (7, 2)] {
                let cfg = RunConfig {
                    total_steps,
                    decisions,
                };
                let mut o = Observer::new(cfg, Hyperparams::INITIAL, fs).unwrap();
                let tensors = [example()];
                let mut due = 0;
                while !o.is_finished() {
                    let r = o.wants_reductions().then_some(StepReductions {
                        tensors: &tensors,
                        clipped: false,
                    });
                    if o.observe_step(1.0, r) == StepStatus::DecisionDue {
                        due += 1;
                        assert!(o.decision_due());
                        let asked_early = o.wants_reductions();
                        o.observation(&DecisionInputs {
                            param_norm: 1.0,
                            displacement: 1.0,
                            eval_loss: 1.0,
                        });
                        o.apply(&Action::HOLD);
                        assert_eq!(
                            asked_early,
                            o.wants_reductions(),
                            "{fs:?} T={total_steps} K={decisions} step {}",
                            o.step()
                        );
                    }
                }
                assert_eq!(due, decisions);
            }
        }
    }

    #[test]
    fn reductions_given_on_steps_not_asked_for_are_ignored() {
        for fs in [FeatureSet::V1, FeatureSet::V2] {
            let cfg = RunConfig {
                total_steps: 30,
                decisions: 3,
            };
            let (mut asked, mut always) = (
                Observer::new(cfg, Hyperparams::INITIAL, fs).unwrap(),
                Observer::new(cfg, Hyperparams::INITIAL, fs).unwrap(),
            );
            let tensors = [example()];
            let mut other = example();
            other.grad_dot_mhat = -other.grad_dot_mhat;
            let unasked = [other];
            let inputs = DecisionInputs {
                param_norm: 1.0,
                displacement: 1.0,
                eval_loss: 1.0,
            };
            while !asked.is_finished() {
                let want = asked.wants_reductions();
                let r = |t| {
                    Some(StepReductions {
                        tensors: t,
                        clipped: false,
                    })
                };
                let a = asked.observe_step(1.0, if want { r(&tensors) } else { None });
                let b = always.observe_step(1.0, if want { r(&tensors) } else { r(&unasked) });
                assert_eq!(a, b);
                if a == StepStatus::DecisionDue {
                    assert_eq!(asked.observation(&inputs), always.observation(&inputs));
                }
            }
        }
    }

    #[test]
    fn a_step_observed_while_a_decision_is_due_is_not_recorded() {
        let mut o = observer(8, 2);
        assert_eq!(run_interval(&mut o, 1.0, false), StepStatus::DecisionDue);
        for _ in 0..3 {
            assert_eq!(o.observe_step(5.0, None), StepStatus::DecisionDue);
        }
        assert_eq!(o.step(), 4);
        o.observation(&DecisionInputs {
            param_norm: 1.0,
            displacement: 1.0,
            eval_loss: 1.0,
        });
        assert_eq!(o.observe_step(1.0, None), StepStatus::Continue);
        assert_eq!(o.step(), 5);
    }
}
