//! socketlab's command line. This file only parses arguments and hands them
//! to the module that does the work: `serve` to the daemon (which binds the
//! listeners and runs the reactor), the others to their clients and tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use socketlab::{auth, client, daemon, demo, loadgen};

#[derive(Parser)]
#[command(
    name = "socketlab",
    version,
    about = "One single-threaded reactor hosting classic network services, with their clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon with every service.
    Serve(daemon::Args),
    /// Talk to the echo service.
    Echo(client::echo::Args),
    /// Ask the daytime service for the time.
    Daytime(client::daytime::Args),
    /// Join the chat service.
    Chat(client::chat::Args),
    /// Run a program on the daemon, like `ssh host cmd`.
    Exec(client::exec::Args),
    /// Show or rotate the exec service's shared key.
    Key(auth::Args),
    User(auth::user_cli::Args),
    /// Narrated experiments that show how non-blocking IO behaves.
    Demo(demo::Args),
    /// Load generator: echo, connections, chat fan-out, UDP.
    Bench(loadgen::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => daemon::run(args),
        Command::Echo(args) => client::echo::run(args),
        Command::Daytime(args) => client::daytime::run(args),
        Command::Chat(args) => client::chat::run(args),
        Command::Exec(args) => client::exec::run(args),
        Command::Key(args) => auth::run(args),
        Command::User(args) => auth::user_cli::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => loadgen::run(args),
    }
}
