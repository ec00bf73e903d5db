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

/// Longest list name, in bytes.
const MAX_LIST_NAME: usize = 64;

/// Why a list name is refused. The name is quoted cut and escaped, since it is the input being
/// refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListNameError {
    #[error("list name `{0}` must be 1 to {MAX_LIST_NAME} characters")]
    Length(String),
    #[error(
        "list name `{0}` may hold only letters, digits, `-`, `_` and `.`, and not start with `.`"
    )]
    Characters(String),
}

/// Whether a list name is acceptable as an origin: short, printable, no path characters.
pub fn valid_list_name(name: &str) -> Result<(), ListNameError> {
    let shown = |name: &str| {
        let cut: String = name.chars().take(MAX_LIST_NAME).collect();
        let more = if cut.len() < name.len() { "..." } else { "" };
        format!("{}{more}", crate::text::escape(&cut))
    };
    if name.is_empty() || name.len() > MAX_LIST_NAME {
        return Err(ListNameError::Length(shown(name)));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(ListNameError::Characters(shown(name)));
    }
    Ok(())
}
