//! A frozen core policy as an [`Agent`]: the core's network forward pass and greedy or seeded
//! sampling, with the preset sizes picked from the policy file's header.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lhopt_core::{
    Action, FeatureSet, FrozenPolicy, LstmState, Mode, OBS_DIM, PolicyHeader, Rng, greedy, read_header, sample,
};

use super::Agent;
use crate::error::{Error, Result};
use crate::export::{PolicyVisitor, with_decoded};

/// The seed of the sampling stream in greedy mode (unused there, but the PRNG needs one).
const GREEDY_SEED: u64 = 0;

/// A decoded frozen policy with its recurrent state.
pub struct FrozenAgent<const PRE: usize, const H: usize, const POST: usize> {
    policy: Box<FrozenPolicy<PRE, H, POST>>,
    state: LstmState<H>,
    mode: Mode,
    rng: Rng,
}

impl<const PRE: usize, const H: usize, const POST: usize> FrozenAgent<PRE, H, POST> {
    /// An agent acting with `policy` in `mode`.
    pub fn new(policy: Box<FrozenPolicy<PRE, H, POST>>, mode: Mode) -> Self {
        FrozenAgent {
            policy,
            state: LstmState::default(),
            mode,
            rng: Rng::new(seed_of(mode)),
        }
    }
}

fn seed_of(mode: Mode) -> u64 {
    match mode {
        Mode::Greedy => GREEDY_SEED,
        Mode::Sample { seed } => seed,
    }
}

impl<const PRE: usize, const H: usize, const POST: usize> Agent for FrozenAgent<PRE, H, POST> {
    fn feature_set(&self) -> FeatureSet {
        self.policy.feature_set()
    }

    fn reset(&mut self) {
        self.state = LstmState::default();
        self.rng = Rng::new(seed_of(self.mode));
    }

    fn act(&mut self, obs: &[f32; OBS_DIM]) -> Action {
        let logits = self.policy.forward(obs, &mut self.state);
        match self.mode {
            Mode::Greedy => greedy(&logits),
            Mode::Sample { .. } => sample(&logits, &mut self.rng),
        }
    }
}

/// A policy file read and checked once, from which every worker makes its own agent.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    /// The policy's own name, or the file name when it has none.
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// What the file says about itself.
    pub header: PolicyHeader,
    /// How agents choose actions.
    pub mode: Mode,
    bytes: Arc<[u8]>,
}

impl PolicyFile {
    /// Reads `path` and checks that it decodes as one of the core's presets.
    pub fn read(path: &Path, mode: Mode) -> Result<PolicyFile> {
        let bytes: Arc<[u8]> = std::fs::read(path)
            .map_err(|e| policy_error(path, format!("cannot read it: {e}")))?
            .into();
        let header = read_header(&bytes).map_err(|e| policy_error(path, e.to_string()))?;
        let name = match header.name.as_str() {
            "" => path
                .file_stem()
                .map_or_else(|| "policy".into(), |s| s.to_string_lossy().into_owned()),
            name => name.to_owned(),
        };
        let file = PolicyFile {
            name,
            path: path.to_owned(),
            header,
            mode,
            bytes,
        };
        file.agent()?; // decodes the weights once: a corrupt file fails here, not in a worker
        Ok(file)
    }

    /// A fresh agent for this policy.
    pub fn agent(&self) -> Result<Box<dyn Agent + Send>> {
        with_decoded(&self.bytes, MakeAgent(self.mode))
            .map_err(|e| policy_error(&self.path, e.to_string()))
    }
}

/// Builds a [`FrozenAgent`] of whichever preset the file holds.
struct MakeAgent(Mode);

impl PolicyVisitor<Box<dyn Agent + Send>> for MakeAgent {
    fn visit<const PRE: usize, const H: usize, const POST: usize>(
        self,
        p: &FrozenPolicy<PRE, H, POST>,
    ) -> Box<dyn Agent + Send> {
        Box::new(FrozenAgent::new(Box::new(p.clone()), self.0))
    }
}

fn policy_error(path: &Path, reason: String) -> Error {
    Error::Policy {
        path: path.to_owned(),
        reason,
    }
}
