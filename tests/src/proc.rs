//! A helper process a test starts (an upstream, nginx, a JWKS server), ended by its own pid.

use std::process::Child;

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
