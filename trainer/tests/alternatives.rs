//! Schedule-Free AdamW and Prodigy on tch against their PyPI packages, replaying the fixture that
//! `fixtures/gen_alternatives.py` wrote with `schedulefree` 1.4.1 and `prodigyopt` 1.1.2 (torch
//! 2.11.0, float32): a noisy quadratic whose gradient at step k is c ⊙ (p − target) + noise[k].
//! Both sides run the same libtorch kernels; what differs is rounding where the package fuses a
//! scaled add (`add_(x, alpha=a)`) that tch spells as two operations, so parity is to a
//! tolerance, not bit for bit. Also: Schedule-Free's runner evaluates at x and trains at y.

use lhopt_trainer::alternatives::{Alternative, Prodigy, ScheduleFreeAdamW};
use lhopt_trainer::tasks::{self, Family, Scale, Task, quadratic::Quadratic};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

/// Largest error allowed over 60 steps, relative to the largest magnitude in the fixture's
/// tensor. Measured (printed with --nocapture): Schedule-Free 8.4e-8 on y and x.
const SF_TOLERANCE: f64 = 1e-6;
/// The same for Prodigy's parameters, and its d relative to the package's. Measured: parameters
/// 2.5e-6 (plain, at step 20 where d has just grown 200x in ten steps) and 6.1e-7 (cosine); d
/// 3.2e-7.
const PRODIGY_TOLERANCE: f64 = 1e-5;
const D_TOLERANCE: f64 = 1e-6;

struct Fixture(Value);

impl Fixture {
    fn load() -> Fixture {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/alternatives.json"
        );
        let text = std::fs::read_to_string(path).expect("the committed fixture");
        Fixture(serde_json::from_str(&text).expect("valid JSON"))
    }

    fn shapes(&self) -> Vec<Vec<i64>> {
        self.0["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_i64().unwrap())
                    .collect()
            })
            .collect()
    }

    /// One list of flat tensors (`[tensor][element]`) as tensors of the fixture's shapes.
    fn tensors(&self, flat: &Value) -> Vec<Tensor> {
        flat.as_array()
            .unwrap()
            .iter()
            .zip(self.shapes())
            .map(|(values, shape)| Tensor::from_slice(&floats(values)).reshape(shape))
            .collect()
    }

    fn steps(&self) -> usize {
        self.0["noise"].as_array().unwrap().len()
    }

    fn leaves(&self) -> Vec<Tensor> {
        self.tensors(&self.0["initial"])
            .into_iter()
            .map(|t| t.set_requires_grad(true))
            .collect()
    }

    /// Sets the gradients of step `k` (0-based) at the current parameters, evaluated as the
    /// generator does: c * (p - target) + noise[k], in float32.
    fn set_grads(&self, params: &[Tensor], k: usize) {
        let (c, target) = (
            self.tensors(&self.0["curvature"]),
            self.tensors(&self.0["target"]),
        );
        let noise = self.tensors(&self.0["noise"][k]);
        let grads: Vec<Tensor> = params
            .iter()
            .zip(c.iter().zip(&target).zip(&noise))
            .map(|(p, ((c, t), n))| c * (p.detach() - t) + n)
            .collect();
        // d/dp Σ p ⊙ g is exactly g.
        for p in params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        let loss = params
            .iter()
            .zip(&grads)
            .map(|(p, g)| (p * g).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        loss.backward();
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Largest |got − want| over each tensor, relative to the tensor's largest |want|.
fn error(got: &[Tensor], want: &Value) -> f64 {
    got.iter()
        .zip(want.as_array().unwrap())
        .map(|(g, w)| {
            let g = Vec::<f32>::try_from(g.detach().reshape([-1])).unwrap();
            let w = floats(w);
            let scale = w.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
            g.iter()
                .zip(&w)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs() / scale.max(1e-30))
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

/// The fixture's checkpoints as (step, record).
fn checkpoints(run: &Value) -> Vec<(usize, &Value)> {
    run["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["step"].as_u64().unwrap() as usize, c))
        .collect()
}

#[test]
fn schedule_free_matches_the_schedulefree_package() {
    tch::set_num_threads(1);
    let fixture = Fixture::load();
    let run = &fixture.0["schedule_free"];
    let params = fixture.leaves();
    let mut opt = ScheduleFreeAdamW::new(&params, run["warmup_steps"].as_u64().unwrap());
    let checkpoints = checkpoints(run);
    let mut worst: f64 = 0.0;
    for k in 0..fixture.steps() {
        fixture.set_grads(&params, k);
        opt.step(&params);
        if let Some((_, c)) = checkpoints.iter().find(|(s, _)| *s == k + 1) {
            let (y, x) = (
                error(&params, &c["y"]),
                error(&opt.averaged(&params), &c["x"]),
            );
            eprintln!("schedule-free step {}: y {y:.2e}, x {x:.2e}", k + 1);
            worst = worst.max(y).max(x);
        }
    }
    eprintln!("schedule-free: worst {worst:.2e}");
    assert!(worst <= SF_TOLERANCE, "worst relative error {worst:e}");
    // x and y differ by far more than the tolerance, so comparing both means something.
    let last = checkpoints.last().unwrap().1;
    assert!(error(&params, &last["x"]) > 100.0 * SF_TOLERANCE);
}

fn prodigy_matches(key: &str) {
    tch::set_num_threads(1);
    let fixture = Fixture::load();
    let run = &fixture.0[key];
    let steps = fixture.steps();
    let cosine = run["cosine_steps"].as_u64();
    let params = fixture.leaves();
    let mut opt = Prodigy::new(&params);
    let checkpoints = checkpoints(run);
    let want_d = run["d"].as_array().unwrap();
    assert_eq!(want_d.len(), steps);
    let (mut worst_p, mut worst_d): (f64, f64) = (0.0, 0.0);
    for (k, want_d) in want_d.iter().map(|d| d.as_f64().unwrap()).enumerate() {
        fixture.set_grads(&params, k);
        // The generator's CosineAnnealingLR: half a cosine from 1 to 0 over T_max steps.
        let factor = cosine.map_or(1.0, |t| {
            lhopt_trainer::baseline::Schedule::Cosine.factor(k as u64, t)
        });
        opt.step(&params, Prodigy::LR * factor);
        worst_d = worst_d.max((opt.d() - want_d).abs() / want_d);
        if let Some((_, c)) = checkpoints.iter().find(|(s, _)| *s == k + 1) {
            let e = error(&params, &c["params"]);
            eprintln!("{key} step {}: params {e:.2e}, d {:.6e}", k + 1, opt.d());
            worst_p = worst_p.max(e);
        }
    }
    eprintln!("{key}: worst parameters {worst_p:.2e}, d {worst_d:.2e}");
    assert!(
        worst_p <= PRODIGY_TOLERANCE,
        "{key}: worst parameter error {worst_p:e}"
    );
    assert!(
        worst_d <= D_TOLERANCE,
        "{key}: worst relative error of d {worst_d:e}"
    );
    // d grew by orders of magnitude from d0, so its estimate was exercised.
    assert!(opt.d() > 1e4 * Prodigy::D0, "d = {}", opt.d());
}

#[test]
fn prodigy_matches_the_prodigyopt_package() {
    prodigy_matches("prodigy");
}

#[test]
fn prodigy_with_cosine_decay_matches_the_prodigyopt_package() {
    prodigy_matches("prodigy_cosine");
}

/// The Schedule-Free runner evaluates at x without disturbing training at y: the training losses
/// are identical however often it evaluates, and the final eval loss is the loss at x.
#[test]
fn schedule_free_runs_evaluate_at_the_average_and_train_at_y() {
    tch::set_num_threads(1);
    let spec = tasks::sample(Family::NoisyQuadratic, 4, Scale::Cpu);
    let config = match &spec.config {
        tasks::TaskConfig::NoisyQuadratic(c) => c.clone(),
        other => panic!("not a quadratic: {other:?}"),
    };
    let build = || Quadratic::new(spec.clone(), &config, Device::Cpu);
    let steps = 120;
    let (mut a, mut b) = (build(), build());
    let often: Vec<u64> = (0..steps).step_by(7).collect();
    let evaluated = Alternative::ScheduleFree.run(&mut a, steps, &often);
    let plain = Alternative::ScheduleFree.run(&mut b, steps, &[]);
    assert_eq!(evaluated.train_losses, plain.train_losses);
    assert_eq!(evaluated.final_eval_loss, plain.final_eval_loss);
    assert_eq!(evaluated.evals.len(), often.len() + 1);

    // By hand: the same steps, then the loss at x and at y.
    let mut c = build();
    let params: Vec<Tensor> = c.parameters().iter().map(Tensor::shallow_clone).collect();
    let mut opt = ScheduleFreeAdamW::new(&params, ScheduleFreeAdamW::warmup_for(steps));
    for _ in 0..steps {
        let mut p = params[0].shallow_clone();
        p.zero_grad();
        c.train_loss().backward();
        opt.step(&params);
    }
    let at_y = c.eval_loss();
    let x = opt.averaged(&params);
    params[0].detach().copy_(&x[0]);
    let at_x = c.eval_loss();
    assert_eq!(plain.final_eval_loss, at_x);
    assert!(
        (at_x - at_y).abs() > 1e-6 * at_y,
        "x and y should differ here: {at_x} vs {at_y}"
    );
}
