//! A helper process a test starts (an upstream, nginx, a JWKS server), ended by its own pid.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process killed and reaped on drop.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill() {
            eprintln!("killing the test's {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

/// Makes the child `cmd` starts die with the test process: if the test dies without running
/// its guards (SIGKILL, an abort), the kernel sends the child SIGKILL. An exec keeps the
/// setting, so it also covers a daemon started through `nsenter` or `setpriv`.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).expect("pid fits pid_t");
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then no signal would come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
}

/// Starts the Python upstream `script` (an `http.server` that takes its port as its only
/// argument) inside namespace `netns`, dying with the test.
pub fn python_upstream(netns: &str, script: &Path, port: u16) -> Child {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .arg("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().expect("start the upstream")
}
