//! The `kvitto` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kvitto: {error:#}");
            ExitCode::FAILURE
        }
    }
}
