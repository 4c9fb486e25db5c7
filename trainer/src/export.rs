//! tch actor → the core's frozen-policy file. The format, its header and its checks belong to
//! lhopt-core; this module only copies the trained numbers into a core `PolicyNet` by the core's
//! parameter names and lets the core encode it.

use std::path::Path;

use lhopt_core::{FeatureSet, FrozenPolicy, PolicyNet};

use crate::error::{Error, Result};
use crate::policy_net::{PolicySizes, RecurrentNet};

/// What a policy file records besides its weights.
#[derive(Clone, Copy, Debug)]
pub struct PolicyLabel<'a> {
    /// The policy's name.
    pub name: &'a str,
    /// Its one-paragraph card.
    pub card: &'a str,
    /// The learning rate it was trained to start runs from.
    pub start_lr: f32,
    /// The feature set it was trained on.
    pub feature_set: FeatureSet,
}

/// Encodes `actor` (its weights and frozen input statistics) as a core policy file with `label`.
pub fn encode_policy(actor: &RecurrentNet, label: &PolicyLabel) -> Result<Vec<u8>> {
    match actor.sizes() {
        PolicySizes::TINY => encode::<32, 32, 32>(actor, label),
        PolicySizes::SMALL => encode::<64, 64, 64>(actor, label),
        PolicySizes::MEDIUM => encode::<128, 128, 128>(actor, label),
        PolicySizes::PAPER => encode::<256, 256, 256>(actor, label),
        s => Err(Error::Usage(format!(
            "policy sizes pre {} hidden {} post {} are not a core preset; use tiny (32), small (64), medium (128) or paper (256)",
            s.pre, s.hidden, s.post
        ))),
    }
}

/// Decodes a core policy file of any preset and runs `f` on it (the core network is generic over
/// its sizes, so the caller's code is instantiated per preset).
pub fn with_decoded<R>(bytes: &[u8], f: impl PolicyVisitor<R>) -> Result<R> {
    let header = lhopt_core::read_header(bytes).map_err(Error::Core)?;
    match (header.pre, header.hidden, header.post) {
        (32, 32, 32) => Ok(f.visit(&*decode::<32, 32, 32>(bytes)?)),
        (64, 64, 64) => Ok(f.visit(&*decode::<64, 64, 64>(bytes)?)),
        (128, 128, 128) => Ok(f.visit(&*decode::<128, 128, 128>(bytes)?)),
        (256, 256, 256) => Ok(f.visit(&*decode::<256, 256, 256>(bytes)?)),
        (pre, h, post) => Err(Error::Usage(format!(
            "policy sizes {pre}/{h}/{post} are not a core preset"
        ))),
    }
}

/// Code generic over the core's policy sizes, for [`with_decoded`].
pub trait PolicyVisitor<R> {
    /// Called with the decoded policy.
    fn visit<const PRE: usize, const H: usize, const POST: usize>(
        self,
        p: &FrozenPolicy<PRE, H, POST>,
    ) -> R;
}

// Not inlined, here and in `encode`: the core's networks are fixed-size values (2.6 MB at the
// paper preset) that pass through the stack, and inlined into the preset `match` every preset's
// frame would be reserved on every call, overflowing a 2 MiB thread even for the tiny preset.
#[inline(never)]
fn decode<const PRE: usize, const H: usize, const POST: usize>(
    bytes: &[u8],
) -> Result<Box<FrozenPolicy<PRE, H, POST>>> {
    FrozenPolicy::decode(bytes)
        .map(Box::new)
        .map_err(Error::Core)
}

#[inline(never)]
fn encode<const PRE: usize, const H: usize, const POST: usize>(
    actor: &RecurrentNet,
    label: &PolicyLabel,
) -> Result<Vec<u8>> {
    let weights = actor.core_weights();
    let mut net = Box::new(PolicyNet::<PRE, H, POST>::neutral());
    let mut problem = None;
    net.for_each_param_mut(|param, dst| {
        if param == "norm.clip" {
            dst[0] = actor.norm_clip() as f32;
            return;
        }
        match weights.iter().find(|(n, _)| *n == param) {
            Some((_, t)) if t.numel() == dst.len() => {
                dst.copy_from_slice(&Vec::<f32>::try_from(t.view([-1])).expect("float weights"));
            }
            Some((_, t)) => {
                problem = Some(format!(
                    "{param}: the trainer has {} numbers, the core {}",
                    t.numel(),
                    dst.len()
                ))
            }
            None => problem = Some(format!("{param}: the trainer has no such weight")),
        }
    });
    if let Some(p) = problem {
        return Err(Error::Checkpoint(format!(
            "export does not match the core layout: {p}"
        )));
    }
    let policy = FrozenPolicy::new(*net, label.name, label.card)
        .and_then(|p| p.with_start_lr(label.start_lr))
        .map(|p| p.with_feature_set(label.feature_set))
        .map_err(Error::Core)?;
    let mut buf = vec![0u8; FrozenPolicy::<PRE, H, POST>::MAX_ENCODED_LEN];
    let n = policy.encode(&mut buf).map_err(Error::Core)?;
    buf.truncate(n);
    Ok(buf)
}

/// A human-readable description of a policy file: header, sizes, parameter count and card.
pub fn describe(bytes: &[u8]) -> Result<String> {
    let h = lhopt_core::read_header(bytes).map_err(Error::Core)?;
    let params =
        lhopt_core::format::param_count(h.pre as usize, h.hidden as usize, h.post as usize);
    let preset = match (h.pre, h.hidden, h.post) {
        (32, 32, 32) => "tiny",
        (64, 64, 64) => "small",
        (128, 128, 128) => "medium",
        (256, 256, 256) => "paper",
        _ => "not a preset",
    };
    // Decoding checks the CRC and every number, not just the header.
    let fingerprint = with_decoded(bytes, Fingerprint)?;
    Ok(format!(
        "name:         {}\nfeature set:  {} (this build: {})\nobservation:  {} inputs\n\
         sizes:        pre {} / hidden {} / post {} ({preset}), {params} parameters, {} bytes\n\
         heads:        {:?}\nstart lr:     {:e}\nfingerprint:  {fingerprint:08x}\ncard:         {}",
        h.name,
        h.feature_set_version,
        lhopt_core::FEATURE_SET_VERSION,
        h.obs_dim,
        h.pre,
        h.hidden,
        h.post,
        bytes.len(),
        h.head_sizes,
        h.start_lr,
        h.card
    ))
}

struct Fingerprint;

impl PolicyVisitor<u32> for Fingerprint {
    fn visit<const PRE: usize, const H: usize, const POST: usize>(
        self,
        p: &FrozenPolicy<PRE, H, POST>,
    ) -> u32 {
        p.fingerprint()
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, then renamed
/// over the target, so a crash never leaves a half-written file under the real name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_net::{ActorCritic, LstmState, RunningMoments};
    use lhopt_core::{NUM_ACTION_LOGITS, OBS_DIM};
    use rand::{Rng, SeedableRng};

    fn label<'a>(name: &'a str, card: &'a str) -> PolicyLabel<'a> {
        PolicyLabel {
            name,
            card,
            start_lr: INITIAL_LR,
            feature_set: FeatureSet::CURRENT,
        }
    }

    const INITIAL_LR: f32 = lhopt_core::Hyperparams::INITIAL.lr;

    /// A Tiny actor with every weight moved off its initialisation and non-trivial input
    /// statistics, so that parity exercises every parameter.
    fn scrambled(seed: u64) -> ActorCritic {
        tch::manual_seed(seed as i64);
        let mut ac = ActorCritic::new(tch::Device::Cpu, PolicySizes::TINY, 3, 4.0);
        tch::no_grad(|| {
            for (_, t) in ac.vs.variables() {
                let noise = t.randn_like() * 0.3;
                let _ = t.shallow_clone().g_add_(&noise);
            }
        });
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut m = RunningMoments::new(OBS_DIM);
        let rows: Vec<f32> = (0..OBS_DIM * 20)
            .map(|_| rng.gen_range(-3.0..3.0))
            .collect();
        m.update(&rows);
        ac.actor.set_input_stats(&m);
        ac
    }

    struct Replay<'a>(&'a [[f32; OBS_DIM]]);

    impl PolicyVisitor<Vec<[f32; NUM_ACTION_LOGITS]>> for Replay<'_> {
        fn visit<const PRE: usize, const H: usize, const POST: usize>(
            self,
            p: &FrozenPolicy<PRE, H, POST>,
        ) -> Vec<[f32; NUM_ACTION_LOGITS]> {
            let mut state = lhopt_core::LstmState::<H>::default();
            self.0
                .iter()
                .map(|o| p.net().forward(o, &mut state))
                .collect()
        }
    }

    #[test]
    fn exported_policy_computes_the_same_logits_in_the_core() {
        let ac = scrambled(7);
        let bytes = encode_policy(&ac.actor, &label("parity", "test")).unwrap();
        let header = lhopt_core::read_header(&bytes).unwrap();
        assert_eq!((header.pre, header.hidden, header.post), (32, 32, 32));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let obs: Vec<[f32; OBS_DIM]> = (0..24)
            .map(|_| std::array::from_fn(|i| rng.gen_range(-4.0..4.0) + (i % 7) as f32))
            .collect();
        let core = with_decoded(&bytes, Replay(&obs)).unwrap();
        let mut state = LstmState::zeros(1, 32, tch::Device::Cpu);
        let mut worst = 0f32;
        for (o, c) in obs.iter().zip(&core) {
            let t = ac.actor.step(o, &mut state);
            worst = t
                .iter()
                .zip(c)
                .map(|(a, b)| (a - b).abs())
                .fold(worst, f32::max);
            assert_eq!(
                lhopt_core::greedy(&t.clone().try_into().unwrap()),
                lhopt_core::greedy(c)
            );
        }
        assert!(worst < 1e-5, "max |tch − core| = {worst}");
        // The logits are not trivially equal: they vary across steps.
        assert!(
            core[0]
                .iter()
                .zip(&core[5])
                .any(|(a, b)| (a - b).abs() > 1e-2)
        );
    }

    /// Regenerates the checked-in parity fixture replayed by `tests/tests/parity.rs` (lhopt-tests,
    /// no libtorch): a scrambled Tiny policy, the observations it saw steering a real noisy
    /// quadratic run, and tch's logits and greedy actions for them. Run on purpose only:
    /// `cargo test -p lhopt-trainer --lib write_parity_fixture -- --ignored`.
    #[test]
    #[ignore = "writes tests/fixtures; run on purpose to regenerate"]
    fn write_parity_fixture() {
        use crate::env::{self, EpisodeConfig};
        use crate::ppo::agent::{ActMode, PolicyAgent};
        use crate::tasks::{self, Family, Scale};
        use std::fmt::Write as _;

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let ac = scrambled(2026);
        let bytes = encode_policy(
            &ac.actor,
            &label(
                "parity-fixture",
                "scrambled untrained Tiny policy for parity tests",
            ),
        )
        .unwrap();
        let data = lhopt_data::DataDir::at(std::env::temp_dir());
        let spec = tasks::sample(Family::NoisyQuadratic, 0, Scale::Cpu);
        let mut task = tasks::build(&spec, tch::Device::Cpu, &data).unwrap();
        let cfg = EpisodeConfig {
            total_steps: 96,
            decisions: 12,
            initial: lhopt_core::Hyperparams::INITIAL,
            hide_eval: false,
        };
        let mut agent = PolicyAgent::new(&ac.actor, ActMode::Greedy, 0);
        let trace = env::run_episode(&mut *task, &cfg, &mut agent).unwrap();
        assert_eq!(trace.decisions.len(), 12);

        let mut text = String::from(
            "# lhopt parity fixture: written by lhopt-trainer export::tests::write_parity_fixture, replayed by\n\
             # lhopt-tests tests/parity.rs against parity_tiny.lhp. Per decision: obs (166), tch logits (40), greedy (9).\n",
        );
        let mut state = LstmState::zeros(1, 32, tch::Device::Cpu);
        let join = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{x:e}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for d in &trace.decisions {
            let obs: [f32; OBS_DIM] = d.obs.clone().try_into().unwrap();
            let logits: [f32; NUM_ACTION_LOGITS] =
                ac.actor.step(&obs, &mut state).try_into().unwrap();
            let greedy = lhopt_core::greedy(&logits);
            assert_eq!(greedy, d.action, "tch acting and tch replay agree");
            writeln!(text, "obs {}", join(&obs)).unwrap();
            writeln!(text, "logits {}", join(&logits)).unwrap();
            let choices: Vec<String> = greedy.choices.iter().map(u8::to_string).collect();
            writeln!(text, "greedy {}", choices.join(" ")).unwrap();
        }
        write_atomic(&dir.join("parity_tiny.lhp"), &bytes).unwrap();
        write_atomic(&dir.join("parity_tiny.txt"), text.as_bytes()).unwrap();
    }

    #[test]
    fn non_preset_sizes_are_refused() {
        let ac = ActorCritic::new(
            tch::Device::Cpu,
            PolicySizes {
                pre: 8,
                hidden: 8,
                post: 8,
            },
            0,
            5.0,
        );
        let err = encode_policy(&ac.actor, &label("x", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a core preset"), "{err}");
    }
}
