//! Puts `memory.x` on the linker's search path (cortex-m-rt's `link.x` includes it) and writes
//! the policy to embed: the file named by `$LHOPT_FIRMWARE_POLICY`, or else the shipped default
//! policy `policies/default.lhp` (which the host test replays too). The network sizes the firmware is compiled
//! for are read from the policy's header (`policy_sizes.rs`).
use std::{env, fs, path::PathBuf};

use lhopt_core::read_header;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    println!("cargo:rerun-if-env-changed=LHOPT_FIRMWARE_POLICY");
    let path = env::var_os("LHOPT_FIRMWARE_POLICY")
        .map_or_else(|| PathBuf::from("../../policies/default.lhp"), PathBuf::from);
    println!("cargo:rerun-if-changed={}", path.display());
    let policy = fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read the policy to embed, {}: {e}", path.display()));
    let header = read_header(&policy)
        .unwrap_or_else(|e| panic!("the policy to embed is not a valid policy file: {e}"));
    fs::write(
        out.join("policy_sizes.rs"),
        format!(
            "const PRE: usize = {};\nconst HIDDEN: usize = {};\nconst POST: usize = {};\n",
            header.pre, header.hidden, header.post
        ),
    )
    .expect("write policy_sizes.rs to OUT_DIR");
    fs::write(out.join("policy.lhp"), policy).expect("write policy.lhp to OUT_DIR");
}
