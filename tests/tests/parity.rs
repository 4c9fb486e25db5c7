//! The trainer's exported policy computes the same function in lhopt-core: replays the checked-in
//! fixture (written by lhopt-trainer's `export::tests::write_parity_fixture` from tch) through the
//! core network and compares logits (within 1e-5) and greedy actions.

use std::path::Path;

use lhopt_core::{FrozenPolicy, LstmState, NUM_ACTION_LOGITS, NUM_HEADS, OBS_DIM, greedy};

const TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn numbers<T: std::str::FromStr, const N: usize>(line: &str, tag: &str) -> [T; N]
where
    T::Err: std::fmt::Debug,
{
    let rest = line
        .strip_prefix(tag)
        .unwrap_or_else(|| panic!("expected a '{tag}' line, got {line:.40}"));
    let v: Vec<T> = rest
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    let n = v.len();
    v.try_into()
        .unwrap_or_else(|_| panic!("'{tag}' line has {n} numbers, expected {N}"))
}

#[test]
fn core_replays_the_trainer_logits_and_greedy_actions() {
    let policy = FrozenPolicy::<32, 32, 32>::decode(&fixture("parity_tiny.lhp"))
        .expect("the fixture policy decodes");
    let text = String::from_utf8(fixture("parity_tiny.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        lines.len() >= 3 * 8 && lines.len().is_multiple_of(3),
        "fixture has {} data lines",
        lines.len()
    );
    let mut state = LstmState::<32>::default();
    let mut worst = 0f32;
    for d in lines.chunks(3) {
        let obs: [f32; OBS_DIM] = numbers(d[0], "obs ");
        let expected: [f32; NUM_ACTION_LOGITS] = numbers(d[1], "logits ");
        let choices: [u8; NUM_HEADS] = numbers(d[2], "greedy ");
        let logits = policy.net().forward(&obs, &mut state);
        worst = logits
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(worst, f32::max);
        assert_eq!(greedy(&logits).choices, choices);
    }
    assert!(
        worst <= TOLERANCE,
        "max |core − tch| logit difference {worst}"
    );
}
