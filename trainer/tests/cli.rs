//! The `lhopt` binary end to end on tiny tasks: outputs, the baseline cache and exit codes.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `lhopt args` with its data and baseline caches in `dir` (the data folder stays empty).
fn lhopt(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lhopt"))
        .args(args)
        .env("LHOPT_DATA", dir.join("data"))
        .env("LHOPT_CACHE", dir.join("cache"))
        .output()
        .expect("the lhopt binary starts")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

#[test]
fn run_prints_the_trace_and_writes_plot_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (png, json) = (dir.path().join("run.png"), dir.path().join("trace.json"));
    let out = lhopt(
        dir.path(),
        &[
            "run",
            "--family",
            "quadratic",
            "--steps",
            "40",
            "--decisions",
            "4",
            "--plot",
            png.to_str().unwrap(),
            "--trace",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("final eval loss"));
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(trace["train_losses"].as_array().unwrap().len(), 40);
    assert_eq!(trace["evals"].as_array().unwrap().len(), 5);
}

#[test]
fn eval_scores_against_a_cached_grid() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("eval");
    let args = [
        "eval",
        "--family",
        "quadratic",
        "--steps",
        "8",
        "--decisions",
        "4",
        "--workers",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = lhopt(dir.path(), &args);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("geometric-mean speedup vs grid, default"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out_dir.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    // The default against its own longer run: the same loss at T, so exactly 1.
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(&row[row.len() - 2..], ["measured", "1"], "{csv}");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache/baselines"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1, "one task folder");
    let task_dir = cached[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::read_dir(task_dir).unwrap().count(),
        105,
        "3 budgets x 5 lrs x 7 schedules"
    );
    // A second evaluation finds the grid in the cache and reports the same table.
    let again = lhopt(dir.path(), &args);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);
    // Several policies go into one table, one row each, told apart when their names clash.
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/default.lhp");
    let (a, b) = (dir.path().join("a.lhp"), dir.path().join("b.lhp"));
    std::fs::copy(shipped, &a).unwrap();
    std::fs::copy(shipped, &b).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let both = lhopt(
        dir.path(),
        &[&args[..], &["--policy", a, "--policy", b]].concat(),
    );
    assert_eq!(code(&both), 0, "{}", String::from_utf8_lossy(&both.stderr));
    let csv = std::fs::read_to_string(out_dir.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let names: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap())
        .collect();
    assert_eq!(names[0], "default", "{csv}");
    assert!(
        names[1].contains("a.lhp") && names[2].contains("b.lhp"),
        "{csv}"
    );
    // `run` steers with one policy only.
    let two = lhopt(
        dir.path(),
        &["run", "--family", "quadratic", "--policy", a, "--policy", b],
    );
    assert_eq!(code(&two), 2, "{}", String::from_utf8_lossy(&two.stderr));
    // Budgets must be positive multiples of T.
    let bad = lhopt(
        dir.path(),
        &[&args[..], &["--default-budgets", "1,-2"]].concat(),
    );
    assert_eq!(code(&bad), 2, "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("positive multiples of T"));
}

#[test]
fn eval_adds_the_alternatives_as_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("eval");
    let args = [
        "eval",
        "--family",
        "quadratic",
        "--steps",
        "40",
        "--decisions",
        "4",
        "--workers",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
        "--alternatives",
        "schedule-free,prodigy,prodigy-cosine",
    ];
    let out = lhopt(dir.path(), &args);
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in ["default", "schedule-free", "prodigy", "prodigy-cosine"] {
        for against in ["grid", "default"] {
            let line = format!("geometric-mean speedup vs {against}, {name}: ");
            assert!(stdout.contains(&line), "{line} missing from\n{stdout}");
        }
    }
    let csv = std::fs::read_to_string(out_dir.join("eval.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[4]).collect();
    assert_eq!(
        names,
        ["default", "schedule-free", "prodigy", "prodigy-cosine"],
        "{csv}"
    );
    // Every alternative trained (a finite loss below the start's) and each its own way.
    let trace = dir.path().join("trace.json");
    let fixed = lhopt(
        dir.path(),
        &[
            "run",
            "--family",
            "quadratic",
            "--steps",
            "1",
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&fixed), 0);
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let start = trace["evals"][0][1].as_f64().unwrap();
    let losses: Vec<f64> = rows.iter().map(|r| r[5].parse().unwrap()).collect();
    for (name, loss) in names.iter().zip(&losses) {
        assert!(
            loss.is_finite() && *loss < start,
            "{name}: {loss}, {start} at the start"
        );
    }
    for i in 1..losses.len() {
        for j in i + 1..losses.len() {
            assert_ne!(losses[i], losses[j], "{} and {}", names[i], names[j]);
        }
    }
    for row in &rows {
        for kind in [row[7], row[9]] {
            assert!(["measured", "below", "above"].contains(&kind), "{csv}");
        }
    }

    // From the cached grid, the same table again: the alternatives are deterministic too.
    let again = lhopt(dir.path(), &args);
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);

    // Unknown and repeated names are usage errors that say what to write instead.
    let unknown = lhopt(
        dir.path(),
        &[&args[..11], &["--alternatives", "adam"]].concat(),
    );
    assert_eq!(code(&unknown), 2);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("schedule-free, prodigy"));
    let twice = lhopt(
        dir.path(),
        &[&args[..11], &["--alternatives", "prodigy,prodigy"]].concat(),
    );
    assert_eq!(code(&twice), 2);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("twice"));
    let help = lhopt(dir.path(), &["eval", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("prodigy-cosine"));
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(code(&lhopt(d, &["run", "--family", "nope"])), 2);
    assert_eq!(
        code(&lhopt(
            d,
            &["run", "--family", "quadratic", "--hyper", "lr=5"]
        )),
        2
    );
    assert_eq!(
        code(&lhopt(
            d,
            &[
                "run",
                "--family",
                "quadratic",
                "--policy",
                "/nonexistent.lhp"
            ]
        )),
        4
    );
    let missing_data = lhopt(d, &["run", "--family", "image-mlp"]);
    assert_eq!(
        code(&missing_data),
        3,
        "{}",
        String::from_utf8_lossy(&missing_data.stderr)
    );
    assert!(String::from_utf8_lossy(&missing_data.stderr).contains("fetch-data.sh"));
}

/// A meta-training run small enough for a test: noisy quadratics only, short episodes, a warm
/// start on two configurations (closed-loop teacher), tiny minibatches, so one PPO update needs
/// a handful of episodes.
const TINY_META_TRAIN: &str = r#"
updates = 1
plot_every = 1
[imitation]
tasks = 2
peaks = [1e-2, 3e-2]
steps = 3
batch = 2
dagger_rounds = 1
dagger_steps = 2
back_off = 0.5
[ppo]
minibatch = 16
minibatches = 2
buffer = 64
chunk_len = 4
[rollout]
workers = 1
families = ["NoisyQuadratic"]
max_steps = 48
decisions = [4, 6]
min_interval = 8
"#;

#[test]
fn meta_train_writes_its_outputs_and_a_finished_run_can_be_extended() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY_META_TRAIN).unwrap();
    let run = dir.path().join("run");
    let run_arg = run.to_str().unwrap();
    let metrics_lines = || {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count()
    };

    // The warm start alone, then PPO from its checkpoint.
    let out = lhopt(
        dir.path(),
        &[
            "imitate",
            "--quiet",
            "--config",
            config.to_str().unwrap(),
            "--out",
            run_arg,
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["imitation.lhp", "imitation.jsonl", "checkpoint.bin"] {
        assert!(run.join(file).is_file(), "{file} is missing");
    }
    assert!(!run.join("metrics.jsonl").exists());
    let imitation = std::fs::read_to_string(run.join("imitation.jsonl")).unwrap();
    assert!(imitation.contains("\"kind\":\"teachers\""), "{imitation}");
    // One DAgger round: the clone ran both configurations itself, then 2 more cloning steps.
    assert!(imitation.contains("\"kind\":\"student\""), "{imitation}");
    assert!(imitation.contains("\"step\":5"), "{imitation}");
    // PPO may begin from the warm start with other PPO settings, but not other imitation ones.
    let resume_with = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let args = ["meta-train", "--quiet", "--resume", "--out", run_arg];
        lhopt(
            dir.path(),
            &[&args[..], &["--config", path.to_str().unwrap()]].concat(),
        )
    };
    let out = resume_with(
        "other-teachers.toml",
        TINY_META_TRAIN.replace("tasks = 2", "tasks = 3"),
    );
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[imitation]"));
    let out = resume_with(
        "slower-ppo.toml",
        TINY_META_TRAIN.replace("[ppo]", "[ppo]\nlearning_rate = 3e-4"),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("learning_rate = 0.0003"), "{saved}");
    // Once PPO has started, the configuration is the run's own.
    let out = resume_with("late.toml", TINY_META_TRAIN.to_string());
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("once PPO has started"));
    for file in [
        "config.toml",
        "checkpoint.bin",
        "progress.png",
        "policy.lhp",
    ] {
        assert!(run.join(file).is_file(), "{file} is missing");
    }
    assert_eq!(metrics_lines(), 1);

    // Starting over in the same folder is refused; raising the total continues the run.
    let again = lhopt(dir.path(), &["meta-train", "--quiet", "--out", run_arg]);
    assert_eq!(
        code(&again),
        2,
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let out = lhopt(
        dir.path(),
        &[
            "meta-train",
            "--quiet",
            "--resume",
            "--updates",
            "2",
            "--out",
            run_arg,
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(metrics_lines(), 2);
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(saved.contains("updates = 2"), "{saved}");

    let inspect = lhopt(
        dir.path(),
        &["inspect", run.join("policy.lhp").to_str().unwrap()],
    );
    assert_eq!(
        code(&inspect),
        0,
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

#[test]
fn a_checkpoint_of_another_feature_set_exports_but_does_not_resume() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("v7");
    std::fs::create_dir(&run).unwrap();
    let warm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/v7-seed1-warm");
    std::fs::copy(warm.join("checkpoint.bin"), run.join("checkpoint.bin")).unwrap();
    let run_arg = run.to_str().unwrap();
    let resume = |extra: &[&str]| {
        let args = ["meta-train", "--quiet", "--resume", "--out", run_arg];
        lhopt(dir.path(), &[&args[..], extra].concat())
    };
    // Written before checkpoints recorded it, the feature set must be stated ...
    let out = resume(&[]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--feature-set N"));
    // ... and PPO, whose rollouts compute the current one, refuses feature set 2 ...
    let out = resume(&["--feature-set", "2"]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trained on feature set 2"), "{err}");
    assert!(!run.join("metrics.jsonl").exists());
    // ... while the export keeps it.
    let policy = dir.path().join("v7.lhp");
    let args = [
        "export",
        "--checkpoint",
        &format!("{run_arg}/checkpoint.bin"),
    ];
    let out = lhopt(
        dir.path(),
        &[
            &args[..],
            &["--feature-set", "2", "--out", policy.to_str().unwrap()],
        ]
        .concat(),
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let inspect = lhopt(dir.path(), &["inspect", policy.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&inspect.stdout).contains("feature set:  2 "));
}
