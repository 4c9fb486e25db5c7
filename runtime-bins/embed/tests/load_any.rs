//! `load_any` opens every preset from an ordinary (2 MiB stack) test thread, and rejects sizes
//! that are not a preset. (Needs feature `std`, which the workspace build enables.)
#![cfg(feature = "std")]

use lhopt_core::{Hyperparams, Mode, RunConfig, StepStatus};
use lhopt_embed::steer::{LoadError, load_any};
use lhopt_embed::untrained::policy_bytes;

/// Generating a large untrained network needs a big stack; loading it must not.
fn generate<const P: usize, const H: usize, const Q: usize>() -> Vec<u8> {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| policy_bytes::<P, H, Q>(5))
        .expect("thread")
        .join()
        .expect("generation")
}

#[test]
fn every_preset_loads_from_a_small_stack() {
    let run = RunConfig {
        total_steps: 8,
        decisions: 2,
    };
    for (bytes, size) in [
        (generate::<32, 32, 32>(), 32),
        (generate::<64, 64, 64>(), 64),
        (generate::<128, 128, 128>(), 128),
        (generate::<256, 256, 256>(), 256),
    ] {
        let mut loaded = load_any(&bytes, run, Hyperparams::INITIAL, Mode::Greedy)
            .unwrap_or_else(|e| panic!("preset {size}: {e}"));
        assert_eq!(loaded.preset, [size; 3]);
        let ctrl = loaded.controller.as_mut();
        let status = (0..4).map(|_| ctrl.observe(1.0, None)).last();
        assert_eq!(status, Some(StepStatus::DecisionDue));
    }
}

#[test]
fn a_cut_file_is_a_core_error() {
    let bytes = generate::<32, 32, 32>();
    let run = RunConfig {
        total_steps: 8,
        decisions: 2,
    };
    let err = load_any(&bytes[..100], run, Hyperparams::INITIAL, Mode::Greedy)
        .err()
        .expect("cut file is rejected");
    assert!(matches!(err, LoadError::Core(_)), "{err}");
}

#[test]
fn runs_start_where_the_file_says() {
    use lhopt_core::FrozenPolicy;
    use lhopt_embed::steer::policy_start;
    let plain = generate::<32, 32, 32>();
    assert_eq!(policy_start(&plain), Hyperparams::INITIAL);
    let higher = FrozenPolicy::<32, 32, 32>::decode(&plain)
        .and_then(|p| p.with_start_lr(1e-2))
        .expect("in bounds");
    let mut bytes = vec![0u8; FrozenPolicy::<32, 32, 32>::MAX_ENCODED_LEN];
    let n = higher.encode(&mut bytes).expect("buffer large enough");
    bytes.truncate(n);
    let start = policy_start(&bytes);
    assert_eq!(
        start,
        Hyperparams {
            lr: 1e-2,
            ..Hyperparams::INITIAL
        }
    );
    let run = RunConfig {
        total_steps: 8,
        decisions: 2,
    };
    let loaded = load_any(&bytes, run, start, Mode::Greedy).expect("loads");
    assert_eq!(loaded.controller.hyper(), start);
    // Not a policy file: the initial values, and loading says what is wrong.
    assert_eq!(policy_start(b"not a policy"), Hyperparams::INITIAL);
}
