//! The frozen-policy file (see `FORMAT.md` in the crate root for the byte layout).
//!
//! A file is a fixed 10-byte preamble (magic, format version, total length), a postcard-encoded
//! [`PolicyHeader`], the [`PolicyNet`] weights as raw little-endian `f32` (the bytes postcard
//! would write for them), and a CRC-32 of everything before it.
//!
//! The weights are copied straight between the bytes and the network's arrays, tensor by tensor
//! in [`PolicyNet::for_each_param`] order, rather than through serde: same bytes, a plain
//! panic-free loop, and no serde visitor building each 4H×C field on the stack before moving it
//! (encode + decode of the Paper preset needed a 24 MB stack that way, 16 MB now). Decoding checks, in this order: preamble, length, CRC, header,
//! feature set, sizes, weights; each failure has its own [`Error`] variant and nothing panics.

use serde::{Deserialize, Serialize};

use crate::action::{Action, HEAD_SIZES, NUM_HEADS};
use crate::crc32::{Crc32, crc32};
use crate::error::Error;
use crate::hyper::{BOUNDS, Hyperparams};
use crate::observation::{FEATURE_SET_VERSION, FeatureSet, OBS_DIM};
use crate::policy::{LstmState, PolicyNet, valid_param};
use crate::weights::Vector;

/// First four bytes of a policy file.
pub const POLICY_MAGIC: [u8; 4] = *b"LHPO";

/// Format version this build writes. It also reads version 1, whose header has no start lr
/// (such a policy starts from [`Hyperparams::INITIAL`]).
pub const FORMAT_VERSION: u16 = 2;

/// A start lr a file may hold: within the lr's bounds ([`BOUNDS`]), so not NaN.
fn valid_start_lr(lr: f32) -> bool {
    let (lo, hi) = BOUNDS[0];
    (lo..=hi).contains(&lr)
}

/// Maximum length in bytes of the policy name.
pub const NAME_CAPACITY: usize = 32;

/// Maximum length in bytes of the policy card text.
pub const CARD_CAPACITY: usize = 512;

/// Bytes of the fixed preamble: magic (4), format version (u16 LE), total length (u32 LE).
pub const PREAMBLE_LEN: usize = 10;

/// Bytes of the trailing CRC-32 (u32 LE).
pub const CRC_LEN: usize = 4;

/// Largest postcard encoding of a [`PolicyHeader`]: five varint `u16` (3 bytes each), the nine
/// head sizes, the two strings with their varint length prefixes and the `f32` start lr.
const HEADER_MAX_LEN: usize = 5 * 3 + NUM_HEADS + (1 + NAME_CAPACITY) + (2 + CARD_CAPACITY) + 4;

/// Number of stored numbers of a `PolicyNet<pre, h, post>`.
pub const fn param_count(pre: usize, h: usize, post: usize) -> usize {
    OBS_DIM * pre
        + pre
        + 4 * h * pre
        + 4 * h * h
        + 5 * 4 * h
        + 2 * h
        + post * h
        + post
        + crate::action::NUM_ACTION_LOGITS * post
        + crate::action::NUM_ACTION_LOGITS
        + 2 * OBS_DIM
        + 1
}

/// A buffer size that always holds the encoding of a `FrozenPolicy<pre, h, post>` (the exact
/// length, returned by [`FrozenPolicy::encode`], is shorter by the unused name/card capacity).
pub const fn encoded_len(pre: usize, h: usize, post: usize) -> usize {
    PREAMBLE_LEN + HEADER_MAX_LEN + 4 * param_count(pre, h, post) + CRC_LEN
}

/// What a policy file says about itself: enough to pick the matching preset before decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyHeader {
    /// Observation definition the policy was trained on.
    pub feature_set_version: u16,
    /// Length of the observation vector.
    pub obs_dim: u16,
    /// Width of the first dense layer.
    pub pre: u16,
    /// LSTM hidden size.
    pub hidden: u16,
    /// Width of the dense layer after the LSTM.
    pub post: u16,
    /// Choices per action head.
    pub head_sizes: [u8; NUM_HEADS],
    /// Short name.
    pub name: heapless::String<NAME_CAPACITY>,
    /// Short card: training distribution, budget, licence, or a pointer to the full card.
    pub card: heapless::String<CARD_CAPACITY>,
    /// The learning rate the policy was trained to start from (every other hyperparameter
    /// starts at [`Hyperparams::INITIAL`]); see [`FrozenPolicy::start`].
    pub start_lr: f32,
}

impl PolicyHeader {
    /// [`Hyperparams::INITIAL`] with the start lr: see [`FrozenPolicy::start`].
    pub fn start(&self) -> Hyperparams {
        Hyperparams {
            lr: self.start_lr,
            ..Hyperparams::INITIAL
        }
    }
}

/// The header of format version 1: no start lr.
#[derive(Deserialize)]
struct PolicyHeaderV1 {
    feature_set_version: u16,
    obs_dim: u16,
    pre: u16,
    hidden: u16,
    post: u16,
    head_sizes: [u8; NUM_HEADS],
    name: heapless::String<NAME_CAPACITY>,
    card: heapless::String<CARD_CAPACITY>,
}

impl From<PolicyHeaderV1> for PolicyHeader {
    fn from(v1: PolicyHeaderV1) -> Self {
        Self {
            feature_set_version: v1.feature_set_version,
            obs_dim: v1.obs_dim,
            pre: v1.pre,
            hidden: v1.hidden,
            post: v1.post,
            head_sizes: v1.head_sizes,
            name: v1.name,
            card: v1.card,
            start_lr: Hyperparams::INITIAL.lr,
        }
    }
}

/// Checks the preamble, the length and the CRC of a framed file of a version in
/// `oldest..=newest` and returns the version and the payload.
pub(crate) fn open_frame(
    bytes: &[u8],
    magic: [u8; 4],
    oldest: u16,
    newest: u16,
) -> Result<(u16, &[u8]), Error> {
    let truncated = |needed| Error::Truncated {
        needed,
        found: bytes.len(),
    };
    let (preamble, _) = bytes
        .split_first_chunk::<PREAMBLE_LEN>()
        .ok_or(truncated(PREAMBLE_LEN))?;
    let (found_magic, rest) = preamble.split_first_chunk::<4>().ok_or(Error::Malformed)?;
    if *found_magic != magic {
        return Err(Error::BadMagic);
    }
    let (found_version, rest) = rest.split_first_chunk::<2>().ok_or(Error::Malformed)?;
    let found_version = u16::from_le_bytes(*found_version);
    if !(oldest..=newest).contains(&found_version) {
        return Err(Error::UnsupportedVersion {
            found: found_version,
            supported: newest,
        });
    }
    let (total, _) = rest.split_first_chunk::<4>().ok_or(Error::Malformed)?;
    let total = usize::try_from(u32::from_le_bytes(*total)).map_err(|_| Error::Malformed)?;
    if total < PREAMBLE_LEN + CRC_LEN {
        return Err(Error::Malformed);
    }
    if bytes.len() < total {
        return Err(truncated(total));
    }
    if bytes.len() > total {
        return Err(Error::Malformed);
    }
    let (covered, stored) = bytes
        .split_last_chunk::<CRC_LEN>()
        .ok_or(truncated(total))?;
    let stored = u32::from_le_bytes(*stored);
    let computed = crc32(covered);
    if stored != computed {
        return Err(Error::Corrupt { stored, computed });
    }
    let payload = covered.get(PREAMBLE_LEN..).ok_or(Error::Malformed)?;
    Ok((found_version, payload))
}

/// Writes a framed file of a `payload_len`-byte payload into `buf`: preamble, the payload
/// written by `payload` into the slice it is given (exactly `payload_len` bytes), and the CRC.
/// Returns the total length. A buffer too small is reported before anything is written, so the
/// caller's buffer holds either a whole file or what it held before.
pub(crate) fn write_frame(
    buf: &mut [u8],
    magic: [u8; 4],
    version: u16,
    payload_len: usize,
    payload: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<usize, Error> {
    let total = PREAMBLE_LEN + payload_len + CRC_LEN;
    let too_small = Error::BufferTooSmall {
        needed: total,
        available: buf.len(),
    };
    let total_u32 = u32::try_from(total).map_err(|_| too_small)?;
    let (preamble, rest) = buf
        .get_mut(..total)
        .ok_or(too_small)?
        .split_first_chunk_mut::<PREAMBLE_LEN>()
        .ok_or(too_small)?;
    let (body, _) = rest.split_at_mut(payload_len.min(rest.len()));
    payload(body)?;
    let mut fields = magic
        .into_iter()
        .chain(version.to_le_bytes())
        .chain(total_u32.to_le_bytes());
    for b in preamble.iter_mut() {
        *b = fields.next().unwrap_or(0);
    }
    let (covered, crc) = buf
        .get_mut(..total)
        .ok_or(too_small)?
        .split_last_chunk_mut::<CRC_LEN>()
        .ok_or(too_small)?;
    *crc = crc32(covered).to_le_bytes();
    Ok(total)
}

/// Length of the postcard encoding of `value`, counted without writing it.
pub(crate) fn postcard_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, Error> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|_| Error::Malformed)
}

/// Writes `value` with postcard into `out`, which [`postcard_len`] sized exactly.
pub(crate) fn postcard_into<T: Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<(), Error> {
    postcard::to_slice(value, out)
        .map(|_| ())
        .map_err(|_| Error::Malformed)
}

/// Reads and checks the header of a policy file (preamble, length, CRC) without decoding the
/// weights, so a host tool can pick the preset that matches the sizes.
pub fn read_header(bytes: &[u8]) -> Result<PolicyHeader, Error> {
    split_header(bytes).map(|(header, _)| header)
}

fn split_header(bytes: &[u8]) -> Result<(PolicyHeader, &[u8]), Error> {
    let (version, payload) = open_frame(bytes, POLICY_MAGIC, 1, FORMAT_VERSION)?;
    let (header, body) = if version == 1 {
        postcard::take_from_bytes::<PolicyHeaderV1>(payload).map(|(h, body)| (h.into(), body))
    } else {
        postcard::take_from_bytes::<PolicyHeader>(payload)
    }
    .map_err(|_| Error::Malformed)?;
    // No exporter writes a start lr outside the lr's bounds (NaN included).
    if !valid_start_lr(header.start_lr) {
        return Err(Error::Malformed);
    }
    Ok((header, body))
}

/// CRC-32 of the weights as they are laid out in the file: identifies a policy (the controller's
/// saved state records it, so state is never restored under another policy).
fn fingerprint<const PRE: usize, const H: usize, const POST: usize>(
    net: &PolicyNet<PRE, H, POST>,
) -> u32 {
    let mut crc = Crc32::default();
    net.for_each_param(|_, values| {
        for v in values {
            crc.update(&v.to_le_bytes());
        }
    });
    crc.finish()
}

/// A policy ready to run: its header and its weights, sizes fixed at compile time.
///
/// The weights live inline (Tiny 68 kB, Small 208 kB, Medium 709 kB, Paper 2.6 MB), so
/// [`FrozenPolicy::decode`] runs on the caller's stack. Measured on x86-64: Small decodes on a
/// 2 MB thread stack (Rust's default for spawned threads), Medium needs 4 MB, Paper 12 MB in
/// release and 16 MB in debug builds; use a thread with a large enough stack for those.
#[derive(Clone, Debug, PartialEq)]
pub struct FrozenPolicy<const PRE: usize, const H: usize, const POST: usize> {
    header: PolicyHeader,
    net: PolicyNet<PRE, H, POST>,
    fingerprint: u32,
    /// [`PolicyNet::input_scale`], computed once (it costs 166 square roots and divisions).
    input_scale: [f32; OBS_DIM],
}

/// `n` as a `u16`, saturated (sizes are checked to fit by [`FrozenPolicy::new`]); a `const fn`,
/// unlike `u16::try_from`.
const fn narrow_u16(n: usize) -> u16 {
    if n > u16::MAX as usize {
        u16::MAX
    } else {
        n as u16
    }
}

/// [`HEAD_SIZES`] as a header stores them (every head has fewer than 256 choices).
// Evaluated at compile time: an index out of range or a head too wide fails the build.
#[allow(clippy::indexing_slicing)]
const HEAD_SIZES_U8: [u8; NUM_HEADS] = {
    let mut out = [0; NUM_HEADS];
    let mut i = 0;
    while i < NUM_HEADS {
        out[i] = HEAD_SIZES[i] as u8;
        assert!(
            out[i] as usize == HEAD_SIZES[i],
            "a head has 256 choices or more"
        );
        i += 1;
    }
    out
};

fn size_u16(which: &'static str, n: usize) -> Result<u16, Error> {
    u16::try_from(n).map_err(|_| Error::SizeMismatch {
        which,
        found: u32::try_from(n).unwrap_or(u32::MAX),
        expected: u32::from(u16::MAX),
    })
}

fn check_size(which: &'static str, found: u16, expected: usize) -> Result<(), Error> {
    if usize::from(found) == expected {
        Ok(())
    } else {
        Err(Error::SizeMismatch {
            which,
            found: u32::from(found),
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
        })
    }
}

impl<const PRE: usize, const H: usize, const POST: usize> FrozenPolicy<PRE, H, POST> {
    /// Exact length of the weights in the file: 4 bytes per `f32`.
    const BODY_LEN: usize = 4 * param_count(PRE, H, POST);

    /// A buffer size that always holds [`FrozenPolicy::encode`]'s output.
    pub const MAX_ENCODED_LEN: usize = encoded_len(PRE, H, POST);

    /// Wraps trained weights with a header for this build's feature set and action space.
    /// Errors: a name or card longer than [`NAME_CAPACITY`] / [`CARD_CAPACITY`] bytes
    /// ([`Error::TooLong`]), weights that are not finite ([`Error::NonFinite`]).
    pub fn new(net: PolicyNet<PRE, H, POST>, name: &str, card: &str) -> Result<Self, Error> {
        let too_long = |which, max| move |_| Error::TooLong { which, max };
        let name = heapless::String::try_from(name).map_err(too_long("name", NAME_CAPACITY))?;
        let card = heapless::String::try_from(card).map_err(too_long("card", CARD_CAPACITY))?;
        for (which, n) in [
            ("obs_dim", OBS_DIM),
            ("pre", PRE),
            ("hidden", H),
            ("post", POST),
        ] {
            size_u16(which, n)?;
        }
        Self::from_parts(Self::header_for(name, card), net)
    }

    /// The header of a policy of this build's sizes (checked to fit a `u16` by
    /// [`FrozenPolicy::new`]).
    const fn header_for(
        name: heapless::String<NAME_CAPACITY>,
        card: heapless::String<CARD_CAPACITY>,
    ) -> PolicyHeader {
        PolicyHeader {
            feature_set_version: FEATURE_SET_VERSION,
            obs_dim: narrow_u16(OBS_DIM),
            pre: narrow_u16(PRE),
            hidden: narrow_u16(H),
            post: narrow_u16(POST),
            head_sizes: HEAD_SIZES_U8,
            name,
            card,
            start_lr: Hyperparams::INITIAL.lr,
        }
    }

    /// A placeholder with no policy in it (neutral weights, no name, fingerprint 0), built at
    /// compile time: what [`FrozenPolicy::decode`] decodes into, and the policy of
    /// [`crate::Controller::empty`]. Not a policy to run: its cached input scale is not the
    /// network's.
    pub(crate) const fn empty() -> Self {
        Self {
            header: Self::header_for(heapless::String::new(), heapless::String::new()),
            net: PolicyNet::neutral(),
            fingerprint: 0,
            input_scale: [1.0; OBS_DIM],
        }
    }

    /// The policy that holds every hyperparameter where it is: zero weights, and head biases
    /// that make each head's hold choice ([`Action::HOLD`]) the most likely. A placeholder to
    /// [`FrozenPolicy::decode_into`] a real policy into, and a constant-hyperparameter baseline
    /// that runs through the same integration code.
    pub fn holding() -> Self {
        let mut net = PolicyNet::neutral();
        net.heads_b = Vector(Action::HOLD.one_hot());
        let mut name = heapless::String::new();
        // Fits: NAME_CAPACITY is 32 bytes.
        let _ = name.push_str("hold");
        Self {
            header: Self::header_for(name, heapless::String::new()),
            fingerprint: fingerprint(&net),
            input_scale: net.input_scale(),
            net,
        }
    }

    fn from_parts(header: PolicyHeader, net: PolicyNet<PRE, H, POST>) -> Result<Self, Error> {
        if !net.is_valid() {
            return Err(Error::NonFinite);
        }
        let fingerprint = fingerprint(&net);
        let input_scale = net.input_scale();
        Ok(Self {
            header,
            net,
            fingerprint,
            input_scale,
        })
    }

    /// Decodes and validates a policy file (see the module docs for the order of checks). The
    /// weights are decoded straight from `bytes` into the fixed arrays of the result.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        // Every field is overwritten by a successful decode_into.
        let mut policy = Self::empty();
        policy.decode_into(bytes)?;
        Ok(policy)
    }

    /// [`FrozenPolicy::decode`] into `self`, in place: the weights are written straight from
    /// `bytes` into `self`'s arrays, so no second copy of them ever exists on the stack (what a
    /// small device needs; see [`crate::Controller::load`]). On error `self` is unchanged: every
    /// check, the weights' validity included, runs before anything is written.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let (header, body) = split_header(bytes)?;
        if FeatureSet::from_version(header.feature_set_version).is_none() {
            return Err(Error::FeatureSetMismatch {
                found: header.feature_set_version,
                expected: FEATURE_SET_VERSION,
            });
        }
        check_size("obs_dim", header.obs_dim, OBS_DIM)?;
        for (&found, expected) in header.head_sizes.iter().zip(HEAD_SIZES) {
            check_size("head sizes", u16::from(found), expected)?;
        }
        check_size("pre", header.pre, PRE)?;
        check_size("hidden", header.hidden, H)?;
        check_size("post", header.post, POST)?;
        if body.len() != Self::BODY_LEN {
            return Err(Error::Malformed);
        }
        let (all_words, _) = body.as_chunks::<4>();
        // First pass: validate the file's values against the layout (names and lengths) of
        // `self`'s tensors; second pass: write them.
        let (mut words, mut valid) = (all_words, true);
        self.net.for_each_param(|name, values| {
            let (these, rest) = words.split_at(values.len().min(words.len()));
            valid &= these
                .iter()
                .all(|w| valid_param(name, f32::from_le_bytes(*w)));
            words = rest;
        });
        if !valid {
            return Err(Error::NonFinite);
        }
        self.net
            .fill_in_file_order(&mut all_words.iter().map(|w| f32::from_le_bytes(*w)));
        self.header = header;
        self.fingerprint = fingerprint(&self.net);
        self.input_scale = self.net.input_scale();
        Ok(())
    }

    /// Encodes into `buf` ([`FrozenPolicy::MAX_ENCODED_LEN`] bytes always suffice) and returns
    /// the number of bytes written. On error `buf` is unchanged.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let header_len = postcard_len(&self.header)?;
        write_frame(
            buf,
            POLICY_MAGIC,
            FORMAT_VERSION,
            header_len + Self::BODY_LEN,
            |payload| {
                let (header, body) = payload.split_at_mut(header_len.min(payload.len()));
                postcard_into(&self.header, header)?;
                let (mut words, _) = body.as_chunks_mut::<4>();
                self.net.for_each_param(|_, values| {
                    for v in values {
                        if let Some((word, rest)) = core::mem::take(&mut words).split_first_mut() {
                            *word = v.to_le_bytes();
                            words = rest;
                        }
                    }
                });
                Ok(())
            },
        )
    }

    /// The header.
    pub fn header(&self) -> &PolicyHeader {
        &self.header
    }

    /// Sets the learning rate the policy was trained to start from (see [`FrozenPolicy::start`]).
    /// Errors: a value outside the lr's bounds ([`Error::InvalidConfig`]).
    pub fn with_start_lr(mut self, lr: f32) -> Result<Self, Error> {
        if !valid_start_lr(lr) {
            return Err(Error::InvalidConfig(
                "the start lr must be within the lr's bounds [1e-8, 1]",
            ));
        }
        self.header.start_lr = lr;
        Ok(self)
    }

    /// Records the feature set the policy was trained on ([`FrozenPolicy::new`] records the
    /// current one), so that a controller computes the observations it expects.
    pub fn with_feature_set(mut self, feature_set: FeatureSet) -> Self {
        self.header.feature_set_version = feature_set.version();
        self
    }

    /// The hyperparameters the policy was trained to start from: [`Hyperparams::INITIAL`] with
    /// the file's start lr (1e-3, the initial lr, for files of format version 1). Start a run
    /// here unless you have a reason not to: the policy sees its hyperparameters relative to the
    /// start, so from elsewhere it follows the same relative path from a different place.
    pub fn start(&self) -> Hyperparams {
        self.header.start()
    }

    /// The feature set the policy was trained on, which its controller must compute.
    pub fn feature_set(&self) -> FeatureSet {
        // Decoding admits only versions `from_version` knows; the fallback is unreachable.
        FeatureSet::from_version(self.header.feature_set_version).unwrap_or(FeatureSet::CURRENT)
    }

    /// The network.
    pub fn net(&self) -> &PolicyNet<PRE, H, POST> {
        &self.net
    }

    /// One decision step of the network ([`PolicyNet::forward`], with the input scale cached).
    pub fn forward(
        &self,
        obs_raw: &[f32; OBS_DIM],
        state: &mut LstmState<H>,
    ) -> [f32; crate::action::NUM_ACTION_LOGITS] {
        let x = self.net.normalise(obs_raw, &self.input_scale);
        self.net.forward_normalised(&x, state)
    }

    /// CRC-32 of the weights in file order: identifies the policy.
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    use super::*;
    use crate::policy::{PolicyNet, random_net};
    use crate::weights::Packed;

    type Tiny = FrozenPolicy<8, 4, 6>;

    fn policy() -> Tiny {
        FrozenPolicy::new(random_net(3), "test-policy", "made by the format tests").unwrap()
    }

    fn encoded(p: &Tiny) -> Vec<u8> {
        let mut buf = vec![0u8; Tiny::MAX_ENCODED_LEN];
        let n = p.encode(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// Rewrites the CRC after a deliberate edit, so the later checks are reached.
    fn reseal(bytes: &mut [u8]) {
        let n = bytes.len();
        let crc = crc32(&bytes[..n - 4]).to_le_bytes();
        bytes[n - 4..].copy_from_slice(&crc);
    }

    #[test]
    fn round_trip_preserves_everything_and_has_the_documented_layout() {
        let p = policy();
        let bytes = encoded(&p);
        assert_eq!(&bytes[..4], b"LHPO");
        assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FORMAT_VERSION);
        let total = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        assert_eq!(total as usize, bytes.len());
        // Varints: feature set 1 byte, obs_dim 166 two bytes, the three sizes one byte each;
        // the start lr a raw f32 at the end.
        let header_len = 6 + 9 + (1 + 11) + (1 + 24) + 4;
        let start_at = 10 + header_len - 4;
        assert_eq!(bytes[start_at..start_at + 4], 1e-3f32.to_le_bytes());
        assert_eq!(
            bytes.len(),
            PREAMBLE_LEN + header_len + 4 * param_count(8, 4, 6) + 4
        );
        assert!(bytes.len() <= encoded_len(8, 4, 6));
        // The body starts with pre.w as raw little-endian f32, row-major whatever the layout
        // in memory.
        let word = |i: usize| {
            let at = 10 + header_len + 4 * i;
            f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        };
        assert_eq!(word(0), p.net().pre_w.get(0, 0).unwrap());
        assert_eq!(word(1), p.net().pre_w.get(0, 1).unwrap());
        assert_eq!(word(OBS_DIM), p.net().pre_w.get(1, 0).unwrap());

        let back = Tiny::decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.fingerprint(), p.fingerprint());
        let h = read_header(&bytes).unwrap();
        assert_eq!((h.pre, h.hidden, h.post, h.obs_dim), (8, 4, 6, 166));
        assert_eq!(h.name.as_str(), "test-policy");
        assert_eq!(h.card.as_str(), "made by the format tests");
        assert_eq!(h.head_sizes, [7, 3, 3, 3, 3, 5, 3, 3, 10]);
    }

    #[test]
    fn preset_file_sizes_match_format_md() {
        fn size<const P: usize, const H: usize, const Q: usize>() -> usize {
            let p = FrozenPolicy::new(PolicyNet::<P, H, Q>::neutral(), "", "").unwrap();
            let mut buf = vec![0u8; FrozenPolicy::<P, H, Q>::MAX_ENCODED_LEN];
            p.encode(&mut buf).unwrap()
        }
        assert_eq!(size::<32, 32, 32>(), 67_831);
        assert_eq!(size::<64, 64, 64>(), 207_863);
    }

    /// `p` written as format version 1: the same bytes without the start lr.
    fn as_version_1(p: &Tiny) -> Vec<u8> {
        let v2 = encoded(p);
        let header_end = v2.len() - 4 - 4 * param_count(8, 4, 6);
        let mut v1 = v2[..header_end - 4].to_vec();
        v1.extend_from_slice(&v2[header_end..]);
        v1[4..6].copy_from_slice(&1u16.to_le_bytes());
        let total = u32::try_from(v1.len()).unwrap();
        v1[6..10].copy_from_slice(&total.to_le_bytes());
        reseal(&mut v1);
        v1
    }

    #[test]
    fn the_start_lr_round_trips_and_version_1_files_start_at_the_initial_lr() {
        let p = policy().with_start_lr(1e-2).unwrap();
        let back = Tiny::decode(&encoded(&p)).unwrap();
        assert_eq!(
            back.start(),
            Hyperparams {
                lr: 1e-2,
                ..Hyperparams::INITIAL
            }
        );
        assert_eq!(back, p);
        assert_eq!(policy().start(), Hyperparams::INITIAL);
        // A version 1 file has the same weights and starts at the initial hyperparameters.
        let v1 = Tiny::decode(&as_version_1(&p)).unwrap();
        assert_eq!(v1.start(), Hyperparams::INITIAL);
        assert_eq!(v1.fingerprint(), p.fingerprint());
        assert_eq!(
            read_header(&as_version_1(&p)).unwrap().name,
            p.header().name
        );
        for bad in [0.0, 2.0, f32::NAN, f32::INFINITY] {
            assert!(
                matches!(policy().with_start_lr(bad), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
            // Written by something else: a start lr outside the bounds is a malformed file.
            let mut bytes = encoded(&policy());
            let at = bytes.len() - 4 - 4 * param_count(8, 4, 6) - 4;
            bytes[at..at + 4].copy_from_slice(&bad.to_le_bytes());
            reseal(&mut bytes);
            assert_eq!(Tiny::decode(&bytes), Err(Error::Malformed), "{bad}");
        }
    }

    #[test]
    fn cached_input_scale_gives_the_same_logits_as_the_network() {
        let p = policy();
        let obs: [f32; OBS_DIM] = core::array::from_fn(|i| i as f32 * 0.1 - 5.0);
        let (mut a, mut b) = (LstmState::default(), LstmState::default());
        for _ in 0..3 {
            assert_eq!(p.forward(&obs, &mut a), p.net().forward(&obs, &mut b));
        }
        assert_eq!(a, b);
    }

    #[test]
    fn truncated_files_say_so() {
        let bytes = encoded(&policy());
        for cut in [0, 3, 9] {
            assert_eq!(
                Tiny::decode(&bytes[..cut]),
                Err(Error::Truncated {
                    needed: PREAMBLE_LEN,
                    found: cut
                })
            );
        }
        for cut in [10, 40, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(
                Tiny::decode(&bytes[..cut]),
                Err(Error::Truncated {
                    needed: bytes.len(),
                    found: cut
                })
            );
        }
    }

    #[test]
    fn corrupted_bytes_fail_the_crc() {
        let bytes = encoded(&policy());
        for at in [10, 30, bytes.len() / 2, bytes.len() - 5, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(
                matches!(Tiny::decode(&bad), Err(Error::Corrupt { .. })),
                "flip at {at}"
            );
            assert!(matches!(read_header(&bad), Err(Error::Corrupt { .. })));
        }
    }

    #[test]
    fn preamble_errors_are_typed() {
        let bytes = encoded(&policy());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Tiny::decode(&bad), Err(Error::BadMagic));
        let mut bad = bytes.clone();
        bad[4] = 3;
        assert_eq!(
            Tiny::decode(&bad),
            Err(Error::UnsupportedVersion {
                found: 3,
                supported: 2
            })
        );
        bad[4] = 0;
        assert!(matches!(
            Tiny::decode(&bad),
            Err(Error::UnsupportedVersion { found: 0, .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Tiny::decode(&long), Err(Error::Malformed), "trailing bytes");
    }

    #[test]
    fn wrong_sizes_and_feature_sets_are_reported_before_the_weights() {
        let bytes = encoded(&policy());
        assert_eq!(
            FrozenPolicy::<8, 5, 6>::decode(&bytes),
            Err(Error::SizeMismatch {
                which: "hidden",
                found: 4,
                expected: 5
            })
        );
        assert!(matches!(
            FrozenPolicy::<16, 4, 6>::decode(&bytes),
            Err(Error::SizeMismatch { which: "pre", .. })
        ));
        let mut p = policy();
        p.header.feature_set_version = 4;
        assert_eq!(
            Tiny::decode(&encoded(&p)),
            Err(Error::FeatureSetMismatch {
                found: 4,
                expected: 3
            })
        );
        // Older feature sets still load, and say which features they need.
        for old in [FeatureSet::V1, FeatureSet::V2] {
            p.header.feature_set_version = old.version();
            assert_eq!(Tiny::decode(&encoded(&p)).unwrap().feature_set(), old);
            let stated = policy().with_feature_set(old);
            assert_eq!(Tiny::decode(&encoded(&stated)).unwrap().feature_set(), old);
        }
        assert_eq!(policy().feature_set(), FeatureSet::CURRENT);
        let mut p = policy();
        p.header.head_sizes[0] = 5;
        assert_eq!(
            Tiny::decode(&encoded(&p)),
            Err(Error::SizeMismatch {
                which: "head sizes",
                found: 5,
                expected: 7
            })
        );
    }

    #[test]
    fn non_finite_weights_are_rejected() {
        let mut net = random_net::<8, 4, 6>(1);
        net.post_b.0[2] = f32::NAN;
        assert_eq!(Tiny::new(net, "x", "").map(|_| ()), Err(Error::NonFinite));
        // A file whose CRC is right but holds an infinity (written by a buggy exporter).
        let mut bytes = encoded(&policy());
        let at = bytes.len() - 4 - 4 * 10;
        bytes[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        reseal(&mut bytes);
        assert_eq!(Tiny::decode(&bytes), Err(Error::NonFinite));
    }

    #[test]
    fn decode_into_matches_decode_and_changes_nothing_on_error() {
        let bytes = encoded(&policy());
        let mut p = Tiny::holding();
        p.decode_into(&bytes).unwrap();
        assert_eq!(p, Tiny::decode(&bytes).unwrap());
        let before = p.clone();
        let other = encoded(&Tiny::new(random_net(2), "other", "").unwrap());
        let mut bad = other.clone();
        bad[20] ^= 1;
        assert!(matches!(p.decode_into(&bad), Err(Error::Corrupt { .. })));
        // Valid CRCs around a NaN weight, a negative variance and a zero input clip: each is
        // caught before anything is written.
        for (word_from_end, value) in [(10, f32::NAN), (2, -1.0), (1, 0.0)] {
            let mut bad = other.clone();
            let at = bad.len() - 4 - 4 * word_from_end;
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            reseal(&mut bad);
            assert_eq!(p.decode_into(&bad), Err(Error::NonFinite), "{value}");
            assert_eq!(p, before);
        }
        p.decode_into(&other).unwrap();
        assert_eq!(p.header().name.as_str(), "other");
    }

    #[test]
    fn the_holding_policy_picks_every_heads_hold_choice() {
        let p = Tiny::holding();
        let logits = p.forward(&[0.3; OBS_DIM], &mut LstmState::default());
        assert_eq!(crate::policy::greedy(&logits), Action::HOLD);
    }

    #[test]
    fn malformed_payload_with_a_valid_crc() {
        let mut bytes = encoded(&policy());
        // Name length prefix claims more bytes than the name capacity.
        bytes[10 + 6 + 9] = 200;
        reseal(&mut bytes);
        assert_eq!(Tiny::decode(&bytes), Err(Error::Malformed));
    }

    #[test]
    fn encode_reports_small_buffers_and_long_texts() {
        let p = policy();
        let mut buf = vec![0u8; 100];
        assert!(matches!(
            p.encode(&mut buf),
            Err(Error::BufferTooSmall { available: 100, .. })
        ));
        assert!(matches!(
            p.encode(&mut []),
            Err(Error::BufferTooSmall { .. })
        ));
        let long = "x".repeat(NAME_CAPACITY + 1);
        assert_eq!(
            Tiny::new(random_net(1), &long, "").map(|_| ()),
            Err(Error::TooLong {
                which: "name",
                max: NAME_CAPACITY
            })
        );
    }
}
