//! The crate's one error type.

use core::fmt;

/// Everything that can go wrong in `lhopt-core`: bad run configurations, and policy or state
/// bytes that cannot be trusted. Each variant says what was wrong; [`fmt::Display`] also says
/// what to do about it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The bytes end before the data they announce.
    Truncated {
        /// Bytes the header announces (or at least needed to read it).
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// The bytes do not start with the expected magic number (not a file of this kind).
    BadMagic,
    /// The file was written in a format version this build cannot read.
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The policy was trained on a different observation definition.
    FeatureSetMismatch {
        /// Feature-set version in the file.
        found: u16,
        /// Feature-set version of this build.
        expected: u16,
    },
    /// A size in the file differs from the one the decoding type was compiled with.
    SizeMismatch {
        /// Which size: "pre", "hidden", "post", "obs_dim", "head sizes", ...
        which: &'static str,
        /// Value in the file.
        found: u32,
        /// Value the decoding type expects.
        expected: u32,
    },
    /// The CRC-32 stored in the file does not match its contents.
    Corrupt {
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the contents.
        computed: u32,
    },
    /// The bytes pass the CRC but do not decode as the announced layout (or trail extra bytes).
    Malformed,
    /// A weight or normalisation statistic is NaN or infinite (or a variance/clip is negative).
    NonFinite,
    /// The output buffer is too small.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A text field is longer than the file format allows.
    TooLong {
        /// Which field: "name" or "card".
        which: &'static str,
        /// Maximum length in bytes.
        max: usize,
    },
    /// A run configuration that cannot be scheduled (the message says which field).
    InvalidConfig(&'static str),
    /// Saved controller state belongs to a different policy than the one it is restored into.
    PolicyMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, found } => write!(
                f,
                "truncated: {found} bytes given, {needed} needed; the file was cut short, copy it again"
            ),
            Self::BadMagic => {
                f.write_str("bad magic number: these bytes are not an lhopt policy/state file")
            }
            Self::UnsupportedVersion { found, supported } => write!(
                f,
                "format version {found} is not supported (this build reads version {supported}); \
                 re-export the policy with a matching lhopt version"
            ),
            Self::FeatureSetMismatch { found, expected } => write!(
                f,
                "policy was trained on feature set {found}, this build computes feature sets 1 \
                 to {expected}; use a newer lhopt, or a policy trained for one of these"
            ),
            Self::SizeMismatch {
                which,
                found,
                expected,
            } => write!(
                f,
                "size mismatch in {which}: file has {found}, the decoding type expects {expected}; \
                 pick the preset matching the file (see read_header)"
            ),
            Self::Corrupt { stored, computed } => write!(
                f,
                "corrupt: stored CRC-32 {stored:#010x} but contents give {computed:#010x}"
            ),
            Self::Malformed => {
                f.write_str("malformed: contents do not decode as the layout the header announces")
            }
            Self::NonFinite => f.write_str(
                "the policy holds a NaN/infinite weight or an invalid normalisation statistic",
            ),
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: {needed} bytes needed, {available} available"
            ),
            Self::TooLong { which, max } => {
                write!(
                    f,
                    "the policy {which} is longer than {max} bytes; shorten it"
                )
            }
            Self::InvalidConfig(what) => write!(f, "invalid run configuration: {what}"),
            Self::PolicyMismatch => f.write_str(
                "saved state belongs to a different policy than the controller it is restored into",
            ),
        }
    }
}

impl core::error::Error for Error {}
