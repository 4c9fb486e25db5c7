//! `Controller::decide` timed in batches, for a machine that other jobs share: criterion's
//! estimates (the `controller` bench) move by 10–20 % with the load, while the fastest batches
//! of many are the ones no other job slowed down. Times 400 batches of 100 decisions each (a
//! decision after every step, as in the `controller` bench) at the Small and Paper sizes, in
//! wall time, and prints the fastest batch, the 10th percentile and the median per decision.

use std::hint::black_box;
use std::time::Instant;

use lhopt_benches::random_policy;
use lhopt_core::{Controller, DecisionInputs, Hyperparams, Mode, RunConfig};

const BATCHES: usize = 400;
const PER_BATCH: u32 = 100;

fn batches<const PRE: usize, const H: usize, const POST: usize>(name: &str) {
    let every_step = RunConfig {
        total_steps: u32::MAX.into(),
        decisions: u32::MAX,
    };
    let policy = random_policy::<PRE, H, POST>(7);
    let mut ctl = Controller::new(policy, every_step, Hyperparams::INITIAL, Mode::Greedy).unwrap();
    let inputs = DecisionInputs {
        param_norm: 10.0,
        displacement: 0.1,
        eval_loss: f32::NAN,
    };
    let mut micros: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PER_BATCH {
                ctl.observe(0.5, None);
                black_box(ctl.decide(black_box(&inputs)).unwrap());
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(PER_BATCH)
        })
        .collect();
    micros.sort_by(f64::total_cmp);
    println!(
        "decide {name}: fastest batch {:.2} µs, 10th percentile {:.2} µs, median {:.2} µs",
        micros[0],
        micros[BATCHES / 10],
        micros[BATCHES / 2]
    );
}

fn main() {
    // The Paper preset is 2.6 MB by value; give it a stack that holds it.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            batches::<64, 64, 64>("small");
            batches::<256, 256, 256>("paper");
        })
        .expect("spawn the benchmark thread")
        .join()
        .expect("benchmarks finished");
}
