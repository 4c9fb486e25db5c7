//! Policy files mutated from a valid one (CRC and length recomputed): decoding never panics,
//! and a file it accepts encodes back to exactly its bytes and steers a run within bounds.
#![no_main]

use std::sync::OnceLock;

use lhopt_core::{Controller, Hyperparams, Mode};
use lhopt_fuzz::{CFG, Policy, drive, file_from, policy_file};
use libfuzzer_sys::fuzz_target;

static VALID: OnceLock<Vec<u8>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let bytes = file_from(data, VALID.get_or_init(policy_file));
    let _ = lhopt_core::read_header(&bytes);
    if let Ok(policy) = Policy::decode(&bytes) {
        let mut again = vec![0u8; bytes.len()];
        assert_eq!(policy.encode(&mut again), Ok(bytes.len()));
        assert_eq!(again, bytes);
        let mut ctl = Controller::new(policy, CFG, Hyperparams::INITIAL, Mode::Greedy)
            .expect("valid configuration");
        for t in 0..CFG.total_steps {
            drive(&mut ctl, t as f32);
        }
    }
});
