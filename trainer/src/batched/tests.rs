//! The batched optimizer against K runs of the unbatched one and against the core's slice CIAO;
//! each batched family against the unbatched tasks of its instances' specs.

use lhopt_core::ciao::{self as slice_ciao, CiaoState, ParamSlot, TensorState};
use lhopt_core::{Hyperparams, TensorReductions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::ciao::BatchedCiao;
use super::tasks;
use crate::optim::{Ciao, StepReport};
use crate::tasks::image::{Arch, Config as ImageConfig, ImageSet};
use crate::tasks::{
    Activation, CellKind, Family, NormKind, Task, TaskConfig, TaskSpec, algorithmic, quadratic,
    synthetic,
};

const SHAPES: [&[i64]; 3] = [&[5, 3], &[5], &[2, 2, 3]];

/// Distinct hyperparameters per instance; instance 1 clips hard, instance 2 has a large lr.
fn hypers(k: usize) -> Vec<Hyperparams> {
    (0..k)
        .map(|i| Hyperparams {
            lr: 1e-2 * (1.0 + 3.0 * i as f32),
            ombeta1: 0.1 + 0.05 * i as f32,
            ombeta2: 0.01 * (1.0 + i as f32),
            eps: 1e-6,
            wd: 1e-3 * i as f32,
            clip_frac: if i == 1 { 0.3 } else { 0.9 },
            clip_ombeta: 0.01,
            lamb_ombeta: 0.05 + 0.02 * i as f32,
        })
        .collect()
}

fn host(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().contiguous().view([-1])).unwrap()
}

fn values(rng: &mut ChaCha8Rng, shape: &[i64]) -> Tensor {
    let n: i64 = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Tensor::from_slice(&v).view(shape)
}

/// Loss Σ p·a + 0.05 Σ p², whose gradient depends on where the run is.
fn backward(params: &[Tensor], pulls: &[Tensor]) {
    for p in params {
        p.shallow_clone().zero_grad();
    }
    let loss = params
        .iter()
        .zip(pulls)
        .map(|(p, a)| (p * a).sum(Kind::Float) + p.square().sum(Kind::Float) * 0.05)
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |s, l| s + l);
    loss.backward();
}

fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = rel * x.abs().max(y.abs()).max(1e-3);
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

/// ‖a − b‖∞ ≤ rel·‖b‖∞: the error relative to the tensor's scale.
fn assert_tensor_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= rel * scale,
        "{what}: max error {err} vs scale {scale}"
    );
}

fn assert_reports_close(batched: &StepReport, single: &StepReport, rel: f32, what: &str) {
    assert_eq!(batched.clipped, single.clipped, "{what}: clip flag");
    for (a, b) in batched.tensors.iter().zip(&single.tensors) {
        // Sums such as Σ g·p add O(1) terms that can cancel to ~0: relative to at least 0.1.
        for (x, y) in a.to_array().iter().zip(b.to_array()) {
            let tol = f64::from(rel) * x.abs().max(y.abs()).max(0.1);
            assert!((x - y).abs() <= tol, "{what}: reduction {x} vs {y}");
        }
    }
}

#[test]
fn batched_ciao_matches_k_unbatched_runs_for_100_steps_with_registers() {
    let k = 4;
    let h = hypers(k);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let singles: Vec<Vec<Tensor>> = (0..k)
        .map(|_| {
            SHAPES
                .iter()
                .map(|s| (values(&mut rng, s) * 2.0).set_requires_grad(true))
                .collect()
        })
        .collect();
    let stacked: Vec<Tensor> = (0..SHAPES.len())
        .map(|j| {
            let parts: Vec<Tensor> = singles.iter().map(|p| p[j].detach()).collect();
            Tensor::stack(&parts, 0).set_requires_grad(true)
        })
        .collect();
    let mut batched = BatchedCiao::new(&stacked);
    let mut ciaos: Vec<Ciao> = singles.iter().map(|p| Ciao::new(p)).collect();
    let (mut saved_b, mut saved_s) = (None, None);
    let mut sampled = 0;
    for step in 0..100 {
        // One pull per instance and tensor, shared by both runs.
        let pulls: Vec<Vec<Tensor>> = (0..k)
            .map(|_| SHAPES.iter().map(|s| values(&mut rng, s)).collect())
            .collect();
        let stacked_pulls: Vec<Tensor> = (0..SHAPES.len())
            .map(|j| {
                let parts: Vec<&Tensor> = pulls.iter().map(|p| &p[j]).collect();
                Tensor::stack(&parts, 0)
            })
            .collect();
        backward(&stacked, &stacked_pulls);
        let want = step % 4 == 0;
        let reports = batched.step(&stacked, &h, want);
        for i in 0..k {
            backward(&singles[i], &pulls[i]);
            let single = ciaos[i].step(&singles[i], &h[i], want);
            if let (Some(b), Some(s)) = (&reports, &single) {
                assert_reports_close(&b[i], s, 1e-5, &format!("step {step} instance {i}"));
                sampled += 1;
            }
        }
        // Instance 2 saves at step 30 and loads at step 60, in both runs.
        if step == 30 {
            saved_b = Some(batched.snapshot(2, &stacked, &[]));
            saved_s = Some(ciaos[2].snapshot(&singles[2], &[]));
        }
        if step == 60 {
            batched.restore(2, &stacked, &[], saved_b.as_ref().unwrap());
            ciaos[2].restore(&singles[2], &[], saved_s.as_ref().unwrap());
        }
    }
    assert_eq!(sampled, 25 * k);
    for (i, instance) in singles.iter().enumerate() {
        for (j, single) in instance.iter().enumerate() {
            assert_tensor_close(
                &host(&stacked[j].get(i as i64)),
                &host(single),
                1e-6,
                &format!("instance {i} tensor {j} after 100 steps"),
            );
        }
    }
    // The instances really differ (per-instance hyperparameters took effect).
    assert_ne!(host(&stacked[0].get(0)), host(&stacked[0].get(1)));
}

#[test]
fn batched_ciao_matches_the_core_slice_ciao() {
    let k = 3;
    let h = hypers(k);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let stacked: Vec<Tensor> = SHAPES
        .iter()
        .map(|s| {
            let mut shape = vec![k as i64];
            shape.extend_from_slice(s);
            values(&mut rng, &shape).set_requires_grad(true)
        })
        .collect();
    // Host copies per instance and tensor: params, m, v, state.
    let mut p: Vec<Vec<Vec<f32>>> = (0..k)
        .map(|i| stacked.iter().map(|t| host(&t.get(i as i64))).collect())
        .collect();
    let mut m: Vec<Vec<Vec<f32>>> = p
        .iter()
        .map(|ts| ts.iter().map(|t| vec![0.0; t.len()]).collect())
        .collect();
    let mut v = m.clone();
    let mut states = vec![vec![TensorState::default(); SHAPES.len()]; k];
    let mut global = vec![CiaoState::default(); k];
    let mut batched = BatchedCiao::new(&stacked);
    for step in 0..20 {
        // Fixed gradients (loss Σ p·a): the slice optimizer is given the same ones.
        let pulls: Vec<Tensor> = stacked
            .iter()
            .map(|t| values(&mut rng, &t.size()))
            .collect();
        for t in &stacked {
            t.shallow_clone().zero_grad();
        }
        let loss = stacked
            .iter()
            .zip(&pulls)
            .map(|(t, a)| (t * a).sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |s, l| s + l);
        loss.backward();
        let reports = batched.step(&stacked, &h, true).unwrap();
        for i in 0..k {
            let mut grads: Vec<Vec<f32>> = pulls.iter().map(|a| host(&a.get(i as i64))).collect();
            let mut out = vec![TensorReductions::default(); SHAPES.len()];
            let mut slots: Vec<ParamSlot<'_>> = p[i]
                .iter_mut()
                .zip(&mut grads)
                .zip(&mut m[i])
                .zip(&mut v[i])
                .zip(&mut states[i])
                .zip(SHAPES)
                .map(|(((((param, grad), m), v), state), shape)| ParamSlot {
                    param,
                    grad,
                    m,
                    v,
                    state,
                    is_matrix: shape.len() >= 2,
                })
                .collect();
            let clipped = slice_ciao::step(&mut slots, &h[i], &mut global[i], Some(&mut out))
                .expect("matching slices and finite gradients")
                .clipped();
            let expected = StepReport {
                clipped,
                tensors: out,
            };
            // f32 sums in another order (sequential here, vectorised in libtorch) drift further.
            let what = format!("step {step} instance {i}");
            assert_reports_close(&reports[i], &expected, 1e-4, &what);
        }
    }
    for (i, instance) in p.iter().enumerate() {
        for (j, t) in stacked.iter().enumerate() {
            assert_tensor_close(&host(&t.get(i as i64)), &instance[j], 1e-5, "parameters");
        }
    }
}

fn spec(family: Family, config: TaskConfig, seed: u64) -> TaskSpec {
    TaskSpec {
        family,
        seed,
        config,
        steps: 100,
    }
}

/// Instance k of the batch is the unbatched task of spec k: same initial parameters, training
/// losses, gradients and eval losses over a few steps of plain SGD.
fn assert_batch_matches_unbatched(specs: &[TaskSpec], images: Option<ImageSet>) {
    let data = images.map(synthetic::image_data);
    let mut batch = tasks::build_with(specs, Device::Cpu, data).unwrap();
    let mut singles: Vec<Box<dyn Task>> = specs
        .iter()
        .map(|s| synthetic::build(s, Device::Cpu).unwrap())
        .collect();
    assert_eq!(batch.parameters().len(), singles[0].parameters().len());
    for step in 0..3 {
        let losses = batch.train_losses();
        for p in batch.parameters() {
            p.shallow_clone().zero_grad();
        }
        losses.sum(Kind::Float).backward();
        let losses = host(&losses);
        for (i, single) in singles.iter_mut().enumerate() {
            for p in single.parameters() {
                p.shallow_clone().zero_grad();
            }
            let loss = single.train_loss();
            loss.backward();
            let what = format!("{} step {step} instance {i}", specs[0].family);
            assert_close(&[losses[i]], &host(&loss), 1e-5, &format!("{what} loss"));
            for (b, s) in batch.parameters().iter().zip(single.parameters()) {
                let (gb, gs) = (host(&b.grad().get(i as i64)), host(&s.grad()));
                // A bias feeding a batch norm has a gradient of pure rounding noise: floor 1e-2.
                let scale = gs.iter().fold(1e-2f32, |a, x| a.max(x.abs()));
                for (x, y) in gb.iter().zip(&gs) {
                    assert!((x - y).abs() <= 1e-4 * scale, "{what} gradient: {x} vs {y}");
                }
            }
        }
        // The same SGD step on both sides, so later losses test the parameter layout too.
        tch::no_grad(|| {
            for p in batch.parameters() {
                let _ = p.shallow_clone().g_sub_(&(p.grad() * 0.1));
            }
            for single in &singles {
                for p in single.parameters() {
                    let _ = p.shallow_clone().g_sub_(&(p.grad() * 0.1));
                }
            }
        });
    }
    let evals = batch.eval_losses();
    for (i, single) in singles.iter_mut().enumerate() {
        let e = single.eval_loss();
        assert!(
            (evals[i] - e).abs() <= 1e-4 * e.abs().max(1e-3),
            "eval {i}: {} vs {e}",
            evals[i]
        );
    }
}

fn seeds(config: TaskConfig, family: Family) -> Vec<TaskSpec> {
    (0..3)
        .map(|s| spec(family, config.clone(), 10 + s))
        .collect()
}

#[test]
fn batched_quadratic_is_its_instances() {
    let c = TaskConfig::NoisyQuadratic(quadratic::Config {
        dims: 50,
        conditioning: 100.0,
        noise: 0.5,
    });
    assert_batch_matches_unbatched(&seeds(c, Family::NoisyQuadratic), None);
}

#[test]
fn batched_rnns_are_their_instances() {
    for (cell, problem, layers) in [
        (CellKind::Lstm, algorithmic::Problem::Parity, 1),
        (CellKind::Gru, algorithmic::Problem::Addition, 2),
        (CellKind::Rnn, algorithmic::Problem::Parity, 2),
    ] {
        let c = TaskConfig::Algorithmic(algorithmic::Config {
            problem,
            cell,
            hidden: 8,
            layers,
            length: 5,
            batch: 6,
        });
        assert_batch_matches_unbatched(&seeds(c, Family::Algorithmic), None);
    }
}

#[test]
fn batched_mlps_are_their_instances() {
    for (set, norm, dropout) in [
        (ImageSet::Digits, NormKind::None, 0.0),
        (ImageSet::FashionMnist8, NormKind::Layer, 0.2),
        (ImageSet::FashionMnist, NormKind::Batch, 0.1),
    ] {
        let c = TaskConfig::Image(ImageConfig {
            dataset: set,
            arch: Arch::Mlp {
                hidden_layers: 2,
                width: 16,
            },
            activation: Activation::Tanh,
            norm,
            dropout,
            batch: 7,
            eval_examples: 100,
        });
        assert_batch_matches_unbatched(&seeds(c, Family::ImageMlp), Some(set));
    }
}

#[test]
fn k_zero_absurd_k_and_mixed_configurations_are_clear_errors() {
    let q = |dims| {
        TaskConfig::NoisyQuadratic(quadratic::Config {
            dims,
            conditioning: 100.0,
            noise: 0.5,
        })
    };
    let err = tasks::build_with(&[], Device::Cpu, None).err().unwrap();
    assert!(err.to_string().contains("K = 0"), "{err}");
    let many: Vec<TaskSpec> = (0..tasks::MAX_INSTANCES as u64 + 1)
        .map(|s| spec(Family::NoisyQuadratic, q(10), s))
        .collect();
    let err = tasks::build_with(&many, Device::Cpu, None).err().unwrap();
    assert!(err.to_string().contains("more than"), "{err}");
    // Within the count limit but far beyond memory: 4096 bowls of 2^30 coordinates.
    let huge: Vec<TaskSpec> = (0..4096)
        .map(|s| spec(Family::NoisyQuadratic, q(1 << 30), s))
        .collect();
    let err = tasks::build_with(&huge, Device::Cpu, None).err().unwrap();
    assert!(err.to_string().contains("GiB"), "{err}");
    let mixed = [
        spec(Family::NoisyQuadratic, q(10), 1),
        spec(Family::NoisyQuadratic, q(11), 2),
    ];
    assert!(tasks::build_with(&mixed, Device::Cpu, None).is_err());
}

/// A batched episode is K unbatched episodes: instance i, its hyperparameters and sampling seed
/// give the same actions, register operations, losses and final eval as `env::run_episode` on the
/// unbatched task of spec i with a single-environment agent.
#[test]
fn batched_episode_matches_unbatched_episodes() {
    use super::env::run_batched_episode;
    use super::rollout::BatchedPolicyAgent;
    use crate::env::{EpisodeConfig, run_episode};
    use crate::policy_net::{ActorCritic, PolicySizes};
    use crate::ppo::agent::{ActMode, PolicyAgent};
    use crate::ppo::rollout::{PRIVILEGED_DIM, perturb};

    let c = TaskConfig::NoisyQuadratic(quadratic::Config {
        dims: 40,
        conditioning: 300.0,
        noise: 0.3,
    });
    let specs = seeds(c, Family::NoisyQuadratic);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let cfgs: Vec<EpisodeConfig> = (0..specs.len())
        .map(|i| EpisodeConfig {
            total_steps: 48,
            decisions: 6,
            initial: if i == 0 {
                Hyperparams::INITIAL
            } else {
                perturb(&mut rng, Hyperparams::INITIAL)
            },
            hide_eval: i == 2,
        })
        .collect();
    let net = ActorCritic::new(
        Device::Cpu,
        PolicySizes::preset("tiny").unwrap(),
        PRIVILEGED_DIM,
        5.0,
    );
    let agent_seeds = [7u64, 8, 9];
    let mut batch = tasks::build_with(&specs, Device::Cpu, None).unwrap();
    let mut agent = BatchedPolicyAgent::new(&net.actor, agent_seeds);
    let traces = run_batched_episode(batch.as_mut(), &cfgs, &mut agent).unwrap();
    let mut restarts = 0;
    for (i, spec) in specs.iter().enumerate() {
        let mut single = synthetic::build(spec, Device::Cpu).unwrap();
        let mut one = PolicyAgent::new(&net.actor, ActMode::Sample, agent_seeds[i]);
        let expected = run_episode(single.as_mut(), &cfgs[i], &mut one).unwrap();
        let got = &traces[i];
        assert_eq!(got.decisions.len(), expected.decisions.len());
        for (a, b) in got.decisions.iter().zip(&expected.decisions) {
            assert_eq!(
                a.action.choices, b.action.choices,
                "instance {i} step {}",
                a.step
            );
            assert_eq!(a.restart, b.restart);
            restarts += usize::from(a.restart != lhopt_core::Restart::None);
            // Inner feature 5, ln‖m̂‖ − ln‖m̂ − g‖, and its CDFs read rounding noise whenever an
            // interval starts with m̂ = g (step 0): compared loosely, everything else tightly.
            let noise = 1 + 5 * 6..1 + 6 * 6;
            for (j, (x, y)) in a.obs.iter().zip(&b.obs).enumerate() {
                let rel = if noise.contains(&j) { 0.05 } else { 1e-2 };
                assert!(
                    (x - y).abs() <= rel * x.abs().max(y.abs()).max(1e-2),
                    "instance {i} step {} observation {j}: {x} vs {y}",
                    a.step
                );
            }
        }
        assert_close(&got.train_losses, &expected.train_losses, 1e-3, "losses");
        let (x, y) = (got.final_eval_loss, expected.final_eval_loss);
        assert!((x - y).abs() <= 1e-3 * y.abs(), "final eval {x} vs {y}");
        assert_eq!(agent.records[i].actions, one.record.actions);
    }
    assert!(
        restarts > 0,
        "the episode exercised the checkpoint registers"
    );
}

#[test]
fn batch_instances_of_zero_or_beyond_the_limit_are_refused_by_the_config() {
    use crate::meta_train::MetaTrainConfig;
    let path = std::path::Path::new("cfg.toml");
    for (k, needle) in [(0, "at least one instance"), (100_000, "more than")] {
        let text = format!("[rollout]\nbatch_instances = {k}\n");
        let err = MetaTrainConfig::from_toml(&text, path).err().unwrap();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let cfg = MetaTrainConfig::from_toml("[rollout]\nbatch_instances = 1\n", path).unwrap();
    assert_eq!(cfg.rollout.batch_instances, 1);
}

#[test]
fn instance_zero_is_the_configuration_and_the_others_reseed_it() {
    use super::rollout::instance;
    use crate::meta_task::MetaTask;
    use crate::ppo::rollout::RolloutConfig;
    let t = MetaTask::sample(&RolloutConfig::default(), 1, 4);
    assert_eq!(instance(&t, 0), t);
    let others: Vec<MetaTask> = (1..4).map(|i| instance(&t, i)).collect();
    for o in &others {
        assert_eq!(
            (&o.spec.config, o.steps, o.decisions),
            (&t.spec.config, t.steps, t.decisions)
        );
        assert_ne!((o.seed, o.spec.seed), (t.seed, t.spec.seed));
    }
    assert_ne!(others[0].spec.seed, others[1].spec.seed);
}

#[test]
fn only_small_configurations_prefer_batching() {
    let mlp = |dataset, width, batch| {
        TaskConfig::Image(ImageConfig {
            dataset,
            arch: Arch::Mlp {
                hidden_layers: 2,
                width,
            },
            activation: Activation::Relu,
            norm: NormKind::None,
            dropout: 0.0,
            batch,
            eval_examples: 100,
        })
    };
    let rnn = |cell, hidden, length, batch| {
        TaskConfig::Algorithmic(algorithmic::Config {
            problem: algorithmic::Problem::Parity,
            cell,
            hidden,
            layers: 1,
            length,
            batch,
        })
    };
    let prefers = |family, config| tasks::prefers_batching(&spec(family, config, 1));
    // The bench's compute-bound rows, where batching lost.
    assert!(!prefers(
        Family::ImageMlp,
        mlp(ImageSet::FashionMnist, 256, 128)
    ));
    assert!(!prefers(
        Family::Algorithmic,
        rnn(CellKind::Lstm, 64, 16, 64)
    ));
    // Its small rows, where batching won.
    assert!(prefers(
        Family::ImageMlp,
        mlp(ImageSet::FashionMnist8, 32, 64)
    ));
    assert!(prefers(Family::Algorithmic, rnn(CellKind::Gru, 16, 8, 32)));
    let bowl = TaskConfig::NoisyQuadratic(quadratic::Config {
        dims: 1000,
        conditioning: 1e3,
        noise: 1.0,
    });
    assert!(prefers(Family::NoisyQuadratic, bowl));
}

/// `a` and `b` are evaluation traces at the same steps, with losses within `rel` of each other
/// (non-finite where the other is).
fn assert_traces_close(a: &[(u64, f64)], b: &[(u64, f64)], rel: f64, what: &str) {
    assert_eq!(
        a.iter().map(|e| e.0).collect::<Vec<_>>(),
        b.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{what}: evaluation steps"
    );
    for (&(step, x), &(_, y)) in a.iter().zip(b) {
        let close = if y.is_finite() {
            (x - y).abs() <= rel * y.abs().max(1e-3)
        } else {
            !x.is_finite()
        };
        assert!(close, "{what} step {step}: {x} vs {y}");
    }
}

/// The learning rates of the reference tests: the grid's, and one so large that the run's loss
/// overflows within a few steps (the stop-and-evaluate path).
const REFERENCE_LRS: [f64; 6] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e30];

/// The batched reference runs of a configuration are the unbatched `train_adamw` runs of
/// `MetaTask::reference`, learning rate by learning rate, rescaled initial weights included:
/// the same evaluation steps, losses within 1e-4 (the batched forward sums in another order).
#[test]
fn batched_reference_runs_are_the_unbatched_runs() {
    use crate::baseline::{Schedule, train_adamw};
    use crate::meta_task::MetaTask;

    let dir = tempfile::tempdir().unwrap();
    let mut pool = crate::pool::Pool::new(Some(1), lhopt_data::DataDir::at(dir.path()));
    pool.device = Device::Cpu;
    let configs = [
        (
            Family::NoisyQuadratic,
            TaskConfig::NoisyQuadratic(quadratic::Config {
                dims: 30,
                conditioning: 100.0,
                noise: 0.5,
            }),
        ),
        (
            Family::Algorithmic,
            TaskConfig::Algorithmic(algorithmic::Config {
                problem: algorithmic::Problem::Parity,
                cell: CellKind::Gru,
                hidden: 8,
                layers: 1,
                length: 5,
                batch: 6,
            }),
        ),
    ];
    for (family, config) in configs {
        let t = MetaTask {
            index: 0,
            seed: 5,
            spec: spec(family, config, 21),
            steps: 40,
            decisions: 4,
            weight_scale: 10.0,
        };
        let eval_at = crate::reward::reference_eval_steps(t.steps);
        let batched = super::reference::runs(&t, &pool, &REFERENCE_LRS, &eval_at).unwrap();
        for (lr, got) in REFERENCE_LRS.iter().zip(&batched) {
            let mut single = t.build(&pool).unwrap();
            let expected = train_adamw(single.as_mut(), *lr, Schedule::Constant, t.steps, &eval_at);
            assert_traces_close(got, &expected.evals, 1e-4, &format!("{family} lr {lr}"));
        }
        assert!(
            batched.last().unwrap().len() < batched[0].len(),
            "the last learning rate stopped its run early"
        );
    }
}

/// The same for a batch-norm MLP (running statistics are per instance), on generated images,
/// within 1e-2: the bias feeding a batch norm has a gradient of pure rounding noise, which Adam
/// normalises into steps of a full learning rate, so the two sides' biases and running means
/// drift apart by rounding while the function they compute does not.
#[test]
fn batched_reference_runs_of_a_batch_norm_mlp_are_the_unbatched_runs() {
    use crate::baseline::{Schedule, train_adamw};

    let set = ImageSet::Digits;
    let s = spec(
        Family::ImageMlp,
        TaskConfig::Image(ImageConfig {
            dataset: set,
            arch: Arch::Mlp {
                hidden_layers: 2,
                width: 16,
            },
            activation: Activation::Relu,
            norm: NormKind::Batch,
            dropout: 0.1,
            batch: 8,
            eval_examples: 50,
        }),
        3,
    );
    let eval_at = [0, 5, 17, 29];
    let specs = vec![s.clone(); REFERENCE_LRS.len()];
    let mut batch =
        tasks::build_with(&specs, Device::Cpu, Some(synthetic::image_data(set))).unwrap();
    let batched = super::reference::train(batch.as_mut(), &REFERENCE_LRS, 30, &eval_at);
    for (lr, got) in REFERENCE_LRS.iter().zip(&batched) {
        let mut single = synthetic::build(&s, Device::Cpu).unwrap();
        let expected = train_adamw(single.as_mut(), *lr, Schedule::Constant, 30, &eval_at);
        assert_traces_close(got, &expected.evals, 1e-2, &format!("MLP lr {lr}"));
    }
}

/// An instance that cannot recover stops where the unbatched episode stops, with the same
/// evaluations (the last one taken at the stop), while the others go on as their unbatched
/// episodes do.
#[test]
fn a_stopped_instance_is_evaluated_at_its_stop_and_the_rest_go_on() {
    use super::env::run_batched_episode;
    use super::rollout::BatchedPolicyAgent;
    use crate::env::{EpisodeConfig, run_episode};
    use crate::policy_net::{ActorCritic, PolicySizes};
    use crate::ppo::agent::{ActMode, PolicyAgent};
    use crate::ppo::rollout::PRIVILEGED_DIM;

    let c = TaskConfig::NoisyQuadratic(quadratic::Config {
        dims: 20,
        conditioning: 50.0,
        noise: 0.3,
    });
    let specs = seeds(c, Family::NoisyQuadratic);
    let cfg = EpisodeConfig {
        total_steps: 24,
        decisions: 3,
        initial: Hyperparams::INITIAL,
        hide_eval: false,
    };
    let net = ActorCritic::new(
        Device::Cpu,
        PolicySizes::preset("tiny").unwrap(),
        PRIVILEGED_DIM,
        5.0,
    );
    // Instance 1 starts from non-finite parameters: its first loss is not finite and no
    // register can bring it back.
    let poison = |params: &[Tensor], i: Option<i64>| {
        tch::no_grad(|| {
            for p in params {
                let _ = match i {
                    Some(i) => p.get(i).fill_(f64::NAN),
                    None => p.shallow_clone().fill_(f64::NAN),
                };
            }
        })
    };
    let mut batch = tasks::build_with(&specs, Device::Cpu, None).unwrap();
    poison(batch.parameters(), Some(1));
    let mut agent = BatchedPolicyAgent::new(&net.actor, [1, 2, 3]);
    let traces = run_batched_episode(batch.as_mut(), &[cfg; 3], &mut agent).unwrap();
    for (i, spec) in specs.iter().enumerate() {
        let mut single = synthetic::build(spec, Device::Cpu).unwrap();
        if i == 1 {
            poison(single.parameters(), None);
        }
        let mut one = PolicyAgent::new(&net.actor, ActMode::Sample, 1 + i as u64);
        let expected = run_episode(single.as_mut(), &cfg, &mut one).unwrap();
        let got = &traces[i];
        assert_eq!(got.stopped_at, expected.stopped_at, "instance {i}");
        assert_eq!(got.train_losses.len(), expected.train_losses.len());
        assert_traces_close(
            &got.evals,
            &expected.evals,
            1e-3,
            &format!("instance {i} evals"),
        );
        assert_eq!(
            got.final_eval_loss.is_finite(),
            expected.final_eval_loss.is_finite()
        );
    }
    assert_eq!(traces[1].stopped_at, Some(0));
    assert!(traces[0].stopped_at.is_none() && traces[0].decisions.len() == 3);
}
