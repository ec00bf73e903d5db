//! Named lists: blocklists that other tools publish (files, CrowdSec, fail2ban, the push API),
//! each one an origin whose entries are replaced or updated as a whole.

pub mod formats;

use ipnet::IpNet;
use std::time::Duration;

/// One entry of a list as a source gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub net: IpNet,
    /// How long the entry lasts from now (`ipset` `timeout`, CrowdSec `duration`); `None` is
    /// until the list says otherwise.
    pub ttl: Option<Duration>,
    /// Why, when the source says (a CrowdSec scenario, a fail2ban jail).
    pub reason: Option<String>,
}

/// Whether a list name is acceptable as an origin: short, printable, no path characters.
pub fn valid_list_name(name: &str) -> Result<(), String> {
    const MAX_LEN: usize = 64;
    // The refusal quotes the name: cut and escaped, since it is the input being refused.
    let shown = |name: &str| {
        let cut: String = name.chars().take(MAX_LEN).collect();
        let more = if cut.len() < name.len() { "..." } else { "" };
        format!("{}{more}", crate::text::escape(&cut))
    };
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(format!(
            "list name `{}` must be 1 to {MAX_LEN} characters",
            shown(name)
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(format!(
            "list name `{}` may hold only letters, digits, `-`, `_` and `.`, and not start with `.`",
            shown(name)
        ));
    }
    Ok(())
}
