//! K instances of one task configuration (own seed, initialisation, batches, noise and dropout
//! masks), stacked along a leading dimension so one forward/backward trains all of them. Each
//! instance draws exactly what the unbatched task of its spec draws, from the same family code
//! (initialisation, batch order, data generation, masks), so instance k is that task.

use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Reduction, Tensor};

use crate::error::{Error, Result};
use crate::tasks::algorithmic::{self, BATCH_STREAM, EVAL_SEQUENCES, EVAL_STREAM};
use crate::tasks::image::{self, Arch, BatchOrder, ImageData, ImageTensors};
use crate::tasks::nn::{BATCH_NORM_MOMENTUM, NORM_EPS, dropout_mask};
use crate::tasks::quadratic::Quadratic;
use crate::tasks::{CellKind, Family, NormKind, TaskConfig, TaskSpec, task_rng};

/// K instances of one task configuration trained as one tensor program.
pub trait BatchedTask: Send {
    /// The instances' specs (same family and configuration, different seeds).
    fn specs(&self) -> &[TaskSpec];
    /// The trainable leaves, each `[K, ...]`, in the unbatched task's order.
    fn parameters(&self) -> &[Tensor];
    /// Non-trainable state, each `[K, ...]` (batch-norm running statistics).
    fn buffers(&self) -> &[Tensor] {
        &[]
    }
    /// Every instance's loss on its next training minibatch, `[K]`, with its graph.
    fn train_losses(&mut self) -> Tensor;
    /// Every instance's mean held-out loss, without gradients.
    fn eval_losses(&mut self) -> Vec<f64>;
}

/// Whether `spec`'s family configuration has a batched implementation: the noisy quadratic, the
/// image MLPs and the algorithmic RNNs.
pub fn is_batchable(spec: &TaskSpec) -> bool {
    match &spec.config {
        TaskConfig::NoisyQuadratic(_) | TaskConfig::Algorithmic(_) => true,
        TaskConfig::Image(c) => !c.arch.is_cnn(),
        _ => false,
    }
}

/// Above this many floating-point operations per instance step (forward and backward), a task
/// is compute-bound already when unbatched and batching it loses (bench `steps`, batched table:
/// the LSTM 64 and MLP 784-256-256 rows, 100–200 MFLOP, run 0.1–1x); below it, libtorch's per-op
/// cost dominates and batching wins (the small rows, under 1 MFLOP). The crossover between those
/// was not measured finely; 10 MFLOP sits between them.
pub const MAX_BATCHED_FLOPS: u64 = 10_000_000;

/// Forward and backward floating-point operations of one training step of one instance, roughly
/// (3× the forward's multiply-adds × 2).
pub fn instance_flops(spec: &TaskSpec) -> u64 {
    match &spec.config {
        TaskConfig::NoisyQuadratic(c) => 10 * c.dims,
        TaskConfig::Algorithmic(c) => {
            let gates = c.cell_gates() * c.hidden;
            let inputs = c.problem.input_width() as u64;
            let per_seq = (c.length + 1) * (gates * (inputs + c.hidden * c.layers) + c.hidden);
            6 * c.batch * per_seq
        }
        TaskConfig::Image(c) => match c.arch {
            Arch::Mlp {
                hidden_layers,
                width,
            } => {
                let side = if c.dataset == image::ImageSet::FashionMnist {
                    28
                } else {
                    8
                };
                let macs = side * side * width + (hidden_layers - 1) * width * width + 10 * width;
                6 * c.batch * macs
            }
            Arch::Cnn { .. } => u64::MAX,
        },
        _ => u64::MAX,
    }
}

/// Whether meta-training should run `spec`'s configuration batched: it has a batched
/// implementation and is small enough for batching to pay ([`MAX_BATCHED_FLOPS`]).
pub fn prefers_batching(spec: &TaskSpec) -> bool {
    is_batchable(spec) && instance_flops(spec) <= MAX_BATCHED_FLOPS
}

/// The most instances one batch may hold: far beyond what a step's tensors fit in memory for
/// any configuration, so a larger K is a typo, not a request.
pub const MAX_INSTANCES: usize = 4096;

/// Builds the instances `specs` describe (K = `specs.len()`) on `device`.
///
/// # Errors
/// K = 0 or above [`MAX_INSTANCES`], specs of different configurations, a family without a
/// batched implementation, an estimated footprint larger than the memory available, or a
/// dataset that does not load.
pub fn build(
    specs: &[TaskSpec],
    device: Device,
    data: &lhopt_data::DataDir,
) -> Result<Box<dyn BatchedTask>> {
    let first = check_specs(specs)?;
    let images = match &first.config {
        TaskConfig::Image(c) => Some(ImageData::load(c.dataset, data)?),
        _ => None,
    };
    build_with(specs, device, images)
}

/// [`build`] with the image data given (tests and benchmarks use generated images).
pub fn build_with(
    specs: &[TaskSpec],
    device: Device,
    images: Option<ImageData>,
) -> Result<Box<dyn BatchedTask>> {
    let first = check_specs(specs)?;
    check_memory(first, specs.len(), device)?;
    Ok(match (&first.config, images) {
        (TaskConfig::NoisyQuadratic(c), _) => {
            let sources = specs
                .iter()
                .map(|s| Quadratic::new(s.clone(), c, device))
                .collect();
            Box::new(BatchedQuadratic::new(specs.to_vec(), sources))
        }
        (TaskConfig::Algorithmic(_), _) => Box::new(BatchedRnn::new(specs.to_vec(), device)),
        (TaskConfig::Image(_), Some(images)) => {
            Box::new(BatchedMlp::new(specs.to_vec(), &images, device)?)
        }
        (TaskConfig::Image(_), None) => {
            return Err(Error::Usage("a batched image task needs its images".into()));
        }
        _ => unreachable!("check_specs admits batchable configurations only"),
    })
}

/// The common spec of a valid batch.
fn check_specs(specs: &[TaskSpec]) -> Result<&TaskSpec> {
    let first = specs.first().ok_or_else(|| {
        Error::Usage("a batch needs at least one instance (K = 0 given); K must be ≥ 1".into())
    })?;
    if specs.len() > MAX_INSTANCES {
        return Err(Error::Usage(format!(
            "K = {} instances per batch is more than the {MAX_INSTANCES} allowed",
            specs.len()
        )));
    }
    if !is_batchable(first) {
        return Err(Error::Usage(format!(
            "family {} ({:?}) has no batched implementation",
            first.family, first.config
        )));
    }
    if let Some(other) = specs
        .iter()
        .find(|s| s.family != first.family || s.config != first.config)
    {
        return Err(Error::InvalidSpec(format!(
            "the instances of a batch share one configuration; {} differs from {}",
            other.key(),
            first.key()
        )));
    }
    if first.family == Family::ImageCnn {
        return Err(Error::Usage(
            "image CNNs have no batched implementation".into(),
        ));
    }
    Ok(first)
}

/// Floats one instance holds during a step, roughly: parameters with their gradient, moments
/// and the three checkpoint registers (×8), plus the activations a minibatch keeps for backward.
fn instance_floats(spec: &TaskSpec) -> u64 {
    match &spec.config {
        TaskConfig::NoisyQuadratic(c) => 12 * c.dims,
        TaskConfig::Algorithmic(c) => {
            let gates = 4 * c.hidden;
            let params = c.layers * (gates * (c.hidden + 2) + 2 * gates) + c.hidden + 1;
            8 * params + 8 * c.batch * (c.length + 1) * gates * c.layers
        }
        TaskConfig::Image(c) => match c.arch {
            Arch::Mlp {
                hidden_layers,
                width,
            } => {
                let params = 28 * 28 * width + hidden_layers * width * (width + 4) + 11 * width;
                8 * params + 6 * c.batch * width * hidden_layers + c.eval_examples.min(1000) * 10
            }
            Arch::Cnn { .. } => 0,
        },
        _ => 0,
    }
}

/// Refuses a batch whose estimated footprint exceeds the memory available (host memory for CPU
/// tensors; devices are not checked: their allocator reports its own out-of-memory error).
fn check_memory(spec: &TaskSpec, k: usize, device: Device) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let need = instance_floats(spec) * 4 * k as u64;
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if need > available {
        return Err(Error::Usage(format!(
            "K = {k} instances of {} need about {:.1} GiB, more than the {:.1} GiB available; use a smaller K",
            spec.family,
            need as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

/// MemAvailable of /proc/meminfo in bytes (Linux), `None` elsewhere.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Stacks each position of per-instance tensor lists into one `[K, ...]` tensor; trainable leaves
/// when `trainable`.
fn stack_instances(per_instance: &[Vec<Tensor>], trainable: bool) -> Vec<Tensor> {
    let count = per_instance.first().map_or(0, Vec::len);
    (0..count)
        .map(|j| {
            let parts: Vec<Tensor> = per_instance.iter().map(|v| v[j].detach()).collect();
            let stacked = Tensor::stack(&parts, 0);
            if trainable {
                stacked.set_requires_grad(true)
            } else {
                stacked
            }
        })
        .collect()
}

/// Per-instance affine map `x [K, N, in]` → `[K, N, out]` with `w [K, out, in]`, `b [K, out]`.
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    b.unsqueeze(1).baddbmm(x, &w.transpose(1, 2), 1, 1)
}

/// Noisy quadratic bowls, `x [K, dims]`.
struct BatchedQuadratic {
    specs: Vec<TaskSpec>,
    /// The unbatched tasks: each instance's initial point and noise stream.
    sources: Vec<Quadratic>,
    params: Vec<Tensor>,
    curvature: Tensor,
    noise: Vec<f32>,
}

impl BatchedQuadratic {
    fn new(specs: Vec<TaskSpec>, sources: Vec<Quadratic>) -> Self {
        use crate::tasks::Task;
        let initial: Vec<Vec<Tensor>> = sources
            .iter()
            .map(|q| q.parameters().iter().map(Tensor::shallow_clone).collect())
            .collect();
        let params = stack_instances(&initial, true);
        let curvature = sources[0].curvature().shallow_clone();
        BatchedQuadratic {
            specs,
            sources,
            params,
            curvature,
            noise: Vec::new(),
        }
    }

    fn losses(&self, target: Option<&Tensor>) -> Tensor {
        let x = &self.params[0];
        let diff = match target {
            Some(t) => x - t,
            None => x.shallow_clone(),
        };
        (diff.square() * &self.curvature).mean_dim([1i64].as_slice(), false, Kind::Float) * 0.5
    }
}

impl BatchedTask for BatchedQuadratic {
    fn specs(&self) -> &[TaskSpec] {
        &self.specs
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_losses(&mut self) -> Tensor {
        self.noise.clear();
        for q in &mut self.sources {
            q.draw_target(&mut self.noise);
        }
        let x = &self.params[0];
        let target = Tensor::from_slice(&self.noise)
            .view(x.size().as_slice())
            .to_device(x.device());
        self.losses(Some(&target))
    }

    fn eval_losses(&mut self) -> Vec<f64> {
        let _guard = tch::no_grad_guard();
        to_host(&self.losses(None))
    }
}

fn to_host(losses: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(losses.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap_or_default()
}

/// Mean cross-entropy per instance of `logits [K, N, C]` against `labels [K, N]`.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    -logits
        .log_softmax(-1, Kind::Float)
        .gather(-1, &labels.unsqueeze(-1), false)
        .squeeze_dim(-1)
        .mean_dim([1i64].as_slice(), false, Kind::Float)
}

/// Image MLPs on shared data: `w [K, out, in]`, activations `[K, N, width]`.
struct BatchedMlp {
    specs: Vec<TaskSpec>,
    config: image::Config,
    hidden_layers: i64,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    data: ImageTensors,
    max_level: f64,
    batches: Vec<BatchOrder>,
    masks: Vec<ChaCha8Rng>,
    mask_buf: Vec<f32>,
    index_buf: Vec<i64>,
}

impl BatchedMlp {
    fn new(specs: Vec<TaskSpec>, images: &ImageData, device: Device) -> Result<Self> {
        let TaskConfig::Image(config) = specs[0].config.clone() else {
            unreachable!("an image spec")
        };
        let Arch::Mlp { hidden_layers, .. } = config.arch else {
            return Err(Error::Usage("only image MLPs are batched".into()));
        };
        let side = images.train.rows as i64;
        let (params, buffers): (Vec<_>, Vec<_>) = specs
            .iter()
            .map(|s| image::initial_state(s, &config, side, device))
            .unzip();
        let data = ImageTensors::new(images, &config, device);
        Ok(BatchedMlp {
            params: stack_instances(&params, true),
            buffers: stack_instances(&buffers, false),
            batches: specs
                .iter()
                .map(|s| BatchOrder::new(task_rng(s, image::BATCH_STREAM)))
                .collect(),
            masks: specs
                .iter()
                .map(|s| task_rng(s, image::MASK_STREAM))
                .collect(),
            hidden_layers: hidden_layers as i64,
            max_level: f64::from(images.train.max_value),
            data,
            config,
            specs,
            mask_buf: Vec::new(),
            index_buf: Vec::new(),
        })
    }

    /// Inverted dropout with each instance's own mask stream (identity when not training).
    fn dropout(&mut self, x: &Tensor, train: bool) -> Tensor {
        let p = self.config.dropout;
        if !train || p <= 0.0 {
            return x.shallow_clone();
        }
        let per_instance = x.numel() / self.masks.len();
        self.mask_buf.clear();
        for rng in &mut self.masks {
            dropout_mask(per_instance, p, rng, &mut self.mask_buf);
        }
        x * Tensor::from_slice(&self.mask_buf)
            .view(x.size().as_slice())
            .to_device(x.device())
    }

    /// Logits `[K, N, classes]` for byte images `[K, N, side²]`.
    fn logits(&mut self, pixels: &Tensor, train: bool) -> Tensor {
        let k = self.specs.len() as i64;
        let mut h = pixels.to_kind(Kind::Float) / self.max_level;
        let (mut p, mut b) = (0, 0);
        for layer in 0..self.hidden_layers {
            if layer > 0 {
                h = self.dropout(&h, train);
            }
            h = linear(&h, &self.params[p], &self.params[p + 1]);
            p += 2;
            let (gain, bias) = (&self.params.get(p), &self.params.get(p + 1));
            h = match self.config.norm {
                NormKind::None => h,
                NormKind::Layer => {
                    p += 2;
                    let width = h.size()[2];
                    let (gain, bias) = (gain.expect("gain"), bias.expect("bias"));
                    h.layer_norm([width], None::<Tensor>, None::<Tensor>, NORM_EPS, false)
                        * gain.unsqueeze(1)
                        + bias.unsqueeze(1)
                }
                NormKind::Batch => {
                    p += 2;
                    // Batch norm of [N, K·C]: per-column statistics are per instance and channel.
                    let (gain, bias) = (gain.expect("gain"), bias.expect("bias"));
                    let (mean, var) = (&self.buffers[b], &self.buffers[b + 1]);
                    b += 2;
                    let size = h.size();
                    let flat = h.transpose(0, 1).reshape([size[1], -1]);
                    flat.batch_norm(
                        Some(gain.view([-1])),
                        Some(bias.view([-1])),
                        Some(mean.view([-1])),
                        Some(var.view([-1])),
                        train,
                        BATCH_NORM_MOMENTUM,
                        NORM_EPS,
                        false,
                    )
                    .view([size[1], k, size[2]])
                    .transpose(0, 1)
                }
            };
            h = self.config.activation.apply(&h);
        }
        let h = self.dropout(&h, train);
        linear(&h, &self.params[p], &self.params[p + 1])
    }
}

impl BatchedTask for BatchedMlp {
    fn specs(&self) -> &[TaskSpec] {
        &self.specs
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn buffers(&self) -> &[Tensor] {
        &self.buffers
    }

    fn train_losses(&mut self) -> Tensor {
        let n = self.data.train_y.size()[0] as usize;
        let batch = (self.config.batch as usize).min(n);
        self.index_buf.clear();
        for order in &mut self.batches {
            self.index_buf.extend_from_slice(order.next(n, batch));
        }
        let k = self.specs.len() as i64;
        let idx = Tensor::from_slice(&self.index_buf).to_device(self.data.train_y.device());
        let x = self
            .data
            .train_x
            .index_select(0, &idx)
            .view([k, batch as i64, -1]);
        let y = self
            .data
            .train_y
            .index_select(0, &idx)
            .view([k, batch as i64]);
        let logits = self.logits(&x, true);
        cross_entropy(&logits, &y)
    }

    fn eval_losses(&mut self) -> Vec<f64> {
        let _guard = tch::no_grad_guard();
        let k = self.specs.len() as i64;
        let n = self.data.eval_y.size()[0];
        // Chunks of examples shrink with K so the activations stay about one unbatched chunk.
        let chunk = (image::EVAL_CHUNK / k).max(50);
        let mut total = Tensor::zeros([k], (Kind::Float, self.data.eval_y.device()));
        for start in (0..n).step_by(chunk as usize) {
            let len = chunk.min(n - start);
            let x = self.data.eval_x.narrow(0, start, len);
            let y = self.data.eval_y.narrow(0, start, len);
            let logits = self.logits(&x.unsqueeze(0).expand([k, len, -1], false), false);
            total += cross_entropy(&logits, &y.unsqueeze(0).expand([k, len], false)) * len as f64;
        }
        to_host(&total).into_iter().map(|t| t / n as f64).collect()
    }
}

/// Algorithmic RNNs: a stacked RNN/GRU/LSTM written as per-time-step batched matrix products
/// with libtorch's gate layout and order (LSTM i, f, g, o; GRU r, z, n), then a linear head.
struct BatchedRnn {
    specs: Vec<TaskSpec>,
    config: algorithmic::Config,
    params: Vec<Tensor>,
    batches: Vec<ChaCha8Rng>,
    /// Held-out inputs `[K, E, steps, width]` and targets `[K, E, steps]`, each instance its own.
    eval: (Tensor, Tensor),
    device: Device,
}

impl BatchedRnn {
    fn new(specs: Vec<TaskSpec>, device: Device) -> Self {
        let TaskConfig::Algorithmic(config) = specs[0].config.clone() else {
            unreachable!("an algorithmic spec")
        };
        let params: Vec<Vec<Tensor>> = specs
            .iter()
            .map(|s| algorithmic::initial_parameters(s, &config, device))
            .collect();
        let mut eval_rngs: Vec<ChaCha8Rng> =
            specs.iter().map(|s| task_rng(s, EVAL_STREAM)).collect();
        let eval = sequences(&config, EVAL_SEQUENCES, &mut eval_rngs, device);
        BatchedRnn {
            params: stack_instances(&params, true),
            batches: specs.iter().map(|s| task_rng(s, BATCH_STREAM)).collect(),
            eval,
            device,
            config,
            specs,
        }
    }

    /// Logits `[K, B, steps]` for inputs `[K, B, steps, width]`.
    fn logits(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (k, b, steps) = (size[0], size[1], size[2]);
        let hidden = self.config.hidden as i64;
        let mut input = x.shallow_clone();
        for layer in 0..self.config.layers as usize {
            let w = &self.params[4 * layer..4 * layer + 4];
            let (w_ih, w_hh, b_ih, b_hh) = (&w[0], &w[1], &w[2], &w[3]);
            let width = input.size()[3];
            // Input halves of the gates for every time step in one product.
            let xi =
                linear(&input.reshape([k, b * steps, width]), w_ih, b_ih).view([k, b, steps, -1]);
            let mut h = Tensor::zeros([k, b, hidden], (Kind::Float, x.device()));
            let mut c = h.zeros_like();
            let mut outs = Vec::with_capacity(steps as usize);
            for t in 0..steps {
                let gi = xi.select(2, t);
                let gh = linear(&h, w_hh, b_hh);
                h = match self.config.cell {
                    CellKind::Rnn => (gi + gh).tanh(),
                    CellKind::Lstm => {
                        let g = (gi + gh).chunk(4, -1);
                        c = g[1].sigmoid() * &c + g[0].sigmoid() * g[2].tanh();
                        g[3].sigmoid() * c.tanh()
                    }
                    CellKind::Gru => {
                        let (a, r) = (gi.chunk(3, -1), gh.chunk(3, -1));
                        let reset = (&a[0] + &r[0]).sigmoid();
                        let update = (&a[1] + &r[1]).sigmoid();
                        let n = (&a[2] + reset * &r[2]).tanh();
                        &n + update * (&h - &n)
                    }
                };
                outs.push(h.shallow_clone());
            }
            input = Tensor::stack(&outs, 2);
        }
        let n = self.params.len();
        linear(
            &input.reshape([k, b * steps, hidden]),
            &self.params[n - 2],
            &self.params[n - 1],
        )
        .view([k, b, steps])
    }

    fn losses(&self, x: &Tensor, y: &Tensor) -> Tensor {
        self.logits(x)
            .binary_cross_entropy_with_logits::<Tensor>(y, None, None, Reduction::None)
            .mean_dim([1i64, 2].as_slice(), false, Kind::Float)
    }
}

/// `count` sequences per instance, each from its own stream: inputs `[K, count, steps, width]`
/// and targets `[K, count, steps]`.
fn sequences(
    config: &algorithmic::Config,
    count: usize,
    rngs: &mut [ChaCha8Rng],
    device: Device,
) -> (Tensor, Tensor) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for rng in rngs.iter_mut() {
        let (x, y) = algorithmic::generate(config.problem, config.length as usize, count, rng);
        xs.extend(x);
        ys.extend(y);
    }
    let (k, count) = (rngs.len() as i64, count as i64);
    let width = config.problem.input_width();
    (
        Tensor::from_slice(&xs)
            .view([k, count, -1, width])
            .to_device(device),
        Tensor::from_slice(&ys)
            .view([k, count, -1])
            .to_device(device),
    )
}

impl BatchedTask for BatchedRnn {
    fn specs(&self) -> &[TaskSpec] {
        &self.specs
    }

    fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    fn train_losses(&mut self) -> Tensor {
        let (x, y) = sequences(
            &self.config,
            self.config.batch as usize,
            &mut self.batches,
            self.device,
        );
        self.losses(&x, &y)
    }

    fn eval_losses(&mut self) -> Vec<f64> {
        let _guard = tch::no_grad_guard();
        to_host(&self.losses(&self.eval.0, &self.eval.1))
    }
}
