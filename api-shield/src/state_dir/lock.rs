//! An exclusive lock held for a daemon's life: a file under `state_dir` locked with `flock`,
//! holding the holder's pid so that the next daemon can name it.
//!
//! The lock is the `flock`, not the file's existence: a file left by a dead daemon is simply
//! locked again, and the kernel releases the lock however the holder dies.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

use super::{FILE_MODE, StateDir, StateDirError, expect_type};

/// More than any pid and its newline.
const MAX_PID_TEXT: u64 = 32;

/// Held until dropped (or the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl StateDir {
    /// Takes the exclusive lock `name` in this directory without waiting. If another process
    /// holds it, the error names that process's pid.
    pub fn lock_exclusive(&self, name: &str) -> Result<StateLock, StateDirError> {
        let path = self.name_path(name)?;
        // No O_TRUNC: the file is truncated only once the lock is ours, so the holder's pid
        // stays readable for whoever fails to take it.
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = openat(self.fd(), name, flags, Mode::from_bits_truncate(FILE_MODE)).map_err(
            |e| match e {
                Errno::ELOOP => StateDirError::Symlink { path: path.clone() },
                e => StateDirError::io(&path, "opening the lock file", e.into()),
            },
        )?;
        let stat = fstat(fd.as_fd())
            .map_err(|e| StateDirError::io(&path, "inspecting the lock file", e.into()))?;
        expect_type(&stat, SFlag::S_IFREG, &path)?;
        // The file is truncated below: a second name could be another file's.
        if stat.st_nlink > 1 {
            return Err(StateDirError::HardLinked {
                path,
                links: stat.st_nlink,
            });
        }
        let locked = match Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(StateDirError::Locked {
                    holder: read_pid(&mut file),
                    path,
                });
            }
            Err((_, e)) => return Err(StateDirError::io(&path, "locking", e.into())),
        };
        let mut file: &File = &locked;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(|source| StateDirError::io(&path, "writing the lock file", source))?;
        Ok(StateLock {
            _file: locked,
            path,
        })
    }
}

/// The holder's pid as it wrote it; `None` if it has not yet (or the file is not ours).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(MAX_PID_TEXT).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
