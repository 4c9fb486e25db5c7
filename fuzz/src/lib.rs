//! What the fuzz targets share: valid files to start from, and two ways to turn the fuzzer's
//! bytes into a framed file whose length field and CRC are right, so that the decoder's deeper
//! checks (header, sizes, weights, state fields) are reached instead of the CRC rejecting
//! nearly every input.

use lhopt_core::crc32::crc32;
use lhopt_core::{
    Controller, DecisionInputs, FrozenPolicy, Hyperparams, Mode, PolicyNet, Rng, RunConfig,
    StepReductions, StepStatus, TensorReductions,
};

/// Small sizes keep a whole policy file around 3.5 KB, within the fuzzer's reach.
pub type Policy = FrozenPolicy<2, 2, 2>;
/// The controller of [`Policy`].
pub type Ctl = Controller<2, 2, 2>;

/// Bytes of the fixed preamble and of the trailing CRC.
const PREAMBLE: usize = 10;
const CRC: usize = 4;

/// A policy with seeded non-trivial weights.
pub fn policy() -> Policy {
    let mut rng = Rng::new(7);
    let mut net = PolicyNet::<2, 2, 2>::neutral();
    net.for_each_param_mut(|name, values| {
        for v in values.iter_mut() {
            let u = rng.next_f32() * 2.0 - 1.0;
            *v = match name {
                "norm.var" => 0.5 + u.abs(),
                "norm.clip" => 3.0,
                _ => u,
            };
        }
    });
    FrozenPolicy::new(net, "fuzz", "a seed for the fuzzer").expect("a valid policy")
}

/// The encoded [`policy`].
pub fn policy_file() -> Vec<u8> {
    let mut buf = vec![0u8; Policy::MAX_ENCODED_LEN];
    let n = policy().encode(&mut buf).expect("fits");
    buf.truncate(n);
    buf
}

/// A run configuration short enough to finish inside one fuzz input.
pub const CFG: RunConfig = RunConfig {
    total_steps: 40,
    decisions: 4,
};

/// A controller with [`policy`] part-way through a run (a decision and a register behind it).
pub fn controller() -> Ctl {
    let mut ctl = Ctl::new(
        policy(),
        CFG,
        Hyperparams::INITIAL,
        Mode::Sample { seed: 3 },
    )
    .expect("valid configuration");
    for t in 0..25 {
        drive(&mut ctl, t as f32);
    }
    ctl
}

/// The saved state of [`controller`].
pub fn state_file() -> Vec<u8> {
    let ctl = controller();
    let mut buf = vec![0u8; Ctl::STATE_MAX_LEN];
    let n = ctl.save_state(&mut buf).expect("fits");
    buf.truncate(n);
    buf
}

/// One step (and a decision when due) of a synthetic run; checks the one promise that matters
/// whatever the state: hyperparameters stay finite and inside their bounds.
pub fn drive(ctl: &mut Ctl, x: f32) {
    let tensors = [TensorReductions {
        numel: 10,
        grad_norm: 1.0 + x,
        mhat_norm: 0.5,
        mhat_minus_grad_norm: 0.3,
        param_norm: 2.0,
        update_norm: 0.1,
        lr_p: 1e-3,
        grad_dot_mhat: 0.2,
        grad_dot_param: -0.1,
        grad_dot_update: 0.05,
        count_v_gt_eps: 8.0,
        sum_log_abs_update: -20.0,
    }];
    let r = ctl.wants_reductions().then_some(StepReductions {
        tensors: &tensors,
        clipped: x > 3.0,
    });
    if ctl.observe(1.0 / (1.0 + x.abs()), r) == StepStatus::DecisionDue {
        let inputs = DecisionInputs {
            param_norm: 2.0 + x,
            displacement: 0.1,
            eval_loss: if x > 5.0 { f32::NAN } else { 0.5 },
        };
        let _ = ctl.decide(&inputs);
    }
    assert!(ctl.hyper().in_bounds(), "{:?}", ctl.hyper());
}

/// The fuzzer's bytes as a file: the first byte picks how.
///
/// - even: the rest is a list of edits (3 bytes each: a position as u16 LE and a value; a value
///   of 0xFF with position ≥ 0xFF00 cuts the file there instead) applied to `valid`;
/// - odd: the rest is the payload (everything between the preamble and the CRC), framed with
///   `valid`'s magic and version.
///
/// Either way the length field and the CRC are then recomputed.
pub fn file_from(data: &[u8], valid: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return valid.to_vec();
    };
    let mut bytes = if mode % 2 == 0 {
        let mut bytes = valid.to_vec();
        for edit in rest.chunks_exact(3) {
            let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
            if edit[2] == 0xFF && at >= 0xFF00 {
                bytes.truncate(PREAMBLE + CRC + (at - 0xFF00) % bytes.len().max(1));
            } else if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = edit[2];
            }
        }
        bytes
    } else {
        let mut bytes = valid[..PREAMBLE].to_vec();
        bytes.extend_from_slice(rest);
        bytes.extend_from_slice(&[0; CRC]);
        bytes
    };
    let n = bytes.len();
    if n >= PREAMBLE + CRC {
        bytes[6..10].copy_from_slice(&(n as u32).to_le_bytes());
        let crc = crc32(&bytes[..n - CRC]);
        bytes[n - CRC..].copy_from_slice(&crc.to_le_bytes());
    }
    bytes
}
