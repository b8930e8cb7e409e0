//! The `kvitto` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Test builds read fail points from `FAILPOINTS` (the crash tests use
    // them to stop the process at a chosen line); release builds have none.
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kvitto: {error:#}");
            ExitCode::FAILURE
        }
    }
}
