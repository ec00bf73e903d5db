//! The snapshot read at start is input like any other: the service user owns `state_dir`, so
//! its files may have been written by someone other than the daemon. Every restored entry
//! passes the rules fresh input passes; what fails is reported (log and audit) and left out,
//! never enforced.

use ipnet::IpNet;

use super::ops::{ORIGIN_CLI, State};
use crate::kernel::clock;
use crate::model::Action;

/// An entry of the snapshot left out, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub list: String,
    pub action: Action,
    pub net: IpNet,
    pub why: String,
}

impl State {
    /// Takes out of a restored store every entry fresh input would be refused for: a prefix with
    /// host bits or in IPv4-mapped form, an allow entry outside the CLI's origin (named lists
    /// hold blocks only), an expiry beyond `max_ttl` from now, or a reason that breaks the text
    /// rule. Returns what was taken out.
    pub fn drop_invalid_restored(&mut self) -> Vec<Refused> {
        let now = clock::now_unix_ms();
        let max_ttl_ms = u64::try_from(self.config.max_ttl.as_millis()).unwrap_or(u64::MAX);
        let latest = now.saturating_add(max_ttl_ms);
        let mut refused = Vec::new();
        for (name, list) in self.store.origins() {
            for ((action, net), entry) in &list.entries {
                let why = if let Err(e) = crate::parse::parse_net(&net.to_string()) {
                    Some(e.to_string())
                } else if *action == Action::Allow && name != ORIGIN_CLI {
                    Some(format!(
                        "an allow entry in list `{name}`, which holds blocks only"
                    ))
                } else if let Some(at) = entry.expires_at_ms.filter(|at| *at > latest) {
                    Some(format!(
                        "expires at {at} ms after the epoch, beyond max_ttl ({}) from now",
                        humantime::format_duration(self.config.max_ttl)
                    ))
                } else if let Some(Err(e)) = entry
                    .reason
                    .as_deref()
                    .map(|r| crate::text::check("reason", r))
                {
                    Some(e.to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    refused.push(Refused {
                        list: name.to_owned(),
                        action: *action,
                        net: *net,
                        why,
                    });
                }
            }
        }
        for r in &refused {
            self.store.remove(r.action, &r.net, Some(r.list.as_str()));
        }
        refused
    }
}
