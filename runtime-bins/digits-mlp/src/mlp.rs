//! A ReLU multi-layer perceptron with softmax cross-entropy, forward and backward by hand on
//! plain `f32` slices: no tensor library, so the whole runtime stays a few hundred lines.
//!
//! Parameters are a flat list of tensors `[w0, b0, w1, b1, ...]`, where `w` is row-major
//! `[out][in]` and `b` is `[out]`: the layout the inner optimizer's `ParamSlot`s borrow.

/// Layer widths and the activations of the last batch, reused between steps so a step allocates
/// nothing.
pub struct Mlp {
    widths: Vec<usize>,
    /// `acts[l]` holds the batch's input to layer `l` (`acts[0]` is the input batch itself) and
    /// the last entry holds the logits; hidden entries are post-ReLU.
    acts: Vec<Vec<f32>>,
    /// Gradient of the loss with respect to the current layer's output (then its input).
    delta: Vec<f32>,
    delta_in: Vec<f32>,
}

impl Mlp {
    /// An MLP with the given layer widths, input first and number of classes last.
    ///
    /// # Panics
    /// If fewer than two widths are given or one of them is zero.
    pub fn new(widths: &[usize]) -> Self {
        assert!(
            widths.len() >= 2 && widths.iter().all(|&w| w > 0),
            "an MLP needs at least an input and an output width, all non-zero (got {widths:?})"
        );
        Mlp {
            widths: widths.to_vec(),
            acts: vec![Vec::new(); widths.len()],
            delta: Vec::new(),
            delta_in: Vec::new(),
        }
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.widths[0]
    }

    /// The shapes of the parameter tensors in order: `[out, in]` for weights, `[out]` for biases.
    pub fn shapes(&self) -> Vec<Vec<usize>> {
        self.widths
            .windows(2)
            .flat_map(|w| [vec![w[1], w[0]], vec![w[1]]])
            .collect()
    }

    /// He-initialised weights and zero biases, drawn from `rng`.
    pub fn init(&self, rng: &mut SplitMix) -> Vec<Vec<f32>> {
        self.shapes()
            .iter()
            .map(|shape| match shape[..] {
                [out, fan_in] => {
                    let std = (2.0 / fan_in as f32).sqrt();
                    (0..out * fan_in).map(|_| rng.normal() * std).collect()
                }
                _ => vec![0.0; shape.iter().product()],
            })
            .collect()
    }

    /// Mean cross-entropy of `params` on a batch, without gradients.
    pub fn loss(&mut self, params: &[Vec<f32>], x: &[f32], y: &[u8]) -> f32 {
        self.forward(params, x, y.len());
        self.cross_entropy(y, None)
    }

    /// Mean cross-entropy and accuracy of `params` on a whole data set, in chunks.
    pub fn evaluate(&mut self, params: &[Vec<f32>], x: &[f32], y: &[u8]) -> (f32, f32) {
        const CHUNK: usize = 256;
        let classes = self.widths[self.widths.len() - 1];
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for (xc, yc) in x.chunks(CHUNK * self.inputs()).zip(y.chunks(CHUNK)) {
            loss += f64::from(self.loss(params, xc, yc)) * yc.len() as f64;
            let logits = &self.acts[self.acts.len() - 1];
            correct += logits
                .chunks_exact(classes)
                .zip(yc)
                .filter(|(z, label)| argmax(z) == usize::from(**label))
                .count();
        }
        let n = y.len().max(1) as f64;
        ((loss / n) as f32, (correct as f64 / n) as f32)
    }

    /// Mean cross-entropy of `params` on a batch; writes its gradient into `grads`, which has the
    /// shapes of `params`.
    pub fn loss_and_grad(
        &mut self,
        params: &[Vec<f32>],
        x: &[f32],
        y: &[u8],
        grads: &mut [Vec<f32>],
    ) -> f32 {
        let batch = y.len();
        self.forward(params, x, batch);
        let mut delta = std::mem::take(&mut self.delta);
        let loss = self.cross_entropy(y, Some(&mut delta));
        let layers = self.widths.len() - 1;
        for l in (0..layers).rev() {
            let (n_in, n_out) = (self.widths[l], self.widths[l + 1]);
            let (w, input) = (&params[2 * l], &self.acts[l]);
            let (gw, gb) = pair_mut(grads, 2 * l);
            gw.fill(0.0);
            gb.fill(0.0);
            for (d_row, in_row) in delta.chunks_exact(n_out).zip(input.chunks_exact(n_in)) {
                for ((gw_row, gb_o), &d) in gw.chunks_exact_mut(n_in).zip(gb.iter_mut()).zip(d_row)
                {
                    *gb_o += d;
                    axpy(d, in_row, gw_row);
                }
            }
            if l == 0 {
                break;
            }
            // Back through the weights, then through the ReLU that produced this layer's input.
            self.delta_in.clear();
            self.delta_in.resize(batch * n_in, 0.0);
            for ((d_row, din_row), in_row) in delta
                .chunks_exact(n_out)
                .zip(self.delta_in.chunks_exact_mut(n_in))
                .zip(input.chunks_exact(n_in))
            {
                for (&d, w_row) in d_row.iter().zip(w.chunks_exact(n_in)) {
                    axpy(d, w_row, din_row);
                }
                for (di, &a) in din_row.iter_mut().zip(in_row) {
                    if a <= 0.0 {
                        *di = 0.0;
                    }
                }
            }
            std::mem::swap(&mut delta, &mut self.delta_in);
        }
        self.delta = delta;
        loss
    }

    /// Fills `acts` for a batch of `batch` rows of `x`.
    fn forward(&mut self, params: &[Vec<f32>], x: &[f32], batch: usize) {
        assert_eq!(
            x.len(),
            batch * self.inputs(),
            "input batch has the wrong length"
        );
        self.acts[0].clear();
        self.acts[0].extend_from_slice(x);
        let layers = self.widths.len() - 1;
        for l in 0..layers {
            let (n_in, n_out) = (self.widths[l], self.widths[l + 1]);
            let (w, b) = (&params[2 * l], &params[2 * l + 1]);
            let (before, after) = self.acts.split_at_mut(l + 1);
            let (input, out) = (&before[l], &mut after[0]);
            out.clear();
            for in_row in input.chunks_exact(n_in) {
                out.extend(
                    w.chunks_exact(n_in)
                        .zip(b)
                        .map(|(w_row, &bias)| bias + dot(w_row, in_row)),
                );
            }
            if l + 1 < layers {
                out.iter_mut().for_each(|z| *z = z.max(0.0));
            }
            debug_assert_eq!(out.len(), batch * n_out);
        }
    }

    /// Mean softmax cross-entropy of the logits in `acts`; if asked, writes d(loss)/d(logits).
    fn cross_entropy(&self, y: &[u8], mut dlogits: Option<&mut Vec<f32>>) -> f32 {
        let classes = self.widths[self.widths.len() - 1];
        let logits = &self.acts[self.acts.len() - 1];
        let inv_batch = 1.0 / y.len() as f32;
        if let Some(d) = dlogits.as_deref_mut() {
            d.clear();
            d.resize(logits.len(), 0.0);
        }
        let mut total = 0.0;
        for (row, (z, &label)) in logits.chunks_exact(classes).zip(y).enumerate() {
            let label = usize::from(label);
            assert!(
                label < classes,
                "label {label} out of range for {classes} classes"
            );
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum_exp: f32 = z.iter().map(|&zi| (zi - max).exp()).sum();
            total += sum_exp.ln() + max - z[label];
            if let Some(d) = dlogits.as_deref_mut() {
                let d_row = &mut d[row * classes..(row + 1) * classes];
                for (di, &zi) in d_row.iter_mut().zip(z) {
                    *di = (zi - max).exp() / sum_exp * inv_batch;
                }
                d_row[label] -= inv_batch;
            }
        }
        total * inv_batch
    }
}

fn argmax(z: &[f32]) -> usize {
    z.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += a * x`
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// The weight and bias gradients of one layer, borrowed together.
fn pair_mut(grads: &mut [Vec<f32>], at: usize) -> (&mut [f32], &mut [f32]) {
    let (w, b) = grads[at..at + 2].split_at_mut(1);
    (&mut w[0], &mut b[0])
}

/// SplitMix64: a tiny seeded generator for initialisation, shuffling and test data.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform index in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform(); // in (0, 1], so the log is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic gradient matches central finite differences on a random small net.
    #[test]
    fn gradient_matches_finite_differences() {
        let mut rng = SplitMix::new(7);
        let mut mlp = Mlp::new(&[5, 4, 3]);
        let mut params = mlp.init(&mut rng);
        params[1].iter_mut().for_each(|b| *b = rng.normal() * 0.1);
        let x: Vec<f32> = (0..2 * 5).map(|_| rng.normal()).collect();
        let y = [0u8, 2];
        let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        mlp.loss_and_grad(&params, &x, &y, &mut grads);
        let h = 1e-2;
        for t in 0..params.len() {
            for i in 0..params[t].len() {
                let orig = params[t][i];
                params[t][i] = orig + h;
                let up = f64::from(mlp.loss(&params, &x, &y));
                params[t][i] = orig - h;
                let down = f64::from(mlp.loss(&params, &x, &y));
                params[t][i] = orig;
                let numeric = (up - down) / (2.0 * f64::from(h));
                let analytic = f64::from(grads[t][i]);
                assert!(
                    (numeric - analytic).abs() < 2e-3,
                    "tensor {t} element {i}: analytic {analytic} vs numeric {numeric}"
                );
            }
        }
    }

    #[test]
    fn uniform_logits_give_log_classes() {
        let mut mlp = Mlp::new(&[2, 4]);
        let params = vec![vec![0.0; 8], vec![0.0; 4]];
        let loss = mlp.loss(&params, &[1.0, -1.0, 0.5, 2.0], &[0, 3]);
        assert!((loss - 4f32.ln()).abs() < 1e-6);
    }
}
