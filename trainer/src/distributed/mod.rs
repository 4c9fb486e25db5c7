//! Where the learner's episodes come from and where its policies go: rollout worker threads of
//! this process ([`LocalRollouts`]) or, with the `mpi` feature under `mpirun`, the other ranks of
//! an MPI job (`mpi` module): rank 0 learns, every other rank runs rollout workers and streams
//! finished episodes to it, and rank 0 sends every new policy to all of them. The learner's loop
//! ([`crate::meta_train::run_with`]) is the same either way; its buffer's staleness and reuse
//! limits decide what of the arriving experience it uses.

#[cfg(feature = "mpi")]
mod mpi;
pub mod wire;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};

use crate::error::{Error, Result};
use crate::meta_task::ReferenceCache;
use crate::meta_train::{Checkpoint, MetaTrainConfig, Start};
use crate::pool::Pool;
use crate::ppo::rollout::{EpisodeReport, PolicySnapshot, SharedPolicy, WorkerContext, Workers};
use wire::{Message, WireError};

/// Episodes in, policies out: the learner's side of the rollouts.
pub trait Rollouts {
    /// The next finished episode; blocks until one arrives.
    fn next(&mut self) -> Result<EpisodeReport>;
    /// Makes `policy` the one the rollouts act with from now on.
    fn publish(&mut self, policy: PolicySnapshot) -> Result<()>;
    /// The number of the first task configuration no rollout has taken yet (a resumed run
    /// continues the task sequence there).
    fn next_task(&self) -> u64;
    /// Stops the rollouts and waits for them.
    fn stop(self: Box<Self>);
}

/// Starts the rollouts of a run.
pub trait LaunchRollouts {
    /// Rollouts for `cfg` acting with `policy`, taking task configurations from `next_task` on.
    fn start(
        &self,
        cfg: &MetaTrainConfig,
        policy: PolicySnapshot,
        next_task: u64,
        pool: Pool,
        references: ReferenceCache,
    ) -> Result<Box<dyn Rollouts>>;
}

/// Rollout worker threads in this process.
pub struct LocalRollouts;

impl LaunchRollouts for LocalRollouts {
    fn start(
        &self,
        cfg: &MetaTrainConfig,
        policy: PolicySnapshot,
        next_task: u64,
        pool: Pool,
        references: ReferenceCache,
    ) -> Result<Box<dyn Rollouts>> {
        let local = LocalWorkers::start(cfg, policy, next_task, 1, pool, references)?;
        Ok(Box::new(local))
    }
}

/// Running rollout threads with the channel their episodes arrive on, the policy they read and
/// their task counter. Serves a single process and each rollout rank of an MPI job.
struct LocalWorkers {
    rx: mpsc::Receiver<Result<EpisodeReport>>,
    policy: SharedPolicy,
    next_task: Arc<AtomicU64>,
    workers: Workers,
}

impl LocalWorkers {
    fn start(
        cfg: &MetaTrainConfig,
        policy: PolicySnapshot,
        next_task: u64,
        task_stride: u64,
        pool: Pool,
        references: ReferenceCache,
    ) -> Result<Self> {
        let policy: SharedPolicy = Arc::new(RwLock::new(Arc::new(policy)));
        let next_task = Arc::new(AtomicU64::new(next_task));
        // Room for two batches per worker: a worker that finished a batch of episodes hands them
        // all over and starts the next one instead of waiting for the learner to drain it.
        let per_worker = 2 * cfg.rollout.batch_instances.max(1);
        let (tx, rx) = mpsc::sync_channel(per_worker * cfg.rollout.workers.max(1));
        let ctx = WorkerContext {
            sizes: cfg.sizes()?,
            norm_clip: cfg.ppo.norm_clip,
            seed: cfg.seed,
            pool: Arc::new(pool),
            references,
            policy: policy.clone(),
            next_task: next_task.clone(),
            task_stride,
        };
        let workers = Workers::start(&cfg.rollout, &ctx, tx)?;
        Ok(Self {
            rx,
            policy,
            next_task,
            workers,
        })
    }
}

fn every_worker_stopped() -> Error {
    Error::Usage("every rollout worker stopped without saying why".into())
}

impl Rollouts for LocalWorkers {
    fn next(&mut self) -> Result<EpisodeReport> {
        self.rx.recv().map_err(|_| every_worker_stopped())?
    }

    fn publish(&mut self, policy: PolicySnapshot) -> Result<()> {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
        Ok(())
    }

    fn next_task(&self) -> u64 {
        self.next_task.load(Ordering::Relaxed)
    }

    fn stop(self: Box<Self>) {
        // Dropping the receiver first unblocks a worker waiting on a full channel.
        drop(self.rx);
        self.workers.stop();
    }
}

/// What the learner does with a frame that arrived from a rollout rank.
#[derive(Debug)]
pub enum Incoming {
    /// A sound episode for the learner (boxed: the other variants are a few bytes).
    Episode(Box<EpisodeReport>),
    /// The rank's workers failed with this message.
    Failed(String),
    /// The rank has stopped.
    Done,
    /// Refused and logged (malformed, truncated, unfit or unexpected).
    Dropped,
}

/// What one rollout rank has sent the learner.
#[derive(Clone, Copy, Debug, Default)]
pub struct RankTally {
    /// Episodes accepted.
    pub episodes: u64,
    /// Their decisions.
    pub decisions: u64,
    /// Their rollout wall seconds (each episode's own, summed).
    pub episode_seconds: f64,
    /// The newest policy version any of them acted with.
    pub newest_version: u64,
    /// Frames received, dropped ones included.
    pub frames: u64,
    /// Bytes received, dropped frames included.
    pub bytes: u64,
    /// Frames dropped as malformed, truncated, unfit or unexpected.
    pub dropped: u64,
    /// Sound episodes dropped because their policy was more than the buffer's staleness limit
    /// behind the learner's (the buffer would evict them before their first use).
    pub stale: u64,
}

/// The learner's checks and accounts of arriving frames, independent of the transport: decodes,
/// refuses what the learner cannot use (logged, never fatal), and counts per rank.
#[derive(Debug)]
pub struct Inbox {
    hidden: usize,
    max_staleness: u64,
    version: u64,
    next_task: u64,
    /// Per rank.
    pub tally: BTreeMap<i32, RankTally>,
}

impl Inbox {
    /// An inbox for a network with LSTM width `hidden` at policy `version` whose buffer keeps
    /// decisions at most `max_staleness` versions old, the task sequence continuing at
    /// `next_task`.
    pub fn new(hidden: usize, max_staleness: u64, version: u64, next_task: u64) -> Self {
        Self {
            hidden,
            max_staleness,
            version,
            next_task,
            tally: BTreeMap::new(),
        }
    }

    /// The learner moved to policy `version`.
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// One past the newest task configuration an accepted episode came from, or where the run
    /// continued if none has arrived.
    pub fn next_task(&self) -> u64 {
        self.next_task
    }

    /// Checks and counts `frame` from `rank`; a refused frame is logged to stderr and dropped.
    pub fn accept(&mut self, rank: i32, frame: &[u8]) -> Incoming {
        let tally = self.tally.entry(rank).or_default();
        tally.frames += 1;
        tally.bytes += frame.len() as u64;
        let refused = match wire::decode(frame) {
            Ok(Message::Episode(report)) => {
                match wire::check_episode(&report, self.hidden, self.version) {
                    Ok(()) if report.episode.version + self.max_staleness < self.version => {
                        tally.stale += 1;
                        return Incoming::Dropped;
                    }
                    Ok(()) => {
                        tally.episodes += 1;
                        tally.decisions += report.episode.len() as u64;
                        tally.episode_seconds += report.summary.seconds;
                        tally.newest_version = tally.newest_version.max(report.episode.version);
                        self.next_task = self.next_task.max(report.summary.task_index + 1);
                        return Incoming::Episode(Box::new(report));
                    }
                    Err(e) => e,
                }
            }
            Ok(Message::Failed(text)) => return Incoming::Failed(text),
            Ok(Message::Done) => return Incoming::Done,
            Ok(other) => WireError::Payload(format!(
                "{} is not a message a rollout rank sends",
                variant_name(&other)
            )),
            Err(e) => e,
        };
        tally.dropped += 1;
        eprintln!(
            "learner: dropped a message of {} bytes from rank {rank}: {refused}",
            frame.len()
        );
        Incoming::Dropped
    }
}

fn variant_name(m: &Message) -> &'static str {
    match m {
        Message::Start { .. } => "Start",
        Message::Policy(_) => "Policy",
        Message::Episode(_) => "Episode",
        Message::Taken(_) => "Taken",
        Message::Failed(_) => "Failed",
        Message::Stop => "Stop",
        Message::Done => "Done",
    }
}

/// `lhopt meta-train`: this process's part of the run in `out`. One process (or one rank) runs
/// the learner with local rollout threads. With the `mpi` feature under `mpirun` with more than
/// one rank, rank 0 runs the learner on the other ranks' episodes and returns its checkpoint,
/// and every other rank serves rollouts until rank 0 stops it and returns `None`.
pub fn meta_train(
    out: &Path,
    config: Option<&Path>,
    start: Start,
    updates: Option<u64>,
    pool: Pool,
    show_progress: bool,
) -> Result<Option<Checkpoint>> {
    #[cfg(feature = "mpi")]
    {
        mpi::meta_train(out, config, start, updates, pool, show_progress)
    }
    #[cfg(not(feature = "mpi"))]
    {
        use crate::meta_train::{Phases, run};
        run(
            out,
            config,
            start,
            updates,
            Phases::All,
            pool,
            show_progress,
        )
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_drops_what_it_cannot_use_and_counts_per_rank() {
        let policy = Message::Policy(PolicySnapshot {
            version: 1,
            vars: Vec::new(),
        });
        let mut inbox = Inbox::new(wire::tests::HIDDEN, 2, 0, 5);
        let episode = wire::encode(&Message::Episode(wire::tests::report(4, 0)));
        assert!(matches!(inbox.accept(1, &episode), Incoming::Episode(_)));
        // The policy has not moved past version 0: an episode from version 1 is bogus.
        let ahead = wire::encode(&Message::Episode(wire::tests::report(4, 1)));
        assert!(matches!(inbox.accept(1, &ahead), Incoming::Dropped));
        let frame = wire::encode(&Message::Failed("disk full".into()));
        assert!(matches!(inbox.accept(2, &frame), Incoming::Failed(t) if t == "disk full"));
        // Truncated, garbage and a learner-only message: logged and dropped, never fatal.
        let frame = wire::encode(&policy);
        assert!(matches!(
            inbox.accept(1, &frame[..frame.len() - 1]),
            Incoming::Dropped
        ));
        assert!(matches!(inbox.accept(1, b"hello"), Incoming::Dropped));
        assert!(matches!(inbox.accept(1, &frame), Incoming::Dropped));
        assert!(matches!(
            inbox.accept(1, &wire::encode(&Message::Done)),
            Incoming::Done
        ));
        let t = inbox.tally[&1];
        assert_eq!((t.frames, t.dropped, t.episodes, t.decisions), (6, 4, 1, 4));
        // The accepted episode came from configuration 7.
        assert_eq!(inbox.next_task(), 8);
        // Three versions later an episode of version 0 is beyond the staleness limit of 2.
        inbox.set_version(3);
        assert!(matches!(inbox.accept(1, &episode), Incoming::Dropped));
        assert_eq!((inbox.tally[&1].stale, inbox.tally[&1].dropped), (1, 4));
    }
}
