//! The MPI transport (`--features mpi`): rank 0 runs the learner, every other rank runs the rollout
//! workers of [`LocalWorkers`] and forwards their episodes. All frames are [`wire`] frames on one
//! tag; each process makes its MPI calls from its main thread only.
//!
//! Why nobody deadlocks: the learner sends with blocking sends, and a rollout rank never blocks in
//! MPI: it sends its episodes with non-blocking sends and keeps polling for the learner's frames
//! until each send completes. Both sides poll with a short sleep instead of a blocking probe,
//! since Open MPI's blocking calls spin and would take a core from the rollouts.
//!
//! Stopping: the learner sends `Stop` to every rollout rank and keeps receiving (and discarding
//! episodes) until each has answered `Done`, its last frame, so that no rank is left inside a send
//! when everyone finalises. A rank whose process dies is not ours to handle: `mpirun` ends the
//! job and names the rank; the checkpoint, written atomically after each update, stays whole.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, Process, SimpleCommunicator};

use super::wire::{self, Message};
use super::{
    Inbox, Incoming, LaunchRollouts, LocalRollouts, LocalWorkers, Rollouts, every_worker_stopped,
};
use crate::error::{Error, Result};
use crate::meta_task::ReferenceCache;
use crate::meta_train::{self, Checkpoint, MetaTrainConfig, Phases, Start};
use crate::pool::Pool;
use crate::ppo::rollout::{EpisodeReport, PolicySnapshot};

/// How long a process sleeps between polls when nothing has arrived.
const POLL: Duration = Duration::from_millis(1);

/// This rank's part of `lhopt meta-train` (see [`super::meta_train`]).
pub(super) fn meta_train(
    out: &Path,
    config: Option<&Path>,
    start: Start,
    updates: Option<u64>,
    pool: Pool,
    show_progress: bool,
) -> Result<Option<Checkpoint>> {
    let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
        .ok_or_else(|| Error::Distributed("MPI was initialised before meta-train".into()))?;
    let world = universe.world();
    let (rank, size) = (world.rank(), world.size());
    let outcome = if rank == 0 {
        let launch: &dyn LaunchRollouts = if size == 1 {
            &LocalRollouts
        } else {
            eprintln!(
                "learner: rank 0 of {size}; ranks 1 to {} run rollouts",
                size - 1
            );
            &RankLauncher
        };
        meta_train::run_with(
            out,
            config,
            start,
            updates,
            Phases::All,
            pool,
            show_progress,
            launch,
        )
        .map(Some)
    } else {
        serve(&world, pool).map(|()| None)
    };
    if let Err(e) = &outcome
        && size > 1
    {
        // Finalising waits for every rank, and the others may still be running: end the job.
        eprintln!("error: rank {rank} of {size}: {e}");
        world.abort(i32::from(crate::cli::exit_code(e)));
    }
    outcome
}

/// A frame waiting from `source`, with its sender's rank.
fn receive(source: &impl Source) -> Option<(i32, Vec<u8>)> {
    let (frame, status) = source
        .immediate_matched_probe()?
        .matched_receive_vec::<u8>();
    Some((status.source_rank(), frame))
}

/// Starts the rollouts on ranks 1.. of the world.
struct RankLauncher;

impl LaunchRollouts for RankLauncher {
    fn start(
        &self,
        cfg: &MetaTrainConfig,
        policy: PolicySnapshot,
        next_task: u64,
        _pool: Pool,
        _references: ReferenceCache,
    ) -> Result<Box<dyn Rollouts>> {
        let world = SimpleCommunicator::world();
        let ranks = world.size() - 1;
        let version = policy.version;
        let policy = wire::encode(&Message::Policy(policy));
        for r in 1..=ranks {
            let start = wire::encode(&Message::Start {
                config: cfg.clone(),
                first_task: next_task + (r - 1) as u64,
                stride: ranks as u64,
            });
            let to = world.process_at_rank(r);
            to.send(&start[..]);
            to.send(&policy[..]);
        }
        Ok(Box::new(RankRollouts {
            inbox: Inbox::new(
                cfg.sizes()?.hidden,
                cfg.ppo.max_staleness,
                version,
                next_task,
            ),
            world,
            done: BTreeSet::new(),
            started: Instant::now(),
            waiting: Duration::ZERO,
            updates: 0,
            policy_frame: policy.len(),
        }))
    }
}

/// The learner's side: episodes from every rollout rank, policies to all of them.
struct RankRollouts {
    world: SimpleCommunicator,
    inbox: Inbox,
    /// Ranks that have said `Done`.
    done: BTreeSet<i32>,
    started: Instant,
    /// Time spent in [`Rollouts::next`] waiting for episodes.
    waiting: Duration,
    updates: u64,
    /// Bytes of the latest policy frame.
    policy_frame: usize,
}

impl RankRollouts {
    fn rollout_ranks(&self) -> impl Iterator<Item = i32> + use<> {
        1..self.world.size()
    }

    /// What the learner did, for the log: its busy time per update against the rollouts' time
    /// per episode, and the bytes both ways.
    fn report(&self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let busy = elapsed - self.waiting.as_secs_f64();
        let updates = self.updates.max(1) as f64;
        eprintln!(
            "learner: {} updates in {elapsed:.1} s, busy {:.2} s per update (the rest waiting for episodes)",
            self.updates,
            busy / updates
        );
        let mut episode_bytes = 0;
        for (rank, t) in &self.inbox.tally {
            episode_bytes += t.bytes;
            eprintln!(
                "learner: rank {rank}: {} episodes, {} decisions, {:.2} s per episode, newest policy {}, {} bytes received, {} dropped, {} stale",
                t.episodes,
                t.decisions,
                t.episode_seconds / t.episodes.max(1) as f64,
                t.newest_version,
                t.bytes,
                t.dropped,
                t.stale
            );
        }
        let ranks = self.rollout_ranks().count();
        eprintln!(
            "learner: per update {:.0} bytes of episodes in, {} bytes of policies out (a {}-byte frame to each of {ranks} ranks)",
            episode_bytes as f64 / updates,
            self.policy_frame * ranks,
            self.policy_frame
        );
    }
}

impl Rollouts for RankRollouts {
    fn next(&mut self) -> Result<EpisodeReport> {
        let since = Instant::now();
        let any = self.world.any_process();
        let outcome = loop {
            let Some((rank, frame)) = receive(&any) else {
                std::thread::sleep(POLL);
                continue;
            };
            let incoming = self.inbox.accept(rank, &frame);
            let taken = wire::encode(&Message::Taken(self.inbox.tally[&rank].frames));
            self.world.process_at_rank(rank).send(&taken[..]);
            match incoming {
                Incoming::Episode(report) => break Ok(*report),
                Incoming::Failed(text) => {
                    break Err(Error::Distributed(format!("rank {rank} failed: {text}")));
                }
                Incoming::Done => {
                    self.done.insert(rank);
                    break Err(Error::Distributed(format!(
                        "rank {rank} stopped before the learner asked it to"
                    )));
                }
                Incoming::Dropped => {}
            }
        };
        self.waiting += since.elapsed();
        outcome
    }

    fn publish(&mut self, policy: PolicySnapshot) -> Result<()> {
        self.inbox.set_version(policy.version);
        self.updates += 1;
        let frame = wire::encode(&Message::Policy(policy));
        self.policy_frame = frame.len();
        for r in self.rollout_ranks().filter(|r| !self.done.contains(r)) {
            self.world.process_at_rank(r).send(&frame[..]);
        }
        Ok(())
    }

    fn next_task(&self) -> u64 {
        self.inbox.next_task()
    }

    fn stop(mut self: Box<Self>) {
        self.report();
        let stop = wire::encode(&Message::Stop);
        for r in self.rollout_ranks().filter(|r| !self.done.contains(r)) {
            self.world.process_at_rank(r).send(&stop[..]);
        }
        let any = self.world.any_process();
        while self.rollout_ranks().any(|r| !self.done.contains(&r)) {
            let Some((rank, frame)) = receive(&any) else {
                std::thread::sleep(POLL);
                continue;
            };
            // Episodes still in flight are discarded: the run is over.
            match self.inbox.accept(rank, &frame) {
                Incoming::Done => {
                    self.done.insert(rank);
                }
                Incoming::Failed(text) => eprintln!("learner: rank {rank} failed: {text}"),
                Incoming::Episode(_) | Incoming::Dropped => {}
            }
        }
    }
}

/// What a rollout rank was told.
#[derive(PartialEq)]
enum Told {
    Nothing,
    Stop,
}

/// A rollout rank's link to the learner: its local workers and its frames in flight.
struct Link<'a> {
    root: Process<'a>,
    local: LocalWorkers,
    /// Frames sent to the learner.
    sent: u64,
    /// Frames the learner has taken off the network ([`Message::Taken`]).
    taken: u64,
    /// Frames that may be in flight beyond `taken`.
    window: u64,
}

impl Link<'_> {
    /// Applies every frame waiting from the learner: a new policy goes to the local workers;
    /// `Stop` is reported; anything else is logged and dropped.
    fn take_frames(&mut self) -> Told {
        let mut told = Told::Nothing;
        while let Some((_, frame)) = receive(&self.root) {
            match wire::decode(&frame) {
                // Publishing to local threads cannot fail.
                Ok(Message::Policy(policy)) => drop(self.local.publish(policy)),
                Ok(Message::Taken(n)) => self.taken = self.taken.max(n),
                Ok(Message::Stop) => told = Told::Stop,
                other => drop_unexpected(&other, &frame),
            }
        }
        told
    }

    /// Sends `message` to the learner without blocking in MPI: takes the learner's frames until
    /// the send completes (the learner may be sending a policy to this rank at the same time).
    fn send(&mut self, message: &Message) -> Told {
        let frame = wire::encode(message);
        self.sent += 1;
        mpi::request::scope(|scope| {
            let mut request = self.root.immediate_send(scope, &frame[..]);
            let mut told = Told::Nothing;
            loop {
                match request.test() {
                    Ok(_) => return told,
                    Err(pending) => request = pending,
                }
                if self.take_frames() == Told::Stop {
                    told = Told::Stop;
                }
                std::thread::sleep(POLL / 10);
            }
        })
    }
}

fn drop_unexpected(decoded: &Result<Message, wire::WireError>, frame: &[u8]) {
    match decoded {
        Ok(m) => eprintln!(
            "rollout rank: dropped an unexpected {} from the learner",
            super::variant_name(m)
        ),
        Err(e) => eprintln!(
            "rollout rank: dropped a message of {} bytes from the learner: {e}",
            frame.len()
        ),
    }
}

/// The first frame from the learner that `pick` takes; the others are logged and dropped.
fn await_frame<T>(root: &Process<'_>, mut pick: impl FnMut(Message) -> Option<T>) -> T {
    loop {
        let Some((_, frame)) = receive(root) else {
            // The learner may spend minutes on the imitation warm start before it sends `Start`.
            std::thread::sleep(POLL * 10);
            continue;
        };
        let decoded = wire::decode(&frame);
        match decoded {
            Ok(m) => {
                let name = super::variant_name(&m);
                match pick(m) {
                    Some(t) => return t,
                    None => {
                        eprintln!("rollout rank: dropped an unexpected {name} from the learner")
                    }
                }
            }
            Err(_) => drop_unexpected(&decoded, &frame),
        }
    }
}

/// A rollout rank: waits for the run's configuration and first policy, runs the configured
/// worker threads and forwards their episodes to rank 0 until told to stop.
fn serve(world: &SimpleCommunicator, pool: Pool) -> Result<()> {
    let root = world.process_at_rank(0);
    let (config, first_task, stride) = await_frame(&root, |m| match m {
        Message::Start {
            config,
            first_task,
            stride,
        } => Some((config, first_task, stride)),
        _ => None,
    });
    let policy = await_frame(&root, |m| match m {
        Message::Policy(policy) => Some(policy),
        _ => None,
    });
    let local = LocalWorkers::start(
        &config,
        policy,
        first_task,
        stride,
        pool,
        ReferenceCache::from_env()?,
    )?;
    // As many frames in flight as the local channel holds: the learner can take a burst from
    // every rank while each keeps its workers busy.
    let window = (2 * config.rollout.batch_instances.max(1) * config.rollout.workers.max(1)) as u64;
    let mut link = Link {
        root,
        local,
        sent: 0,
        taken: 0,
        window,
    };
    let mut failed = false;
    loop {
        if link.take_frames() == Told::Stop {
            break;
        }
        if failed || link.sent >= link.taken + link.window {
            // Failed: reported, the learner ends the run and sends `Stop`. Window full: the
            // workers wait on the local channel until the learner catches up.
            std::thread::sleep(POLL);
            continue;
        }
        let message = match link.local.rx.recv_timeout(POLL) {
            Ok(Ok(report)) => Message::Episode(report),
            Ok(Err(e)) => Message::Failed(e.to_string()),
            Err(RecvTimeoutError::Disconnected) => {
                Message::Failed(every_worker_stopped().to_string())
            }
            Err(RecvTimeoutError::Timeout) => continue,
        };
        failed = matches!(message, Message::Failed(_));
        if link.send(&message) == Told::Stop {
            break;
        }
    }
    // The learner sends nothing after `Stop`, so nothing can be waiting for this rank.
    link.root.send(&wire::encode(&Message::Done)[..]);
    Box::new(link.local).stop();
    Ok(())
}
