//! Whether the shield is really attached, by the kernel's account, and the daemon's alarm when
//! it stops being so (`api-shield detach --force`, `ip link set dev IF xdp off`, the interface
//! removed): an error in the log, an audit record, and `attached: false` in `status` and in
//! the metrics until it is attached again.

use super::handler::audit_self;
use crate::audit::AuditLog;
use crate::kernel::loader::Attachment;
use crate::kernel::xdp_query::xdp_programs;
use serde_json::json;

/// The shield's program on its interface, as the kernel reports it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Attached,
    /// Not enforcing; says what the kernel reports instead.
    Detached(String),
    /// The kernel could not be asked.
    Unknown(String),
}

impl LinkState {
    /// Asks the kernel which XDP programs run on the attachment's interface.
    pub fn read(attachment: Option<&Attachment>) -> Self {
        let Some(a) = attachment else {
            return Self::Detached("the daemon has not attached the program".into());
        };
        match xdp_programs(a.ifindex) {
            Ok(None) => Self::Detached(format!(
                "interface {} (ifindex {}) no longer exists",
                a.iface, a.ifindex
            )),
            Ok(Some(p)) if p.contains(a.program_id) => Self::Attached,
            Ok(Some(p)) if p.ids.is_empty() => Self::Detached(format!(
                "no XDP program is attached to {}; program {} is gone from it",
                a.iface, a.program_id
            )),
            Ok(Some(p)) => Self::Detached(format!(
                "{} runs XDP program(s) {:?}, not the shield's program {}",
                a.iface, p.ids, a.program_id
            )),
            Err(e) => Self::Unknown(format!("cannot read the XDP state of {}: {e}", a.iface)),
        }
    }

    /// `Some(true/false)`, or `None` when the kernel could not be asked.
    pub fn attached(&self) -> Option<bool> {
        match self {
            Self::Attached => Some(true),
            Self::Detached(_) => Some(false),
            Self::Unknown(_) => None,
        }
    }

    /// Why it is not attached (or cannot be told), for `status`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Attached => None,
            Self::Detached(d) | Self::Unknown(d) => Some(d),
        }
    }
}

/// Remembers the last state seen so each change is reported once.
#[derive(Debug, Default)]
pub struct LinkWatch {
    last: Option<bool>,
    /// The kernel could not be asked last time (warned about once, not every second).
    unknown: bool,
}

impl LinkWatch {
    /// Reports a change of `state` since the last call; the first call reports only a
    /// missing attachment.
    pub fn observe(&mut self, state: &LinkState, iface: &str, audit: &AuditLog) {
        let Some(now) = state.attached() else {
            if let LinkState::Unknown(e) = state
                && !self.unknown
            {
                tracing::warn!(iface, error = e.as_str(), "cannot check the XDP attachment");
            }
            self.unknown = true;
            return;
        };
        self.unknown = false;
        if self.last == Some(now) {
            return;
        }
        let first = self.last.is_none();
        self.last = Some(now);
        if now {
            if !first {
                tracing::info!(
                    iface,
                    "the shield's XDP program is attached again; enforcing"
                );
                audit_self(
                    audit,
                    "link_restored",
                    json!({"iface": iface}),
                    true,
                    json!(null),
                );
            }
            return;
        }
        let detail = state.detail().unwrap_or_default();
        tracing::error!(
            iface,
            detail,
            "THE SHIELD IS NOT ENFORCING: its XDP program is no longer attached (detached \
             from outside the daemon?); `status` shows attached=false; restart the daemon to \
             attach it again"
        );
        audit_self(
            audit,
            "link_lost",
            json!({"iface": iface}),
            false,
            json!(detail),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_change_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = AuditLog::open(&path).unwrap();
        let mut watch = LinkWatch::default();
        let lost = LinkState::Detached("no XDP program is attached to eth0".into());
        watch.observe(&LinkState::Attached, "eth0", &audit);
        assert!(records(&path).is_empty(), "attached at start is not news");
        for _ in 0..3 {
            watch.observe(&lost, "eth0", &audit);
            watch.observe(&LinkState::Unknown("EPERM".into()), "eth0", &audit);
        }
        let r = records(&path);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0]["op"], "link_lost");
        assert_eq!(r[0]["result"], "error");
        assert_eq!(r[0]["detail"], "no XDP program is attached to eth0");
        watch.observe(&LinkState::Attached, "eth0", &audit);
        watch.observe(&LinkState::Attached, "eth0", &audit);
        let r = records(&path);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[1]["op"], "link_restored");
    }

    #[test]
    fn a_daemon_that_never_attached_is_detached() {
        let state = LinkState::read(None);
        assert_eq!(state.attached(), Some(false));
        assert!(state.detail().is_some());
    }
}
