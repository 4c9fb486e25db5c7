//! The tch CIAO against the core's reference slice implementation, checkpoint exactness, and
//! AdamW against a scalar transcription of PyTorch's update.

use lhopt_core::ciao::{self, CiaoState, ParamSlot, TensorState};
use lhopt_core::{Hyperparams, TensorReductions};
use lhopt_trainer::optim::{AdamW, Ciao};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

const SHAPES: [&[i64]; 4] = [&[4, 3], &[3], &[2, 2, 2], &[5]];

fn leaf(values: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(values)
        .reshape(shape)
        .set_requires_grad(true)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().reshape([-1])).unwrap()
}

/// Makes `g` the gradient of every parameter (after zeroing the old one).
fn set_grads(params: &[Tensor], grads: &[Vec<f32>]) {
    for p in params {
        let mut p = p.shallow_clone();
        p.zero_grad();
    }
    let loss = params
        .iter()
        .zip(grads)
        .map(|(p, g)| (p * Tensor::from_slice(g).reshape(p.size())).sum(Kind::Float))
        .reduce(|a, b| a + b)
        .unwrap();
    loss.backward();
}

/// Gradients that vary in scale by 100x between steps, so the clip fires on some steps only.
fn random_grads(rng: &mut ChaCha8Rng, params: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let scale = 10f32.powf(rng.gen_range(-1.0..1.0));
    params
        .iter()
        .map(|p| {
            p.iter()
                .map(|&x| scale * (0.3 * x + rng.gen_range(-1.0..1.0)))
                .collect()
        })
        .collect()
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1e-3) + 1e-4 * a.abs().max(b.abs())
}

#[test]
fn ciao_matches_the_core_slice_implementation_over_100_steps() {
    tch::set_num_threads(1);
    let h = Hyperparams {
        lr: 1e-2,
        ..Hyperparams::INITIAL
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut host: Vec<Vec<f32>> = SHAPES
        .iter()
        .map(|s| {
            (0..s.iter().product::<i64>())
                .map(|_| rng.gen_range(-1.0..1.0))
                .collect()
        })
        .collect();
    let params: Vec<Tensor> = host.iter().zip(SHAPES).map(|(v, s)| leaf(v, s)).collect();
    let mut m: Vec<Vec<f32>> = host.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut v = m.clone();
    let mut states = vec![TensorState::default(); SHAPES.len()];
    let mut core_state = CiaoState::default();
    let mut ciao = Ciao::new(&params);
    let (mut clips, mut compared) = (0, 0);

    for step in 0..100 {
        let mut grads = random_grads(&mut rng, &host);
        set_grads(&params, &grads);
        let want = step % 4 == 0;
        let report = ciao.step(&params, &h, want);

        let mut reductions = [TensorReductions::default(); SHAPES.len()];
        let mut slots: Vec<ParamSlot<'_>> = host
            .iter_mut()
            .zip(&mut grads)
            .zip(m.iter_mut().zip(&mut v))
            .zip(states.iter_mut().zip(SHAPES))
            .map(|(((param, grad), (m, v)), (state, shape))| ParamSlot {
                param,
                grad,
                m,
                v,
                state,
                is_matrix: shape.len() >= 2,
            })
            .collect();
        let clipped = ciao::step(
            &mut slots,
            &h,
            &mut core_state,
            want.then_some(&mut reductions[..]),
        )
        .expect("one reductions entry per tensor, buffers of matching lengths")
        .clipped();
        clips += usize::from(clipped);

        assert_eq!(report.is_some(), want, "reductions only when asked");
        if let Some(report) = report {
            compared += 1;
            assert_eq!(report.clipped, clipped, "clip decision at step {step}");
            for (t, (got, want)) in report.tensors.iter().zip(&reductions).enumerate() {
                assert_eq!(got.numel, want.numel);
                let scale = want.grad_norm.max(want.param_norm).max(want.update_norm);
                let pairs = [
                    (got.grad_norm, want.grad_norm),
                    (got.mhat_norm, want.mhat_norm),
                    (got.mhat_minus_grad_norm, want.mhat_minus_grad_norm),
                    (got.param_norm, want.param_norm),
                    (got.update_norm, want.update_norm),
                    (got.lr_p, want.lr_p),
                    (got.grad_dot_mhat, want.grad_dot_mhat),
                    (got.grad_dot_param, want.grad_dot_param),
                    (got.grad_dot_update, want.grad_dot_update),
                    (got.count_v_gt_eps, want.count_v_gt_eps),
                    (got.sum_log_abs_update, want.sum_log_abs_update),
                ];
                for (i, (a, b)) in pairs.into_iter().enumerate() {
                    assert!(
                        close(a, b, scale * scale),
                        "step {step} tensor {t} reduction {i}: tch {a} vs core {b}"
                    );
                }
            }
        }
    }
    assert!(
        clips > 5 && clips < 95,
        "the clip should fire on some steps only, fired {clips} times"
    );
    assert_eq!(compared, 25);
    for (t, (p, want)) in params.iter().zip(&host).enumerate() {
        for (a, b) in to_vec(p).iter().zip(want) {
            assert!(
                close(*a, *b, 1.0),
                "tensor {t}: tch {a} vs core {b} after 100 steps"
            );
        }
    }
}

#[test]
fn restoring_a_snapshot_continues_exactly_as_if_never_left() {
    tch::set_num_threads(1);
    let h = Hyperparams {
        lr: 1e-2,
        ..Hyperparams::INITIAL
    };
    let init: Vec<Vec<f32>> = SHAPES
        .iter()
        .map(|s| {
            (0..s.iter().product::<i64>())
                .map(|i| i as f32 * 0.1 - 0.3)
                .collect()
        })
        .collect();
    let make = || {
        init.iter()
            .zip(SHAPES)
            .map(|(v, s)| leaf(v, s))
            .collect::<Vec<_>>()
    };
    let buffer_a = Tensor::from_slice(&[1.0f32, 2.0]);
    let buffer_b = buffer_a.copy();
    let (a, b) = (make(), make());
    let (mut opt_a, mut opt_b) = (Ciao::new(&a), Ciao::new(&b));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let step = |params: &[Tensor], opt: &mut Ciao, grads: &[Vec<f32>], want: bool| {
        set_grads(params, grads);
        opt.step(params, &h, want)
    };
    let grads: Vec<Vec<Vec<f32>>> = (0..20).map(|_| random_grads(&mut rng, &init)).collect();
    for g in &grads[..5] {
        step(&a, &mut opt_a, g, false);
        step(&b, &mut opt_b, g, false);
    }
    let saved = opt_a.snapshot(&a, std::slice::from_ref(&buffer_a));
    // Wander off: different gradients, the buffer changes too.
    for g in &grads[5..15] {
        step(&a, &mut opt_a, g, false);
    }
    let _ = buffer_a.shallow_clone().fill_(-5.0);
    opt_a.restore(&a, std::slice::from_ref(&buffer_a), &saved);
    assert_eq!(to_vec(&buffer_a), to_vec(&buffer_b));
    // From here on a and b must agree bit for bit, reductions included.
    for g in &grads[15..] {
        let ra = step(&a, &mut opt_a, g, true);
        let rb = step(&b, &mut opt_b, g, true);
        assert_eq!(ra, rb);
    }
    for (pa, pb) in a.iter().zip(&b) {
        assert_eq!(to_vec(pa), to_vec(pb));
    }
}

#[test]
fn adamw_matches_pytorchs_update_rule() {
    tch::set_num_threads(1);
    let p = leaf(&[0.5, -1.0, 2.0], &[3]);
    let mut opt = AdamW::new(std::slice::from_ref(&p));
    let (mut x, mut m, mut v) = ([0.5f64, -1.0, 2.0], [0.0f64; 3], [0.0f64; 3]);
    let lrs = [1e-2, 3e-3, 1e-3];
    for (t, &lr) in lrs.iter().enumerate() {
        let g: Vec<f32> = x.iter().map(|&xi| (xi * xi) as f32 - 0.3).collect();
        set_grads(std::slice::from_ref(&p), std::slice::from_ref(&g));
        opt.step(std::slice::from_ref(&p), lr);
        let t = t as i32 + 1;
        for i in 0..3 {
            let gi = f64::from(g[i]);
            x[i] *= 1.0 - lr * AdamW::WEIGHT_DECAY;
            m[i] = AdamW::BETA1 * m[i] + (1.0 - AdamW::BETA1) * gi;
            v[i] = AdamW::BETA2 * v[i] + (1.0 - AdamW::BETA2) * gi * gi;
            let mhat = m[i] / (1.0 - AdamW::BETA1.powi(t));
            let denom = (v[i] / (1.0 - AdamW::BETA2.powi(t))).sqrt() + AdamW::EPS;
            x[i] -= lr * mhat / denom;
        }
    }
    for (a, b) in to_vec(&p).iter().zip(x) {
        assert!((f64::from(*a) - b).abs() < 1e-6, "tch {a} vs reference {b}");
    }
}
