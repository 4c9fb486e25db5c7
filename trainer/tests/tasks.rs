//! Every task family on small generated data: it trains under CIAO at the initial
//! hyperparameters, it is a deterministic function of its spec, and the sampler and the dataset
//! plumbing behave.

use lhopt_core::Hyperparams;
use lhopt_data::{DataDir, Email, Images, Rating, SpamGroup, Split};
use lhopt_trainer::optim::Ciao;
use lhopt_trainer::tasks::image::{Arch, ImageData, ImageSet};
use lhopt_trainer::tasks::lm::Corpus;
use lhopt_trainer::tasks::ncf::{Interactions, NcfModel};
use lhopt_trainer::tasks::text::{Document, TextData};
use lhopt_trainer::tasks::{
    self, Family, Scale, Task, TaskConfig, TaskSpec, algorithmic, image, lm, ncf, quadratic, text,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Device;

/// Ten class templates plus noise: separable, so a few steps already help.
fn images(side: usize, max_value: u8, n: usize, seed: u64) -> Images {
    let mut templates = ChaCha8Rng::seed_from_u64(99);
    let templates: Vec<Vec<f32>> = (0..10)
        .map(|_| {
            (0..side * side)
                .map(|_| templates.gen_range(0.0..1.0))
                .collect()
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
    let pixels = labels
        .iter()
        .flat_map(|&l| templates[l as usize].clone())
        .map(|t| {
            let x = 0.7 * t + 0.3 * rng.gen_range(0.0..1.0f32);
            (x * f32::from(max_value)).round() as u8
        })
        .collect();
    Images {
        n,
        rows: side,
        cols: side,
        max_value,
        pixels,
        labels,
    }
}

fn image_data(side: usize, max_value: u8) -> ImageData {
    ImageData {
        train: images(side, max_value, 600, 1),
        eval: images(side, max_value, 200, 2),
    }
}

const SPAM_WORDS: [&str; 6] = ["free", "money", "winner", "offer", "click", "cash"];
const HAM_WORDS: [&str; 6] = ["meeting", "project", "report", "lunch", "team", "code"];
const SHARED_WORDS: [&str; 4] = ["the", "and", "to", "you"];

fn emails(n: usize, seed: u64) -> Vec<Document> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let spam = rng.gen_bool(0.4);
            let own = if spam { &SPAM_WORDS } else { &HAM_WORDS };
            let len = rng.gen_range(5..60);
            let words: Vec<&str> = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.5) {
                        own[rng.gen_range(0..own.len())]
                    } else {
                        SHARED_WORDS[rng.gen_range(0..SHARED_WORDS.len())]
                    }
                })
                .collect();
            Document {
                text: words.join(" ").into_bytes(),
                spam,
            }
        })
        .collect()
}

fn text_corpus() -> Vec<u8> {
    let lines = [
        "to be or not to be, that is the question.\n",
        "all the world's a stage.\n",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    (0..800)
        .flat_map(|_| lines[rng.gen_range(0..2)].bytes())
        .collect()
}

/// Two groups of users, each rating items of its own parity.
fn ratings() -> Vec<Rating> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    for user in 1..=120u32 {
        let mut items = std::collections::BTreeSet::new();
        while items.len() < 25 {
            items.insert(2 * rng.gen_range(0..100u32) + user % 2 + 1);
        }
        for (t, item) in items.into_iter().enumerate() {
            out.push(Rating {
                user,
                item,
                rating: 4.0,
                timestamp: 1000 + t as u64,
            });
        }
    }
    out
}

fn spec_with(family: Family, seed: u64, edit: impl FnOnce(&mut TaskConfig)) -> TaskSpec {
    let mut spec = tasks::sample(family, seed, Scale::Cpu);
    edit(&mut spec.config);
    spec
}

/// Builds a task for `spec` from the generated data of its family.
fn build(spec: &TaskSpec) -> Box<dyn Task> {
    let dev = Device::Cpu;
    match &spec.config {
        TaskConfig::NoisyQuadratic(c) => Box::new(quadratic::Quadratic::new(spec.clone(), c, dev)),
        TaskConfig::Algorithmic(c) => Box::new(algorithmic::Algorithmic::new(spec.clone(), c, dev)),
        TaskConfig::Image(c) => {
            let data = match c.dataset {
                ImageSet::FashionMnist => image_data(28, 255),
                ImageSet::Digits => image_data(8, 16),
            };
            Box::new(image::ImageTask::new(spec.clone(), c, data, dev).unwrap())
        }
        TaskConfig::TextRnn(c) => {
            let data = TextData::split(emails(300, 3));
            Box::new(text::TextRnn::new(spec.clone(), c, data, dev).unwrap())
        }
        TaskConfig::CharLm(c) => {
            Box::new(lm::CharLm::new(spec.clone(), c, Corpus::split(&text_corpus()), dev).unwrap())
        }
        TaskConfig::Ncf(c) => {
            let data = Interactions::from_ratings(&ratings()).unwrap();
            Box::new(ncf::NcfTask::new(spec.clone(), c, data, dev).unwrap())
        }
    }
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
        (1, algorithmic::Problem::Parity, tasks::CellKind::Lstm),
        (2, algorithmic::Problem::Addition, tasks::CellKind::Gru),
        (3, algorithmic::Problem::Parity, tasks::CellKind::Rnn),
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
        c.norm = tasks::NormKind::Batch;
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
        c.norm = tasks::NormKind::Layer;
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
        c.cell = tasks::CellKind::Lstm;
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
    let data = Interactions::from_ratings(&ratings()).unwrap();
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
fn a_spec_builds_the_same_task_twice() {
    tch::set_num_threads(1);
    for family in Family::ALL {
        let spec = tasks::sample(family, 42, Scale::Cpu);
        let run = || {
            let mut task = build(&spec);
            let mut ciao = Ciao::new(task.parameters());
            let losses = train(task.as_mut(), &mut ciao, 3);
            (losses, task.eval_loss())
        };
        assert_eq!(run(), run(), "{family}");
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
    data.store_fashion_mnist(Split::Train, &images(28, 255, 100, 1))
        .unwrap();
    data.store_fashion_mnist(Split::Test, &images(28, 255, 50, 2))
        .unwrap();
    data.store_digits(&images(8, 16, 120, 3)).unwrap();
    data.store_shakespeare(&[("hamlet", text_corpus().as_slice())])
        .unwrap();
    let mail: Vec<Email> = emails(40, 4)
        .into_iter()
        .map(|d| {
            let group = if d.spam {
                SpamGroup::ALL[3]
            } else {
                SpamGroup::ALL[0]
            };
            Email {
                group,
                bytes: [b"Subject: hi\n\n".as_slice(), &d.text].concat(),
            }
        })
        .collect();
    data.store_spam_assassin(&mail).unwrap();
    data.store_movielens_100k(&ratings()).unwrap();
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
