//! Episodes on a tiny deterministic task with scripted agents.

use lhopt_core::action::NUM_HEADS;
use tch::{Device, Kind};

use super::*;
use crate::tasks::{self, Family, Scale, TaskSpec};

/// A deterministic bowl: loss = Σ (w ⊙ (θ − 1))² over a 3×4 matrix and a 4-vector, the same at
/// every step, so any two runs from equal states stay equal. `poison_at` makes that training
/// call return NaN; with `poison_params` it also overwrites the parameters with NaN first.
struct Bowl {
    spec: TaskSpec,
    params: Vec<Tensor>,
    weights: Vec<Tensor>,
    calls: u64,
    poison_at: Option<u64>,
    poison_params: bool,
}

impl Bowl {
    fn new() -> Bowl {
        let spec = tasks::sample(Family::NoisyQuadratic, 0, Scale::Cpu);
        let opts = (Kind::Float, Device::Cpu);
        let params = vec![
            Tensor::from_slice(&[
                0.5f32, -1.0, 2.0, 0.0, 1.5, 3.0, -2.0, 0.25, 0.1, 0.9, -0.4, 1.2,
            ])
            .view([3, 4])
            .set_requires_grad(true),
            Tensor::from_slice(&[2.0f32, -0.5, 0.0, 1.0]).set_requires_grad(true),
        ];
        let weights = vec![
            Tensor::linspace(0.5, 2.0, 12, opts).view([3, 4]),
            Tensor::linspace(1.0, 3.0, 4, opts),
        ];
        Bowl {
            spec,
            params,
            weights,
            calls: 0,
            poison_at: None,
            poison_params: false,
        }
    }

    fn loss(&self) -> Tensor {
        let terms: Vec<Tensor> = self
            .params
            .iter()
            .zip(&self.weights)
            .map(|(p, w)| ((p - 1.0) * w).square().sum(Kind::Float))
            .collect();
        Tensor::stack(&terms, 0).sum(Kind::Float)
    }
}

impl Task for Bowl {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }
    fn parameters(&self) -> &[Tensor] {
        &self.params
    }
    fn train_loss(&mut self) -> Tensor {
        self.calls += 1;
        if self.poison_at == Some(self.calls) {
            if self.poison_params {
                let _guard = tch::no_grad_guard();
                for p in &self.params {
                    let _ = p.shallow_clone().fill_(f64::NAN);
                }
            }
            return self.loss() * f64::NAN;
        }
        self.loss()
    }
    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        self.loss().double_value(&[])
    }
}

/// Plays `script` (one action per decision), then holds.
struct Script {
    actions: Vec<Action>,
    next: usize,
    seen: Vec<Vec<f32>>,
    /// What [`Agent::see_eval_loss`] told it before each decision.
    evals_told: Vec<f32>,
}

impl Script {
    fn new(actions: Vec<Action>) -> Script {
        Script {
            actions,
            next: 0,
            seen: Vec::new(),
            evals_told: Vec::new(),
        }
    }
}

impl Agent for Script {
    fn reset(&mut self) {
        self.next = 0;
        self.seen.clear();
        self.evals_told.clear();
    }
    fn see_eval_loss(&mut self, eval_loss: f32) {
        self.evals_told.push(eval_loss);
    }
    fn act(&mut self, obs: &[f32; OBS_DIM]) -> Action {
        self.seen.push(obs.to_vec());
        let a = self.actions.get(self.next).copied().unwrap_or(Action::HOLD);
        self.next += 1;
        a
    }
}

fn restart(r: Restart) -> Action {
    let mut a = Action::HOLD;
    a.choices[NUM_HEADS - 1] = r.to_choice();
    a
}

fn double_lr() -> Action {
    let mut a = Action::HOLD;
    a.choices[0] = 6; // lr × 2
    a
}

fn config(total_steps: u64, decisions: u32) -> EpisodeConfig {
    EpisodeConfig {
        total_steps,
        decisions,
        initial: Hyperparams::INITIAL,
        hide_eval: false,
    }
}

fn values(tensors: &[Tensor]) -> Vec<Vec<f32>> {
    tensors
        .iter()
        .map(|t| Vec::<f32>::try_from(t.detach().view([-1])).unwrap())
        .collect()
}

#[test]
fn decisions_happen_every_interval_and_evals_at_each() {
    let mut agent = Script::new(vec![double_lr()]);
    let trace = run_episode(&mut Bowl::new(), &config(42, 4), &mut agent).unwrap();
    // I = ⌊42/4⌋ = 10: decisions after steps 10, 20, 30, 40; the last two steps run on.
    assert_eq!(
        trace.decisions.iter().map(|d| d.step).collect::<Vec<_>>(),
        [10, 20, 30, 40]
    );
    assert_eq!(trace.train_losses.len(), 42);
    assert_eq!(
        trace.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 10, 20, 30, 40, 42]
    );
    assert_eq!(agent.seen.len(), 4);
    assert_eq!(trace.decisions[0].hyper.lr, 2.0 * Hyperparams::INITIAL.lr);
    assert_eq!(trace.decisions[1].hyper.lr, trace.decisions[0].hyper.lr);
    assert!((trace.decisions[1].progress - 20.0 / 42.0).abs() < 1e-6);
    assert!(
        trace.final_eval_loss < trace.evals[0].1,
        "the bowl's loss must fall"
    );
    assert_eq!(trace.stopped_at, None);
}

#[test]
fn a_hidden_eval_loss_is_still_recorded_but_not_observed() {
    let mut shown_agent = Script::new(vec![]);
    let shown = run_episode(&mut Bowl::new(), &config(20, 2), &mut shown_agent).unwrap();
    // Shown: the agent is told each decision's eval loss before it acts.
    let recorded: Vec<f32> = shown.decisions.iter().map(|d| d.eval_loss as f32).collect();
    assert_eq!(shown_agent.evals_told, recorded);
    let mut agent = Script::new(vec![]);
    let hidden_cfg = EpisodeConfig {
        hide_eval: true,
        ..config(20, 2)
    };
    let hidden = run_episode(&mut Bowl::new(), &hidden_cfg, &mut agent).unwrap();
    assert_eq!(shown.decisions[1].eval_loss, hidden.decisions[1].eval_loss);
    assert_ne!(shown.decisions[1].obs, hidden.decisions[1].obs);
    // Hidden: not told either.
    assert_eq!(agent.evals_told.len(), 2);
    assert!(agent.evals_told.iter().all(|e| e.is_nan()));
}

#[test]
fn load_restores_parameters_and_optimizer_state_exactly() {
    let mut bowl = Bowl::new();
    let params = shallow_copies(bowl.parameters());
    let mut ciao = Ciao::new(&params);
    let mut registers: [Option<Snapshot>; 3] = Default::default();
    let h = Hyperparams::INITIAL;
    let step = |ciao: &mut Ciao, bowl: &mut Bowl| {
        forward_backward(bowl);
        ciao.step(&params, &h, false);
    };
    step(&mut ciao, &mut bowl);
    apply_restart(Restart::Save(1), &mut registers, &mut ciao, &params, &[]);
    let saved = values(&params);
    step(&mut ciao, &mut bowl);
    let after_one = values(&params);
    step(&mut ciao, &mut bowl);
    assert_ne!(values(&params), saved);

    apply_restart(Restart::Load(1), &mut registers, &mut ciao, &params, &[]);
    assert_eq!(values(&params), saved);
    // Same state, same gradient: the step repeats bit for bit only if m, v and the rest came back.
    step(&mut ciao, &mut bowl);
    assert_eq!(values(&params), after_one);
}

#[test]
fn swap_exchanges_the_current_state_with_the_register() {
    let mut bowl = Bowl::new();
    let params = shallow_copies(bowl.parameters());
    let mut ciao = Ciao::new(&params);
    let mut registers: [Option<Snapshot>; 3] = Default::default();
    forward_backward(&mut bowl);
    ciao.step(&params, &Hyperparams::INITIAL, false);
    apply_restart(Restart::Save(2), &mut registers, &mut ciao, &params, &[]);
    let saved = values(&params);
    forward_backward(&mut bowl);
    ciao.step(&params, &Hyperparams::INITIAL, false);
    let current = values(&params);

    apply_restart(Restart::Swap(2), &mut registers, &mut ciao, &params, &[]);
    assert_eq!(values(&params), saved);
    apply_restart(Restart::Swap(2), &mut registers, &mut ciao, &params, &[]);
    assert_eq!(values(&params), current);
}

#[test]
fn an_episode_that_saves_and_loads_records_it_and_loading_empty_is_a_no_op() {
    let script = vec![
        restart(Restart::Load(0)),
        restart(Restart::Save(0)),
        restart(Restart::Load(0)),
    ];
    let trace = run_episode(&mut Bowl::new(), &config(30, 3), &mut Script::new(script)).unwrap();
    let restarts: Vec<Restart> = trace.decisions.iter().map(|d| d.restart).collect();
    assert_eq!(
        restarts,
        [Restart::None, Restart::Save(0), Restart::Load(0)]
    );
    // Loading at step 30 what was saved at step 20 brings back the eval loss of step 20.
    assert_eq!(trace.final_eval_loss, trace.decisions[1].eval_loss);
}

#[test]
fn a_nan_loss_is_skipped_and_the_episode_continues() {
    let mut bowl = Bowl {
        poison_at: Some(15),
        ..Bowl::new()
    };
    let trace = run_episode(&mut bowl, &config(40, 4), &mut Script::new(vec![])).unwrap();
    assert_eq!(trace.nonfinite_steps, 1);
    assert!(trace.train_losses[14].is_nan());
    assert_eq!(trace.decisions.len(), 4);
    assert!(
        trace.decisions[1].train_loss.is_nan(),
        "the interval with the NaN reports it"
    );
    assert!(trace.final_eval_loss.is_finite());
    assert_eq!(trace.stopped_at, None);
}

#[test]
fn diverged_parameters_end_the_episode_unless_a_register_can_restore_them() {
    let poisoned = || Bowl {
        poison_at: Some(15),
        poison_params: true,
        ..Bowl::new()
    };
    let lost = run_episode(&mut poisoned(), &config(40, 4), &mut Script::new(vec![])).unwrap();
    assert_eq!(lost.stopped_at, Some(14));
    assert_eq!(lost.train_losses.len(), 15);
    assert!(lost.final_eval_loss.is_nan());

    let script = vec![restart(Restart::Save(0)), restart(Restart::Load(0))];
    let saved = run_episode(&mut poisoned(), &config(40, 4), &mut Script::new(script)).unwrap();
    assert_eq!(saved.stopped_at, None);
    assert_eq!(saved.decisions.len(), 4);
    assert!(saved.decisions[1].eval_loss.is_nan());
    assert!(
        saved.final_eval_loss.is_finite(),
        "the load at step 20 restored the model"
    );
}

#[test]
fn fixed_runs_evaluate_where_asked_and_stop_at_a_nan() {
    let trace = run_fixed(&mut Bowl::new(), 30, Hyperparams::INITIAL, &[0, 10, 10, 50]).unwrap();
    assert_eq!(
        trace.evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 10, 30]
    );
    assert!(trace.decisions.is_empty());

    let mut bowl = Bowl {
        poison_at: Some(5),
        ..Bowl::new()
    };
    let stopped = run_fixed(&mut bowl, 30, Hyperparams::INITIAL, &[]).unwrap();
    assert_eq!(stopped.stopped_at, Some(4));
    assert_eq!(stopped.train_losses.len(), 5);
    assert!(
        stopped.final_eval_loss.is_finite(),
        "the update was skipped, the model is intact"
    );
}

/// Writes a core policy with all-zero weights (uniform logits) to a temporary file.
fn neutral_policy_file(dir: &std::path::Path) -> std::path::PathBuf {
    let net = lhopt_core::Tiny::neutral();
    let policy = lhopt_core::FrozenPolicy::new(net, "neutral", "test policy").unwrap();
    let mut buf = vec![0u8; lhopt_core::FrozenPolicy::<32, 32, 32>::MAX_ENCODED_LEN];
    let n = policy.encode(&mut buf).unwrap();
    let path = dir.join("neutral.lhp");
    std::fs::write(&path, &buf[..n]).unwrap();
    path
}

#[test]
fn a_frozen_policy_file_steers_an_episode() {
    let dir = tempfile::tempdir().unwrap();
    let path = neutral_policy_file(dir.path());
    let file = PolicyFile::read(&path, lhopt_core::Mode::Greedy).unwrap();
    assert_eq!(file.name, "neutral");
    let mut agent = file.agent().unwrap();
    let trace = run_episode(&mut Bowl::new(), &config(40, 4), agent.as_mut()).unwrap();
    assert_eq!(trace.decisions.len(), 4);
    // Uniform logits: greedy takes the first choice of every head (lr × 0.5, no restart).
    let first = lhopt_core::Action {
        choices: [0; NUM_HEADS],
    };
    assert!(trace.decisions.iter().all(|d| d.action == first));
    assert_eq!(trace.decisions[3].hyper.lr, Hyperparams::INITIAL.lr / 16.0);

    // Seeded sampling repeats itself after a reset.
    let sampling = PolicyFile::read(&path, lhopt_core::Mode::Sample { seed: 7 }).unwrap();
    let mut agent = sampling.agent().unwrap();
    let a = run_episode(&mut Bowl::new(), &config(40, 4), agent.as_mut()).unwrap();
    let b = run_episode(&mut Bowl::new(), &config(40, 4), agent.as_mut()).unwrap();
    let actions = |t: &Trace| t.decisions.iter().map(|d| d.action).collect::<Vec<_>>();
    assert_eq!(actions(&a), actions(&b));
}

#[test]
fn a_damaged_or_missing_policy_file_is_a_policy_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = neutral_policy_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = PolicyFile::read(&path, lhopt_core::Mode::Greedy).unwrap_err();
    assert!(matches!(err, Error::Policy { .. }), "{err}");
    let missing = PolicyFile::read(&dir.path().join("nope.lhp"), lhopt_core::Mode::Greedy);
    assert!(matches!(missing.unwrap_err(), Error::Policy { .. }));
}
