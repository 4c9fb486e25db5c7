//! Shared helpers for the benchmarks: deterministic synthetic policies and training signals.

use lhopt_core::{FrozenPolicy, PolicyNet, Rng, TensorReductions};

/// A frozen policy with small seeded random weights (uniform in ±0.1, unit input statistics).
///
/// A Paper-size policy is 2.6 MB by value: build it on a thread with a large stack.
pub fn random_policy<const PRE: usize, const H: usize, const POST: usize>(
    seed: u64,
) -> FrozenPolicy<PRE, H, POST> {
    let mut rng = Rng::new(seed);
    let mut net = PolicyNet::<PRE, H, POST>::neutral();
    net.for_each_param_mut(|name, values| {
        if name.starts_with("norm.") || name.ends_with(".gain") {
            return;
        }
        for v in values.iter_mut() {
            *v = (rng.next_f32() * 2.0 - 1.0) * 0.1;
        }
    });
    FrozenPolicy::new(net, "bench", "random weights for benchmarks")
        .expect("random weights are finite")
}

/// Plausible reductions of one tensor with `numel` elements, varied by `i`.
pub fn reductions(numel: u64, i: usize) -> TensorReductions {
    let x = i as f32 * 0.1;
    TensorReductions {
        numel,
        grad_norm: 1.0 + x,
        mhat_norm: 0.8,
        mhat_minus_grad_norm: 0.5 + x,
        param_norm: 10.0,
        update_norm: 0.3,
        lr_p: 1e-3,
        grad_dot_mhat: 0.4,
        grad_dot_param: -0.2,
        grad_dot_update: 0.1 - x,
        count_v_gt_eps: numel as f32 * 0.9,
        sum_log_abs_update: -3.0 * numel as f32,
    }
}

/// Criterion measurement of the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
///
/// On a shared machine, wall time also counts the time the thread waits for a core; CPU time
/// counts only the time it runs, so results stay comparable under load. Values are durations in
/// nanoseconds, formatted like criterion's wall time.
pub struct ThreadCpuTime;

fn thread_cpu_now() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the valid pointer it is given and
    // touches nothing else; CLOCK_THREAD_CPUTIME_ID is supported on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl criterion::measurement::Measurement for ThreadCpuTime {
    type Intermediate = std::time::Duration;
    type Value = std::time::Duration;

    fn start(&self) -> Self::Intermediate {
        thread_cpu_now()
    }
    fn end(&self, start: Self::Intermediate) -> Self::Value {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Self::Value, b: &Self::Value) -> Self::Value {
        *a + *b
    }
    fn zero(&self) -> Self::Value {
        std::time::Duration::ZERO
    }
    fn to_f64(&self, value: &Self::Value) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn criterion::measurement::ValueFormatter {
        static WALL: criterion::measurement::WallTime = criterion::measurement::WallTime;
        criterion::measurement::Measurement::formatter(&WALL)
    }
}
