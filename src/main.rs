//! socketlab's command line. This file only parses arguments and hands them
//! to the module that does the work: `serve` to the daemon (which binds the
//! listeners and runs the reactor), the others to their clients and tools.
//! `completions` and `man` are answered here, since they only describe the
//! command line itself.
//!
//! A usage error is one line on stderr and exit status 2 (PROTOCOL.md §1):
//! clap's own report (error, blank line, usage, a hint to try `--help`) is
//! folded into that line. `--help` and `--version` print as clap has them.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Upload, download and manage files on the files service, or open its shell.
    Files(client::files::Args),
    /// Show or rotate the exec service's shared key.
    Key(auth::Args),
    User(auth::user_cli::Args),
    /// Narrated experiments that show how non-blocking IO behaves.
    Demo(demo::Args),
    /// Load generator: echo, connections, chat fan-out, UDP.
    Bench(loadgen::Args),
    /// Print a shell completion script, e.g. `socketlab completions bash`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `socketlab man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Completions { shell } => {
            // Generated into memory first: clap_complete panics when its
            // writer fails, and `socketlab completions bash | head` closes
            // the pipe early.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "socketlab", &mut script);
            print_or_report(&script, "the completion script")
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_or_report(&page, "the manual page"),
                Err(e) => {
                    eprintln!("socketlab: cannot render the manual page: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => daemon::run(args),
        Command::Echo(args) => client::echo::run(args),
        Command::Daytime(args) => client::daytime::run(args),
        Command::Chat(args) => client::chat::run(args),
        Command::Exec(args) => client::exec::run(args),
        Command::Files(args) => client::files::run(args),
        Command::Key(args) => auth::run(args),
        Command::User(args) => auth::user_cli::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Bench(args) => loadgen::run(args),
    }
}

/// Reports a command-line error as one line and exits 2; help and version
/// requests go through clap unchanged (to stdout, status 0).
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("socketlab: {}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// Folds clap's report into one line: its `error:` paragraph (with the
/// lines that continue it: the missing arguments, or a value that itself
/// holds a newline), any `tip:` lines, and which `--help` to read.
fn one_line(report: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for paragraph in report.split("\n\n") {
        let paragraph = paragraph.trim();
        if let Some(error) = paragraph.strip_prefix("error: ") {
            let joined: Vec<&str> = error.lines().map(str::trim).collect();
            parts.push(joined.join(" "));
        } else if paragraph.starts_with("tip: ") {
            parts.extend(
                paragraph
                    .lines()
                    .filter_map(|line| line.trim().strip_prefix("tip: "))
                    .map(str::to_string),
            );
        }
    }
    if parts.is_empty() {
        parts.push(report.trim().replace('\n', "; "));
    }
    format!("{} (see '{} --help')", parts.join("; "), command_path())
}

/// The subcommand path the user typed (`socketlab bench echo`), read from
/// the arguments: every leading word that names a subcommand of the one
/// before it. clap's report only sometimes carries the usage line.
fn command_path() -> String {
    let mut command = Cli::command();
    let mut path = vec!["socketlab".to_string()];
    for arg in std::env::args().skip(1) {
        let Some(sub) = command.find_subcommand(&arg).cloned() else {
            break;
        };
        path.push(sub.get_name().to_string());
        command = sub;
    }
    path.join(" ")
}

/// Writes generated text to stdout; a closed pipe is not worth a report.
fn print_or_report(text: &[u8], what: &str) -> ExitCode {
    match std::io::stdout().write_all(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socketlab: cannot write {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
