//! What the C API adds to a controller call: the same `observe` and `decide` made directly on
//! `lhopt_core::Controller` and through the exported `extern "C"` functions (pointer checks,
//! panic guard, call-order checks, size-erased dispatch).
//!
//! `cargo bench -p lhopt-benches --bench capi_overhead`

use std::hint::black_box;
use std::ptr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lhopt::{
    LhoptController, LhoptDecision, LhoptStatus, LhoptStepStatus, lhopt_controller_decide,
    lhopt_controller_free, lhopt_controller_new, lhopt_controller_observe,
};
use lhopt_core::{
    Controller, DecisionInputs, FrozenPolicy, Hyperparams, Mode, RunConfig, StepReductions,
    StepStatus,
};
use lhopt_embed::scenario::Scenario;
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};

/// For `observe`: a run so long that no decision comes due while it is measured.
const NO_DECISIONS: RunConfig = RunConfig {
    total_steps: 1 << 50,
    decisions: 1,
};

/// For `decide`: a decision every 16 steps, and no end in sight.
const DECISION_EVERY_16: RunConfig = RunConfig {
    total_steps: 16 * u32::MAX as u64,
    decisions: u32::MAX,
};

type TinyController = Controller<32, 32, 32>;

fn direct(run: RunConfig) -> TinyController {
    let frozen = FrozenPolicy::decode(&tiny_policy_bytes(TEST_SEED)).expect("decodes");
    Controller::new(frozen, run, Hyperparams::INITIAL, Mode::Greedy).expect("valid run")
}

/// A C API controller, freed on drop.
struct CController(*mut LhoptController);

impl CController {
    fn new(run: RunConfig) -> Self {
        let policy = tiny_policy_bytes(TEST_SEED);
        let mut ctrl = ptr::null_mut();
        // SAFETY: valid pointers and lengths.
        let status = unsafe {
            lhopt_controller_new(
                policy.as_ptr(),
                policy.len(),
                run.total_steps,
                run.decisions,
                ptr::null(),
                ptr::null(),
                &mut ctrl,
            )
        };
        assert_eq!(status, LhoptStatus::Ok);
        CController(ctrl)
    }

    fn observe(&mut self, loss: f32, r: Option<StepReductions<'_>>) -> LhoptStepStatus {
        let (tensors, n, clipped) = r.map_or((ptr::null(), 0, false), |r| {
            (r.tensors.as_ptr(), r.tensors.len(), r.clipped)
        });
        let mut status = LhoptStepStatus::Continue;
        // SAFETY: live controller; `tensors` valid for `n` elements.
        let s = unsafe { lhopt_controller_observe(self.0, loss, tensors, n, clipped, &mut status) };
        assert_eq!(s, LhoptStatus::Ok);
        status
    }

    fn decide(&mut self, inputs: &DecisionInputs) -> LhoptDecision {
        let mut d = std::mem::MaybeUninit::uninit();
        // SAFETY: live controller, writable output.
        let s = unsafe {
            lhopt_controller_decide(
                self.0,
                inputs.param_norm,
                inputs.displacement,
                inputs.eval_loss,
                d.as_mut_ptr(),
            )
        };
        assert_eq!(s, LhoptStatus::Ok);
        // SAFETY: written on success.
        unsafe { d.assume_init() }
    }
}

impl Drop for CController {
    fn drop(&mut self) {
        // SAFETY: made by lhopt_controller_new, freed once.
        unsafe { lhopt_controller_free(self.0) };
    }
}

fn calls(c: &mut Criterion) {
    let input = Scenario::DEFAULT.step(5);
    let with = || {
        Some(StepReductions {
            tensors: &input.reductions,
            clipped: input.clipped,
        })
    };
    let inputs = Scenario::DEFAULT.decision_inputs(2);

    let mut group = c.benchmark_group("call_overhead");
    let mut d = direct(NO_DECISIONS);
    group.bench_function("observe/direct", |b| {
        b.iter(|| black_box(d.observe(black_box(input.loss), None)))
    });
    let mut cc = CController::new(NO_DECISIONS);
    group.bench_function("observe/c_api", |b| {
        b.iter(|| black_box(cc.observe(black_box(input.loss), None)))
    });
    let mut d = direct(NO_DECISIONS);
    group.bench_function("observe_with_reductions/direct", |b| {
        b.iter(|| black_box(d.observe(black_box(input.loss), with())))
    });
    let mut cc = CController::new(NO_DECISIONS);
    group.bench_function("observe_with_reductions/c_api", |b| {
        b.iter(|| black_box(cc.observe(black_box(input.loss), with())))
    });
    // Decisions: observe (untimed) until one is due, then time the decision alone.
    let mut d = direct(DECISION_EVERY_16);
    group.bench_function("decide/direct", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                while d.observe(input.loss, with()) != StepStatus::DecisionDue {}
                let start = Instant::now();
                black_box(d.decide(black_box(&inputs)).unwrap());
                t += start.elapsed();
            }
            t
        })
    });
    let mut cc = CController::new(DECISION_EVERY_16);
    group.bench_function("decide/c_api", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                while cc.observe(input.loss, with()) != LhoptStepStatus::DecisionDue {}
                let start = Instant::now();
                black_box(cc.decide(black_box(&inputs)));
                t += start.elapsed();
            }
            t
        })
    });
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
