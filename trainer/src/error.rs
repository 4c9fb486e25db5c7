//! The crate's error type. Every fallible public function returns [`Result`].

/// Everything that can go wrong in the trainer, with what to do about it where that is known.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch rejected an operation (shape mismatch, device error, out of memory...).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A dataset could not be loaded from the cache (run scripts/fetch-data.sh).
    #[error(transparent)]
    Data(#[from] lhopt_data::Error),
    /// A task specification that cannot be built, e.g. edited by hand into an inconsistent state.
    #[error("invalid task spec: {0}")]
    InvalidSpec(String),
    /// A dataset is too small or malformed for the task built on it.
    #[error("dataset {dataset}: {reason}")]
    BadData {
        /// Which dataset.
        dataset: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A policy file that cannot be used here.
    #[error("policy {}: {reason}", path.display())]
    Policy {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The core controller rejected a configuration (e.g. more decisions than steps).
    #[error("controller: {0}")]
    Core(lhopt_core::Error),
    /// Bad user input that the argument parser could not catch (what was wrong, what to do).
    #[error("{0}")]
    Usage(String),
    /// A task whose baseline cannot define a reward (spec §6), e.g. its eval loss never decreases.
    #[error("reward: {0}")]
    Reward(String),
    /// A checkpoint or policy file that cannot be read back into this network.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A rank of an MPI meta-training job failed or broke the protocol.
    #[error("MPI job: {0}")]
    Distributed(String),
}

/// Result alias for the trainer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
