//! Authentication for the framed services: the exec service's shared key
//! and challenge-response handshake, and the throttle on failed handshakes
//! that exec and files share (PROTOCOL.md §5.2).
//!
//! # Shared-key authentication
//!
//! ```text
//!   daemon                                         client
//!   key = <data-dir>/secret.key                    key = a copy of that file
//!   challenge = 32 fresh random bytes
//!        ---- hello {challenge} ------------------>
//!                                                  mac = HMAC-SHA256(key, challenge)
//!        <--- auth {mac} --------------------------
//!   HMAC-SHA256(key, challenge) == mac,
//!   compared in constant time?
//!        ---- ok, or "authentication failed" ----> (then closed)
//! ```
//!
//! Both ends hold the same secret, and the exchange proves that the client
//! does without the secret ever crossing the wire. Nothing here touches a
//! socket or reads the clock: the daemon and the exec client move the bytes,
//! and pass in the current `Instant` where time matters.
//!
//! # Where things are
//!
//! - [`key`]: the key and its file (created 0600, replaced atomically).
//! - [`challenge`]: challenges, computing and verifying MACs.
//! - [`handshake`]: the hello, auth, ok and error frames, exactly as sent.
//! - [`scram`]: the files login's SCRAM-SHA-256 computations.
//! - [`throttle`]: locking out addresses after repeated failures.
//! - [`users`]: the files service's user store.
//! - [`user_cli`]: `socketlab user add|passwd|del|list`.
//! - [`run`]: `socketlab key show|rotate`.

pub mod challenge;
pub mod handshake;
pub mod key;
pub mod scram;
pub mod throttle;
pub mod user_cli;
pub mod users;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

pub use challenge::{Challenge, mac, verify};
pub use key::{Key, KeyFile, load, load_or_create, rotate};
pub use throttle::{SharedThrottle, Throttle};

use crate::config::Config;

/// `socketlab key`: show where the exec service's shared key is, or replace
/// it. Clients need a copy of that file to run programs on the daemon.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: KeyAction,
    /// The daemon's data directory; the key is `<DIR>/secret.key`.
    /// [default: socketlab-data]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The key file itself, wherever it is (overrides --data-dir).
    #[arg(long, value_name = "FILE", global = true)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Print the key file's path; the key must exist (the daemon creates it
    /// in its data dir on its first start).
    Show,
    /// Replace the existing key with a fresh one, atomically, and print the
    /// file's path.
    Rotate,
}

/// Runs `socketlab key ...`: prints the key file's path on stdout, notes
/// and warnings on stderr. Exit status 0, or 1 when the file cannot be
/// read or replaced.
///
/// Neither action creates a key. Run from another directory, the default
/// data dir (`./socketlab-data`) is not the daemon's, and a key made there
/// would be one the daemon never reads: the user would copy it to clients
/// and see every handshake fail. So a missing key is an error that says
/// where it looked and how to point at the daemon's data dir.
pub fn run(args: Args) -> ExitCode {
    let explicit_file = args.key_file.is_some();
    let path = args.key_file.unwrap_or_else(|| {
        let data_dir = args.data_dir.unwrap_or_else(|| Config::default().data_dir);
        key::default_path(&data_dir)
    });
    if !path.exists() {
        eprintln!("socketlab key: {}", missing_key(&path, explicit_file));
        return ExitCode::FAILURE;
    }
    let outcome = match args.action {
        KeyAction::Show => load(&path).map(|file| {
            if !file.is_private() {
                eprintln!(
                    "warning: {} has mode {:o}: others can read the key; run `chmod 600` on it",
                    path.display(),
                    file.mode
                );
            }
        }),
        KeyAction::Rotate => rotate(&path).map(|_| {
            eprintln!(
                "replaced the key in {}; clients need the new file",
                path.display()
            );
        }),
    };
    match outcome {
        Ok(()) => {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("socketlab key: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The message for a key file that does not exist, naming the absolute
/// path looked at.
fn missing_key(path: &std::path::Path, explicit_file: bool) -> String {
    let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let how = if explicit_file {
        "check the --key-file path"
    } else {
        "the daemon creates the key in its data dir on its first start; if it was started \
         elsewhere or with --data-dir, give the same directory here with --data-dir DIR \
         (or the key itself with --key-file FILE)"
    };
    format!("no key at {}: {how}", shown.display())
}

/// Fills `bytes` from the operating system's secure random source
/// (`getrandom(2)` on Linux), for keys, challenges and unique file names.
fn fill_random(bytes: &mut [u8]) -> io::Result<()> {
    getrandom::fill(bytes).map_err(|e| match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(format!("secure random source: {e}")),
    })
}
