//! The client's commands, whether they come from the command line or from
//! the shell: each one a [`Request`], carried out by [`perform`] into an
//! [`Outcome`], which prints either for people ([`Outcome::render`], `ls`
//! like `ls -l`) or as one JSON object for scripts ([`Outcome::to_json`]).
//!
//! Local names follow `cp`, `scp` and `sftp`: `get REMOTE` saves under the
//! remote file's last component in the current directory (or in LOCAL when
//! it is a directory), and `put LOCAL` stores under the local file's name
//! in the remote working directory (or under REMOTE; a REMOTE ending in `/`
//! is a directory to put the file into).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::FilesError;
use super::progress;
use super::session::Session;
use super::transfer::{self, Downloaded, Uploaded};

/// One thing to ask the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        local: PathBuf,
        remote: Option<String>,
    },
    Get {
        remote: String,
        local: Option<PathBuf>,
    },
    Ls {
        path: Option<String>,
    },
    Mkdir {
        path: String,
    },
    Rm {
        path: String,
    },
    Cd {
        path: String,
    },
    Pwd,
    Quota,
}

impl Request {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::Get { .. } => "get",
            Request::Ls { .. } => "ls",
            Request::Mkdir { .. } => "mkdir",
            Request::Rm { .. } => "rm",
            Request::Cd { .. } => "cd",
            Request::Pwd => "pwd",
            Request::Quota => "quota",
        }
    }
}

/// One entry of a listing (PROTOCOL.md §5.5 `ls`), local or remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// `"file"` or `"dir"`.
    pub kind: String,
    /// Bytes; 0 for a directory.
    pub size: u64,
    /// Whole seconds since the Unix epoch.
    pub mtime: i64,
}

/// What a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Put(Uploaded),
    Get(Downloaded),
    Listing {
        path: Option<String>,
        entries: Vec<Entry>,
    },
    /// `mkdir` and `rm`: done, nothing to show but the path.
    Done {
        command: &'static str,
        path: String,
    },
    /// `cd` and `pwd`.
    Cwd {
        command: &'static str,
        cwd: String,
    },
    Quota {
        used: u64,
        limit: Option<u64>,
    },
}

/// Carries out one request on a logged-in session.
pub fn perform(
    session: &mut Session,
    request: &Request,
    show_progress: bool,
) -> Result<Outcome, FilesError> {
    match request {
        Request::Put { local, remote } => {
            let remote = remote_target(local, remote.as_deref())?;
            transfer::put_file(session, local, &remote, show_progress).map(Outcome::Put)
        }
        Request::Get { remote, local } => {
            let local_is_dir = local.as_deref().is_some_and(Path::is_dir);
            let local = local_target(remote, local.as_deref(), local_is_dir)?;
            transfer::get_file(session, remote, &local, show_progress).map(Outcome::Get)
        }
        Request::Ls { path } => {
            let mut ask = json!({"type": "ls"});
            if let Some(path) = path {
                ask["path"] = json!(path);
            }
            let answer = session.request(&ask)?;
            let entries = answer
                .get("entries")
                .cloned()
                .and_then(|e| serde_json::from_value::<Vec<Entry>>(e).ok())
                .ok_or_else(|| {
                    FilesError::Protocol("the daemon's listing has no valid entries".into())
                })?;
            Ok(Outcome::Listing {
                path: path.clone(),
                entries,
            })
        }
        Request::Mkdir { path } | Request::Rm { path } => {
            let command = request.name();
            session.request(&json!({"type": command, "path": path}))?;
            Ok(Outcome::Done {
                command,
                path: path.clone(),
            })
        }
        Request::Cd { path } => {
            let answer = session.request(&json!({"type": "cd", "path": path}))?;
            session.cwd = cwd_of(&answer)?;
            Ok(Outcome::Cwd {
                command: "cd",
                cwd: session.cwd.clone(),
            })
        }
        Request::Pwd => {
            let answer = session.request(&json!({"type": "pwd"}))?;
            session.cwd = cwd_of(&answer)?;
            Ok(Outcome::Cwd {
                command: "pwd",
                cwd: session.cwd.clone(),
            })
        }
        Request::Quota => {
            let answer = session.request(&json!({"type": "quota"}))?;
            let used = answer.get("used").and_then(Value::as_u64).ok_or_else(|| {
                FilesError::Protocol("the daemon's quota answer has no used".into())
            })?;
            Ok(Outcome::Quota {
                used,
                limit: answer.get("limit").and_then(Value::as_u64),
            })
        }
    }
}

fn cwd_of(answer: &serde_json::Map<String, Value>) -> Result<String, FilesError> {
    answer
        .get("cwd")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| FilesError::Protocol("the daemon's answer has no cwd".into()))
}

/// Where `get REMOTE [LOCAL]` saves: LOCAL itself, or the remote file's
/// name inside LOCAL when LOCAL is a directory (or in `.` without LOCAL).
pub fn local_target(
    remote: &str,
    local: Option<&Path>,
    local_is_dir: bool,
) -> Result<PathBuf, FilesError> {
    match local {
        Some(local) if !local_is_dir => Ok(local.to_path_buf()),
        dir => {
            let name = remote_basename(remote).ok_or_else(|| {
                FilesError::Usage(format!(
                    "{remote:?} names no file; say where to save it: get REMOTE LOCAL"
                ))
            })?;
            Ok(dir.map_or_else(|| PathBuf::from(name), |dir| dir.join(name)))
        }
    }
}

/// Where `put LOCAL [REMOTE]` stores: REMOTE itself, or the local file's
/// name (in REMOTE when it ends in `/`, else in the working directory).
pub fn remote_target(local: &Path, remote: Option<&str>) -> Result<String, FilesError> {
    match remote {
        Some(remote) if !remote.ends_with('/') => Ok(remote.to_string()),
        dir => {
            let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                FilesError::Usage(format!(
                    "{} has no UTF-8 file name; say where to store it: put LOCAL REMOTE",
                    local.display()
                ))
            })?;
            Ok(format!("{}{name}", dir.unwrap_or("")))
        }
    }
}

/// The last component of a remote path, if it names something: not empty,
/// not `.` or `..`.
pub fn remote_basename(remote: &str) -> Option<&str> {
    let name = remote.rsplit('/').next()?;
    (!name.is_empty() && name != "." && name != "..").then_some(name)
}

impl Outcome {
    /// The command this outcome answers.
    pub fn command(&self) -> &'static str {
        match self {
            Outcome::Put(_) => "put",
            Outcome::Get(_) => "get",
            Outcome::Listing { .. } => "ls",
            Outcome::Done { command, .. } | Outcome::Cwd { command, .. } => command,
            Outcome::Quota { .. } => "quota",
        }
    }

    /// The outcome for people, one or more lines, each ending in `\n`;
    /// times in `zone`.
    pub fn render(&self, zone: &jiff::tz::TimeZone) -> String {
        match self {
            Outcome::Put(up) => format!(
                "put {} -> {}: {}{}, sha256 {}\n",
                up.local,
                up.remote,
                progress::size(up.size),
                resumed(up.offset),
                up.sha256
            ),
            Outcome::Get(down) => format!(
                "get {} -> {}: {}{}, sha256 {}\n",
                down.remote,
                down.local,
                progress::size(down.size),
                resumed(down.offset),
                down.sha256
            ),
            Outcome::Listing { entries, .. } => long_listing(entries, zone),
            Outcome::Done { .. } => String::new(),
            Outcome::Cwd { cwd, .. } => format!("{cwd}\n"),
            Outcome::Quota { used, limit } => match limit {
                Some(limit) => format!(
                    "used {} of {} ({used} of {limit} bytes, {} free)\n",
                    progress::size(*used),
                    progress::size(*limit),
                    progress::size(limit.saturating_sub(*used))
                ),
                None => format!("used {} ({used} bytes), no limit\n", progress::size(*used)),
            },
        }
    }

    /// The outcome as one JSON object, with a `"command"` field.
    pub fn to_json(&self) -> Value {
        let mut value = match self {
            Outcome::Put(up) => json!(up),
            Outcome::Get(down) => json!(down),
            Outcome::Listing { path, entries } => json!({"path": path, "entries": entries}),
            Outcome::Done { path, .. } => json!({"path": path}),
            Outcome::Cwd { cwd, .. } => json!({"cwd": cwd}),
            Outcome::Quota { used, limit } => json!({"used": used, "limit": limit}),
        };
        value["command"] = json!(self.command());
        value["ok"] = json!(true);
        value
    }
}

fn resumed(offset: u64) -> String {
    if offset == 0 {
        String::new()
    } else {
        format!(" (resumed at {})", progress::size(offset))
    }
}

/// Entries the way `ls -l` shows them: kind, size (aligned), mtime, name.
///
/// ```text
/// d        0 2026-12-02 04:14 photos
/// -  1048576 2026-12-01 21:03 report.pdf
/// ```
pub fn long_listing(entries: &[Entry], zone: &jiff::tz::TimeZone) -> String {
    let width = entries
        .iter()
        .map(|e| e.size.to_string().len())
        .max()
        .unwrap_or(1);
    entries
        .iter()
        .map(|e| {
            let kind = if e.kind == "dir" { 'd' } else { '-' };
            let when = jiff::Timestamp::from_second(e.mtime)
                .map(|t| {
                    t.to_zoned_datetime(zone.clone())
                        .strftime("%Y-%m-%d %H:%M")
                        .to_string()
                })
                .unwrap_or_else(|_| "????-??-?? ??:??".to_string());
            format!("{kind} {:>width$} {when} {}\n", e.size, e.name)
        })
        .collect()
}

/// The entries of a local directory, sorted by name, for the shell's `lls`.
pub fn local_entries(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let meta = item.metadata()?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        entries.push(Entry {
            name: item.file_name().to_string_lossy().into_owned(),
            kind: if meta.is_dir() { "dir" } else { "file" }.to_string(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime,
        });
    }
    entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_saves_under_the_remote_name_unless_told_otherwise() {
        let target = |remote, local: Option<&str>, is_dir| {
            local_target(remote, local.map(Path::new), is_dir).map_err(|e| e.to_string())
        };
        assert_eq!(target("/a/b.txt", None, false), Ok(PathBuf::from("b.txt")));
        assert_eq!(target("b.txt", Some("x"), false), Ok(PathBuf::from("x")));
        assert_eq!(
            target("/a/b.txt", Some("dl"), true),
            Ok(PathBuf::from("dl/b.txt"))
        );
        assert!(target("/a/", None, false).is_err());
        assert!(target("..", None, false).is_err());
        assert_eq!(target("/", Some("x"), false), Ok(PathBuf::from("x")));
    }

    #[test]
    fn put_stores_under_the_local_name_unless_told_otherwise() {
        let target = |local, remote| remote_target(Path::new(local), remote).ok();
        assert_eq!(target("dir/a.bin", None), Some("a.bin".into()));
        assert_eq!(target("a.bin", Some("/up/")), Some("/up/a.bin".into()));
        assert_eq!(target("a.bin", Some("/up/b.bin")), Some("/up/b.bin".into()));
        assert_eq!(target("/", None), None);
    }

    #[test]
    fn listings_look_like_ls_dash_l() {
        let entries = [
            Entry {
                name: "photos".into(),
                kind: "dir".into(),
                size: 0,
                mtime: 0,
            },
            Entry {
                name: "report.pdf".into(),
                kind: "file".into(),
                size: 1_048_576,
                mtime: 86_400 + 3_600 + 60,
            },
        ];
        assert_eq!(
            long_listing(&entries, &jiff::tz::TimeZone::UTC),
            "d       0 1970-01-01 00:00 photos\n- 1048576 1970-01-02 01:01 report.pdf\n"
        );
    }

    #[test]
    fn json_results_name_their_command() {
        let quota = Outcome::Quota {
            used: 5,
            limit: None,
        };
        assert_eq!(
            quota.to_json(),
            json!({"command": "quota", "ok": true, "used": 5, "limit": null})
        );
        let cd = Outcome::Cwd {
            command: "cd",
            cwd: "/a".into(),
        };
        assert_eq!(cd.to_json()["command"], "cd");
        assert_eq!(cd.render(&jiff::tz::TimeZone::UTC), "/a\n");
    }
}
