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
        /// Newest version this build reads (it reads every earlier one it documents).
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
    /// Saved controller state passes its CRC but holds a value no run can reach (the message
    /// names the field): written by another program, or edited.
    InvalidState(&'static str),
    /// `decide` was called while no decision is due: before the step that announces one, or a
    /// second time for the same announcement.
    NoDecisionDue,
    /// The policy's recurrent state or logits overflowed to NaN or infinity (weights too large
    /// for the inputs they met). The decision was not taken: the hyperparameters are held, no
    /// restart is requested, and the recurrent state is reset to zero.
    PolicyDiverged,
    /// A valid policy file whose sizes are none of the presets this build compiles
    /// ([`crate::Preset`]).
    UnknownPreset {
        /// Width of the first dense layer.
        pre: u16,
        /// LSTM hidden size.
        hidden: u16,
        /// Width of the dense layer after the LSTM.
        post: u16,
    },
    /// Slices that must have one entry per tensor, or one per parameter element, differ in
    /// length (the inner optimizer's tensors and reductions).
    LengthMismatch {
        /// Which slice: "reductions", "grad", "m" or "v".
        which: &'static str,
        /// Index of the tensor ("reductions": 0).
        tensor: usize,
        /// Length given.
        found: usize,
        /// Length needed (the number of tensors, or the tensor's parameter count).
        expected: usize,
    },
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
                "format version {found} is not supported (this build reads versions up to {supported}); \
                 use a newer lhopt, or re-export the policy with this one"
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
            Self::InvalidState(field) => write!(
                f,
                "saved state passes its CRC but is not one a run can reach ({field}); restore a \
                 state written by Controller::save_state"
            ),
            Self::NoDecisionDue => f.write_str(
                "no decision is due: call decide once after each step that observe answered \
                 with DecisionDue",
            ),
            Self::PolicyDiverged => f.write_str(
                "the policy's recurrent state overflowed (its weights are too large for these \
                 inputs): the hyperparameters are held and the state was reset; use another \
                 policy file",
            ),
            Self::UnknownPreset { pre, hidden, post } => write!(
                f,
                "policy sizes pre={pre} hidden={hidden} post={post} are not a preset this build \
                 knows (Tiny 32, Small 64, Medium 128, Paper 256, all three equal)"
            ),
            Self::LengthMismatch {
                which,
                tensor,
                found,
                expected,
            } => write!(
                f,
                "length mismatch: {which} of tensor {tensor} has {found} entries, {expected} \
                 needed; give every slice of a tensor its parameter count, and one reductions \
                 entry per tensor"
            ),
        }
    }
}

impl core::error::Error for Error {}
