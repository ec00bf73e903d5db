//! The plain / netset syntax: one address or CIDR prefix a line.

use ipnet::IpNet;

use super::{LineError, shorten};
use crate::parse::{InputError, parse_net};

/// Longer than any address or prefix in any textual form
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128` is 49 characters).
const MAX_TOKEN: usize = 64;

/// The line up to its first `#` or `;`.
fn strip_comment(line: &str) -> &str {
    match line.bytes().position(|b| b == b'#' || b == b';') {
        Some(at) => &line[..at],
        None => line,
    }
}

/// A plain / netset line: `Ok(None)` when it holds no entry.
pub(super) fn plain_line(raw: &str) -> Result<Option<IpNet>, LineError> {
    let content = strip_comment(raw).trim();
    if content.is_empty() {
        return Ok(None);
    }
    parse_token(content).map(Some)
}

/// One address or prefix, with the CLI's rules and messages.
pub(super) fn parse_token(token: &str) -> Result<IpNet, LineError> {
    let parsed = if token.len() > MAX_TOKEN {
        // Spares parse_net a huge token, and the message a copy of it.
        Err(if token.contains(char::is_whitespace) {
            InputError::Whitespace(String::new())
        } else {
            InputError::BadAddress(String::new())
        })
    } else {
        parse_net(token)
    };
    parsed.map_err(|e| match e {
        InputError::Whitespace(_) => LineError::NotOneToken(shorten(token)),
        InputError::BadAddress(_) if token.contains('-') && token.len() <= MAX_TOKEN => {
            LineError::Range(token.to_owned())
        }
        InputError::BadAddress(_) => LineError::NotAddress(shorten(token)),
        other => LineError::Address(other),
    })
}
