//! Property tests over arbitrary inputs, NaN, infinities and negative values included: the
//! controller never produces a non-finite or out-of-bounds hyperparameter, the observation is
//! always finite, and no byte string makes decoding panic.

use lhopt_core::observation::OBS_DIM;
use lhopt_core::{
    Action, Controller, DecisionInputs, FeatureSet, FrozenPolicy, HEAD_SIZES, Hyperparams, Mode,
    Observer, PolicyNet, Rng, RunConfig, StepReductions, StepStatus, TensorReductions, apply,
    inner_features,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

type Net = PolicyNet<8, 6, 8>;
type Ctl = Controller<8, 6, 8>;

/// Any f32, with the troublesome values and ordinary ranges made common.
fn wild() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0_f32),
        Just(f32::MAX),
        -10.0_f32..10.0,
        0.0_f32..5.0,
    ]
}

prop_compose! {
    fn reduction()(
        numel in prop_oneof![Just(0_u64), 1_u64..10_000, any::<u64>()],
        v in proptest::array::uniform11(wild()),
    ) -> TensorReductions {
        TensorReductions {
            numel,
            grad_norm: v[0],
            mhat_norm: v[1],
            mhat_minus_grad_norm: v[2],
            param_norm: v[3],
            update_norm: v[4],
            lr_p: v[5],
            grad_dot_mhat: v[6],
            grad_dot_param: v[7],
            grad_dot_update: v[8],
            count_v_gt_eps: v[9],
            sum_log_abs_update: v[10],
        }
    }
}

prop_compose! {
    fn decision_inputs()(param_norm in wild(), displacement in wild(), eval_loss in wild())
        -> DecisionInputs {
        DecisionInputs { param_norm, displacement, eval_loss }
    }
}

prop_compose! {
    fn hyper()(v in proptest::array::uniform8(wild())) -> Hyperparams {
        Hyperparams::from_array(v)
    }
}

prop_compose! {
    fn action()(choices in proptest::array::uniform9(any::<u8>()), valid in any::<bool>())
        -> Action {
        // Half the time a valid action, half the time any bytes.
        let choices = if valid {
            let mut c = choices;
            for (x, n) in c.iter_mut().zip(HEAD_SIZES) {
                *x %= n as u8;
            }
            c
        } else {
            choices
        };
        Action { choices }
    }
}

/// One inner step: loss, optional reductions of a few tensors, clip flag.
type Step = (f32, Option<Vec<TensorReductions>>, bool);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    vec(
        (wild(), option::of(vec(reduction(), 0..3)), any::<bool>()),
        1..120,
    )
}

fn random_net(seed: u64, scale: f32) -> Net {
    let mut rng = Rng::new(seed);
    let mut net = Net::neutral();
    net.for_each_param_mut(|name, values| {
        for v in values.iter_mut() {
            let u = rng.next_f32() * 2.0 - 1.0;
            *v = match name {
                "norm.var" => u.abs() * scale,
                "norm.clip" => 1.0 + u.abs() * 10.0,
                _ => u * scale,
            };
        }
    });
    net
}

fn config(len: usize, decisions: u32) -> RunConfig {
    let total_steps = len as u64;
    RunConfig {
        total_steps,
        decisions: decisions.min(len as u32).max(1),
    }
}

fn feed<'a>(step: &'a Step) -> (f32, Option<StepReductions<'a>>) {
    let (loss, r, clipped) = step;
    let r = r.as_deref().map(|tensors| StepReductions {
        tensors,
        clipped: *clipped,
    });
    (*loss, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn inner_features_are_always_finite(r in reduction(), clipped in any::<bool>()) {
        prop_assert!(inner_features(&r, clipped).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn applying_any_action_to_any_hyperparameters_lands_in_bounds(h in hyper(), a in action()) {
        prop_assert!(apply(&h, &a).in_bounds());
        prop_assert!(h.clamped().in_bounds());
    }

    #[test]
    fn observations_are_finite_and_hyperparameters_bounded(
        steps in steps(),
        inputs in vec(decision_inputs(), 1..8),
        actions in vec(action(), 1..8),
        initial in hyper(),
        decisions in 1_u32..20,
    ) {
        let mut o = Observer::new(config(steps.len(), decisions), initial, FeatureSet::CURRENT).unwrap();
        prop_assert!(o.hyper().in_bounds());
        let mut k = 0;
        for step in &steps {
            let (loss, r) = feed(step);
            if o.observe_step(loss, r) == StepStatus::DecisionDue {
                let obs = o.observation(&inputs[k % inputs.len()]);
                prop_assert_eq!(obs.len(), OBS_DIM);
                prop_assert!(obs.iter().all(|x| x.is_finite()), "{:?}", obs);
                let d = o.apply(&actions[k % actions.len()]);
                prop_assert!(d.hyper.in_bounds(), "{:?}", d.hyper);
                k += 1;
            }
        }
        prop_assert_eq!(k as u32, o.decision_index());
    }

    #[test]
    fn controller_decisions_stay_finite_and_in_bounds(
        seed in any::<u64>(),
        scale in prop_oneof![Just(0.1_f32), Just(1.0), Just(100.0)],
        steps in steps(),
        inputs in vec(decision_inputs(), 1..8),
        initial in hyper(),
        decisions in 1_u32..20,
        sample in any::<bool>(),
    ) {
        let policy = FrozenPolicy::new(random_net(seed, scale), "prop", "").unwrap();
        let mode = if sample { Mode::Sample { seed } } else { Mode::Greedy };
        let mut ctl = Ctl::new(policy, config(steps.len(), decisions), initial, mode).unwrap();
        let mut k = 0;
        for step in &steps {
            let (loss, r) = feed(step);
            if ctl.observe(loss, r) == StepStatus::DecisionDue {
                match ctl.decide(&inputs[k % inputs.len()]) {
                    Ok(d) => prop_assert!(d.hyper.in_bounds(), "{:?}", d.hyper),
                    // Large weights may overflow the LSTM: reported, hyperparameters held.
                    Err(e) => prop_assert_eq!(e, lhopt_core::Error::PolicyDiverged),
                }
                prop_assert_eq!(ctl.decide(&inputs[0]), Err(lhopt_core::Error::NoDecisionDue));
                k += 1;
            }
            prop_assert!(ctl.hyper().in_bounds());
        }
        prop_assert!(ctl.is_finished());
        prop_assert_eq!(k as u32, ctl.observer().decision_index());
    }

    #[test]
    fn restoring_at_any_step_continues_like_the_uninterrupted_run(
        seed in any::<u64>(),
        steps in steps(),
        inputs in vec(decision_inputs(), 1..8),
        split in any::<prop::sample::Index>(),
        decisions in 1_u32..20,
    ) {
        let make = || {
            let policy = FrozenPolicy::new(random_net(seed, 1.0), "prop", "").unwrap();
            Ctl::new(policy, config(steps.len(), decisions), Hyperparams::INITIAL, Mode::Sample { seed })
                .unwrap()
        };
        let run = |ctl: &mut Ctl, range: &[Step], k: &mut usize, out: &mut Vec<_>| {
            for step in range {
                let (loss, r) = feed(step);
                if ctl.observe(loss, r) == StepStatus::DecisionDue {
                    out.push(ctl.decide(&inputs[*k % inputs.len()]));
                    *k += 1;
                }
            }
        };
        let (mut whole, mut expected, mut k) = (make(), Vec::new(), 0);
        run(&mut whole, &steps, &mut k, &mut expected);

        let cut = split.index(steps.len());
        let (mut first, mut got, mut k) = (make(), Vec::new(), 0);
        run(&mut first, &steps[..cut], &mut k, &mut got);
        let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
        let n = first.save_state(&mut buf).unwrap();
        let mut resumed = make();
        resumed.restore_state(&buf[..n]).unwrap();
        run(&mut resumed, &steps[cut..], &mut k, &mut got);
        // Compare bit patterns, so that the comparison is exact for every value.
        let bits = |ds: &[Result<lhopt_core::Decision, lhopt_core::Error>]| -> Vec<_> {
            ds.iter()
                .map(|d| d.map(|d| (d.hyper.to_array().map(f32::to_bits), d.restart)))
                .collect()
        };
        prop_assert_eq!(bits(&got), bits(&expected));
    }

    #[test]
    fn decoding_mutated_policy_files_never_panics(edits in mutations()) {
        let mut bytes = policy_file();
        mutate(&mut bytes, &edits);
        // Either a typed error, or a policy whose encoding gives back exactly these bytes.
        if let Ok(policy) = FrozenPolicy::<8, 6, 8>::decode(&bytes) {
            prop_assert!(policy.net().is_valid());
            let mut again = vec![0u8; bytes.len()];
            prop_assert_eq!(policy.encode(&mut again), Ok(bytes.len()));
            prop_assert_eq!(again, bytes.clone());
        }
        let _ = lhopt_core::read_header(&bytes);
    }
    #[test]
    fn any_single_byte_change_of_a_policy_file_is_detected(
        at in any::<prop::sample::Index>(),
        flip in 1_u8..=255,
    ) {
        let policy = FrozenPolicy::new(random_net(1, 1.0), "prop", "card").unwrap();
        let mut buf = vec![0u8; FrozenPolicy::<8, 6, 8>::MAX_ENCODED_LEN];
        let n = policy.encode(&mut buf).unwrap();
        buf.truncate(n);
        let i = at.index(n);
        buf[i] ^= flip;
        prop_assert!(FrozenPolicy::<8, 6, 8>::decode(&buf).is_err());
    }

    #[test]
    fn restoring_mutated_states_never_panics(edits in mutations(), tail in steps()) {
        let (mut ctl, mut bytes) = saved_state();
        mutate(&mut bytes, &edits);
        let before = ctl.observer().clone();
        match ctl.restore_state(&bytes) {
            Err(_) => prop_assert_eq!(ctl.observer(), &before, "unchanged on error"),
            // A state that is accepted runs on with hyperparameters inside their bounds.
            Ok(()) => {
                prop_assert!(ctl.hyper().in_bounds());
                for step in &tail {
                    let (loss, r) = feed(step);
                    if ctl.observe(loss, r) == StepStatus::DecisionDue {
                        let inputs = DecisionInputs { param_norm: 1.0, displacement: 0.1, eval_loss: 1.0 };
                        let _ = ctl.decide(&inputs);
                    }
                    prop_assert!(ctl.hyper().in_bounds());
                }
            }
        }
    }
}

/// One edit of a framed file: overwrite, insert or remove a byte, or cut the file.
#[derive(Clone, Debug)]
enum Edit {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

/// A few edits, then (usually) the length field and the CRC made right again, so the decoder
/// gets past the frame checks to the header, sizes, weights and state fields.
fn mutations() -> impl Strategy<Value = (Vec<Edit>, bool)> {
    let index = any::<prop::sample::Index>;
    let edit = prop_oneof![
        8 => (index(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => (index(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => index().prop_map(Edit::Remove),
        1 => index().prop_map(Edit::Truncate),
    ];
    (vec(edit, 1..6), prop::bool::weighted(0.9))
}

/// Applies `edits`; with `reseal`, rewrites the total length (bytes 6..10) and the CRC.
fn mutate(bytes: &mut Vec<u8>, (edits, reseal): &(Vec<Edit>, bool)) {
    for edit in edits {
        let n = bytes.len();
        match *edit {
            Edit::Set(i, b) if n > 0 => bytes[i.index(n)] = b,
            Edit::Insert(i, b) => bytes.insert(i.index(n + 1), b),
            Edit::Remove(i) if n > 0 => {
                bytes.remove(i.index(n));
            }
            Edit::Truncate(i) => bytes.truncate(i.index(n + 1)),
            _ => {}
        }
    }
    let n = bytes.len();
    if *reseal && n >= 14 {
        bytes[6..10].copy_from_slice(&(n as u32).to_le_bytes());
        let crc = lhopt_core::crc32::crc32(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A valid policy file with non-trivial weights, a name and a card.
fn policy_file() -> Vec<u8> {
    let policy = FrozenPolicy::new(random_net(7, 1.0), "fuzz", "mutated by the tests").unwrap();
    let mut buf = vec![0u8; FrozenPolicy::<8, 6, 8>::MAX_ENCODED_LEN];
    let n = policy.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A controller part-way through a run with a decision and a register behind it, and its
/// saved state.
fn saved_state() -> (Ctl, Vec<u8>) {
    let policy = FrozenPolicy::new(random_net(7, 1.0), "fuzz", "").unwrap();
    let mut ctl = Ctl::new(
        policy,
        config(40, 4),
        Hyperparams::INITIAL,
        Mode::Sample { seed: 3 },
    )
    .unwrap();
    let tensors = [TensorReductions {
        numel: 10,
        grad_norm: 1.0,
        param_norm: 2.0,
        update_norm: 0.1,
        lr_p: 1e-3,
        ..TensorReductions::default()
    }];
    for t in 0..25 {
        let r = ctl.wants_reductions().then_some(StepReductions {
            tensors: &tensors,
            clipped: t % 3 == 0,
        });
        if ctl.observe(1.0 / (1.0 + t as f32), r) == StepStatus::DecisionDue {
            let inputs = DecisionInputs {
                param_norm: 2.0,
                displacement: 0.1,
                eval_loss: 0.5,
            };
            ctl.decide(&inputs).unwrap();
        }
    }
    let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
    let n = ctl.save_state(&mut buf).unwrap();
    buf.truncate(n);
    (ctl, buf)
}

/// The mutations reach past the frame: over a fixed sample, decoding fails at each later check
/// too, and some mutated files and states still decode (weights and values edited in range).
#[test]
fn mutations_reach_every_check() {
    use lhopt_core::Error;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (file, (ctl, state)) = (policy_file(), saved_state());
    let (mut policy_errors, mut state_errors) = (Vec::new(), Vec::new());
    let (mut policies_ok, mut states_ok) = (0, 0);
    for _ in 0..3000 {
        let edits = mutations().new_tree(&mut runner).unwrap().current();
        let mut bytes = file.clone();
        mutate(&mut bytes, &edits);
        match FrozenPolicy::<8, 6, 8>::decode(&bytes) {
            Ok(_) => policies_ok += 1,
            Err(e) => policy_errors.push(std::mem::discriminant(&e)),
        }
        let mut bytes = state.clone();
        mutate(&mut bytes, &edits);
        match ctl.clone().restore_state(&bytes) {
            Ok(()) => states_ok += 1,
            Err(e) => state_errors.push(std::mem::discriminant(&e)),
        }
    }
    let d = std::mem::discriminant;
    for e in [
        Error::Malformed,
        Error::NonFinite,
        Error::SizeMismatch {
            which: "",
            found: 0,
            expected: 0,
        },
    ] {
        assert!(
            policy_errors.contains(&d(&e)),
            "no mutated policy file failed with {e:?}"
        );
    }
    for e in [
        Error::Malformed,
        Error::InvalidState(""),
        Error::PolicyMismatch,
    ] {
        assert!(
            state_errors.contains(&d(&e)),
            "no mutated state failed with {e:?}"
        );
    }
    assert!(
        policies_ok > 100 && states_ok > 100,
        "{policies_ok} files, {states_ok} states decoded"
    );
}
