//! The jail: every path a client names stays inside its home
//! (PROTOCOL.md §5.5).
//!
//! # Two layers
//!
//! A path goes through two checks, and either is enough to refuse it.
//!
//! 1. [`resolve`], pure: the connection's working directory and the path
//!    the client sent become one clean path relative to the home (`""` for
//!    the home itself, `"a/b"`), with `.` dropped, `..` applied, and a NUL
//!    byte, a component over 255 bytes or a `..` past `/` refused. This is
//!    where the protocol's errors come from, and it is unit-tested below.
//!
//! 2. The kernel, for what no string check can see: a symlink. The home is
//!    held open as a directory descriptor, and every file is reached with
//!    `openat2(home, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`. With
//!    `RESOLVE_BENEATH` the kernel refuses (`EXDEV`) any resolution that
//!    leaves the directory, whether by `..`, an absolute symlink or a
//!    relative one climbing out, and it checks at the moment of the open,
//!    so a symlink swapped in between a check and a use is caught too (the
//!    classic race of `realpath()` followed by `open()`).
//!    `RESOLVE_NO_MAGICLINKS` also refuses `/proc/self/fd/...`-style links.
//!    Names are then used relative to a descriptor of their parent
//!    (`mkdirat`, `unlinkat`, `renameat`), whose last component is never
//!    followed: removing a symlink removes the link, not its target.
//!
//! `openat2` needs Linux 5.6 or later; on an older kernel every files
//! request fails with an error rather than running unjailed.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Longest path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_COMPONENT: usize = 255;

/// Why a path is refused, or a filesystem step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Nul,
    ComponentTooLong,
    /// `..` past `/`, or a symlink that leads out of the home.
    Outside,
    NotFound,
    NotADirectory,
    IsADirectory,
    Exists,
    NotEmpty,
    /// The home itself where a name is needed (`rm /`, `mkdir /`).
    Home,
    /// Something that is neither a file nor a directory.
    NotAFile,
    /// Anything else the system reported.
    Io(String),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Nul => f.write_str("bad path: NUL byte"),
            PathError::ComponentTooLong => write!(
                f,
                "bad path: a component is longer than {MAX_COMPONENT} bytes"
            ),
            PathError::Outside => f.write_str("bad path: it leads outside the home"),
            PathError::NotFound => f.write_str("no such file or directory"),
            PathError::NotADirectory => f.write_str("not a directory"),
            PathError::IsADirectory => f.write_str("is a directory"),
            PathError::Exists => f.write_str("already exists"),
            PathError::NotEmpty => f.write_str("directory not empty"),
            PathError::Home => f.write_str("not allowed on the home directory"),
            PathError::NotAFile => f.write_str("not a regular file or directory"),
            PathError::Io(e) => f.write_str(e),
        }
    }
}

impl From<Errno> for PathError {
    fn from(e: Errno) -> PathError {
        match e {
            Errno::XDEV | Errno::LOOP => PathError::Outside,
            Errno::NOENT => PathError::NotFound,
            Errno::NOTDIR => PathError::NotADirectory,
            Errno::ISDIR => PathError::IsADirectory,
            Errno::EXIST => PathError::Exists,
            Errno::NOTEMPTY => PathError::NotEmpty,
            Errno::NAMETOOLONG => PathError::ComponentTooLong,
            other => PathError::Io(std::io::Error::from(other).to_string()),
        }
    }
}

/// Joins the working directory `cwd` (absolute, as the client sees it) and
/// a requested `path` into a clean path relative to the home: `""` for the
/// home, otherwise components joined by `/`. Pure: no filesystem access.
pub fn resolve(cwd: &str, path: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    let mut parts: Vec<&str> = Vec::new();
    if !path.starts_with('/') {
        parts.extend(cwd.split('/').filter(|c| !c.is_empty() && *c != "."));
    }
    for component in path.split('/') {
        if component.len() > MAX_COMPONENT {
            return Err(PathError::ComponentTooLong);
        }
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Outside);
                }
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join("/"))
}

/// The client's view of a resolved path: absolute, no trailing slash.
pub fn display(relative: &str) -> String {
    format!("/{relative}")
}

/// Splits a resolved path into its parent and last name; `None` for the
/// home itself, which has no name.
pub fn split_parent(relative: &str) -> Option<(&str, &str)> {
    if relative.is_empty() {
        return None;
    }
    Some(match relative.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", relative),
    })
}

/// A user's home, held open; every operation below is relative to it and
/// cannot leave it.
#[derive(Debug)]
pub struct Home {
    dir: OwnedFd,
}

/// What `stat` tells the service about one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub is_file: bool,
    pub size: u64,
    pub mtime: i64,
}

impl Meta {
    pub fn of(stat: &rustix::fs::Stat) -> Meta {
        let kind = FileType::from_raw_mode(stat.st_mode);
        Meta {
            is_dir: kind == FileType::Directory,
            is_file: kind == FileType::RegularFile,
            size: stat.st_size as u64,
            mtime: stat.st_mtime,
        }
    }
}

/// One line of `ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub meta: Meta,
}

impl Home {
    /// Opens the home directory (a path the daemon built, not a client).
    pub fn open(path: &std::path::Path) -> std::io::Result<Home> {
        let dir = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Home { dir })
    }

    /// Opens `relative` (from [`resolve`]) with `flags`, jailed.
    pub fn open_at(&self, relative: &str, flags: OFlags) -> Result<OwnedFd, PathError> {
        let path = if relative.is_empty() { "." } else { relative };
        // openat2 insists on a zero mode unless it creates the file.
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(0o644)
        } else {
            Mode::empty()
        };
        loop {
            match rustix::fs::openat2(
                &self.dir,
                path,
                flags | OFlags::CLOEXEC,
                mode,
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                // The kernel asks for a retry when a rename raced with the
                // lookup (`EAGAIN` with RESOLVE_BENEATH); the retry is safe.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                other => return other.map_err(PathError::from),
            }
        }
    }

    /// Opens a directory, jailed.
    pub fn open_dir(&self, relative: &str) -> Result<OwnedFd, PathError> {
        self.open_at(relative, OFlags::DIRECTORY | OFlags::RDONLY)
    }

    /// Opens the parent of `relative` and returns it with the last name.
    pub fn open_parent<'a>(&self, relative: &'a str) -> Result<(OwnedFd, &'a str), PathError> {
        let (parent, name) = split_parent(relative).ok_or(PathError::Home)?;
        Ok((self.open_dir(parent)?, name))
    }

    /// The metadata of `name` in `dir`, not following a final symlink.
    pub fn stat_in(dir: impl AsFd, name: &str) -> Result<Meta, PathError> {
        Ok(Meta::of(&rustix::fs::statat(
            dir,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?))
    }

    /// Whether `relative` is a directory (following symlinks that stay
    /// inside).
    pub fn is_dir(&self, relative: &str) -> Result<(), PathError> {
        self.open_at(relative, OFlags::DIRECTORY | OFlags::PATH)
            .map(drop)
    }

    /// Creates a directory; its parent must exist.
    pub fn mkdir(&self, relative: &str) -> Result<(), PathError> {
        let (parent, name) = self.open_parent(relative)?;
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))?;
        Ok(())
    }

    /// Removes a file (or a symlink) or an empty directory; returns the
    /// bytes of regular file freed.
    pub fn remove(&self, relative: &str) -> Result<u64, PathError> {
        let (parent, name) = self.open_parent(relative)?;
        let meta = Home::stat_in(&parent, name)?;
        if meta.is_dir {
            rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR)?;
            Ok(0)
        } else {
            rustix::fs::unlinkat(&parent, name, AtFlags::empty())?;
            Ok(if meta.is_file { meta.size } else { 0 })
        }
    }

    /// Lists a directory: regular files and directories, sorted by name
    /// (bytes). Other kinds, symlinks included, are left out: their
    /// targets may be outside, and the protocol knows only files and dirs.
    pub fn list(&self, relative: &str) -> Result<Vec<Entry>, PathError> {
        let dir = self.open_dir(relative)?;
        let mut entries = Vec::new();
        for item in rustix::fs::Dir::read_from(&dir)? {
            let item = item?;
            let Ok(name) = item.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let Ok(meta) = Home::stat_in(&dir, name) else {
                continue; // Removed since the directory was read.
            };
            if meta.is_dir || meta.is_file {
                entries.push(Entry {
                    name: name.to_string(),
                    meta,
                });
            }
        }
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cwd: &str, path: &str, expected: Result<&str, PathError>) {
        assert_eq!(
            resolve(cwd, path),
            expected.map(str::to_string),
            "cwd {cwd:?} path {path:?}"
        );
    }

    #[test]
    fn relative_paths_start_at_the_working_directory() {
        check("/", "a", Ok("a"));
        check("/a/b", "c", Ok("a/b/c"));
        check("/a/b", "./c/./d/", Ok("a/b/c/d"));
        check("/a/b", "", Ok("a/b"));
        check("/a/b", ".", Ok("a/b"));
        check("/a//b", "c//d", Ok("a/b/c/d"));
    }

    #[test]
    fn absolute_paths_start_at_the_home() {
        check("/a/b", "/", Ok(""));
        check("/a/b", "/x/y", Ok("x/y"));
        check("/a", "//x", Ok("x"));
    }

    #[test]
    fn dot_dot_climbs_but_never_past_the_home() {
        check("/a/b", "..", Ok("a"));
        check("/a/b", "../..", Ok(""));
        check("/a/b", "../../..", Err(PathError::Outside));
        check("/", "..", Err(PathError::Outside));
        check("/", "/../etc/passwd", Err(PathError::Outside));
        check("/", "a/../../b", Err(PathError::Outside));
        check("/", "a/../b", Ok("b"));
        // Names that merely look like dots are names.
        check("/", "...", Ok("..."));
        check("/", ".a/..b", Ok(".a/..b"));
    }

    #[test]
    fn nul_and_long_components_are_refused() {
        check("/", "a\0b", Err(PathError::Nul));
        let long = "x".repeat(MAX_COMPONENT + 1);
        check("/", &long, Err(PathError::ComponentTooLong));
        check(
            "/",
            &format!("a/{long}/b"),
            Err(PathError::ComponentTooLong),
        );
        check(
            "/",
            &"x".repeat(MAX_COMPONENT),
            Ok(&"x".repeat(MAX_COMPONENT)),
        );
    }

    #[test]
    fn split_parent_and_display() {
        assert_eq!(split_parent(""), None);
        assert_eq!(split_parent("a"), Some(("", "a")));
        assert_eq!(split_parent("a/b/c"), Some(("a/b", "c")));
        assert_eq!(display(""), "/");
        assert_eq!(display("a/b"), "/a/b");
    }

    #[test]
    fn the_kernel_refuses_symlinks_that_lead_out() {
        let outside = tempfile::tempdir().unwrap();
        let home_dir = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), home_dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("../", home_dir.path().join("up")).unwrap();
        std::fs::create_dir(home_dir.path().join("in")).unwrap();
        std::os::unix::fs::symlink("in", home_dir.path().join("alias")).unwrap();
        let home = Home::open(home_dir.path()).unwrap();
        assert_eq!(
            home.open_at("out/secret", OFlags::RDONLY).unwrap_err(),
            PathError::Outside
        );
        assert_eq!(home.open_dir("up").unwrap_err(), PathError::Outside);
        assert!(
            home.is_dir("alias").is_ok(),
            "a link that stays inside works"
        );
        let names: Vec<_> = home.list("").unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["in"], "symlinks are not listed");
    }
}
