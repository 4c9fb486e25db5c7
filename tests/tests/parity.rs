//! The trainer's exported policy computes the same function in lhopt-core: replays the checked-in
//! fixture (written by lhopt-trainer's `export::tests::write_parity_fixture` from tch) through the
//! core network and compares logits (within 1e-5) and greedy actions.

use lhopt_core::{FrozenPolicy, LstmState, greedy};
use lhopt_tests::{PARITY_TOLERANCE, max_abs_diff, parity_fixture};

#[test]
fn core_replays_the_trainer_logits_and_greedy_actions() {
    let (bytes, steps) = parity_fixture();
    let policy = FrozenPolicy::<32, 32, 32>::decode(&bytes).expect("the fixture policy decodes");
    let mut state = LstmState::<32>::default();
    let mut worst = 0f32;
    for step in &steps {
        let logits = policy.net().forward(&step.obs, &mut state);
        worst = worst.max(max_abs_diff(&logits, &step.logits));
        assert_eq!(greedy(&logits).choices, step.greedy);
    }
    assert!(
        worst <= PARITY_TOLERANCE,
        "max |core − tch| logit difference {worst}"
    );
}
