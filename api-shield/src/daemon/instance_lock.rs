//! Whether a daemon manages an interface, for `detach`: a running daemon holds an exclusive
//! `flock` on `<state_dir>/<iface>/daemon.lock` with its pid inside (`start` takes it through
//! [`crate::state_dir::StateDir::lock_exclusive`]). The kernel drops the lock however the
//! daemon dies, so a crashed daemon never looks alive.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::start::LOCK_FILE;

/// More than any pid and its newline.
const MAX_PID_TEXT: u64 = 32;

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ProbeError {
    path: PathBuf,
    source: io::Error,
}

pub fn lock_path(state_dir: &Path, iface: &str) -> PathBuf {
    state_dir.join(iface).join(LOCK_FILE)
}

/// The pid of the daemon managing `iface`, if one runs: `Ok(None)` when the lock is free.
/// `Some(None)` inside means it is held but its pid cannot be read.
pub fn holder(state_dir: &Path, iface: &str) -> Result<Option<Option<u32>>, ProbeError> {
    let path = lock_path(state_dir, iface);
    let err = |source| ProbeError {
        path: path.clone(),
        source,
    };
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    // Taking it (and letting it go when `file` closes) is the only way to know it is free.
    // SAFETY: flock on a descriptor `file` owns for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(None);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(err(e));
    }
    let mut text = String::new();
    let pid = file
        .take(MAX_PID_TEXT)
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| text.trim().parse().ok());
    Ok(Some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_dir::StateDir;

    #[test]
    fn the_daemons_lock_is_seen_while_held_and_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        assert!(holder(state, "eth0").unwrap().is_none());
        let iface_dir = StateDir::open(state).unwrap().subdir("eth0").unwrap();
        let lock = iface_dir.lock_exclusive(LOCK_FILE).unwrap();
        assert_eq!(lock.path(), lock_path(state, "eth0"));
        assert_eq!(
            holder(state, "eth0").unwrap(),
            Some(Some(std::process::id()))
        );
        assert!(holder(state, "eth1").unwrap().is_none());
        drop(lock);
        assert!(holder(state, "eth0").unwrap().is_none());
    }
}
