//! `socketlab user add|passwd|del|list`: managing the files service's users
//! offline, also while the daemon runs (PROTOCOL.md §5.4).
//!
//! The costly part of a password, PBKDF2, runs here, once per `add` or
//! `passwd`; the daemon only ever sees the derived keys (see
//! [`crate::auth::scram`]). Exit status: 0 done, 1 refused (no such user,
//! name taken, the passwords typed differ), 2 usage (a bad name, quota or
//! flag; clap's own usage errors exit 2 too).

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::scram::StoredSecrets;
use super::users::{self, DEFAULT_ITERATIONS, MIN_ITERATIONS, SALT_LEN, User};
use crate::config::Config;
use crate::services::files::staging;

/// Manage the files service's users.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
    /// The daemon's data directory; users live in `<DIR>/users.json`.
    /// [default: socketlab-data]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create a user (asks for the password twice unless --password-stdin).
    Add {
        name: String,
        /// Bytes the user may store: a number, or with a K, M or G suffix
        /// (powers of 1024). [default: no limit]
        #[arg(long)]
        quota: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Delete a user, with their home directory and unfinished uploads.
    Del { name: String },
    /// One user a line: `<name> <quota bytes or none> <used bytes>`.
    List,
}

#[derive(Debug, clap::Args)]
struct PasswordArgs {
    /// Read the password as one line from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// PBKDF2 iterations for the new password (at least 4096).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

/// How a command failed, which decides the exit status.
enum Failure {
    /// Exit 1: the request was understood and refused.
    Refused(String),
    /// Exit 2: the request itself was wrong.
    Usage(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Refused(e.to_string())
    }
}

/// Runs `socketlab user ...`.
pub fn run(args: Args) -> ExitCode {
    let data_dir = args.data_dir.unwrap_or_else(|| Config::default().data_dir);
    match execute(args.action, &data_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(why)) => {
            eprintln!("socketlab user: {why}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(why)) => {
            eprintln!("socketlab user: {why}");
            ExitCode::from(2)
        }
    }
}

fn execute(action: Action, data_dir: &std::path::Path) -> Result<(), Failure> {
    let store = users::store_path(data_dir);
    let root = staging::files_root(data_dir);
    match action {
        Action::Add {
            name,
            quota,
            password,
        } => {
            check_name(&name)?;
            let quota = quota
                .map(|q| users::parse_quota(&q).map_err(Failure::Usage))
                .transpose()?;
            check_iterations(password.iterations)?;
            if users::load(&store)?.contains_key(&name) {
                return Err(Failure::Refused(format!("user {name:?} exists")));
            }
            let secrets = derive(&password)?;
            users::update(&store, |all| {
                if all.contains_key(&name) {
                    return Err(Failure::Refused(format!("user {name:?} exists")));
                }
                all.insert(
                    name.clone(),
                    User {
                        secrets,
                        quota,
                        home: users::default_home(&name),
                    },
                );
                Ok(())
            })?;
            fs::create_dir_all(root.join(users::default_home(&name)))?;
            eprintln!("added user {name}");
            Ok(())
        }
        Action::Passwd { name, password } => {
            check_name(&name)?;
            check_iterations(password.iterations)?;
            if !users::load(&store)?.contains_key(&name) {
                return Err(Failure::Refused(format!("no such user: {name:?}")));
            }
            let secrets = derive(&password)?;
            users::update(&store, |all| match all.get_mut(&name) {
                Some(user) => {
                    user.secrets = secrets;
                    Ok(())
                }
                None => Err(Failure::Refused(format!("no such user: {name:?}"))),
            })?;
            eprintln!("changed the password of {name}");
            Ok(())
        }
        Action::Del { name } => {
            check_name(&name)?;
            let user = users::update(&store, |all| {
                all.remove(&name)
                    .ok_or_else(|| Failure::Refused(format!("no such user: {name:?}")))
            })?;
            // The entry is gone first, so no new login can start while the
            // files are removed.
            let _ = fs::remove_dir_all(root.join(&user.home));
            let _ = fs::remove_dir_all(staging::user_dir(&root, &name));
            eprintln!("deleted user {name}");
            Ok(())
        }
        Action::List => {
            let mut out = io::stdout().lock();
            for (name, user) in users::load(&store)? {
                let used = staging::usage_on_disk(&root, &name, &user.home);
                let quota = user.quota.map_or("none".to_string(), |q| q.to_string());
                writeln!(out, "{name} {quota} {used}")?;
            }
            Ok(())
        }
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    if users::is_valid_name(name) {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "{name:?} is not a user name (1 to 32 of A-Z a-z 0-9 _ . -, not starting with . or -)"
        )))
    }
}

fn check_iterations(iterations: u32) -> Result<(), Failure> {
    if iterations >= MIN_ITERATIONS {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "--iterations must be at least {MIN_ITERATIONS}"
        )))
    }
}

/// Reads the password as asked and derives the stored secrets from it.
fn derive(args: &PasswordArgs) -> Result<StoredSecrets, Failure> {
    let password = if args.password_stdin {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    } else {
        let first = ask_without_echo("password: ")?;
        let second = ask_without_echo("password again: ")?;
        if first != second {
            return Err(Failure::Refused("the passwords differ".to_string()));
        }
        first
    };
    if password.is_empty() {
        return Err(Failure::Usage("the password is empty".to_string()));
    }
    let mut salt = [0u8; SALT_LEN];
    super::fill_random(&mut salt)?;
    Ok(StoredSecrets::derive(&password, &salt, args.iterations))
}

/// Asks on the terminal with echo turned off, and turns it back on after.
fn ask_without_echo(prompt: &str) -> io::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Echo goes off before the prompt appears, so nothing typed after it
    // is shown; what was typed before it is discarded (`Flush`).
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    (&tty).write_all(prompt.as_bytes())?;
    let mut line = String::new();
    let read = io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Now, &saved);
    (&tty).write_all(b"\n")?;
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
