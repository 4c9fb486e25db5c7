//! Controller overhead inside the pure-Rust digits runtime, against that runtime's own step.
//!
//! - `digits/train_step`: one inner step of the 64-64-10 MLP at batch 32 with fixed
//!   hyperparameters (forward, backward, reference inner optimizer): the unit of cost.
//! - `digits/train_step_with_reductions`: the same step computing the per-tensor reductions
//!   (asked for on every 4th step).
//! - `digits/controller_per_step`: everything else the steering costs, per inner step, in a run
//!   with a decision every 1% of training (100 decisions, 20 steps apart): `wants_reductions`,
//!   `observe` (with the reductions every 4th step), and at each decision the runtime-side
//!   inputs (parameter norm, displacement, parameter snapshot) plus `decide`.
//!
//! Overhead per step = controller_per_step + (train_step_with_reductions − train_step) / 4,
//! as a fraction of train_step. `cargo bench -p lhopt-benches --bench digits_overhead` prints it
//! at the end.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use lhopt_core::{DecisionInputs, Hyperparams, Mode, RunConfig, StepReductions, StepStatus};
use lhopt_digits_mlp::data::Dataset;
use lhopt_digits_mlp::train::{TrainConfig, Trainer};
use lhopt_embed::steer::{Steer, load_any};
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};

const STEPS: u64 = 2000;
const DECISIONS: u32 = 100;

fn setup() -> (Dataset, TrainConfig) {
    let data = Dataset::synthetic(1797, 0);
    let cfg = TrainConfig {
        hidden: vec![64],
        batch: 32,
        steps: STEPS,
        seed: 0,
        eval_at_decisions: false,
    };
    (data, cfg)
}

fn controller() -> Box<dyn Steer + Send> {
    let cfg = RunConfig {
        total_steps: STEPS,
        decisions: DECISIONS,
    };
    load_any(
        &tiny_policy_bytes(TEST_SEED),
        cfg,
        Hyperparams::INITIAL,
        Mode::Greedy,
    )
    .expect("untrained policy loads")
    .controller
}

/// Time of `iters` inner steps' worth of controller work, restarting the run when it ends.
fn controller_work(iters: u64, trainer: &mut Trainer, data: &Dataset) -> Duration {
    let h = Hyperparams::INITIAL;
    let (loss, outcome) = trainer.step(data, &h, true);
    let clipped = outcome.clipped();
    let reductions = trainer.reductions().to_vec();
    let mut params = trainer.params().to_vec();
    let mut ctrl = controller();
    let mut elapsed = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let start = Instant::now();
        for _ in 0..(iters - done).min(STEPS) {
            let want = ctrl.wants_reductions();
            let r = want.then_some(StepReductions {
                tensors: &reductions,
                clipped,
            });
            if ctrl.observe(black_box(loss), r) == StepStatus::DecisionDue {
                let inputs = DecisionInputs {
                    param_norm: trainer.param_norm(),
                    displacement: trainer.distance_to(&params),
                    eval_loss: f32::NAN,
                };
                for (saved, now) in params.iter_mut().zip(trainer.params()) {
                    saved.copy_from_slice(now);
                }
                black_box(ctrl.decide(&inputs).unwrap());
            }
            done += 1;
        }
        elapsed += start.elapsed();
        ctrl = controller();
    }
    elapsed
}

fn digits(c: &mut Criterion) {
    let (data, cfg) = setup();
    let mut trainer = Trainer::new(&data, &cfg);
    let h = Hyperparams::INITIAL;
    let mut group = c.benchmark_group("digits");
    group.bench_function("train_step", |b| {
        b.iter(|| black_box(trainer.step(&data, &h, false)))
    });
    group.bench_function("train_step_with_reductions", |b| {
        b.iter(|| black_box(trainer.step(&data, &h, true)))
    });
    group.bench_function("controller_per_step", |b| {
        b.iter_custom(|iters| controller_work(iters, &mut trainer, &data))
    });
    group.finish();
}

criterion_group!(benches, digits);

/// Median seconds per call of `f` over `rounds` rounds of `n` calls.
fn median_per_call(rounds: usize, n: u64, mut f: impl FnMut(u64) -> Duration) -> f64 {
    let mut times: Vec<f64> = (0..rounds).map(|_| f(n).as_secs_f64() / n as f64).collect();
    times.sort_by(f64::total_cmp);
    times[rounds / 2]
}

/// The fraction, from a short direct measurement (criterion above has the full statistics).
fn summary() {
    let (data, cfg) = setup();
    let mut trainer = Trainer::new(&data, &cfg);
    let h = Hyperparams::INITIAL;
    let mut steps = |n: u64, with_reductions: bool| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(trainer.step(&data, &h, with_reductions));
        }
        start.elapsed()
    };
    let step = median_per_call(11, 500, |n| steps(n, false));
    let step_red = median_per_call(11, 500, |n| steps(n, true));
    let ctrl = median_per_call(11, STEPS, |n| controller_work(n, &mut trainer, &data));
    let overhead = ctrl + (step_red - step).max(0.0) / 4.0;
    println!(
        "\ndigits MLP 64-64-10, batch 32, Tiny policy, a decision every {} steps (1% of {STEPS}):\n\
         train step {:.1} us, with reductions {:.1} us, controller work {:.3} us/step\n\
         => controller overhead {:.3} us per step = {:.2}% of a training step",
        STEPS / u64::from(DECISIONS),
        step * 1e6,
        step_red * 1e6,
        ctrl * 1e6,
        overhead * 1e6,
        100.0 * overhead / step
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
