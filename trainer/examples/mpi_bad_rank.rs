//! A rollout rank that misbehaves, for `scripts/test-mpi.sh`: launched beside `lhopt meta-train`
//! ranks (`mpirun -np 2 lhopt meta-train … : -np 1 mpi_bad_rank`), it sends the learner a truncated
//! frame, bytes that are no frame and a frame of another format version, then, like a rollout
//! rank, takes whatever the learner sends until `Stop` and answers `Done`. The learner must log
//! and drop the three and finish the run with the other ranks' episodes. With the argument `fail`
//! it then reports a failure, as a rank whose workers stopped on an error does: the learner must
//! end the job naming the rank.

use lhopt_trainer::distributed::wire::{self, Message};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::Communicator;

fn main() {
    let universe = mpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let learner = world.process_at_rank(0);
    let whole = wire::encode(&Message::Failed("this frame never arrives whole".into()));
    let mut other_version = whole.clone();
    other_version[4] ^= 0xff;
    let frames: [&[u8]; 3] = [
        &whole[..whole.len() - 3],
        b"not a frame at all",
        &other_version,
    ];
    for frame in frames {
        learner.send(frame);
    }
    if std::env::args().nth(1).as_deref() == Some("fail") {
        learner.send(&wire::encode(&Message::Failed("the disk is full".into()))[..]);
    }
    loop {
        let (frame, _) = learner.matched_probe().matched_receive_vec::<u8>();
        if matches!(wire::decode(&frame), Ok(Message::Stop)) {
            break;
        }
    }
    learner.send(&wire::encode(&Message::Done)[..]);
}
