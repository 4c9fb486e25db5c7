//! `lhopt-jsonl --policy FILE --total-steps T --decisions K`: reads requests on stdin, one JSON
//! object per line, and answers each with one line on stdout (see PROTOCOL.md).

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lhopt_core::{Mode, RunConfig};
use lhopt_embed::steer::{LoadError, load_any, policy_start};
use lhopt_jsonl::protocol::Reply;
use lhopt_jsonl::session::{Session, read_line};

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
    /// Longest input line accepted; a longer one is skipped and answered with an error.
    #[arg(long, default_value_t = 4 << 20)]
    max_line_bytes: usize,
}

/// No policy file is longer than the largest preset's.
const MAX_POLICY_BYTES: usize = lhopt_core::encoded_len(256, 256, 256);

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "policy file {path} is longer than {MAX_POLICY_BYTES} bytes, the largest preset's: not a \
         policy file"
    )]
    TooLong { path: PathBuf },
    #[error("cannot load policy file {path}: {source}")]
    Load { path: PathBuf, source: LoadError },
}

fn start(args: &Args) -> Result<Session, StartError> {
    let read_error = |source| StartError::Read {
        path: args.policy.clone(),
        source,
    };
    // Bounded: `--policy /dev/zero` must not read forever.
    let mut bytes = Vec::new();
    std::fs::File::open(&args.policy)
        .and_then(|f| f.take(MAX_POLICY_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(StartError::TooLong {
            path: args.policy.clone(),
        });
    }
    let cfg = RunConfig {
        total_steps: args.total_steps,
        decisions: args.decisions,
    };
    let mode = args
        .sample_seed
        .map_or(Mode::Greedy, |seed| Mode::Sample { seed });
    let loaded =
        load_any(&bytes, cfg, policy_start(&bytes), mode).map_err(|source| StartError::Load {
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
    match serve(&mut session, &mut out, args.max_line_bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lhopt-jsonl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Answers every stdin line until stdin closes.
fn serve(session: &mut Session, out: &mut impl Write, limit: usize) -> io::Result<()> {
    write_reply(out, &session.ready())?;
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    while let Some(len) = read_line(&mut input, &mut line, limit)? {
        let reply = if len > limit {
            Some(session.reject_long_line(len, limit))
        } else {
            session.handle_bytes(&line)
        };
        if let Some(reply) = reply {
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
