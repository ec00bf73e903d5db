//! One daemon per interface: a running daemon holds an exclusive `flock` on
//! `<state_dir>/<iface>.daemon.lock` (with its pid inside) for as long as it lives. A second
//! `run` on the same interface is refused, and `detach` can tell that a daemon still manages
//! the interface. The kernel drops the lock when the process dies, however it dies, so a
//! crashed daemon never leaves a stale one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".daemon.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another api-shield daemon{} already manages {iface} (it holds {})",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    Held {
        iface: String,
        pid: Option<u32>,
        path: PathBuf,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Held while the daemon of one interface runs; released when dropped or when the process ends.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

pub fn lock_path(state_dir: &Path, iface: &str) -> PathBuf {
    state_dir.join(format!("{iface}{SUFFIX}"))
}

/// Tries to take the lock without waiting: `Ok(false)` if another process holds it.
fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor `file` owns for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl InstanceLock {
    /// Takes the lock of `iface`, or says which daemon holds it.
    pub fn acquire(state_dir: &Path, iface: &str) -> Result<Self, LockError> {
        let path = lock_path(state_dir, iface);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(|source| LockError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        // Not truncated on open: until the lock is ours, the pid inside is the holder's.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        if !try_flock(&file).map_err(io_err)? {
            return Err(LockError::Held {
                iface: iface.to_owned(),
                pid: read_pid(&mut file),
                path,
            });
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid of the daemon managing `iface`, if one runs: `Ok(None)` when the lock is free.
    /// `Some(None)` inside means it is held but its pid cannot be read.
    pub fn holder(state_dir: &Path, iface: &str) -> Result<Option<Option<u32>>, LockError> {
        let path = lock_path(state_dir, iface);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LockError::Io { path, source }),
        };
        // Taking it (and letting it go when `file` closes) is the only way to know it is free.
        match try_flock(&file) {
            Ok(true) => Ok(None),
            Ok(false) => Ok(Some(read_pid(&mut file))),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(InstanceLock::holder(&state, "eth0").unwrap().is_none());
        let lock = InstanceLock::acquire(&state, "eth0").unwrap();
        assert_eq!(lock.path(), state.join("eth0.daemon.lock"));
        let me = std::process::id();
        assert_eq!(
            InstanceLock::holder(&state, "eth0").unwrap(),
            Some(Some(me))
        );
        let err = InstanceLock::acquire(&state, "eth0").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "another api-shield daemon (pid {me}) already manages eth0"
            )),
            "{err}"
        );
        // The holder's pid survives the refused attempt.
        assert_eq!(
            InstanceLock::holder(&state, "eth0").unwrap(),
            Some(Some(me))
        );
        // Other interfaces are independent.
        let other = InstanceLock::acquire(&state, "eth1").unwrap();
        drop(lock);
        assert!(InstanceLock::holder(&state, "eth0").unwrap().is_none());
        assert!(InstanceLock::acquire(&state, "eth0").is_ok());
        drop(other);
    }
}
