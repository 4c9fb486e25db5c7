//! The `lhopt` binary: see `lhopt --help`, and `lhopt_trainer::cli` for the commands.

use std::process::ExitCode;

use clap::Parser;
use lhopt_trainer::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::execute(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
