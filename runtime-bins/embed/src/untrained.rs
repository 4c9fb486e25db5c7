//! Randomly initialised (untrained) policies, seeded: a valid policy file for tests and for the
//! firmware until a trained default policy ships. Its decisions are arbitrary but deterministic,
//! which is all a bit-for-bit comparison between runtimes needs.

use lhopt_core::{OBS_DIM, PolicyNet, Rng};

/// The seed the example tests and the firmware build agree on: in the replay scenario its
/// decisions save, load and swap checkpoint registers, so those paths are compared too.
pub const TEST_SEED: u64 = 37;

/// Initialisation gain (see [`untrained_net`]).
const GAIN: f32 = 4.0;

/// A network initialised like PyTorch's linear layers but with a gain (weights and biases uniform
/// in ±GAIN/√fan_in), unit layer-norm gains and neutral input normalisation. The gain makes the
/// logits depend strongly on the inputs, so the greedy actions vary along a run and any
/// numerical difference between two runtimes shows up in their decisions.
pub fn untrained_net<const PRE: usize, const H: usize, const POST: usize>(
    seed: u64,
) -> PolicyNet<PRE, H, POST> {
    let mut net = PolicyNet::neutral();
    let mut rng = Rng::new(seed);
    net.for_each_param_mut(|name, values| {
        let fan_in = match name {
            "pre.w" | "pre.b" => OBS_DIM,
            "lstm.wx" => PRE,
            "lstm.wh" | "lstm.b" | "post.w" | "post.b" => H,
            "heads.w" | "heads.b" => POST,
            // Layer-norm parameters and input statistics keep their neutral values.
            _ => return,
        };
        let bound = GAIN / libm::sqrtf(fan_in as f32);
        for v in values {
            *v = (2.0 * rng.next_f32() - 1.0) * bound;
        }
    });
    net
}

/// The untrained policy of `seed` as a policy file, encoded by the core's encoder.
#[cfg(feature = "std")]
pub fn policy_bytes<const PRE: usize, const H: usize, const POST: usize>(
    seed: u64,
) -> std::vec::Vec<u8> {
    use lhopt_core::{FrozenPolicy, encoded_len};
    let card = std::format!(
        "Untrained: randomly initialised with seed {seed}, never trained. Its decisions are \
         arbitrary; it exists to test runtimes against the core library."
    );
    let frozen = FrozenPolicy::new(untrained_net::<PRE, H, POST>(seed), "untrained", &card)
        .expect("the name and card fit the header");
    let mut buf = std::vec![0u8; encoded_len(PRE, H, POST)];
    let n = frozen
        .encode(&mut buf)
        .expect("encoded_len is the encoder's own size bound");
    buf.truncate(n);
    buf
}

/// The untrained Tiny policy of `seed` as a policy file.
#[cfg(feature = "std")]
pub fn tiny_policy_bytes(seed: u64) -> std::vec::Vec<u8> {
    policy_bytes::<32, 32, 32>(seed)
}
