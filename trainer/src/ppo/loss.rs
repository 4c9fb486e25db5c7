//! The PPO objective on tch tensors: per-head categorical log-probabilities and entropies of the
//! 40 concatenated logits (head sizes from the core), and the clipped surrogate.

use lhopt_core::HEAD_SIZES;
use tch::{Kind, Tensor};

/// Log-probability of `actions` (`[..., 9]`, i64 choices) under `logits` (`[..., 40]`), summed
/// over the heads, and the summed entropy of the heads; both shaped `[...]`.
pub fn log_prob_and_entropy(logits: &Tensor, actions: &Tensor) -> (Tensor, Tensor) {
    let heads = head_log_softmax(logits);
    let entropies = heads
        .iter()
        .map(|lp| -(lp.exp() * lp).sum_dim_intlist(-1, false, Kind::Float));
    (sum_heads(chosen(&heads, actions)), sum_heads(entropies))
}

/// Log-probability of each head's choice in `actions` (`[..., 9]`, i64) under `logits`
/// (`[..., 40]`): one `[...]` tensor per head, in head order. Their sum is
/// [`log_prob_and_entropy`]'s log-probability.
pub fn head_log_probs(logits: &Tensor, actions: &Tensor) -> Vec<Tensor> {
    chosen(&head_log_softmax(logits), actions).collect()
}

/// Each head's log-softmax, shaped `[..., head size]`.
fn head_log_softmax(logits: &Tensor) -> Vec<Tensor> {
    let sizes: Vec<i64> = HEAD_SIZES.iter().map(|&n| n as i64).collect();
    logits
        .split_with_sizes(&sizes, -1)
        .iter()
        .map(|head| head.log_softmax(-1, Kind::Float))
        .collect()
}

/// Each head's log-probability of its choice in `actions`.
fn chosen<'a>(heads: &'a [Tensor], actions: &'a Tensor) -> impl Iterator<Item = Tensor> + 'a {
    heads.iter().enumerate().map(|(h, lp)| {
        lp.gather(-1, &actions.narrow(-1, h as i64, 1), false)
            .squeeze_dim(-1)
    })
}

/// The sum of one tensor per head, in head order.
pub fn sum_heads(terms: impl IntoIterator<Item = Tensor>) -> Tensor {
    terms.into_iter().reduce(|a, b| a + b).expect("heads")
}

/// KL(π ‖ q) summed over the heads, shaped `[...]`: π from `logits`, q from `anchor_logits`
/// (both `[..., 40]`). Differentiable in `logits`; the anchor is a constant.
pub fn kl_divergence(logits: &Tensor, anchor_logits: &Tensor) -> Tensor {
    let anchors = head_log_softmax(&anchor_logits.detach());
    sum_heads(
        head_log_softmax(logits)
            .iter()
            .zip(&anchors)
            .map(|(lp, lq)| (lp.exp() * (lp - lq)).sum_dim_intlist(-1, false, Kind::Float)),
    )
}

/// Mean of `x` over the positions where `mask` is 1 (padding of short chunks is 0).
pub fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    (x * mask).sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
}

/// The clipped surrogate loss −E[min(ρA, clip(ρ, 1−ε, 1+ε)A)] with ρ = exp(logp − behaviour_logp).
pub fn clipped_surrogate(
    logp: &Tensor,
    behaviour_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> Tensor {
    let ratio = (logp - behaviour_logp).exp();
    let unclipped = &ratio * adv;
    let clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * adv;
    -masked_mean(&unclipped.minimum(&clipped), mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn clipped_surrogate_hand_computed() {
        // ratios 1.5, 0.5, 0.5, 1.5 with advantages 1, 1, −1, −1 and ε = 0.2:
        // min(1.5, 1.2) = 1.2; min(0.5, 0.8) = 0.5; min(−0.5, −0.8) = −0.8; min(−1.5, −1.2) = −1.5
        // loss = −(1.2 + 0.5 − 0.8 − 1.5)/4 = 0.15. A fifth, padded position must not count.
        let ratios = [1.5f32, 0.5, 0.5, 1.5, 9.0];
        let logp = Tensor::from_slice(&ratios.map(f32::ln));
        let old = Tensor::zeros([5], (Kind::Float, tch::Device::Cpu));
        let adv = Tensor::from_slice(&[1.0f32, 1.0, -1.0, -1.0, 5.0]);
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 0.0]);
        let loss = clipped_surrogate(&logp, &old, &adv, &mask, 0.2);
        assert!((scalar(&loss) - 0.15).abs() < 1e-6, "{}", scalar(&loss));
    }

    #[test]
    fn head_log_probs_and_entropies() {
        // Uniform logits: log p = Σ_h −ln n_h and entropy Σ_h ln n_h.
        let logits = Tensor::zeros([2, 40], (Kind::Float, tch::Device::Cpu));
        let actions =
            Tensor::from_slice(&[0i64, 1, 2, 0, 1, 4, 2, 0, 9, 6, 0, 0, 0, 0, 0, 0, 0, 0])
                .view([2, 9]);
        let (lp, ent) = log_prob_and_entropy(&logits, &actions);
        let expected: f64 = HEAD_SIZES.iter().map(|&n| (n as f64).ln()).sum();
        for i in 0..2 {
            assert!((lp.double_value(&[i]) + expected).abs() < 1e-5);
            assert!((ent.double_value(&[i]) - expected).abs() < 1e-5);
        }
        // A confident first head: its choice gets almost all the mass and the rest stay uniform.
        let mut v = vec![0.0f32; 40];
        v[3] = 20.0;
        let (lp, _) = log_prob_and_entropy(
            &Tensor::from_slice(&v),
            &Tensor::from_slice(&[3i64, 0, 0, 0, 0, 0, 0, 0, 0]),
        );
        let rest: f64 = HEAD_SIZES[1..].iter().map(|&n| (n as f64).ln()).sum();
        assert!((scalar(&lp) + rest).abs() < 1e-4);
    }

    #[test]
    fn kl_to_the_anchor_hand_computed() {
        // Same logits: 0. Head 2 (wd, 3 choices) at π = (½, ¼, ¼) against uniform q and every
        // other head equal: KL = Σ π ln(3π) = ½ln(3/2) + ½ln(3/4).
        let anchor = Tensor::from_slice(&[0.5f32; 40]);
        assert!(scalar(&kl_divergence(&anchor, &anchor)).abs() < 1e-6);
        let mut v = vec![0.5f32; 40];
        v[7] = 0.5 + 2f32.ln();
        let expected = 0.5 * 1.5f64.ln() + 0.5 * 0.75f64.ln();
        let kl = kl_divergence(&Tensor::from_slice(&v), &anchor);
        assert!((scalar(&kl) - expected).abs() < 1e-6, "{}", scalar(&kl));
        // The gradient flows into the policy's logits only.
        let logits = Tensor::from_slice(&v).set_requires_grad(true);
        kl_divergence(&logits, &anchor).backward();
        assert!(logits.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
