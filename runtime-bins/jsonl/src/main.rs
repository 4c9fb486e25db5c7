//! `lhopt-jsonl --policy FILE --total-steps T --decisions K`: reads requests on stdin, one JSON
//! object per line, and answers each with one line on stdout (see PROTOCOL.md).

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lhopt_core::{Hyperparams, Mode, RunConfig};
use lhopt_embed::steer::{LoadError, load_any};
use lhopt_jsonl::protocol::Reply;
use lhopt_jsonl::session::Session;

/// Steer a training run in any language with a frozen LHOPT policy over JSON lines.
#[derive(Parser)]
#[command(version, after_help = "Protocol: runtime-bins/jsonl/PROTOCOL.md")]
struct Args {
    /// Frozen policy file (any preset).
    #[arg(long)]
    policy: PathBuf,
    /// Inner steps in the run.
    #[arg(long)]
    total_steps: u64,
    /// Decisions in the run (one every total_steps / decisions steps).
    #[arg(long)]
    decisions: u32,
    /// Sample actions with this seed instead of taking the greedy action.
    #[arg(long)]
    sample_seed: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot load policy file {path}: {source}")]
    Load { path: PathBuf, source: LoadError },
}

fn start(args: &Args) -> Result<Session, StartError> {
    let bytes = std::fs::read(&args.policy).map_err(|source| StartError::Read {
        path: args.policy.clone(),
        source,
    })?;
    let cfg = RunConfig {
        total_steps: args.total_steps,
        decisions: args.decisions,
    };
    let mode = args
        .sample_seed
        .map_or(Mode::Greedy, |seed| Mode::Sample { seed });
    let loaded =
        load_any(&bytes, cfg, Hyperparams::INITIAL, mode).map_err(|source| StartError::Load {
            path: args.policy.clone(),
            source,
        })?;
    Ok(Session::new(loaded.controller, cfg, loaded.preset))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut out = io::stdout().lock();
    let mut session = match start(&args) {
        Ok(session) => session,
        Err(e) => {
            let reply = Reply::Error {
                line: 0,
                message: e.to_string(),
            };
            // The peer may be reading stdout only; stderr says it to a human.
            let _ = write_reply(&mut out, &reply);
            eprintln!("lhopt-jsonl: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(&mut session, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lhopt-jsonl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Answers every stdin line until stdin closes.
fn serve(session: &mut Session, out: &mut impl Write) -> io::Result<()> {
    write_reply(out, &session.ready())?;
    for line in io::stdin().lock().lines() {
        if let Some(reply) = session.handle_line(&line?) {
            write_reply(out, &reply)?;
        }
    }
    Ok(())
}

fn write_reply(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    serde_json::to_writer(&mut *out, reply)?;
    out.write_all(b"\n")?;
    out.flush()
}
