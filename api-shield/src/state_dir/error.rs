//! What can go wrong under `state_dir`, each naming the path.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is a symbolic link; refusing to follow it (state files are never read or written \
         through links): remove it",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("{} is a {found}, not a {expected}; refusing to use it", path.display())]
    WrongType {
        path: PathBuf,
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "{} has {links} hard links; refusing to use it (a state file has one name)",
        path.display()
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{} is nested more than {max} directories deep; refusing to walk it", path.display())]
    TooDeep { path: PathBuf, max: usize },
    #[error("{} is larger than {max} bytes; refusing to read it", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("`{name}` is not a file name inside {}: {reason}", dir.display())]
    InvalidName {
        dir: PathBuf,
        name: String,
        reason: &'static str,
    },
    #[error(
        "{} is held by another api-shield daemon ({}): stop it first",
        path.display(),
        holder.map_or_else(|| "pid unknown".to_owned(), |pid| format!("pid {pid}"))
    )]
    Locked { path: PathBuf, holder: Option<u32> },
}

impl StateDirError {
    pub(super) fn io(path: &Path, what: &'static str, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            what,
            source,
        }
    }
}
