//! `lhopt-digits-mlp --policy FILE`: trains an MLP on the 8×8 digits twice from the same
//! initialisation and batches, once steered by the policy and once with the default
//! hyperparameters held fixed, and prints both loss curves and the policy's hyperparameter trace.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lhopt_core::{Hyperparams, Mode, RunConfig};
use lhopt_data::DataDir;
use lhopt_digits_mlp::data::Dataset;
use lhopt_digits_mlp::train::{RunLog, TrainConfig, train_fixed, train_steered};
use lhopt_embed::steer::{LoadError, load_any, policy_start};

/// Train an MLP on the 8x8 digits steered by a frozen LHOPT policy, against fixed defaults.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Frozen policy file (any preset).
    #[arg(long)]
    policy: PathBuf,
    /// Inner steps.
    #[arg(long, default_value_t = 2000)]
    steps: u64,
    /// Decisions in the run (100 = one every 1% of training).
    #[arg(long, default_value_t = 100)]
    decisions: u32,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Hidden layer widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    hidden: Vec<usize>,
    /// Seed of initialisation, data split and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not compute the eval loss at decisions (the policy then sees none).
    #[arg(long)]
    no_eval: bool,
    /// Train on generated digit-shaped data instead of the real digits (no download needed).
    #[arg(long)]
    synthetic: bool,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}; run scripts/fetch-data.sh first, or pass --synthetic")]
    Data(#[from] lhopt_data::Error),
    #[error("cannot read policy file {path}: {source}")]
    ReadPolicy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot load policy file {path}: {source}")]
    LoadPolicy { path: PathBuf, source: LoadError },
}

fn run(args: &Args) -> Result<(), RunError> {
    let data = if args.synthetic {
        Dataset::synthetic(1797, args.seed)
    } else {
        Dataset::from_images(&DataDir::from_env()?.digits()?, 0.2, args.seed)
    };
    let policy = std::fs::read(&args.policy).map_err(|source| RunError::ReadPolicy {
        path: args.policy.clone(),
        source,
    })?;
    let run_config = RunConfig {
        total_steps: args.steps,
        decisions: args.decisions,
    };
    let mut loaded =
        load_any(&policy, run_config, policy_start(&policy), Mode::Greedy).map_err(|source| {
            RunError::LoadPolicy {
                path: args.policy.clone(),
                source,
            }
        })?;
    let cfg = TrainConfig {
        hidden: args.hidden.clone(),
        batch: args.batch,
        steps: args.steps,
        seed: args.seed,
        eval_at_decisions: !args.no_eval,
    };
    println!(
        "digits MLP {}x{:?}x{}: {} train / {} eval examples, {} steps, batch {}, policy {:?} ({} decisions)",
        data.features,
        cfg.hidden,
        data.classes,
        data.train_y.len(),
        data.eval_y.len(),
        cfg.steps,
        cfg.batch,
        loaded.preset,
        args.decisions,
    );
    let fixed = train_fixed(&data, &cfg, Hyperparams::INITIAL);
    let steered = train_steered(&data, &cfg, loaded.controller.as_mut());
    print_curves(&fixed, &steered);
    print_trace(&steered);
    println!(
        "\nfinal eval      fixed defaults: loss {:.4}  accuracy {:.2}%\n                policy:         loss {:.4}  accuracy {:.2}%",
        fixed.final_eval_loss,
        100.0 * fixed.final_eval_accuracy,
        steered.final_eval_loss,
        100.0 * steered.final_eval_accuracy,
    );
    Ok(())
}

/// Train loss averaged over 20 equal windows, side by side.
fn print_curves(fixed: &RunLog, steered: &RunLog) {
    println!(
        "\ntrain loss (window means)\n{:>8} {:>10} {:>10}",
        "step", "fixed", "policy"
    );
    let n = fixed.train_loss.len();
    let window = n.div_ceil(20).max(1);
    let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
    for (i, (f, s)) in fixed
        .train_loss
        .chunks(window)
        .zip(steered.train_loss.chunks(window))
        .enumerate()
    {
        println!(
            "{:>8} {:>10.4} {:>10.4}",
            (i + 1) * window.min(n),
            mean(f),
            mean(s)
        );
    }
}

/// The hyperparameters after each decision.
fn print_trace(steered: &RunLog) {
    println!(
        "\nhyperparameter trace\n{:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  restart",
        "step", "lr", "1-beta1", "1-beta2", "eps", "wd", "clip", "clip_1-b", "lamb_1-b"
    );
    for d in &steered.decisions {
        let h = d.hyper;
        println!(
            "{:>6} {:>10.3e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.3} {:>9.2e} {:>9.2e}  {:?}",
            d.step,
            h.lr,
            h.ombeta1,
            h.ombeta2,
            h.eps,
            h.wd,
            h.clip_frac,
            h.clip_ombeta,
            h.lamb_ombeta,
            d.restart
        );
    }
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lhopt-digits-mlp: {e}");
            ExitCode::FAILURE
        }
    }
}
