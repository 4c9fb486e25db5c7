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
        stdout.contains("geometric-mean speedup, default"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out_dir.join("eval.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
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
