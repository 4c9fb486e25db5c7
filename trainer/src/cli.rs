//! The `lhopt` command line: argument definitions (clap derive) and one function per subcommand.
//! A new subcommand is a variant of [`Command`] with its `Args` struct and one arm in [`execute`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::ProgressBar;
use lhopt_core::{FeatureSet, Hyperparams, Mode};
use lhopt_data::DataDir;

use crate::alternatives::Alternative;
use crate::baseline::{self, Cache, Grid};
use crate::env::{PolicyFile, Trace};
use crate::error::{Error, Result};
use crate::eval::{self, Controller};
use crate::meta_train;
use crate::plot::{self, PlottedRun};
use crate::pool::Pool;
use crate::progress;
use crate::tasks::{self, Family, Scale, TaskSpec};

const LONG_ABOUT: &str = "\
lhopt: learned hyperparameter optimizers (LHOPT, Almeida et al. 2021) on libtorch.

A small recurrent policy steers the hyperparameters of an Adam-family optimizer (CIAO) a few
dozen times per training run. This tool runs inner training tasks under a policy file or fixed
hyperparameters, computes the tuned AdamW baseline grid (5 learning rates x 7 schedules at budgets
T/2, T, 2T) and reports speedups against it.

Examples:
  lhopt tasks --family quadratic,image-mlp --seeds 3     list sampled task configurations
  lhopt run --family quadratic --seed 0 --plot run.png   one run at the default hyperparameters
  lhopt run --family char-lm --policy policies/default.lhp --plot run.png
  lhopt run --family algorithmic --hyper lr=3e-3,wd=0   fixed hyperparameters
  lhopt baseline --family quadratic --seeds 2            compute and cache the AdamW grids
  lhopt eval --policy policies/default.lhp --family ncf --seeds 3 --out eval/
  lhopt eval --family ncf --seeds 3 --alternatives schedule-free,prodigy,prodigy-cosine

Environment: LHOPT_DATA (datasets, default ~/.cache/lhopt/data; fetch with scripts/fetch-data.sh),
LHOPT_CACHE (baseline results, default ~/.cache/lhopt).

Exit codes: 0 success; 1 runtime error; 2 usage error (bad arguments); 3 missing or corrupt
dataset; 4 unusable policy file.";

/// The `lhopt` command line.
#[derive(Debug, Parser)]
#[command(name = "lhopt", version, about = "Learned hyperparameter optimizers: run, baseline and evaluate", long_about = LONG_ABOUT)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Parallel worker threads, each with one libtorch thread [default: one per core].
    #[arg(long, global = true)]
    pub workers: Option<usize>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List task families and sampled task configurations.
    Tasks(TasksArgs),
    /// Train one task under a policy file or fixed hyperparameters; print (and plot) the trace.
    Run(RunArgs),
    /// Compute (or load from the cache) the 105-run AdamW grid of tasks and print the best runs.
    Baseline(BaselineArgs),
    /// Speedup table of a policy, of the untuned default and of the optimizers users pick instead
    /// (Schedule-Free AdamW, Prodigy) against the AdamW grid and against the untuned default.
    Eval(EvalArgs),
    /// Meta-train a policy: imitation warm start, then PPO over the task distribution (resumable).
    MetaTrain(MetaTrainArgs),
    /// Only the imitation warm start of a new meta-training run: writes the run folder with
    /// imitation.lhp and a checkpoint that `meta-train --resume` continues with PPO.
    Imitate(ImitateArgs),
    /// Write a meta-training checkpoint's policy as a frozen policy file.
    Export(ExportArgs),
    /// Print a policy file's header, sizes and card.
    Inspect(InspectArgs),
}

/// `lhopt meta-train`.
#[derive(Debug, Args)]
pub struct MetaTrainArgs {
    /// Run folder: config.toml, metrics.jsonl, progress.png, checkpoint.bin, policy.lhp.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML configuration (see configs/meta-train-cpu.toml) [default: built-in CPU defaults].
    /// With --resume, only for a warm start at update 0 (`lhopt imitate`): the PPO and rollout
    /// settings to begin PPO with (the imitation section, preset and seed must stay the same).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// PPO updates to train up to, overriding the config; with --resume, raise it to continue a
    /// run that has finished (its checkpoint and metrics carry on).
    #[arg(long, value_name = "N")]
    pub updates: Option<u64>,
    /// With --resume: the feature set the checkpoint's policy is trained on, for a checkpoint
    /// written before checkpoints recorded it (2 before lhopt commit 79fd43b, 3 from it on).
    #[arg(long, value_name = "N", value_parser = parse_feature_set)]
    pub feature_set: Option<FeatureSet>,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
}

/// `lhopt imitate`.
#[derive(Debug, Args)]
pub struct ImitateArgs {
    /// Run folder (as for meta-train): config.toml, imitation.jsonl, imitation.lhp,
    /// checkpoint.bin.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML configuration; its `[imitation]` section sets the phase [default: built-in defaults].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
}

/// `lhopt export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A meta-training checkpoint (RUN/checkpoint.bin).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The policy file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Name stored in the file [default: the run's configured name].
    #[arg(long)]
    pub name: Option<String>,
    /// The feature set the checkpoint's policy is trained on, for a checkpoint written before
    /// checkpoints recorded it (2 before lhopt commit 79fd43b, 3 from it on) [default: the one
    /// the checkpoint records].
    #[arg(long, value_name = "N", value_parser = parse_feature_set)]
    pub feature_set: Option<FeatureSet>,
}

/// `lhopt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The policy file.
    pub policy: PathBuf,
}

/// Which tasks: families × seeds at a scale.
#[derive(Debug, Args)]
pub struct TaskSelection {
    /// Task families, comma-separated: quadratic, algorithmic, image-mlp, image-cnn, text-rnn,
    /// char-lm, ncf.
    #[arg(short, long = "family", value_delimiter = ',', value_parser = parse_family, required = true)]
    pub families: Vec<Family>,
    /// Seeds per family, counting up from --first-seed.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Task size ranges: cpu (seconds per run) or gpu (the paper's ranges).
    #[arg(long, value_enum, default_value_t = ScaleArg::Cpu)]
    pub scale: ScaleArg,
    /// Override every task's step count T.
    #[arg(long)]
    pub steps: Option<u64>,
}

impl TaskSelection {
    /// The sampled specs, family by family.
    pub fn specs(&self) -> Result<Vec<TaskSpec>> {
        if self.steps == Some(0) {
            return Err(Error::Usage("--steps must be at least 1".into()));
        }
        Ok(self
            .families
            .iter()
            .flat_map(|&family| {
                (self.first_seed..self.first_seed + self.seeds).map(move |seed| (family, seed))
            })
            .map(|(family, seed)| {
                let mut spec = tasks::sample(family, seed, self.scale.into());
                spec.steps = self.steps.unwrap_or(spec.steps);
                spec
            })
            .collect())
    }
}

/// `--scale`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScaleArg {
    /// Narrow ranges: seconds per run on one CPU thread.
    Cpu,
    /// The paper's full ranges: minutes per run on a GPU.
    Gpu,
}

impl From<ScaleArg> for Scale {
    fn from(s: ScaleArg) -> Scale {
        match s {
            ScaleArg::Cpu => Scale::Cpu,
            ScaleArg::Gpu => Scale::Gpu,
        }
    }
}

fn parse_family(name: &str) -> std::result::Result<Family, String> {
    Family::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Family::ALL.iter().map(|f| f.name()).collect();
        format!("unknown family '{name}'; choose from {}", names.join(", "))
    })
}

fn parse_feature_set(text: &str) -> std::result::Result<FeatureSet, String> {
    text.parse::<u16>()
        .ok()
        .and_then(FeatureSet::from_version)
        .ok_or_else(|| {
            format!(
                "unknown feature set '{text}'; this build computes 1 to {}",
                lhopt_core::FEATURE_SET_VERSION
            )
        })
}

/// `lhopt tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Families to sample from [default: all].
    #[arg(short, long = "family", value_delimiter = ',', value_parser = parse_family)]
    pub families: Vec<Family>,
    /// Sampled configurations per family.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Task size ranges.
    #[arg(long, value_enum, default_value_t = ScaleArg::Cpu)]
    pub scale: ScaleArg,
    /// Print full specs as JSON lines instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// A policy file and how it picks actions.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Frozen policy file (lhopt export). `eval` takes it repeatedly to compare policies in one
    /// table (e.g. policies/v1.lhp beside a new one); `run` takes one.
    #[arg(long = "policy")]
    pub policies: Vec<PathBuf>,
    /// Sample the policy's actions with this seed instead of taking the most likely ones.
    #[arg(long, requires = "policies")]
    pub sample: Option<u64>,
    /// Decisions per run (capped at T).
    #[arg(long, default_value_t = 32)]
    pub decisions: u32,
}

impl PolicyArgs {
    /// The policy files, read and checked. Two policies with the same name are told apart by
    /// their file names, so every table row and legend says which is which.
    fn read(&self) -> Result<Vec<PolicyFile>> {
        let mode = self
            .sample
            .map_or(Mode::Greedy, |seed| Mode::Sample { seed });
        let mut files = self
            .policies
            .iter()
            .map(|path| PolicyFile::read(path, mode))
            .collect::<Result<Vec<_>>>()?;
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        for f in &mut files {
            if names.iter().filter(|n| **n == f.name).count() > 1 {
                f.name = format!("{} ({})", f.name, f.path.display());
            }
        }
        Ok(files)
    }

    /// At most one policy file (for commands that run one controller).
    fn read_one(&self) -> Result<Option<PolicyFile>> {
        let mut files = self.read()?;
        if files.len() > 1 {
            return Err(Error::Usage(
                "this command runs one policy; pass --policy once (eval compares several)".into(),
            ));
        }
        Ok(files.pop())
    }
}

fn parse_alternative(name: &str) -> std::result::Result<Alternative, String> {
    Alternative::from_name(name).ok_or_else(|| {
        let names: Vec<_> = Alternative::ALL.iter().map(|a| a.name()).collect();
        format!(
            "unknown optimizer '{name}'; choose from {}",
            names.join(", ")
        )
    })
}

/// `--hyper` name=value pairs, applied over a run's starting hyperparameters.
#[derive(Clone, Debug)]
pub struct HyperOverrides(Vec<(usize, f32)>);

impl HyperOverrides {
    /// `base` with the given fields replaced; an error when the result is out of bounds.
    fn apply(&self, base: Hyperparams) -> Result<Hyperparams> {
        let mut values = base.to_array();
        for &(i, value) in &self.0 {
            values[i] = value;
        }
        let h = Hyperparams::from_array(values);
        if h.clamped() != h {
            return Err(Error::Usage(format!(
                "--hyper is out of bounds (or not finite): {h:?}; bounds: {:?}",
                lhopt_core::BOUNDS
            )));
        }
        Ok(h)
    }
}

fn parse_hyper(text: &str) -> std::result::Result<HyperOverrides, String> {
    let mut pairs = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("'{pair}' is not name=value"))?;
        let i = Hyperparams::NAMES
            .iter()
            .position(|n| *n == name.trim())
            .ok_or_else(|| {
                format!(
                    "unknown hyperparameter '{name}'; names: {}",
                    Hyperparams::NAMES.join(" ")
                )
            })?;
        let value = value
            .trim()
            .parse()
            .map_err(|_| format!("'{value}' is not a number"))?;
        pairs.push((i, value));
    }
    Ok(HyperOverrides(pairs))
}

/// `lhopt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task family.
    #[arg(short, long, value_parser = parse_family)]
    pub family: Family,
    /// Task seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Task size ranges.
    #[arg(long, value_enum, default_value_t = ScaleArg::Cpu)]
    pub scale: ScaleArg,
    /// Override the task's step count T.
    #[arg(long)]
    pub steps: Option<u64>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Starting (or, without --policy, fixed) hyperparameters as name=value pairs, e.g.
    /// lr=3e-3,wd=0; names: lr ombeta1 ombeta2 eps wd clip_frac clip_ombeta lamb_ombeta; the
    /// others keep their starting values: the policy's start (its file's start lr, every other
    /// value initial) with --policy, the initial values without.
    #[arg(long, value_parser = parse_hyper)]
    pub hyper: Option<HyperOverrides>,
    /// Hide the eval loss from the policy (it still appears in the trace).
    #[arg(long)]
    pub hide_eval: bool,
    /// Write a PNG of the loss curves and hyperparameters here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write the full trace (observations included) as JSON here.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// `lhopt baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    #[command(flatten)]
    pub tasks: TaskSelection,
    #[command(flatten)]
    pub grid: GridArgs,
}

/// Which budgets the AdamW grid measures.
#[derive(Debug, Args)]
pub struct GridArgs {
    /// Grid budgets as multiples of each task's T, comma-separated; speedups outside
    /// [smallest, largest] are reported as bounds.
    #[arg(long, value_delimiter = ',', default_values_t = baseline::BUDGET_FACTORS)]
    pub budgets: Vec<f64>,
}

impl GridArgs {
    fn grid(&self) -> Result<Grid> {
        Grid::new(Cache::from_env()?, &self.budgets)
    }
}

/// `lhopt eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub tasks: TaskSelection,
    /// The policies to evaluate (--policy, repeated); the untuned default (CIAO at its initial
    /// hyperparameters, held constant) is always evaluated beside them.
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub grid: GridArgs,
    /// Also evaluate the optimizers users pick instead of tuning a schedule, each at the
    /// defaults its PyPI package publishes, comma-separated:
    /// schedule-free (Schedule-Free AdamW: lr 2.5e-3, warmup over the first 2% of T, evaluated
    /// at its averaged point x); prodigy (Prodigy: lr 1, d0 1e-6, step size estimated on the
    /// fly); prodigy-cosine (Prodigy with its lr on half a cosine from 1 to 0 over T).
    #[arg(long, value_delimiter = ',', value_parser = parse_alternative, value_name = "NAMES")]
    pub alternatives: Vec<Alternative>,
    /// Also evaluate CIAO on the imitation teacher's hand schedule (lr ×2 per decision from
    /// --schedule-start-lr up to PEAK, then a linear decay to 0 by the end, everything else held),
    /// one row per peak, comma-separated (e.g. 1e-2,3e-2,1e-1): what the warm start clones.
    #[arg(long, value_delimiter = ',', value_name = "PEAKS")]
    pub schedules: Vec<f32>,
    /// The --schedules rows run closed loop, as the imitation teacher does (`imitation.back_off`):
    /// they keep their best point in a checkpoint (lowest eval loss; lowest training loss where
    /// the eval loss is hidden); when the interval's mean training loss is more than RISE in log
    /// above the saved one, the checkpoint is reloaded, the lr halves and the peak drops to match;
    /// in the last tenth of the run the checkpoint is restored wherever the eval loss is behind
    /// it. Default: open loop.
    #[arg(long, value_name = "RISE", requires = "schedules")]
    pub schedule_back_off: Option<f32>,
    /// The --schedules rows start at this lr (every other hyperparameter at its initial value)
    /// and climb from there.
    #[arg(long, default_value_t = Hyperparams::INITIAL.lr)]
    pub schedule_start_lr: f32,
    /// The --schedules rows hold their peak and decay linearly to 0 over this final share of
    /// the run (1: decay over the whole run from the peak on; 0.2: hold, then cool down over
    /// the last fifth)
    #[arg(long, default_value_t = 1.0, requires = "schedules")]
    pub schedule_cooldown: f32,
    /// Budgets, as multiples of each task's T, at which the untuned default is measured for the
    /// "vs default" column (one run to the largest; outside the range only a bound is reported).
    #[arg(long, value_delimiter = ',', default_values_t = eval::DEFAULT_BUDGET_FACTORS)]
    pub default_budgets: Vec<f64>,
    /// Folder for eval.csv, eval.json and one PNG per task.
    #[arg(long, default_value = "eval-out")]
    pub out: PathBuf,
}

/// Runs the parsed command line.
pub fn execute(cli: Cli) -> Result<()> {
    let workers = cli.workers;
    match cli.command {
        Command::Tasks(args) => list_tasks(&args),
        Command::Run(args) => run(&args, pool(workers)?),
        Command::Baseline(args) => run_baselines(&args, pool(workers)?),
        Command::Eval(args) => run_eval(&args, pool(workers)?),
        Command::MetaTrain(args) => {
            // `None` on the rollout ranks of an MPI job: rank 0 reports the run.
            let start = if args.resume {
                meta_train::Start::Resume {
                    feature_set: args.feature_set,
                }
            } else {
                meta_train::Start::Fresh
            };
            let Some(ckpt) = crate::distributed::meta_train(
                &args.out,
                args.config.as_deref(),
                start,
                args.updates,
                pool(workers)?,
                !args.quiet,
            )?
            else {
                return Ok(());
            };
            eprintln!(
                "{} updates, {} episodes, {:.2} h; policy written to {}",
                ckpt.learner.version,
                ckpt.progress.episodes,
                ckpt.progress.seconds / 3600.0,
                args.out.join(meta_train::POLICY_FILE).display()
            );
            Ok(())
        }
        Command::Imitate(args) => {
            meta_train::run(
                &args.out,
                args.config.as_deref(),
                meta_train::Start::Fresh,
                None,
                meta_train::Phases::ImitationOnly,
                pool(workers)?,
                !args.quiet,
            )?;
            eprintln!(
                "warm start written: {} (policy), {} (metrics); continue with PPO: \
                 lhopt meta-train --out {} --resume",
                args.out.join(meta_train::IMITATION_POLICY_FILE).display(),
                args.out.join(crate::imitate::IMITATION_FILE).display(),
                args.out.display()
            );
            Ok(())
        }
        Command::Export(args) => {
            let out = meta_train::export_checkpoint(
                &args.checkpoint,
                &args.out,
                args.name.as_deref(),
                args.feature_set,
            )?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Command::Inspect(args) => {
            let bytes = std::fs::read(&args.policy).map_err(|source| Error::Io {
                path: args.policy.clone(),
                source,
            })?;
            let text = crate::export::describe(&bytes).map_err(|e| Error::Policy {
                path: args.policy.clone(),
                reason: e.to_string(),
            })?;
            println!("{text}");
            Ok(())
        }
    }
}

/// The process exit code for an error (documented in `lhopt --help`).
pub fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Usage(_) | Error::InvalidSpec(_) => 2,
        Error::Data(_) | Error::BadData { .. } => 3,
        Error::Policy { .. } => 4,
        _ => 1,
    }
}

fn pool(workers: Option<usize>) -> Result<Pool> {
    if workers == Some(0) {
        return Err(Error::Usage("--workers must be at least 1".into()));
    }
    Ok(Pool::new(workers, DataDir::from_env()?))
}

fn list_tasks(args: &TasksArgs) -> Result<()> {
    let families = if args.families.is_empty() {
        Family::ALL.to_vec()
    } else {
        args.families.clone()
    };
    for family in families {
        if !args.json {
            let held_out = if family.is_held_out() {
                " (held out from meta-training)"
            } else {
                ""
            };
            println!("{family}{held_out}");
        }
        for seed in 0..args.seeds {
            let spec = tasks::sample(family, seed, args.scale.into());
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string(&spec).expect("a TaskSpec always serialises")
                );
            } else {
                let config =
                    serde_json::to_string(&spec.config).expect("a TaskConfig always serialises");
                println!("  seed {seed:>3}  T {:>6}  {config}", spec.steps);
            }
        }
    }
    Ok(())
}

fn run(args: &RunArgs, pool: Pool) -> Result<()> {
    let mut spec = tasks::sample(args.family, args.seed, args.scale.into());
    spec.steps = args.steps.unwrap_or(spec.steps);
    let policy = args.policy.read_one()?;
    let base = policy
        .as_ref()
        .map_or(Hyperparams::INITIAL, |file| file.header.start());
    let initial = match &args.hyper {
        Some(overrides) => overrides.apply(base)?,
        None => base,
    };
    let controller = match policy {
        Some(file) => Controller::Policy {
            file: Box::new(file),
            initial,
        },
        None => Controller::Fixed(initial),
    };
    let label = controller.name();
    eprintln!(
        "task {} (T = {}), steered by {label}",
        spec.key(),
        spec.steps
    );
    let bar = spinner("training");
    let mut traces = pool.run(vec![()], &bar, |()| {
        let mut task = pool.build(&spec)?;
        controller.run(
            task.as_mut(),
            spec.steps,
            args.policy.decisions,
            args.hide_eval,
        )
    })?;
    bar.finish_and_clear();
    let trace = traces.pop().expect("one job, one trace");
    print_trace(&trace, initial);
    if let Some(path) = &args.trace {
        let json = serde_json::to_string_pretty(&trace).expect("a trace always serialises");
        std::fs::write(path, json).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(path) = &args.plot {
        let runs = [PlottedRun {
            label,
            trace: &trace,
            initial: Some(initial),
        }];
        plot::write_png(path, &spec.key(), &plot::trace_panels(&runs, Vec::new()), 2)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

fn print_trace(trace: &Trace, initial: Hyperparams) {
    if trace.decisions.is_empty() {
        println!("{:>8} {:>12}", "step", "eval loss");
        for (step, loss) in &trace.evals {
            println!("{step:>8} {loss:>12.5e}");
        }
        println!("hyperparameters (fixed): {initial:?}");
    } else {
        println!(
            "{:>8} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9}",
            "step",
            "train loss",
            "eval loss",
            "lr",
            "wd",
            "eps",
            "1-beta1",
            "1-beta2",
            "clip",
            "restart"
        );
        for d in &trace.decisions {
            let h = &d.hyper;
            println!(
                "{:>8} {:>12.5e} {:>12.5e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>7.3} {:>9}",
                d.step,
                d.train_loss,
                d.eval_loss,
                h.lr,
                h.wd,
                h.eps,
                h.ombeta1,
                h.ombeta2,
                h.clip_frac,
                format!("{:?}", d.restart)
            );
        }
    }
    if trace.nonfinite_steps > 0 {
        println!(
            "{} steps had a non-finite training loss and were skipped",
            trace.nonfinite_steps
        );
    }
    if let Some(step) = trace.stopped_at {
        println!("stopped at step {step}: the model diverged and nothing could restore it");
    }
    println!("final eval loss: {:.6e}", trace.final_eval_loss);
    for (name, value) in &trace.metrics {
        println!("{name}: {value:.4}");
    }
}

fn run_baselines(args: &BaselineArgs, pool: Pool) -> Result<()> {
    let specs = args.tasks.specs()?;
    let grid = args.grid.grid()?;
    let bar = progress_bar("baseline runs");
    let grids = grid.curves(&specs, &pool, &bar)?;
    bar.finish_and_clear();
    println!(
        "{:<40} {:>7} {:>12} {:>8} {:<10}",
        "task", "budget", "best loss", "lr", "schedule"
    );
    for (spec, grid) in specs.iter().zip(&grids) {
        for p in &grid.points {
            println!(
                "{:<40} {:>7} {:>12.5e} {:>8.0e} {:<10}",
                spec.key(),
                p.budget,
                p.loss,
                p.lr,
                p.schedule.name()
            );
        }
    }
    eprintln!("cached under {}", grid.cache.root().display());
    Ok(())
}

fn run_eval(args: &EvalArgs, pool: Pool) -> Result<()> {
    let specs = args.tasks.specs()?;
    let grid = args.grid.grid()?;
    baseline::check_budget_factors(&args.default_budgets)?;
    let mut controllers = vec![Controller::Fixed(Hyperparams::INITIAL)];
    controllers.extend(
        args.policy
            .read()?
            .into_iter()
            .map(|file| Controller::Policy {
                initial: file.header.start(),
                file: Box::new(file),
            }),
    );
    for (i, &alternative) in args.alternatives.iter().enumerate() {
        if args.alternatives[..i].contains(&alternative) {
            let name = alternative.name();
            return Err(Error::Usage(format!("--alternatives names {name} twice")));
        }
        controllers.push(Controller::Alternative(alternative));
    }
    if let Some(rise) = args
        .schedule_back_off
        .filter(|r| !(r.is_finite() && *r >= 0.0))
    {
        return Err(Error::Usage(format!(
            "--schedule-back-off wants a finite rise of at least 0, got {rise}"
        )));
    }
    let start = Hyperparams {
        lr: args.schedule_start_lr,
        ..Hyperparams::INITIAL
    };
    if start.clamped() != start {
        return Err(Error::Usage(format!(
            "--schedule-start-lr wants a learning rate within {:?}, got {}",
            lhopt_core::BOUNDS[0],
            args.schedule_start_lr
        )));
    }
    if !(args.schedule_cooldown > 0.0 && args.schedule_cooldown <= 1.0) {
        return Err(Error::Usage(format!(
            "--schedule-cooldown wants a share of the run in (0, 1], got {}",
            args.schedule_cooldown
        )));
    }
    for &peak in &args.schedules {
        if !(peak.is_finite() && peak > 0.0) {
            return Err(Error::Usage(format!(
                "--schedules wants positive learning rates, got {peak}"
            )));
        }
        controllers.push(Controller::Schedule {
            peak,
            back_off: args.schedule_back_off.unwrap_or(f32::INFINITY),
            start,
            cooldown: args.schedule_cooldown,
        });
    }
    let bars = progress::multi();
    let grid_bar = bars.add(progress_bar("baseline runs"));
    let run_bar = bars.add(progress_bar("evaluated runs"));
    let (report, traces) = eval::evaluate(
        &specs,
        &controllers,
        args.policy.decisions,
        &pool,
        eval::References {
            grid: &grid,
            default_factors: &args.default_budgets,
        },
        &grid_bar,
        &run_bar,
    )?;
    bars.clear().ok();
    print!("{}", report.table());
    report.write(&args.out, &specs, &controllers, &traces)?;
    eprintln!(
        "wrote eval.csv, eval.json and one PNG per task to {}",
        args.out.display()
    );
    Ok(())
}

fn progress_bar(what: &str) -> ProgressBar {
    progress::bar(0, "{msg:>16} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
        .with_message(what.to_owned())
}

fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
