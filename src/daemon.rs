//! socketlab serve: load the configuration, bind every listener, run the reactor.

use std::process::ExitCode;

/// Arguments (to be filled in).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> ExitCode {
    eprintln!("not built yet");
    ExitCode::from(2)
}
