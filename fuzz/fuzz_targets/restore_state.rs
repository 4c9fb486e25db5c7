//! Controller states mutated from a valid one (CRC and length recomputed): restoring never
//! panics, a refused state leaves the controller as it was, and an accepted one runs on with
//! hyperparameters inside their bounds.
#![no_main]

use std::sync::OnceLock;

use lhopt_fuzz::{Ctl, controller, drive, file_from, state_file};
use libfuzzer_sys::fuzz_target;

static VALID: OnceLock<(Vec<u8>, Ctl)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (valid, start) = VALID.get_or_init(|| (state_file(), controller()));
    let bytes = file_from(data, valid);
    let mut ctl = start.clone();
    match ctl.restore_state(&bytes) {
        Err(_) => assert_eq!(ctl.observer(), start.observer()),
        Ok(()) => {
            assert!(ctl.hyper().in_bounds());
            for t in 0..50 {
                drive(&mut ctl, t as f32);
            }
        }
    }
});
