//! Crash-safe, symlink-safe files in a directory the service user owns (`state_dir/<iface>`).
//!
//! The directory is opened once, without following a symlink, and every file in it is reached
//! relative to that descriptor: a file is written to a temporary created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, synced, renamed over the old one with `renameat` and the
//! directory synced, so a crash leaves the old file or the new one, and a symlink or hard link
//! the service user plants at either name never redirects a write (nor a read as root) to
//! another file. Self-contained on purpose: one writer for all state is being built
//! separately, and this one can be swapped for it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

/// Mode of the files written: the daemon's own state, nobody else's business.
const FILE_MODE: u32 = 0o600;
/// Suffix of a file's temporary name.
const TEMP_SUFFIX: &str = ".tmp";

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is a symbolic link; refusing to follow it")]
    Symlink { path: PathBuf },
    #[error("{path} is not a directory (a symbolic link is not followed)")]
    NotDirectory { path: PathBuf },
    #[error("{path} is not a regular file (or has other hard links); ignored")]
    NotPlain { path: PathBuf },
    #[error("{path} is larger than {max} bytes; ignored")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("`{name}` is not a plain file name")]
    BadName { name: String },
}

/// An open state directory.
#[derive(Debug)]
pub struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(Errno) -> StateFileError + '_ {
    move |e| match e {
        Errno::ELOOP => StateFileError::Symlink { path: path.into() },
        e => StateFileError::Io {
            path: path.into(),
            source: e.into(),
        },
    }
}

impl StateDir {
    /// Opens `path` (created if missing) as a directory; a symlink in its place is refused.
    pub fn open(path: &Path) -> Result<Self, StateFileError> {
        std::fs::create_dir_all(path).map_err(|source| StateFileError::Io {
            path: path.into(),
            source,
        })?;
        let fd = open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR.
            Errno::ENOTDIR => StateFileError::NotDirectory { path: path.into() },
            e => io_err(path)(e),
        })?;
        Ok(Self {
            fd,
            path: path.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn checked<'a>(&self, name: &'a str) -> Result<&'a str, StateFileError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(StateFileError::BadName { name: name.into() });
        }
        Ok(name)
    }

    /// Replaces `name` with `bytes` atomically and durably.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateFileError> {
        let name = self.checked(name)?;
        let temp = format!("{name}{TEMP_SUFFIX}");
        let temp_path = self.path.join(&temp);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(FILE_MODE);
        let fd = match openat(self.fd.as_fd(), temp.as_str(), flags, mode) {
            // A temporary left by a crash, or anything planted at its name: the name is
            // removed (unlinkat never follows a link) and the file created afresh.
            Err(Errno::EEXIST) => {
                unlinkat(self.fd.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(io_err(&temp_path))?;
                openat(self.fd.as_fd(), temp.as_str(), flags, mode)
            }
            other => other,
        }
        .map_err(io_err(&temp_path))?;
        let mut file = File::from(fd);
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written {
            let _ = unlinkat(self.fd.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(StateFileError::Io {
                path: temp_path,
                source,
            });
        }
        let final_path = self.path.join(name);
        renameat(self.fd.as_fd(), temp.as_str(), self.fd.as_fd(), name)
            .map_err(io_err(&final_path))?;
        fsync(self.fd.as_fd()).map_err(io_err(&self.path))
    }

    /// Reads `name` whole if it exists: a regular file with one link, at most `max_len` bytes.
    /// Never follows a symlink, never blocks on a FIFO.
    pub fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>, StateFileError> {
        let name = self.checked(name)?;
        let path = self.path.join(name);
        let fd = match openat(
            self.fd.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Err(Errno::ENOENT) => return Ok(None),
            other => other.map_err(io_err(&path))?,
        };
        let st = fstat(fd.as_fd()).map_err(io_err(&path))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
            || st.st_nlink != 1
        {
            return Err(StateFileError::NotPlain { path });
        }
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > max_len {
            return Err(StateFileError::TooLarge { path, max: max_len });
        }
        let mut bytes = Vec::new();
        // One byte more than allowed: a file that grew since the fstat is caught too.
        File::from(fd)
            .take(max_len.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| StateFileError::Io {
                path: path.clone(),
                source,
            })?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_len {
            return Err(StateFileError::TooLarge { path, max: max_len });
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn writes_replace_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("eth0")).unwrap();
        assert_eq!(dir.read("a.json", 100).unwrap(), None);
        dir.write_atomic("a.json", b"one").unwrap();
        dir.write_atomic("a.json", b"two").unwrap();
        assert_eq!(dir.read("a.json", 100).unwrap().unwrap(), b"two");
        assert!(!tmp.path().join("eth0/a.json.tmp").exists());
        assert!(matches!(
            dir.read("a.json", 2),
            Err(StateFileError::TooLarge { .. })
        ));
        for bad in ["", "..", "x/y", "../a.json"] {
            assert!(matches!(
                dir.write_atomic(bad, b"x"),
                Err(StateFileError::BadName { .. })
            ));
        }
    }

    #[test]
    fn planted_links_never_redirect_a_write_or_a_read() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        std::fs::write(&canary, "precious").unwrap();
        let state = tmp.path().join("state");
        let dir = StateDir::open(&state).unwrap();
        symlink(&canary, state.join("a.json.tmp")).unwrap();
        symlink(&canary, state.join("a.json")).unwrap();
        // Read: the link is refused, not followed.
        assert!(matches!(
            dir.read("a.json", 100),
            Err(StateFileError::Symlink { .. })
        ));
        // Write: both links are replaced, the canary untouched.
        dir.write_atomic("a.json", b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious");
        assert!(!state.join("a.json").is_symlink());
        assert_eq!(dir.read("a.json", 100).unwrap().unwrap(), b"mine");
        // A hard link to another file is not read.
        std::fs::remove_file(state.join("a.json")).unwrap();
        std::fs::hard_link(&canary, state.join("a.json")).unwrap();
        assert!(matches!(
            dir.read("a.json", 100),
            Err(StateFileError::NotPlain { .. })
        ));
        // A FIFO does not block the reader.
        std::fs::remove_file(state.join("a.json")).unwrap();
        nix::unistd::mkfifo(&state.join("a.json"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            dir.read("a.json", 100),
            Err(StateFileError::NotPlain { .. })
        ));
        // The directory itself as a symlink is refused.
        symlink(tmp.path(), tmp.path().join("linked")).unwrap();
        assert!(matches!(
            StateDir::open(&tmp.path().join("linked")),
            Err(StateFileError::NotDirectory { .. } | StateFileError::Symlink { .. })
        ));
    }
}
