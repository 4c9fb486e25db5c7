//! Generalised advantage estimation over one finished episode (spec §7: λ 0.95, γ 1).

/// Advantages of an episode that ends after its last decision (the value after it is 0):
/// δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}.
pub fn advantages(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> Vec<f32> {
    assert_eq!(rewards.len(), values.len(), "one value per reward");
    let mut adv = vec![0.0; rewards.len()];
    let mut next_adv = 0.0;
    let mut next_value = 0.0;
    for t in (0..rewards.len()).rev() {
        let delta = rewards[t] + gamma * next_value - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
        next_value = values[t];
    }
    adv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // δ2 = 2 − 1.5 = 0.5; δ1 = 0 + 1.5 − 1 = 0.5; δ0 = 1 + 1 − 0.5 = 1.5
        // A2 = 0.5; A1 = 0.5 + 0.5·0.5 = 0.75; A0 = 1.5 + 0.5·0.75 = 1.875
        let a = advantages(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 1.0, 0.5);
        assert_eq!(a, vec![1.875, 0.75, 0.5]);
        // γ < 1 discounts both the bootstrap value and the trace.
        let a = advantages(&[1.0, 1.0], &[0.0, 0.0], 0.5, 1.0);
        assert_eq!(a, vec![1.5, 1.0]);
    }

    #[test]
    fn lambda_one_gives_return_minus_value() {
        let r = [0.3, -0.2, 0.7, 0.1];
        let v = [0.4, 0.1, -0.3, 0.2];
        let a = advantages(&r, &v, 1.0, 1.0);
        for t in 0..4 {
            let ret: f32 = r[t..].iter().sum();
            assert!((a[t] - (ret - v[t])).abs() < 1e-6);
        }
    }
}
