//! What one protocol line costs inside `lhopt-jsonl` (parse, checks, controller call, reply
//! serialisation), without the pipe: a run with a decision every 100 steps and reductions of a
//! four-tensor model every 4th step, as a runtime would send it.
//!
//! `cargo bench -p lhopt-benches --bench jsonl_overhead`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use lhopt_core::{Hyperparams, Mode, RunConfig};
use lhopt_embed::scenario::Scenario;
use lhopt_embed::steer::load_any;
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};
use lhopt_jsonl::protocol::Tensor;
use lhopt_jsonl::session::Session;

const RUN: RunConfig = RunConfig {
    total_steps: 10_000,
    decisions: 100,
};

fn session(policy: &[u8]) -> Session {
    let loaded = load_any(policy, RUN, Hyperparams::INITIAL, Mode::Greedy).expect("loads");
    Session::new(loaded.controller, RUN, loaded.preset)
}

/// The lines of a whole run: steps (with reductions on every 4th), and a decide line after
/// every 100th step.
fn lines() -> Vec<String> {
    let tensors = Scenario::DEFAULT.step(3).reductions;
    let tensor_json: Vec<String> = tensors
        .iter()
        .chain(&tensors[..1])
        .map(|r| serde_json::to_string(&Tensor::from(r)).expect("reductions encode"))
        .collect();
    let reductions = format!(
        r#","reductions":{{"clipped":false,"tensors":[{}]}}"#,
        tensor_json.join(",")
    );
    let interval = RUN.total_steps / u64::from(RUN.decisions);
    let mut lines = Vec::new();
    for t in 0..RUN.total_steps {
        let loss = 2.0 / (1.0 + t as f32 / 1000.0);
        let r = if (t + 1) % 4 == 0 {
            reductions.as_str()
        } else {
            ""
        };
        lines.push(format!(r#"{{"type":"step","step":{t},"loss":{loss}{r}}}"#));
        if (t + 1) % interval == 0 {
            lines.push(
                r#"{"type":"decide","param_norm":40.5,"displacement":0.5,"eval_loss":null}"#
                    .to_owned(),
            );
        }
    }
    lines
}

fn per_line(c: &mut Criterion) {
    let policy = tiny_policy_bytes(TEST_SEED);
    let lines = lines();
    c.bench_function("jsonl/line_in_a_run", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let mut s = session(&policy);
                let n = left.min(lines.len() as u64) as usize;
                let start = Instant::now();
                for line in &lines[..n] {
                    black_box(s.handle_line(black_box(line)));
                }
                elapsed += start.elapsed();
                left -= n as u64;
            }
            elapsed
        })
    });
}

criterion_group!(benches, per_line);
criterion_main!(benches);
