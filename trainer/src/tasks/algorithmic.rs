//! Algorithmic sequence problems solved by a recurrent network, predicting one bit per time step:
//! running parity (xor) of a bit stream, or binary addition of two numbers fed least significant
//! bit first. Difficulty is the sequence length. Data is generated, so batches never repeat.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

use super::nn::{CellKind, Linear, ParamStore, Recurrent};
use super::sampling::{choose, log_uniform_int};
use super::{Scale, Task, TaskSpec, task_rng};

/// Held-out sequences in the eval set.
pub(crate) const EVAL_SEQUENCES: usize = 512;
/// The task's RNG streams of training batches and of the eval set.
pub(crate) const BATCH_STREAM: u64 = 1;
pub(crate) const EVAL_STREAM: u64 = 2;

/// Which problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Problem {
    /// Target at step t: xor of input bits 0..=t.
    Parity,
    /// Inputs: bit t of a and of b; target: bit t of a + b (one extra step for the carry).
    Addition,
}

impl Problem {
    pub(crate) fn input_width(self) -> i64 {
        match self {
            Problem::Parity => 1,
            Problem::Addition => 2,
        }
    }
}

/// Sampled configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The problem.
    pub problem: Problem,
    /// Recurrent cell.
    pub cell: CellKind,
    /// Hidden units per layer.
    pub hidden: u64,
    /// Stacked recurrent layers.
    pub layers: u64,
    /// Input bits per sequence (difficulty).
    pub length: u64,
    /// Sequences per minibatch.
    pub batch: u64,
}

impl Config {
    /// Spec §8 ranges: hidden 16–128, 1–2 layers, batch 32–256 (CPU: hidden ≤ 64, batch ≤ 128,
    /// shorter sequences).
    pub fn sample(rng: &mut ChaCha8Rng, scale: Scale) -> Self {
        let (max_hidden, max_batch, max_length) = match scale {
            Scale::Cpu => (64, 128, 16),
            Scale::Gpu => (128, 256, 64),
        };
        Config {
            problem: *choose(rng, &[Problem::Parity, Problem::Addition]),
            cell: *choose(rng, &CellKind::ALL),
            hidden: log_uniform_int(rng, 16, max_hidden),
            layers: rng.gen_range(1..=2),
            length: log_uniform_int(rng, 4, max_length),
            batch: log_uniform_int(rng, 32, max_batch),
        }
    }
}

impl Config {
    /// Gate blocks of the recurrent cell (1 RNN, 3 GRU, 4 LSTM).
    pub(crate) fn cell_gates(&self) -> u64 {
        self.cell.gates() as u64
    }
}

/// Draws `count` sequences: inputs `[count, steps, width]` in {-1, 1} and targets `[count, steps]`
/// in {0, 1}.
pub(crate) fn generate(
    problem: Problem,
    length: usize,
    count: usize,
    rng: &mut ChaCha8Rng,
) -> (Vec<f32>, Vec<f32>) {
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    let signed = |bit: u8| if bit == 1 { 1.0 } else { -1.0 };
    for _ in 0..count {
        match problem {
            Problem::Parity => {
                let mut parity = 0;
                for _ in 0..length {
                    let bit: u8 = rng.gen_range(0..=1);
                    parity ^= bit;
                    inputs.push(signed(bit));
                    targets.push(f32::from(parity));
                }
            }
            Problem::Addition => {
                let mut carry = 0;
                for t in 0..=length {
                    // The last step has no input bits and emits the final carry.
                    let (a, b): (u8, u8) = if t < length {
                        (rng.gen_range(0..=1), rng.gen_range(0..=1))
                    } else {
                        (0, 0)
                    };
                    let sum = a + b + carry;
                    carry = sum / 2;
                    inputs.extend([signed(a), signed(b)]);
                    targets.push(f32::from(sum % 2));
                }
            }
        }
    }
    (inputs, targets)
}

/// The recurrent bit predictor.
struct Model {
    rnn: Recurrent,
    head: Linear,
}

impl Model {
    fn new(ps: &mut ParamStore, config: &Config) -> Self {
        Model {
            rnn: Recurrent::new(
                ps,
                config.cell,
                config.problem.input_width(),
                config.hidden as i64,
                config.layers as i64,
            ),
            head: Linear::new(ps, config.hidden as i64, 1),
        }
    }

    fn logits(&self, x: &Tensor, train: bool) -> Tensor {
        self.head
            .forward(&self.rnn.forward(x, train))
            .squeeze_dim(-1)
    }
}

/// The initial parameters of the task `spec` (per layer w_ih, w_hh, b_ih, b_hh, then the head's
/// weight and bias), as [`Algorithmic::new`] draws them.
pub(crate) fn initial_parameters(spec: &TaskSpec, config: &Config, device: Device) -> Vec<Tensor> {
    let mut ps = ParamStore::new(task_rng(spec, 0), device);
    Model::new(&mut ps, config);
    ps.finish().0
}

/// A built algorithmic task.
pub struct Algorithmic {
    spec: TaskSpec,
    config: Config,
    params: Vec<Tensor>,
    model: Model,
    device: Device,
    batches: ChaCha8Rng,
    eval: (Tensor, Tensor),
}

impl Algorithmic {
    /// Builds the model and the fixed eval set.
    pub fn new(spec: TaskSpec, config: &Config, device: Device) -> Self {
        let mut ps = ParamStore::new(task_rng(&spec, 0), device);
        let model = Model::new(&mut ps, config);
        let (params, _) = ps.finish();
        let mut eval_rng = task_rng(&spec, EVAL_STREAM);
        let eval = Self::batch_tensors(config, EVAL_SEQUENCES, &mut eval_rng, device);
        let batches = task_rng(&spec, BATCH_STREAM);
        Algorithmic {
            spec,
            config: config.clone(),
            params,
            model,
            device,
            batches,
            eval,
        }
    }

    fn batch_tensors(
        config: &Config,
        count: usize,
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> (Tensor, Tensor) {
        let (x, y) = generate(config.problem, config.length as usize, count, rng);
        let width = config.problem.input_width();
        let x = Tensor::from_slice(&x)
            .reshape([count as i64, -1, width])
            .to_device(device);
        let y = Tensor::from_slice(&y)
            .reshape([count as i64, -1])
            .to_device(device);
        (x, y)
    }

    fn loss(&self, x: &Tensor, y: &Tensor, train: bool) -> Tensor {
        self.model
            .logits(x, train)
            .binary_cross_entropy_with_logits::<Tensor>(y, None, None, Reduction::Mean)
    }
}

impl Task for Algorithmic {
    fn spec(&self) -> &TaskSpec {
        &self.spec
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_loss(&mut self) -> Tensor {
        let (x, y) = Self::batch_tensors(
            &self.config,
            self.config.batch as usize,
            &mut self.batches,
            self.device,
        );
        self.loss(&x, &y, true)
    }

    fn eval_loss(&mut self) -> f64 {
        let _guard = tch::no_grad_guard();
        let (x, y) = &self.eval;
        self.loss(x, y, false)
            .to_kind(Kind::Double)
            .double_value(&[])
    }
}
