//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x` includes it) and writes
//! the policy to embed: the file named by `$LHOPT_FIRMWARE_POLICY`, or else the shipped default
//! policy `policies/default.lhp` (which the host test replays too). The network sizes the
//! firmware is compiled for are read from the policy's header (`policy.sizes.rs`).
//!
//! With the `parity-fixture` feature it also converts the trainer's parity fixture: the policy
//! file is copied as is and the recorded observations become raw little-endian f32s.
use std::{env, fs, path::Path, path::PathBuf};

use lhopt_core::read_header;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=LHOPT_FIRMWARE_POLICY");
    let path = env::var_os("LHOPT_FIRMWARE_POLICY").map_or_else(
        || PathBuf::from("../../policies/default.lhp"),
        PathBuf::from,
    );
    embed_policy(&read_policy(&path), "", &out.join("policy.lhp"));

    #[cfg(feature = "parity-fixture")]
    write_parity_fixture(&out);
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

/// `parity.lhp` (with `parity.sizes.rs`) and `parity_obs.bin` (the recorded observations, in
/// order), read by the host tests' own fixture reader.
#[cfg(feature = "parity-fixture")]
fn write_parity_fixture(out: &Path) {
    for name in lhopt_tests::PARITY_FIXTURE_FILES {
        println!(
            "cargo:rerun-if-changed={}",
            lhopt_tests::fixture_path(name).display()
        );
    }
    let (policy, steps) = lhopt_tests::parity_fixture();
    embed_policy(&policy, "PARITY_", &out.join("parity.lhp"));
    let obs: Vec<u8> = steps
        .iter()
        .flat_map(|step| step.obs.iter().flat_map(|v| v.to_le_bytes()))
        .collect();
    fs::write(out.join("parity_obs.bin"), obs).expect("write parity_obs.bin to OUT_DIR");
}
