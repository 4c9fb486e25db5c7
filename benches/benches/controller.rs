//! Controller overhead: the per-step `observe`, the reduction-to-features work of a sampled
//! step, the outer features of a decision, and one policy decision at each preset size (with its
//! FLOP count, reported by criterion as throughput in elements/s = FLOP/s).
//!
//! Times are the benchmark thread's CPU time by default, so a busy shared machine does not
//! inflate them; `LHOPT_BENCH_CLOCK=wall` measures wall time instead.

use std::hint::black_box;

use criterion::measurement::{Measurement, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use lhopt_benches::{ThreadCpuTime, random_policy, reductions};
use lhopt_core::policy::{LstmState, greedy};
use lhopt_core::{
    Controller, DecisionInputs, FeatureSet, FrozenPolicy, Hyperparams, Mode, Observer, PolicyNet,
    RunConfig, StepReductions, inner_features,
    observation::{OBS_DIM, REDUCTION_PERIOD},
};

/// A run long enough that benchmarks never reach a decision or the end.
const ENDLESS: RunConfig = RunConfig {
    total_steps: u64::MAX,
    decisions: 1,
};

const INPUTS: DecisionInputs = DecisionInputs {
    param_norm: 10.0,
    displacement: 0.1,
    eval_loss: f32::NAN,
};

fn observe<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("observe");
    let mut o = Observer::new(ENDLESS, Hyperparams::INITIAL, FeatureSet::CURRENT).unwrap();
    group.bench_function("step_without_reductions", |b| {
        b.iter(|| o.observe_step(black_box(0.5), None))
    });
    // The observer reads reductions only on the steps it asks for (one in REDUCTION_PERIOD), so
    // the unit is a whole period: REDUCTION_PERIOD steps, exactly one of them sampled.
    for tensors in [1, 16] {
        let r: Vec<_> = (0..tensors).map(|i| reductions(4096, i)).collect();
        group.throughput(Throughput::Elements(tensors as u64));
        group.bench_with_input(
            BenchmarkId::new("period_with_one_sampled_step", tensors),
            &r,
            |b, r| {
                b.iter(|| {
                    for _ in 0..REDUCTION_PERIOD {
                        let sample = o.wants_reductions().then_some(StepReductions {
                            tensors: black_box(r),
                            clipped: false,
                        });
                        o.observe_step(black_box(0.5), sample);
                    }
                })
            },
        );
    }
    group.finish();
}

fn features<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("features");
    let r = reductions(4096, 3);
    group.bench_function("inner_features_one_tensor", |b| {
        b.iter(|| inner_features(black_box(&r), false))
    });
    let mut o = Observer::new(ENDLESS, Hyperparams::INITIAL, FeatureSet::CURRENT).unwrap();
    let tensors = [reductions(4096, 1), reductions(1024, 2)];
    o.observe_step(
        0.5,
        Some(StepReductions {
            tensors: &tensors,
            clipped: false,
        }),
    );
    group.bench_function("observation_vector", |b| {
        b.iter(|| o.observation(black_box(&INPUTS)))
    });
    group.finish();
}

fn decision_at<M: Measurement, const PRE: usize, const H: usize, const POST: usize>(
    c: &mut Criterion<M>,
    name: &str,
) {
    let flops = PolicyNet::<PRE, H, POST>::FLOPS;
    println!(
        "policy {name} ({PRE}/{H}/{POST}): {flops} FLOP per decision ({} MACs, {} parameters)",
        PolicyNet::<PRE, H, POST>::MACS,
        PolicyNet::<PRE, H, POST>::PARAMS,
    );
    let policy: FrozenPolicy<PRE, H, POST> = random_policy(7);
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(flops as u64));

    let obs: [f32; OBS_DIM] = std::array::from_fn(|i| (i as f32 * 0.37).sin());
    let mut state = LstmState::<H>::default();
    group.bench_function(BenchmarkId::new("forward_greedy", name), |b| {
        b.iter(|| greedy(&policy.forward(black_box(&obs), &mut state)))
    });

    // The whole decision as a runtime sees it: observation, forward, action, apply. A decision
    // after every step (the step's `observe`, a few ns, is included), so one is always due.
    let every_step = RunConfig {
        total_steps: u32::MAX.into(),
        decisions: u32::MAX,
    };
    let mut ctl = Controller::new(policy, every_step, Hyperparams::INITIAL, Mode::Greedy).unwrap();
    group.bench_function(BenchmarkId::new("decide", name), |b| {
        b.iter(|| {
            ctl.observe(0.5, None);
            ctl.decide(black_box(&INPUTS)).unwrap()
        })
    });
    group.finish();
}

fn decisions<M: Measurement>(c: &mut Criterion<M>) {
    decision_at::<M, 32, 32, 32>(c, "tiny");
    decision_at::<M, 64, 64, 64>(c, "small");
    decision_at::<M, 128, 128, 128>(c, "medium");
    decision_at::<M, 256, 256, 256>(c, "paper");
}

fn run<M: Measurement>(mut c: Criterion<M>) {
    observe(&mut c);
    features(&mut c);
    decisions(&mut c);
    c.final_summary();
}

fn main() {
    // The Paper preset is 2.6 MB by value; give the benchmarks a stack that holds it.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let c = Criterion::default().configure_from_args();
            match std::env::var("LHOPT_BENCH_CLOCK").as_deref() {
                Ok("wall") => run(c.with_measurement(WallTime)),
                _ => {
                    println!("measuring thread CPU time (LHOPT_BENCH_CLOCK=wall for wall time)");
                    run(c.with_measurement(ThreadCpuTime))
                }
            }
        })
        .expect("spawn the benchmark thread")
        .join()
        .expect("benchmarks finished");
}
