//! Every task family on small generated data: it trains under CIAO at the initial
//! hyperparameters, it is a deterministic function of its spec, and the sampler and the dataset
//! plumbing behave.

use lhopt_core::Hyperparams;
use lhopt_data::DataDir;
use lhopt_trainer::optim::Ciao;
use lhopt_trainer::tasks::image::{Arch, ImageSet};
use lhopt_trainer::tasks::ncf::{Interactions, NcfModel};
use lhopt_trainer::tasks::{
    self, CellKind, Family, NormKind, Scale, Task, TaskConfig, TaskSpec, algorithmic, synthetic,
};
use tch::Device;

fn spec_with(family: Family, seed: u64, edit: impl FnOnce(&mut TaskConfig)) -> TaskSpec {
    let mut spec = tasks::sample(family, seed, Scale::Cpu);
    edit(&mut spec.config);
    spec
}

fn build(spec: &TaskSpec) -> Box<dyn Task> {
    synthetic::build(spec, Device::Cpu).unwrap()
}

/// `steps` CIAO steps at the initial hyperparameters; the training losses.
fn train(task: &mut dyn Task, ciao: &mut Ciao, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|_| {
            let loss = task.train_loss();
            for p in task.parameters() {
                p.shallow_clone().zero_grad();
            }
            loss.backward();
            ciao.step(task.parameters(), &Hyperparams::INITIAL, false);
            loss.double_value(&[])
        })
        .collect()
}

fn assert_trains(spec: TaskSpec) {
    tch::set_num_threads(1);
    let mut task = build(&spec);
    let mut ciao = Ciao::new(task.parameters());
    let before = task.eval_loss();
    let losses = train(task.as_mut(), &mut ciao, 50);
    let after = task.eval_loss();
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{spec:?}: losses {losses:?}"
    );
    assert!(
        after < before,
        "{spec:?}: eval loss {before} -> {after} after 50 steps"
    );
}

#[test]
fn noisy_quadratic_trains() {
    assert_trains(tasks::sample(Family::NoisyQuadratic, 1, Scale::Cpu));
}

#[test]
fn algorithmic_trains_with_every_cell_and_problem() {
    for (seed, problem, cell) in [
        (1, algorithmic::Problem::Parity, CellKind::Lstm),
        (2, algorithmic::Problem::Addition, CellKind::Gru),
        (3, algorithmic::Problem::Parity, CellKind::Rnn),
    ] {
        assert_trains(spec_with(Family::Algorithmic, seed, |c| {
            let TaskConfig::Algorithmic(c) = c else {
                unreachable!()
            };
            (c.problem, c.cell) = (problem, cell);
        }));
    }
}

#[test]
fn image_mlp_trains_with_batch_norm_and_dropout() {
    assert_trains(spec_with(Family::ImageMlp, 1, |c| {
        let TaskConfig::Image(c) = c else {
            unreachable!()
        };
        c.dataset = ImageSet::Digits;
        c.norm = NormKind::Batch;
        c.dropout = 0.2;
    }));
}

#[test]
fn image_cnn_trains_with_layer_norm_on_fashion_mnist_sized_images() {
    assert_trains(spec_with(Family::ImageCnn, 2, |c| {
        let TaskConfig::Image(c) = c else {
            unreachable!()
        };
        c.dataset = ImageSet::FashionMnist;
        c.norm = NormKind::Layer;
        c.arch = Arch::Cnn {
            conv_layers: 2,
            channels: 8,
        };
    }));
}

#[test]
fn text_rnn_trains() {
    assert_trains(spec_with(Family::TextRnn, 1, |c| {
        let TaskConfig::TextRnn(c) = c else {
            unreachable!()
        };
        c.cell = CellKind::Lstm;
    }));
}

#[test]
fn char_lm_trains() {
    assert_trains(tasks::sample(Family::CharLm, 1, Scale::Cpu));
}

#[test]
fn ncf_trains_both_models_and_reports_ranking_metrics() {
    for model in [NcfModel::Gmf, NcfModel::NeuMf] {
        let spec = spec_with(Family::Ncf, 1, |c| {
            let TaskConfig::Ncf(c) = c else {
                unreachable!()
            };
            c.model = model;
        });
        assert_trains(spec.clone());
        let mut task = build(&spec);
        let metrics = task.metrics();
        let names: Vec<&str> = metrics.iter().map(|m| m.0).collect();
        assert_eq!(names, ["hit_ratio@10", "ndcg@10"]);
        let (hr, ndcg) = (metrics[0].1, metrics[1].1);
        assert!(
            (0.0..=1.0).contains(&hr) && (0.0..=hr).contains(&ndcg),
            "{metrics:?}"
        );
    }
}

#[test]
fn ncf_split_holds_out_each_users_latest_rating_against_unseen_items() {
    let data = Interactions::from_ratings(&synthetic::ratings()).unwrap();
    assert_eq!(data.eval.len(), 120);
    assert_eq!(data.train.len(), 120 * 24);
    for (user, candidates) in &data.eval {
        assert_eq!(candidates.len(), 100);
        // The latest rating of the generated users is their highest item.
        let latest = *data.seen[*user as usize].iter().max().unwrap();
        assert_eq!(candidates[0], latest);
        assert!(!data.train.contains(&(*user, latest)));
        assert!(
            candidates[1..]
                .iter()
                .all(|i| !data.seen[*user as usize].contains(i))
        );
    }
}

#[test]
fn a_spec_builds_the_same_task_twice_and_evaluating_does_not_perturb_training() {
    tch::set_num_threads(1);
    for family in Family::ALL {
        let spec = tasks::sample(family, 42, Scale::Cpu);
        let run = |evaluate_between: bool| {
            let mut task = build(&spec);
            let mut ciao = Ciao::new(task.parameters());
            let mut losses = Vec::new();
            for _ in 0..3 {
                losses.extend(train(task.as_mut(), &mut ciao, 1));
                if evaluate_between {
                    task.eval_loss();
                }
            }
            (losses, task.eval_loss())
        };
        assert_eq!(run(false), run(false), "{family}");
        assert_eq!(
            run(false),
            run(true),
            "{family}: eval changed the training run"
        );
    }
}

#[test]
fn the_sampler_is_a_function_of_its_seed_and_narrows_on_cpu() {
    for family in Family::ALL {
        assert_eq!(
            tasks::sample(family, 9, Scale::Cpu),
            tasks::sample(family, 9, Scale::Cpu)
        );
        let distinct: std::collections::HashSet<String> = (0..20)
            .map(|s| tasks::sample(family, s, Scale::Cpu).key())
            .collect();
        assert_eq!(distinct.len(), 20, "{family}: keys must differ by seed");
    }
    let dims = |scale| {
        (0..200).map(
            move |s| match tasks::sample(Family::NoisyQuadratic, s, scale).config {
                TaskConfig::NoisyQuadratic(c) => c.dims,
                _ => unreachable!(),
            },
        )
    };
    assert!(dims(Scale::Cpu).all(|d| (10..=1000).contains(&d)));
    assert!(dims(Scale::Gpu).any(|d| d > 1000));
    for seed in 0..50 {
        let spec = tasks::sample_training(seed, Scale::Cpu);
        assert!(!spec.family.is_held_out());
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<TaskSpec>(&json).unwrap(), spec);
    }
}

#[test]
fn build_loads_every_dataset_from_the_cache() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::at(dir.path());
    synthetic::fill_data_dir(&data).unwrap();
    let mut specs: Vec<TaskSpec> = Family::ALL
        .iter()
        .map(|&f| tasks::sample(f, 3, Scale::Cpu))
        .collect();
    specs.push(spec_with(Family::ImageMlp, 3, |c| {
        let TaskConfig::Image(c) = c else {
            unreachable!()
        };
        c.dataset = ImageSet::FashionMnist;
    }));
    specs.push(spec_with(Family::ImageCnn, 3, |c| {
        let TaskConfig::Image(c) = c else {
            unreachable!()
        };
        c.dataset = ImageSet::Digits;
    }));
    for spec in specs {
        let mut task = tasks::build(&spec, Device::Cpu, &data).unwrap();
        assert!(task.eval_loss().is_finite(), "{spec:?}");
    }
}

#[test]
fn build_rejects_a_config_of_another_family_and_missing_data() {
    let mut spec = tasks::sample(Family::CharLm, 1, Scale::Cpu);
    spec.family = Family::Ncf;
    let empty = tempfile::tempdir().unwrap();
    let err = tasks::build(&spec, Device::Cpu, &DataDir::at(empty.path()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not match"), "{err}");
    let spec = tasks::sample(Family::CharLm, 1, Scale::Cpu);
    let err = tasks::build(&spec, Device::Cpu, &DataDir::at(empty.path()))
        .err()
        .unwrap();
    assert!(matches!(err, lhopt_trainer::Error::Data(_)), "{err}");
}
