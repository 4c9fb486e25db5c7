//! Shared helpers for the cross-crate tests: the trainer's parity fixture, read once here and
//! replayed by `tests/parity.rs` (host) and `tests/firmware.rs` (Cortex-M4F under QEMU).

use std::path::{Path, PathBuf};

use lhopt_core::{NUM_ACTION_LOGITS, NUM_HEADS, OBS_DIM};

/// Largest |core − tch| logit difference the parity tests accept.
pub const PARITY_TOLERANCE: f32 = 1e-5;

/// One recorded decision of the parity fixture, as the tch network computed it.
pub struct ParityStep {
    /// The raw observation fed to the network.
    pub obs: [f32; OBS_DIM],
    /// The tch network's logits.
    pub logits: [f32; NUM_ACTION_LOGITS],
    /// The greedy action per head.
    pub greedy: [u8; NUM_HEADS],
}

/// The parity fixture written by lhopt-trainer's `export::tests::write_parity_fixture`: the
/// exported Tiny policy file and its recorded decisions, in order.
pub fn parity_fixture() -> (Vec<u8>, Vec<ParityStep>) {
    let [policy_file, text_file] = PARITY_FIXTURE_FILES;
    let policy = fixture(policy_file);
    let text = String::from_utf8(fixture(text_file)).expect("the fixture is UTF-8");
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(
        lines.len() >= 3 * 8 && lines.len().is_multiple_of(3),
        "fixture has {} data lines",
        lines.len()
    );
    let steps = lines
        .chunks(3)
        .map(|d| ParityStep {
            obs: numbers(d[0], "obs "),
            logits: numbers(d[1], "logits "),
            greedy: numbers(d[2], "greedy "),
        })
        .collect();
    (policy, steps)
}

/// The parity fixture's files, for build scripts that watch them.
pub const PARITY_FIXTURE_FILES: [&str; 2] = ["parity_tiny.lhp", "parity_tiny.txt"];

/// Where the checked-in fixture `name` lives.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
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

/// Largest absolute difference between two logit vectors.
pub fn max_abs_diff(a: &[f32; NUM_ACTION_LOGITS], b: &[f32; NUM_ACTION_LOGITS]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
