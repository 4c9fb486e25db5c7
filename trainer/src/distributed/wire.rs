//! What crosses the network between the learner (rank 0) and the rollout ranks, and how it is
//! checked on arrival.
//!
//! Every MPI message is one frame of bytes:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `LHMP` |
//! | 4 | 2 | format version, little-endian ([`FORMAT_VERSION`]) |
//! | 6 | 2 | reserved, zero |
//! | 8 | 4 | payload length in bytes, little-endian |
//! | 12 | 4 | CRC-32 of the payload (the policy file's, [`lhopt_core::crc32`]), little-endian |
//! | 16 | n | payload: a [`Message`] in postcard (variant index, then its fields) |
//!
//! A frame is refused when it is shorter than the header, has another magic or version, a
//! length that disagrees with what arrived (truncated or padded), a checksum that does not
//! match, or a payload that does not decode to exactly one [`Message`]. An episode is also
//! refused when its shapes disagree with the run's network or its actions are outside the heads
//! ([`check_episode`]): the learner would otherwise index past its rows. The format version goes
//! up with any change of a message's fields, so a rank built from other sources is refused
//! instead of misread.

use lhopt_core::crc32::crc32;
use lhopt_core::{HEAD_SIZES, OBS_DIM};
use serde::{Deserialize, Serialize};

use crate::meta_train::MetaTrainConfig;
use crate::ppo::rollout::{EpisodeReport, PRIVILEGED_DIM, PolicySnapshot};

/// The frame format's version.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"LHMP";
const HEADER: usize = 16;

/// One message between the learner and a rollout rank.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// Learner → rollout rank, once: the run's configuration and this rank's share of the task
    /// sequence (configurations `first_task`, `first_task + stride`, ...). A [`Message::Policy`]
    /// follows.
    Start {
        /// The run's configuration.
        config: MetaTrainConfig,
        /// The first task configuration this rank takes.
        first_task: u64,
        /// The number of rollout ranks.
        stride: u64,
    },
    /// Learner → rollout rank: the policy to act with from now on.
    Policy(PolicySnapshot),
    /// Rollout rank → learner: a finished episode.
    Episode(EpisodeReport),
    /// Learner → rollout rank: how many of the rank's frames the learner has taken off the
    /// network so far. A rank keeps only a few frames in flight beyond this count, so that rollouts
    /// faster than the learner wait (acting with the newest policy when they resume) instead of
    /// queueing ever staler episodes at the learner.
    Taken(u64),
    /// Rollout rank → learner: the rank's workers stopped on this error; it waits for `Stop`.
    Failed(String),
    /// Learner → rollout rank: stop after the current episode and say `Done`.
    Stop,
    /// Rollout rank → learner: the last message of the rank (it sends no episode after it).
    Done,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    /// Fewer bytes than the header.
    #[error("{0} bytes, shorter than the {HEADER}-byte header")]
    Short(usize),
    /// Not a frame of this protocol.
    #[error("no LHMP magic")]
    Magic,
    /// A frame of another format version.
    #[error("format version {0}, this build reads {FORMAT_VERSION}")]
    Version(u16),
    /// Truncated or padded.
    #[error("header says {header} payload bytes, {actual} arrived")]
    Length {
        /// Length in the header.
        header: usize,
        /// Length that arrived.
        actual: usize,
    },
    /// Corrupted in transit or by the sender.
    #[error("payload checksum mismatch")]
    Checksum,
    /// The payload is not one message of this version.
    #[error("payload does not decode: {0}")]
    Payload(String),
    /// An episode that does not fit the run's network.
    #[error("episode refused: {0}")]
    Episode(String),
}

/// `message` as one frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let payload = postcard::to_allocvec(message).expect("messages serialise");
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(MAGIC);
    frame.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    frame.extend_from_slice(&[0, 0]);
    let len = u32::try_from(payload.len()).expect("a message under 4 GiB");
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// The message in `frame`, or why the frame is refused.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    if frame.len() < HEADER {
        return Err(WireError::Short(frame.len()));
    }
    if &frame[0..4] != MAGIC {
        return Err(WireError::Magic);
    }
    let version = u16::from_le_bytes([frame[4], frame[5]]);
    if version != FORMAT_VERSION {
        return Err(WireError::Version(version));
    }
    if frame[6..8] != [0, 0] {
        return Err(WireError::Payload(
            "reserved header bytes are not zero".into(),
        ));
    }
    let header = u32::from_le_bytes(frame[8..12].try_into().expect("4 bytes")) as usize;
    let payload = &frame[HEADER..];
    if header != payload.len() {
        return Err(WireError::Length {
            header,
            actual: payload.len(),
        });
    }
    if u32::from_le_bytes(frame[12..16].try_into().expect("4 bytes")) != crc32(payload) {
        return Err(WireError::Checksum);
    }
    let (message, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| WireError::Payload(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Payload(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Refuses an episode that the learner cannot ingest: per-decision rows of the wrong length for
/// a network with LSTM width `hidden`, actions outside their heads, or a policy version newer
/// than the learner's `version`.
pub fn check_episode(report: &EpisodeReport, hidden: usize, version: u64) -> Result<(), WireError> {
    let ep = &report.episode;
    let t = ep.len();
    let rows = [
        ("obs", ep.obs.len(), t * OBS_DIM),
        ("privileged", ep.privileged.len(), t * PRIVILEGED_DIM),
        ("behaviour_logp", ep.behaviour_logp.len(), t),
        ("actor_h", ep.actor_h.len(), t * hidden),
        ("actor_c", ep.actor_c.len(), t * hidden),
        ("rewards", ep.rewards.len(), t),
    ];
    if let Some((name, got, want)) = rows.iter().find(|(_, got, want)| got != want) {
        return Err(WireError::Episode(format!(
            "{name} has {got} values, {t} decisions need {want}"
        )));
    }
    if let Some(a) = ep
        .actions
        .iter()
        .find(|a| a.iter().zip(HEAD_SIZES).any(|(&c, n)| usize::from(c) >= n))
    {
        return Err(WireError::Episode(format!(
            "action {a:?} outside the heads"
        )));
    }
    if ep.version > version {
        return Err(WireError::Episode(format!(
            "acted with policy version {}, the learner is at {version}",
            ep.version
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ppo::learner::Episode;
    use crate::ppo::rollout::EpisodeSummary;
    use crate::tasks::Family;

    pub(crate) const HIDDEN: usize = 3;

    /// A consistent episode of `decisions` decisions by policy `version` from configuration 7.
    pub(crate) fn report(decisions: usize, version: u64) -> EpisodeReport {
        let rows = |w: usize| {
            (0..decisions * w)
                .map(|i| i as f32 * 0.5)
                .collect::<Vec<_>>()
        };
        EpisodeReport {
            episode: Episode {
                version,
                obs: rows(OBS_DIM),
                privileged: rows(PRIVILEGED_DIM),
                actions: vec![[0; lhopt_core::NUM_HEADS]; decisions],
                behaviour_logp: rows(1),
                actor_h: rows(HIDDEN),
                actor_c: rows(HIDDEN),
                rewards: rows(1),
            },
            summary: EpisodeSummary {
                task: "quadratic-0".into(),
                family: Family::NoisyQuadratic,
                task_index: 7,
                steps: 40,
                decisions,
                log_speedup: 0.25,
                unperturbed: false,
                hide_eval: true,
                seconds: 0.5,
                inner_steps: 60,
                batchable: true,
                reference_seconds: 0.25,
            },
        }
    }

    #[test]
    fn every_message_round_trips() {
        let config = MetaTrainConfig::default();
        let messages = [
            Message::Start {
                config: config.clone(),
                first_task: 9,
                stride: 3,
            },
            Message::Policy(PolicySnapshot {
                version: 4,
                vars: vec![("actor.w".into(), vec![1.0, -2.5])],
            }),
            Message::Episode(report(3, 2)),
            Message::Taken(12),
            Message::Failed("no data".into()),
            Message::Stop,
            Message::Done,
        ];
        for m in &messages {
            let back = decode(&encode(m)).unwrap();
            // The Debug form covers every field of every variant.
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
    }

    #[test]
    fn truncated_padded_and_corrupted_frames_are_refused() {
        let frame = encode(&Message::Episode(report(4, 1)));
        for cut in 0..frame.len() {
            let err = decode(&frame[..cut]).unwrap_err();
            assert!(
                matches!(err, WireError::Short(_) | WireError::Length { .. }),
                "cut at {cut}: {err}"
            );
        }
        let mut padded = frame.clone();
        padded.push(0);
        assert!(matches!(decode(&padded), Err(WireError::Length { .. })));
        // Any one flipped bit is caught (the length and checksum fields included).
        for i in 0..frame.len() {
            let mut bad = frame.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "bit flip at byte {i} went through");
        }
        let mut other = frame.clone();
        other[4] = 2;
        assert_eq!(decode(&other).unwrap_err(), WireError::Version(2));
        // A frame that is sound but holds bytes that are no message of this version.
        let mut junk = MAGIC.to_vec();
        junk.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        junk.extend_from_slice(&[0, 0]);
        let payload = [200u8, 1, 2];
        junk.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        junk.extend_from_slice(&crc32(&payload).to_le_bytes());
        junk.extend_from_slice(&payload);
        assert!(matches!(decode(&junk), Err(WireError::Payload(_))));
    }

    #[test]
    fn episodes_that_do_not_fit_the_network_are_refused() {
        assert_eq!(check_episode(&report(5, 2), HIDDEN, 2), Ok(()));
        let mut short = report(5, 2);
        short.episode.actor_h.pop();
        let err = check_episode(&short, HIDDEN, 2).unwrap_err().to_string();
        assert!(err.contains("actor_h"), "{err}");
        let mut action = report(5, 2);
        action.episode.actions[3][0] = u8::MAX;
        assert!(check_episode(&action, HIDDEN, 2).is_err());
        assert!(check_episode(&report(5, 3), HIDDEN, 2).is_err());
        assert!(check_episode(&report(5, 2), HIDDEN + 1, 2).is_err());
    }
}
