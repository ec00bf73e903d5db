//! Whether the service user can read the files the daemon reads again once it runs as that
//! user, checked before anything is changed: by `check-config`, and by `run` before it touches
//! the kernel.
//!
//! The check is the kernel's own: a short-lived thread takes the user's file-system identity
//! (fsuid, fsgid and the single group `become_user` keeps) and opens each file. Leaving fsuid 0
//! drops that thread's file capabilities, so modes, ACLs and every directory on the way are
//! judged as they will be for the daemon. The credentials are set with raw system calls, which
//! change only the calling thread (glibc's `setgroups` would change every thread), and they end
//! with the thread.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::Uid;

use super::{PrivilegeError, ServiceUser};

/// A file the daemon reads after giving up root, with the setting that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RereadFile {
    pub setting: String,
    pub path: PathBuf,
}

impl ServiceUser {
    /// The files of `files` this user cannot open for reading, each as `setting path: error`.
    /// A file that does not exist is not this check's concern (the start names it).
    pub fn unreadable(&self, files: &[RereadFile]) -> Result<Vec<String>, PrivilegeError> {
        let euid = Uid::effective();
        if euid == self.uid {
            return Ok(open_each(files));
        }
        if !euid.is_root() {
            return Err(PrivilegeError::CannotProbe(self.name.clone()));
        }
        let (uid, gid) = (self.uid.as_raw(), self.gid.as_raw());
        let files = files.to_vec();
        std::thread::spawn(move || {
            take_fs_identity(uid, gid)?;
            Ok(open_each(&files))
        })
        .join()
        .unwrap_or_else(|_| Err(PrivilegeError::Incomplete("the file check panicked".into())))
    }
}

/// This thread's file-system identity becomes `uid`, `gid` and no other group.
fn take_fs_identity(uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    let step = |step| move |source| PrivilegeError::Switch { step, source };
    let groups: [libc::gid_t; 1] = [gid];
    // SAFETY: setgroups reads `groups.len()` ids from the array, which outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc != 0 {
        return Err(step("setgroups")(Errno::last()));
    }
    // setfsgid/setfsuid return the previous id whether or not they succeed: a second call
    // with the same id reads back what holds.
    for (name, nr, id) in [
        ("setfsgid", libc::SYS_setfsgid, gid),
        ("setfsuid", libc::SYS_setfsuid, uid),
    ] {
        // SAFETY: takes an id by value and touches no memory.
        unsafe { libc::syscall(nr, id) };
        // SAFETY: as above.
        let now = unsafe { libc::syscall(nr, id) };
        if now != libc::c_long::from(id) {
            return Err(step(name)(Errno::EPERM));
        }
    }
    Ok(())
}

fn open_each(files: &[RereadFile]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| {
            // O_NONBLOCK: a FIFO in place of a key must not hang the check.
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&f.path);
            match opened {
                Ok(_) => None,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(format!("{} {}: {e}", f.setting, f.path.display())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    /// Exists on Debian, like every test that drops to a user here.
    const NOBODY: &str = "nobody";

    fn file(setting: &str, path: &Path) -> RereadFile {
        RereadFile {
            setting: setting.into(),
            path: path.to_owned(),
        }
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn names_each_file_the_user_cannot_read_and_leaves_this_thread_root() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let private = dir.path().join("key.pem");
        let public = dir.path().join("cert.pem");
        let closed = dir.path().join("closed");
        fs::write(&private, "secret").unwrap();
        fs::write(&public, "cert").unwrap();
        chmod(&private, 0o600);
        fs::create_dir(&closed).unwrap();
        chmod(&closed, 0o700);
        let behind = closed.join("policy.toml");
        fs::write(&behind, "").unwrap();
        chmod(&behind, 0o644);
        let files = [
            file("tls_key", &private),
            file("tls_cert", &public),
            file("gateway.policy_file", &behind),
            file("feeds `x` path", &dir.path().join("not-yet")),
        ];
        let groups_before = nix::unistd::getgroups().unwrap();
        let user = ServiceUser::resolve(NOBODY).unwrap();
        let problems = user.unreadable(&files).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!("tls_key {}: ", private.display()))
                && problems[0].contains("Permission denied"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("gateway.policy_file"),
            "{problems:?}"
        );
        // The probe changed only its own thread.
        assert!(Uid::effective().is_root());
        assert_eq!(nix::unistd::getgroups().unwrap(), groups_before);
        fs::read(&private).unwrap();

        chmod(&private, 0o640);
        nix::unistd::chown(&private, None, Some(user.gid)).unwrap();
        chmod(&closed, 0o755);
        assert!(user.unreadable(&files).unwrap().is_empty());
    }

    #[test]
    fn check_run_as_names_a_missing_user() {
        let err = super::super::check_run_as("no-such-user-api-shield", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run_as = \"no-such-user-api-shield\": no such user"
        );
    }
}
