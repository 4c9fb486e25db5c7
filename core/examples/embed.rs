//! The smallest embedding of a frozen policy: a least-squares problem trained with the core's
//! reference inner optimizer, steered by a policy file.
//!
//!   cargo run -p lhopt-core --example embed -- policies/default.lhp

use lhopt_core::ciao::{self, CiaoState, Tensor};
use lhopt_core::{
    Controller, DecisionInputs, Error, Hyperparams, Mode, Preset, Restart, RunConfig,
    StepReductions, StepStatus, TensorReductions, WithPreset,
};

const N: usize = 64;

/// The training run, for whichever preset the policy file holds.
struct Train<'a> {
    policy: &'a [u8],
    cfg: RunConfig,
}

impl WithPreset for Train<'_> {
    type Output = Result<u64, Error>;

    fn run<const PRE: usize, const H: usize, const POST: usize>(self) -> Result<u64, Error> {
        // Built in place, then loaded: the policy's weights exist once on the stack.
        let mut ctrl = Controller::<PRE, H, POST>::holding(self.cfg, Hyperparams::INITIAL)?;
        let start = lhopt_core::read_header(self.policy)?.start();
        ctrl.load(self.policy, self.cfg, start, Mode::Greedy)?;
        Ok(train(&mut ctrl))
    }
}

/// Minimises 0.5 * sum_i a_i (x_i - 1)^2 with curvatures spread over two decades; returns the
/// number of optimizer steps taken.
fn train<const PRE: usize, const H: usize, const POST: usize>(
    ctrl: &mut Controller<PRE, H, POST>,
) -> u64 {
    let curvature: Vec<f32> = (0..N)
        .map(|i| 10f32.powf(2.0 * i as f32 / N as f32 - 1.0))
        .collect();
    let mut tensors = [Tensor::new(vec![0f32; N], false)];
    let mut opt = CiaoState::default();
    let mut previous = tensors[0].param.clone();
    let mut reductions = [TensorReductions::default()];
    let mut steps = 0;

    // Checked before each step: exactly T steps, whether or not K divides T.
    while !ctrl.is_finished() {
        let x = &mut tensors[0];
        let mut loss = 0.0;
        for ((g, p), a) in x.grad.iter_mut().zip(&x.param).zip(&curvature) {
            let d = p - 1.0;
            loss += 0.5 * a * d * d;
            *g = a * d;
        }
        let want = ctrl.wants_reductions();
        let outcome = ciao::step(
            &mut tensors,
            &ctrl.hyper(),
            &mut opt,
            want.then_some(&mut reductions[..]),
        )
        .expect("one reductions entry per tensor, all buffers of one length");
        steps += 1;
        let sampled = (want && outcome.applied()).then_some(StepReductions {
            tensors: &reductions,
            clipped: outcome.clipped(),
        });
        if ctrl.observe(loss, sampled) != StepStatus::DecisionDue {
            continue;
        }
        let x = &tensors[0].param;
        let norm = |a: &[f32]| a.iter().map(|v| v * v).sum::<f32>().sqrt();
        let moved: Vec<f32> = x.iter().zip(&previous).map(|(a, b)| a - b).collect();
        let inputs = DecisionInputs {
            param_norm: norm(x),
            displacement: norm(&moved),
            eval_loss: f32::NAN,
        };
        match ctrl.decide(&inputs) {
            Ok(decision) => {
                if decision.restart != Restart::None {
                    // A runtime with checkpoint registers saves, loads or swaps here, before
                    // the next step (and before a final evaluation after the last decision).
                    println!(
                        "restart request {:?} (this example keeps no registers)",
                        decision.restart
                    );
                }
                println!(
                    "step {:5}  loss {loss:.3e}  lr {:.2e}",
                    ctrl.observer().step(),
                    decision.hyper.lr
                );
            }
            // The hyperparameters are held; training goes on.
            Err(e) => println!("step {:5}  no decision: {e}", ctrl.observer().step()),
        }
        // Measured from where training resumes, after any restart.
        previous.copy_from_slice(&tensors[0].param);
    }
    steps
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: embed POLICY.lhp")?;
    let policy = std::fs::read(path)?;
    let cfg = RunConfig {
        total_steps: 2000,
        decisions: 40,
    };
    let preset = Preset::of_file(&policy)?;
    // Paper-sized controllers need more than the main thread's stack.
    let steps = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            preset.run(Train {
                policy: &policy,
                cfg,
            })
        })?
        .join()
        .map_err(|_| "the training thread panicked")??;
    println!("{steps} optimizer steps for T = {}", cfg.total_steps);
    Ok(())
}
