//! Inner steps per second of every task family on one CPU thread, next to the same model trained
//! by a plain PyTorch Python loop (`steps_torch.py`), as a ratio.
//!
//! Run: `source <(scripts/setup-libtorch.sh --env) && cargo bench -p lhopt-trainer --bench steps`
//! (the Python side uses `$LHOPT_TORCH_PYTHON`, else `$VIRTUAL_ENV/bin/python`). Optional
//! arguments: seconds per measurement (default 2), a substring of the task names to run (`batched`
//! runs only the batched table).
//!
//! A step is: next minibatch, forward, zero gradients, backward, optimizer step, loss read back.
//! The Rust side is measured with CIAO (reductions every 4th step, as the controller samples them)
//! and with AdamW; PyTorch runs `torch.optim.AdamW`.
//!
//! A second table has the batched rows (issue 10): K instances of one configuration trained as
//! one tensor program by batched CIAO, in instance steps per second (batched steps × K), against
//! the unbatched CIAO path and against K PyTorch models trained by `torch.func` (vmap of
//! grad_and_value over functional_call, AdamW; `steps_vmap.py`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lhopt_core::Hyperparams;
use lhopt_trainer::batched::{self, ciao::BatchedCiao};
use lhopt_trainer::optim::{AdamW, Ciao};
use lhopt_trainer::tasks::image::{Arch, Config as ImageConfig, ImageSet};
use lhopt_trainer::tasks::{
    Activation, CellKind, Family, NormKind, Task, TaskConfig, TaskSpec, algorithmic, lm, ncf,
    quadratic, synthetic, text,
};
use tch::{Device, Kind};

/// Mid-range CPU-scale configurations, one or two per family.
fn specs() -> Vec<(&'static str, TaskSpec)> {
    let spec = |family, config| TaskSpec {
        family,
        seed: 1,
        config,
        steps: 1000,
    };
    let image = |arch, norm| ImageConfig {
        dataset: ImageSet::FashionMnist,
        arch,
        activation: Activation::Relu,
        norm,
        dropout: 0.0,
        batch: 128,
        eval_examples: 2000,
    };
    vec![
        (
            "quadratic 1000 dims",
            spec(
                Family::NoisyQuadratic,
                TaskConfig::NoisyQuadratic(quadratic::Config {
                    dims: 1000,
                    conditioning: 1e3,
                    noise: 1.0,
                }),
            ),
        ),
        (
            "parity LSTM 64, len 16, batch 64",
            spec(
                Family::Algorithmic,
                TaskConfig::Algorithmic(algorithmic::Config {
                    problem: algorithmic::Problem::Parity,
                    cell: CellKind::Lstm,
                    hidden: 64,
                    layers: 1,
                    length: 16,
                    batch: 64,
                }),
            ),
        ),
        (
            "MLP 784-256-256-10, batch 128",
            spec(
                Family::ImageMlp,
                TaskConfig::Image(image(
                    Arch::Mlp {
                        hidden_layers: 2,
                        width: 256,
                    },
                    NormKind::None,
                )),
            ),
        ),
        (
            "MLP 784-256-256-10 + BN, batch 128",
            spec(
                Family::ImageMlp,
                TaskConfig::Image(image(
                    Arch::Mlp {
                        hidden_layers: 2,
                        width: 256,
                    },
                    NormKind::Batch,
                )),
            ),
        ),
        (
            "CNN 2x16 maps 28x28, batch 128",
            spec(
                Family::ImageCnn,
                TaskConfig::Image(image(
                    Arch::Cnn {
                        conv_layers: 2,
                        channels: 16,
                    },
                    NormKind::None,
                )),
            ),
        ),
        (
            "text GRU emb 64 hid 64, bptt 32, batch 64",
            spec(
                Family::TextRnn,
                TaskConfig::TextRnn(text::Config {
                    cell: CellKind::Gru,
                    embedding: 64,
                    hidden: 64,
                    bptt: 32,
                    batch: 64,
                    vocab: 2000,
                }),
            ),
        ),
        (
            "LM 2x64 wide, 4 heads, 32x64 tokens",
            spec(
                Family::CharLm,
                TaskConfig::CharLm(lm::Config {
                    layers: 2,
                    width: 64,
                    heads: 4,
                    bptt: 64,
                    batch: 32,
                    eval_windows: 64,
                }),
            ),
        ),
        (
            "NeuMF 32 factors, 2 MLP layers, 256x5",
            spec(
                Family::Ncf,
                TaskConfig::Ncf(ncf::Config {
                    model: ncf::NcfModel::NeuMf,
                    factors: 32,
                    mlp_layers: 2,
                    batch: 256,
                    negatives: 4,
                }),
            ),
        ),
    ]
}

/// The batched rows: the three batched families at the mid-range sizes above, and each at the
/// small end of its CPU range (where libtorch's per-op cost dominates), the MLP on 8×8 inputs.
fn batched_specs() -> Vec<(&'static str, TaskSpec)> {
    let spec = |family, config| TaskSpec {
        family,
        seed: 1,
        config,
        steps: 1000,
    };
    let mut chosen: Vec<(&'static str, TaskSpec)> = specs()
        .into_iter()
        .filter(|(_, s)| {
            batched::tasks::is_batchable(s)
                && !matches!(&s.config, TaskConfig::Image(c) if c.norm != NormKind::None)
        })
        .collect();
    chosen.extend([
        (
            "quadratic 100 dims",
            spec(
                Family::NoisyQuadratic,
                TaskConfig::NoisyQuadratic(quadratic::Config {
                    dims: 100,
                    conditioning: 1e3,
                    noise: 1.0,
                }),
            ),
        ),
        (
            "parity GRU 16, len 8, batch 32",
            spec(
                Family::Algorithmic,
                TaskConfig::Algorithmic(algorithmic::Config {
                    problem: algorithmic::Problem::Parity,
                    cell: CellKind::Gru,
                    hidden: 16,
                    layers: 1,
                    length: 8,
                    batch: 32,
                }),
            ),
        ),
        (
            "MLP 64-32-10 on 8x8 Fashion-MNIST, batch 64",
            spec(
                Family::ImageMlp,
                TaskConfig::Image(ImageConfig {
                    dataset: ImageSet::FashionMnist8,
                    arch: Arch::Mlp {
                        hidden_layers: 1,
                        width: 32,
                    },
                    activation: Activation::Relu,
                    norm: NormKind::None,
                    dropout: 0.0,
                    batch: 64,
                    eval_examples: 2000,
                }),
            ),
        ),
    ]);
    chosen
}

/// Instances per batch in the batched rows.
const BATCH_SIZES: [usize; 4] = [1, 8, 32, 128];

/// Instance steps per second (batched steps × K) of K instances of `spec` on generated data,
/// trained by batched CIAO (reductions every 4th step).
fn batched_rate(spec: &TaskSpec, k: usize, seconds: f64) -> Rates {
    let specs: Vec<TaskSpec> = (0..k as u64)
        .map(|i| TaskSpec {
            seed: spec.seed + i,
            ..spec.clone()
        })
        .collect();
    let images = match &spec.config {
        TaskConfig::Image(c) => Some(synthetic::image_data(c.dataset)),
        _ => None,
    };
    let mut task =
        batched::tasks::build_with(&specs, Device::Cpu, images).expect("bench configs build");
    let mut ciao = BatchedCiao::new(task.parameters());
    let h = vec![Hyperparams::INITIAL; k];
    let mut step = |task: &mut dyn batched::tasks::BatchedTask, i: u64| {
        let losses = task.train_losses();
        for p in task.parameters() {
            p.shallow_clone().zero_grad();
        }
        losses.sum(Kind::Float).backward();
        ciao.step(task.parameters(), &h, i.is_multiple_of(4));
        Vec::<f32>::try_from(&losses).expect("losses")
    };
    timed(3, 5, seconds, k, |i| {
        step(task.as_mut(), i);
    })
}

enum Optimizer {
    Ciao(Ciao),
    AdamW(AdamW),
}

/// Steps per wall-clock second and per CPU second of `spec` on generated data, optimised by
/// CIAO or AdamW.
fn rust_rate(spec: &TaskSpec, use_ciao: bool, seconds: f64) -> Rates {
    let mut task = synthetic::build(spec, Device::Cpu).expect("bench configs build");
    let mut opt = if use_ciao {
        Optimizer::Ciao(Ciao::new(task.parameters()))
    } else {
        Optimizer::AdamW(AdamW::new(task.parameters()))
    };
    let mut step = |task: &mut dyn Task, i: u64| {
        let loss = task.train_loss();
        for p in task.parameters() {
            p.shallow_clone().zero_grad();
        }
        loss.backward();
        match &mut opt {
            Optimizer::Ciao(c) => {
                c.step(
                    task.parameters(),
                    &Hyperparams::INITIAL,
                    i.is_multiple_of(4),
                );
            }
            Optimizer::AdamW(a) => a.step(task.parameters(), 1e-3),
        }
        f32::try_from(&loss).expect("scalar loss")
    };
    timed(5, 20, seconds, 1, |i| {
        step(task.as_mut(), i);
    })
}

/// Runs `step(0..warmup)` untimed, then `step` for at least `min_steps` steps and `seconds`;
/// the rates count `per_step` inner steps per call (the instances of a batched step).
fn timed(
    warmup: u64,
    min_steps: u64,
    seconds: f64,
    per_step: usize,
    mut step: impl FnMut(u64),
) -> Rates {
    for i in 0..warmup {
        step(i);
    }
    let (start, cpu_start, budget) = (
        Instant::now(),
        cpu_seconds(),
        Duration::from_secs_f64(seconds),
    );
    let mut steps = 0;
    while steps < min_steps || start.elapsed() < budget {
        step(steps);
        steps += 1;
    }
    let inner = (per_step as u64 * steps) as f64;
    Rates {
        wall: inner / start.elapsed().as_secs_f64(),
        cpu: inner / (cpu_seconds() - cpu_start),
    }
}

/// Steps per wall-clock second and per CPU second (the latter is robust to other load).
#[derive(Clone, Copy)]
struct Rates {
    wall: f64,
    cpu: f64,
}

impl Rates {
    const ZERO: Rates = Rates {
        wall: 0.0,
        cpu: 0.0,
    };

    fn max(self, other: Rates) -> Rates {
        Rates {
            wall: self.wall.max(other.wall),
            cpu: self.cpu.max(other.cpu),
        }
    }
}

/// Measurements of each kind per task; the best is reported.
const REPEATS: usize = 3;

/// CPU time of this process (user + system) from /proc, in seconds (Linux; 10 ms ticks).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux only)");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn python() -> Option<PathBuf> {
    std::env::var_os("LHOPT_TORCH_PYTHON")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("VIRTUAL_ENV").map(|v| PathBuf::from(v).join("bin/python")))
        .filter(|p| p.exists())
}

fn torch_rate(python: &PathBuf, spec: &TaskSpec, seconds: f64) -> Result<Rates, String> {
    python_rate(python, "steps_torch.py", spec, seconds, None)
}

/// Instance steps per second of the `torch.func` peer training `k` models of `spec`.
fn vmap_rate(python: &PathBuf, spec: &TaskSpec, k: usize, seconds: f64) -> Result<Rates, String> {
    let r = python_rate(python, "steps_vmap.py", spec, seconds, Some(k))?;
    let k = k as f64;
    Ok(Rates {
        wall: r.wall * k,
        cpu: r.cpu * k,
    })
}

fn python_rate(
    python: &PathBuf,
    script: &str,
    spec: &TaskSpec,
    seconds: f64,
    k: Option<usize>,
) -> Result<Rates, String> {
    let script = format!("{}/benches/{script}", env!("CARGO_MANIFEST_DIR"));
    let json = serde_json::to_string(spec).expect("specs serialise");
    let mut args = vec![script, json, seconds.to_string()];
    args.extend(k.map(|k| k.to_string()));
    let out = Command::new(python)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rates: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match rates[..] {
        [wall, cpu] => Ok(Rates { wall, cpu }),
        _ => Err(format!("unexpected output {text:?}")),
    }
}

fn main() {
    tch::set_num_threads(1);
    // `cargo bench` passes `--bench`; a number is the seconds per measurement, a word filters tasks.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let seconds = args
        .iter()
        .find_map(|a| a.parse::<f64>().ok())
        .unwrap_or(2.0);
    let filter = args
        .iter()
        .find(|a| a.parse::<f64>().is_err())
        .cloned()
        .unwrap_or_default();
    // `batched` alone runs only the batched table.
    let (filter, only_batched) = if filter == "batched" {
        (String::new(), true)
    } else {
        (filter, false)
    };
    let python = python();
    if python.is_none() {
        eprintln!(
            "no PyTorch python found (set LHOPT_TORCH_PYTHON or source setup-libtorch.sh --env); Rust only"
        );
    }
    if only_batched {
        batched_table(&filter, seconds, python.as_ref());
        return;
    }
    println!(
        "inner steps per second on one CPU thread, {seconds} s per measurement: wall clock, and per CPU"
    );
    println!(
        "second of the process in brackets; best of {REPEATS} interleaved runs; ratios of the CPU rates.\n"
    );
    println!(
        "| task | Rust CIAO | Rust AdamW | PyTorch AdamW | CIAO / PyTorch | AdamW / PyTorch |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let cell = |r: Rates| format!("{:.1} ({:.1})", r.wall, r.cpu);
    for (name, spec) in specs()
        .into_iter()
        .filter(|(name, _)| name.contains(&filter))
    {
        // Interleaved repeats, keeping the best of each: other load only ever slows a run down.
        let (mut ciao, mut adamw, mut torch) = (
            Rates::ZERO,
            Rates::ZERO,
            python.as_ref().map(|_| Ok(Rates::ZERO)),
        );
        for _ in 0..REPEATS {
            ciao = ciao.max(rust_rate(&spec, true, seconds));
            adamw = adamw.max(rust_rate(&spec, false, seconds));
            if let (Some(p), Some(Ok(best))) = (&python, &torch) {
                torch = Some(torch_rate(p, &spec, seconds).map(|r| best.max(r)));
            }
        }
        let (torch_cell, ratios) = match torch {
            Some(Ok(t)) => (
                cell(t),
                format!("{:.2} | {:.2}", ciao.cpu / t.cpu, adamw.cpu / t.cpu),
            ),
            Some(Err(e)) => {
                eprintln!("{name}: PyTorch run failed: {e}");
                ("failed".into(), "- | -".into())
            }
            None => ("-".into(), "- | -".into()),
        };
        println!(
            "| {name} | {} | {} | {torch_cell} | {ratios} |",
            cell(ciao),
            cell(adamw)
        );
    }
    batched_table(&filter, seconds, python.as_ref());
}

/// The batched rows, each K against the unbatched CIAO path and the `torch.func` peer measured in
/// the same run (interleaved repeats, best kept).
fn batched_table(filter: &str, seconds: f64, python: Option<&PathBuf>) {
    println!(
        "\nbatched: K instances of one configuration, instance steps per second (batched steps × K)"
    );
    println!("on one CPU thread, wall clock (per CPU second); ratios of the CPU rates.\n");
    println!(
        "| task | K | unbatched CIAO | batched CIAO | batched / unbatched | PyTorch vmap AdamW | batched / vmap |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let cell = |r: Rates| format!("{:.0} ({:.0})", r.wall, r.cpu);
    for (name, spec) in batched_specs()
        .into_iter()
        .filter(|(name, _)| name.contains(filter))
    {
        let mut single = Rates::ZERO;
        let mut rows = vec![(Rates::ZERO, python.map(|_| Ok(Rates::ZERO))); BATCH_SIZES.len()];
        for _ in 0..REPEATS {
            single = single.max(rust_rate(&spec, true, seconds));
            for (&k, (batched, torch)) in BATCH_SIZES.iter().zip(&mut rows) {
                *batched = batched.max(batched_rate(&spec, k, seconds));
                if let (Some(p), Some(Ok(best))) = (python, &*torch) {
                    *torch = Some(vmap_rate(p, &spec, k, seconds).map(|r| best.max(r)));
                }
            }
        }
        for (&k, (batched, torch)) in BATCH_SIZES.iter().zip(rows) {
            let (torch_cell, vs_torch) = match torch {
                Some(Ok(t)) => (cell(t), format!("{:.2}", batched.cpu / t.cpu)),
                Some(Err(e)) => {
                    eprintln!("{name} K={k}: PyTorch vmap run failed: {e}");
                    ("failed".into(), "-".into())
                }
                None => ("-".into(), "-".into()),
            };
            println!(
                "| {name} | {k} | {} | {} | {:.1} | {torch_cell} | {vs_torch} |",
                cell(single),
                cell(batched),
                batched.cpu / single.cpu
            );
        }
    }
}
