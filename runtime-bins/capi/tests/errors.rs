//! Misuse through the C API comes back as status codes with a useful message, never a crash.

use std::ffi::CStr;
use std::ptr;

use lhopt::*;
use lhopt_core::{Hyperparams, TensorReductions};
use lhopt_embed::untrained::{TEST_SEED, tiny_policy_bytes};

fn last_error() -> String {
    let mut buf = [0 as std::ffi::c_char; 512];
    // SAFETY: `buf` is valid for its length.
    let len = unsafe { lhopt_last_error(buf.as_mut_ptr(), buf.len()) };
    assert!(len >= 1);
    // SAFETY: lhopt_last_error NUL-terminates within the buffer.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn new_controller(
    policy: &[u8],
    steps: u64,
    decisions: u32,
) -> (LhoptStatus, *mut LhoptController) {
    let mut ctrl = ptr::null_mut();
    // SAFETY: valid pointers and lengths.
    let status = unsafe {
        lhopt_controller_new(
            policy.as_ptr(),
            policy.len(),
            steps,
            decisions,
            ptr::null(),
            ptr::null(),
            &mut ctrl,
        )
    };
    (status, ctrl)
}

#[test]
fn null_arguments_are_reported() {
    let policy = tiny_policy_bytes(TEST_SEED);
    let mut ctrl = ptr::null_mut();
    // SAFETY: NULL is what is being tested; the other pointers are valid.
    let status = unsafe {
        lhopt_controller_new(ptr::null(), 10, 10, 2, ptr::null(), ptr::null(), &mut ctrl)
    };
    assert_eq!(status, LhoptStatus::NullArgument);
    assert!(last_error().contains("`policy`"));
    assert!(ctrl.is_null());
    // SAFETY: as above.
    let status = unsafe {
        lhopt_controller_new(
            policy.as_ptr(),
            policy.len(),
            10,
            2,
            ptr::null(),
            ptr::null(),
            ptr::null_mut(),
        )
    };
    assert_eq!(status, LhoptStatus::NullArgument);
    let mut want = false;
    // SAFETY: NULL controller is reported, not dereferenced.
    assert_eq!(
        unsafe { lhopt_controller_wants_reductions(ptr::null(), &mut want) },
        LhoptStatus::NullArgument
    );
    let mut h = Hyperparams::INITIAL;
    // SAFETY: as above.
    assert_eq!(
        unsafe { lhopt_controller_hyper(ptr::null(), &mut h) },
        LhoptStatus::NullArgument
    );
    // SAFETY: freeing NULL is a no-op.
    unsafe { lhopt_controller_free(ptr::null_mut()) };
}

#[test]
fn bad_policy_bytes_and_configs_are_reported() {
    let policy = tiny_policy_bytes(TEST_SEED);
    let (status, ctrl) = new_controller(&policy[..policy.len() - 7], 100, 10);
    assert_eq!(status, LhoptStatus::InvalidPolicy);
    assert!(ctrl.is_null());
    assert!(last_error().contains("truncated"), "{}", last_error());

    let mut flipped = policy.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    assert_eq!(
        new_controller(&flipped, 100, 10).0,
        LhoptStatus::InvalidPolicy
    );

    assert_eq!(
        new_controller(b"not a policy", 100, 10).0,
        LhoptStatus::InvalidPolicy
    );
    assert_eq!(
        new_controller(&policy, 100, 0).0,
        LhoptStatus::InvalidArgument
    );
    assert!(
        last_error().contains("run configuration"),
        "{}",
        last_error()
    );
}

#[test]
fn calls_out_of_order_and_wrong_sizes_are_reported() {
    let policy = tiny_policy_bytes(TEST_SEED);
    let (status, ctrl) = new_controller(&policy, 4, 2);
    assert_eq!(status, LhoptStatus::Ok);
    let mut d = std::mem::MaybeUninit::<LhoptDecision>::uninit();
    // SAFETY: `ctrl` is live, `d` writable.
    let status = unsafe { lhopt_controller_decide(ctrl, 1.0, 0.1, f32::NAN, d.as_mut_ptr()) };
    assert_eq!(status, LhoptStatus::WrongOrder);
    assert!(last_error().contains("no decision is due"));

    let tensors = [TensorReductions::default(); 2];
    let mut step = LhoptStepStatus::Continue;
    // SAFETY: a non-NULL tensor pointer with a zero count is rejected before use.
    let status =
        unsafe { lhopt_controller_observe(ctrl, 1.0, tensors.as_ptr(), 0, false, &mut step) };
    assert_eq!(status, LhoptStatus::InvalidArgument);
    // SAFETY: NULL tensors with a non-zero count is reported.
    let status = unsafe { lhopt_controller_observe(ctrl, 1.0, ptr::null(), 2, false, &mut step) };
    assert_eq!(status, LhoptStatus::NullArgument);

    // Two steps make a decision due; a third step before deciding is refused.
    for _ in 0..2 {
        // SAFETY: valid pointers.
        let status =
            unsafe { lhopt_controller_observe(ctrl, 1.0, ptr::null(), 0, false, &mut step) };
        assert_eq!(status, LhoptStatus::Ok);
    }
    assert_eq!(step, LhoptStepStatus::DecisionDue);
    // SAFETY: valid pointers.
    let status = unsafe { lhopt_controller_observe(ctrl, 1.0, ptr::null(), 0, false, &mut step) };
    assert_eq!(status, LhoptStatus::WrongOrder);
    assert!(last_error().contains("decision is due"));

    // State: a size query, a short buffer, then garbage and cut-off state to restore.
    let mut needed = 0;
    // SAFETY: capacity 0 with a NULL buffer is the size query.
    let status = unsafe { lhopt_controller_save_state(ctrl, ptr::null_mut(), 0, &mut needed) };
    assert_eq!(status, LhoptStatus::BufferTooSmall);
    assert!(needed > 0);
    let mut state = vec![0u8; needed];
    let mut written = 0;
    // SAFETY: `state` is valid for `needed` bytes.
    let status =
        unsafe { lhopt_controller_save_state(ctrl, state.as_mut_ptr(), needed, &mut written) };
    assert_eq!(status, LhoptStatus::Ok);
    // SAFETY: valid for the lengths given.
    let status = unsafe { lhopt_controller_restore_state(ctrl, state.as_ptr(), written / 2) };
    assert_eq!(status, LhoptStatus::InvalidState);
    // SAFETY: as above.
    let status = unsafe { lhopt_controller_restore_state(ctrl, b"garbage".as_ptr(), 7) };
    assert_eq!(status, LhoptStatus::InvalidState);

    // Restored into a fresh controller, the state resumes where it was saved: the decision that
    // was due is due again, so a step is refused and the decision is accepted.
    let (status, fresh) = new_controller(&policy, 4, 2);
    assert_eq!(status, LhoptStatus::Ok);
    // SAFETY: valid for the lengths given.
    let status = unsafe { lhopt_controller_restore_state(fresh, state.as_ptr(), written) };
    assert_eq!(status, LhoptStatus::Ok);
    // SAFETY: valid pointers.
    let status = unsafe { lhopt_controller_observe(fresh, 1.0, ptr::null(), 0, false, &mut step) };
    assert_eq!(status, LhoptStatus::WrongOrder);
    // SAFETY: valid pointers.
    let status = unsafe { lhopt_controller_decide(fresh, 1.0, 0.1, f32::NAN, d.as_mut_ptr()) };
    assert_eq!(status, LhoptStatus::Ok);
    // SAFETY: both are live and freed once.
    unsafe {
        lhopt_controller_free(ctrl);
        lhopt_controller_free(fresh);
    }
}

#[test]
fn status_names_are_static_strings() {
    // SAFETY: lhopt_status_name returns a static NUL-terminated string for any input.
    let name = |s: i32| {
        unsafe { CStr::from_ptr(lhopt_status_name(s)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(
        name(LhoptStatus::WrongOrder as i32),
        "LHOPT_STATUS_WRONG_ORDER"
    );
    assert_eq!(name(99), "unknown lhopt status");
}

/// Records `n` steps without reductions, making every decision that falls due.
fn drive(ctrl: *mut LhoptController, n: u64) {
    for _ in 0..n {
        let mut status = LhoptStepStatus::Continue;
        // SAFETY: live controller, valid output.
        let s = unsafe { lhopt_controller_observe(ctrl, 1.0, ptr::null(), 0, false, &mut status) };
        assert_eq!(s, LhoptStatus::Ok, "{}", last_error());
        if status == LhoptStepStatus::DecisionDue {
            let mut d = std::mem::MaybeUninit::uninit();
            // SAFETY: live controller, writable output.
            let s = unsafe { lhopt_controller_decide(ctrl, 1.0, 0.1, 1.0, d.as_mut_ptr()) };
            assert_eq!(s, LhoptStatus::Ok, "{}", last_error());
        }
    }
}

fn finished(ctrl: *mut LhoptController) -> bool {
    let mut done = false;
    // SAFETY: live controller, valid output.
    assert_eq!(
        unsafe { lhopt_controller_finished(ctrl, &mut done) },
        LhoptStatus::Ok
    );
    done
}

#[test]
fn a_state_from_a_longer_run_continues_that_run_to_its_end() {
    let policy = tiny_policy_bytes(TEST_SEED);
    let (_, long) = new_controller(&policy, 1000, 10);
    drive(long, 150);
    let mut buf = vec![0u8; 4096];
    let mut written = 0;
    // SAFETY: live controller, `buf` valid for its length.
    let s = unsafe { lhopt_controller_save_state(long, buf.as_mut_ptr(), buf.len(), &mut written) };
    assert_eq!(s, LhoptStatus::Ok, "{}", last_error());
    let (_, short) = new_controller(&policy, 100, 10);
    // SAFETY: live controller, `buf` valid for `written` bytes.
    let s = unsafe { lhopt_controller_restore_state(short, buf.as_ptr(), written) };
    assert_eq!(s, LhoptStatus::Ok, "{}", last_error());
    // Steps 150..1000 of the saved run, then the run is over.
    drive(short, 850);
    assert!(finished(short));
    let mut status = LhoptStepStatus::Continue;
    // SAFETY: live controller, valid output.
    let s = unsafe { lhopt_controller_observe(short, 1.0, ptr::null(), 0, false, &mut status) };
    assert_eq!(s, LhoptStatus::WrongOrder);
    assert!(last_error().contains("1000 steps"), "{}", last_error());
    // SAFETY: made above, freed once.
    unsafe {
        lhopt_controller_free(long);
        lhopt_controller_free(short);
    }
}

#[test]
fn a_failed_save_leaves_the_buffer_untouched() {
    let (_, ctrl) = new_controller(&tiny_policy_bytes(TEST_SEED), 100, 10);
    drive(ctrl, 25);
    let mut buf = vec![0x5Au8; 200];
    let mut written = 0;
    // SAFETY: live controller, `buf` valid for its length.
    let s = unsafe { lhopt_controller_save_state(ctrl, buf.as_mut_ptr(), buf.len(), &mut written) };
    assert_eq!(s, LhoptStatus::BufferTooSmall);
    assert!(written > 200);
    assert!(buf.iter().all(|&b| b == 0x5A), "the buffer was written");
    // SAFETY: made above, freed once.
    unsafe { lhopt_controller_free(ctrl) };
}

#[test]
fn a_loop_that_checks_finished_runs_exactly_total_steps() {
    for (steps, decisions) in [(100, 10), (105, 10)] {
        let (_, ctrl) = new_controller(&tiny_policy_bytes(TEST_SEED), steps, decisions);
        let mut n = 0;
        while !finished(ctrl) {
            drive(ctrl, 1);
            n += 1;
        }
        assert_eq!(n, steps);
        // SAFETY: made above, freed once.
        unsafe { lhopt_controller_free(ctrl) };
    }
}
