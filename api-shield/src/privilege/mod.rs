//! Giving up root once the kernel side is set up.
//!
//! After `run` has loaded and attached the program, opened every map, bound every socket and
//! read every key, nothing it does needs privilege: updating a map through a file descriptor
//! the process already holds needs no capability (Linux ≥ 6.5 checks only at map creation and
//! program load), and the state directory and audit log are handed to the service user first
//! (`StateDir::chown_tree`, `AuditLog::hand_over`: never through a link). So the whole
//! process, and with it every request handler of the internet-facing gateway, switches to
//! `run_as`:
//! - supplementary groups, then gid, then uid set to the user's (glibc applies each to every
//!   thread); leaving uid 0 clears every capability, and it cannot be regained;
//! - a seccomp filter on every thread (TSYNC), which also sets `no_new_privs` on all of them:
//!   no `execve` (so no setuid binary or file capability can give anything back), no ptrace,
//!   mounts, namespaces, module or kexec loading, reboot.

mod readable;
pub use readable::RereadFile;

use std::collections::BTreeMap;

use nix::unistd::{Gid, Uid, User, getresgid, getresuid, setgroups, setresgid, setresuid};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("run_as = \"{0}\": no such user")]
    NoSuchUser(String),
    #[error("run_as = \"{0}\": the user is root; name an unprivileged user")]
    Root(String),
    #[error("looking up run_as = \"{user}\": {source}")]
    Lookup { user: String, source: nix::Error },
    #[error(
        "run_as = \"{user}\" cannot read what the daemon reads again once it runs as that \
         user (a SIGHUP reload would fail): {}; make each readable by the user",
        problems.join("; ")
    )]
    Unreadable { user: String, problems: Vec<String> },
    #[error("cannot check which files run_as = \"{0}\" can read without being root or that user")]
    CannotProbe(String),
    #[error("switching to the service user ({step}): {source}")]
    Switch {
        step: &'static str,
        source: nix::Error,
    },
    #[error("the switch did not hold: still {0}")]
    Incomplete(String),
    #[error("installing the seccomp filter: {0}")]
    Seccomp(String),
}

/// Resolves `run_as` and checks it can read `files` (see `readable`): what `check-config`
/// reports and what `run` checks before it changes anything.
pub fn check_run_as(name: &str, files: &[RereadFile]) -> Result<ServiceUser, PrivilegeError> {
    let user = ServiceUser::resolve(name)?;
    let problems = user.unreadable(files)?;
    if problems.is_empty() {
        Ok(user)
    } else {
        Err(PrivilegeError::Unreadable {
            user: name.to_owned(),
            problems,
        })
    }
}

/// The unprivileged account the daemon continues as.
#[derive(Clone, Debug)]
pub struct ServiceUser {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

impl ServiceUser {
    pub fn resolve(name: &str) -> Result<Self, PrivilegeError> {
        let user = User::from_name(name)
            .map_err(|source| PrivilegeError::Lookup {
                user: name.to_owned(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_owned()))?;
        if user.uid.is_root() {
            return Err(PrivilegeError::Root(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            uid: user.uid,
            gid: user.gid,
        })
    }

    /// Switches every thread of the process to this user for good and installs the seccomp
    /// filter. Checks that root cannot be regained.
    pub fn become_user(&self) -> Result<(), PrivilegeError> {
        let step = |step| move |source| PrivilegeError::Switch { step, source };
        // A credential change clears the parent-death signal; whoever started the daemon
        // with one (a supervisor, a test harness) still wants it.
        let death_signal = parent_death_signal();
        setgroups(&[self.gid]).map_err(step("setgroups"))?;
        setresgid(self.gid, self.gid, self.gid).map_err(step("setresgid"))?;
        setresuid(self.uid, self.uid, self.uid).map_err(step("setresuid"))?;
        let uids = getresuid().map_err(step("getresuid"))?;
        let gids = getresgid().map_err(step("getresgid"))?;
        if [uids.real, uids.effective, uids.saved] != [self.uid; 3]
            || [gids.real, gids.effective, gids.saved] != [self.gid; 3]
        {
            return Err(PrivilegeError::Incomplete(format!("{uids:?} {gids:?}")));
        }
        if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
            return Err(PrivilegeError::Incomplete(
                "able to become root again".into(),
            ));
        }
        if let Some(sig) = death_signal {
            // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::c_ulong::from(sig)) };
        }
        install_seccomp()
    }
}

fn parent_death_signal() -> Option<libc::c_uint> {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &raw mut sig) };
    (rc == 0 && sig > 0).then(|| sig.unsigned_abs())
}

/// System calls the daemon never makes once running; each fails with `EPERM`.
const DENIED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_userfaultfd,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
];

fn install_seccomp() -> Result<(), PrivilegeError> {
    let err = |e: &dyn std::fmt::Display| PrivilegeError::Seccomp(e.to_string());
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(&e))?;
    let rules = DENIED
        .iter()
        .map(|&nr| (nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(|e| err(&e))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| err(&e))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| err(&e))
}
