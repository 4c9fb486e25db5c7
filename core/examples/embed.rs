//! The smallest embedding of a frozen policy: a least-squares problem trained with the core's
//! reference inner optimizer, steered by a policy file.
//!
//!   cargo run -p lhopt-core --example embed -- policies/default.lhp

use lhopt_core::ciao::{self, CiaoState, ParamSlot, TensorState};
use lhopt_core::{
    Controller, DecisionInputs, FrozenPolicy, Hyperparams, Mode, Restart, RunConfig,
    StepReductions, StepStatus, TensorReductions,
};

const N: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: embed POLICY.lhp (a Tiny policy)")?;
    let policy = FrozenPolicy::decode(&std::fs::read(path)?)?;
    let cfg = RunConfig {
        total_steps: 2000,
        decisions: 40,
    };
    let mut ctrl: Controller<32, 32, 32> =
        Controller::new(policy, cfg, Hyperparams::INITIAL, Mode::Greedy)?;

    // Minimise 0.5 * sum_i a_i (x_i - 1)^2 with curvatures spread over two decades.
    let curvature: Vec<f32> = (0..N)
        .map(|i| 10f32.powf(2.0 * i as f32 / N as f32 - 1.0))
        .collect();
    let (mut x, mut g, mut m, mut v) = (vec![0f32; N], vec![0f32; N], vec![0f32; N], vec![0f32; N]);
    let (mut tensor, mut opt) = (TensorState::default(), CiaoState::default());
    let mut previous = x.clone();
    let mut reductions = [TensorReductions::default()];

    loop {
        let mut loss = 0.0;
        for i in 0..N {
            let d = x[i] - 1.0;
            loss += 0.5 * curvature[i] * d * d;
            g[i] = curvature[i] * d;
        }
        let want = ctrl.wants_reductions();
        let slot = ParamSlot {
            param: &mut x,
            grad: &mut g,
            m: &mut m,
            v: &mut v,
            state: &mut tensor,
            is_matrix: false,
        };
        let clipped = ciao::step(
            &mut [slot],
            &ctrl.hyper(),
            &mut opt,
            want.then_some(&mut reductions[..]),
        );
        let step_reductions = want.then_some(StepReductions {
            tensors: &reductions,
            clipped,
        });
        match ctrl.observe(loss, step_reductions) {
            StepStatus::Continue => {}
            StepStatus::Finished => break,
            StepStatus::DecisionDue => {
                let norm = |a: &[f32]| a.iter().map(|v| v * v).sum::<f32>().sqrt();
                let moved: Vec<f32> = x.iter().zip(&previous).map(|(a, b)| a - b).collect();
                let inputs = DecisionInputs {
                    param_norm: norm(&x),
                    displacement: norm(&moved),
                    eval_loss: f32::NAN,
                };
                let decision = ctrl.decide(&inputs);
                if decision.restart != Restart::None {
                    // A runtime with checkpoint registers saves, loads or swaps here.
                    println!(
                        "restart request {:?} (this example keeps no registers)",
                        decision.restart
                    );
                }
                previous.copy_from_slice(&x);
                println!(
                    "step {:5}  loss {loss:.3e}  lr {:.2e}",
                    ctrl.observer().step(),
                    decision.hyper.lr
                );
            }
        }
    }
    Ok(())
}
