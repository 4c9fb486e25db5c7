//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x` includes it) and writes
//! the policy to embed: the file named by `$LHOPT_FIRMWARE_POLICY`, or else the shipped default
//! policy `policies/default.lhp` (which the host test replays too). The network sizes the
//! firmware is compiled for are read from the policy's header (`policy.sizes.rs`).
//!
//! With the `parity-fixture` feature it also converts the trainer's parity fixture: the policy
//! file is copied as is and the recorded observations become raw little-endian f32s.
use std::{env, fs, path::Path, path::PathBuf};

use lhopt_core::{OBS_DIM, read_header};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=LHOPT_FIRMWARE_POLICY");
    let path = env::var_os("LHOPT_FIRMWARE_POLICY")
        .map_or_else(|| PathBuf::from("../../policies/default.lhp"), PathBuf::from);
    embed_policy(&read_policy(&path), "", &out.join("policy.lhp"));

    if env::var_os("CARGO_FEATURE_PARITY_FIXTURE").is_some() {
        write_parity_fixture(&out);
    }
}

/// Copies `policy` to `to` and writes `{to stem}.sizes.rs` with its network sizes as constants
/// `{prefix}PRE`, `{prefix}HIDDEN` and `{prefix}POST`, so its weights are fixed arrays of exactly
/// that size.
fn embed_policy(policy: &[u8], prefix: &str, to: &Path) {
    let header = read_header(policy)
        .unwrap_or_else(|e| panic!("the policy to embed is not a valid policy file: {e}"));
    let sizes = format!(
        "const {prefix}PRE: usize = {};\nconst {prefix}HIDDEN: usize = {};\nconst {prefix}POST: usize = {};\n",
        header.pre, header.hidden, header.post
    );
    fs::write(to.with_extension("sizes.rs"), sizes).expect("write the policy sizes to OUT_DIR");
    fs::write(to, policy).expect("write the policy to OUT_DIR");
}

fn read_policy(path: &Path) -> Vec<u8> {
    println!("cargo:rerun-if-changed={}", path.display());
    fs::read(path).unwrap_or_else(|e| panic!("cannot read the policy {}: {e}", path.display()))
}

/// `parity.lhp` (with `parity.sizes.rs`) and `parity_obs.bin` (every `obs` line of the fixture, in order).
fn write_parity_fixture(out: &Path) {
    let fixtures = Path::new("../../tests/fixtures");
    let policy = read_policy(&fixtures.join("parity_tiny.lhp"));
    embed_policy(&policy, "PARITY_", &out.join("parity.lhp"));

    let text_path = fixtures.join("parity_tiny.txt");
    println!("cargo:rerun-if-changed={}", text_path.display());
    let text = fs::read_to_string(&text_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", text_path.display()));
    let mut obs = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("obs ")) {
        let values: Vec<f32> = line
            .split_whitespace()
            .map(|x| x.parse().expect("parity fixture: a number on an obs line"))
            .collect();
        assert_eq!(values.len(), OBS_DIM, "parity fixture: obs line length");
        obs.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    }
    fs::write(out.join("parity_obs.bin"), obs).expect("write parity_obs.bin to OUT_DIR");
}
