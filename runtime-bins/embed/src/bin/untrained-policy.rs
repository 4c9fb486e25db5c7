//! `untrained-policy OUT.lhp [SEED] [tiny|small]`: writes a randomly initialised (untrained)
//! policy file, for trying the runtimes before a trained policy exists. Its decisions are
//! arbitrary.

use std::process::ExitCode;

use lhopt_embed::untrained::{TEST_SEED, policy_bytes};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: untrained-policy OUT.lhp [SEED] [tiny|small]";
    let Some(out) = args.first() else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let seed = match args.get(1).map(|s| s.parse::<u64>()) {
        None => TEST_SEED,
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            eprintln!("SEED must be a non-negative integer ({e}); {usage}");
            return ExitCode::from(2);
        }
    };
    let bytes = match args.get(2).map(String::as_str) {
        None | Some("tiny") => policy_bytes::<32, 32, 32>(seed),
        Some("small") => policy_bytes::<64, 64, 64>(seed),
        Some(other) => {
            eprintln!("unknown preset {other:?}; {usage}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(out, &bytes) {
        eprintln!("cannot write {out}: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {out}: untrained policy, seed {seed}, {} bytes",
        bytes.len()
    );
    ExitCode::SUCCESS
}
