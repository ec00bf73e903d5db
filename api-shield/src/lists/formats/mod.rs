//! Parsers for the blocklist files other tools publish.
//!
//! Three line syntaxes are read:
//!
//! - **plain**: one IPv4 or IPv6 address or CIDR prefix a line;
//! - **netset**: FireHOL `.netset` and `.ipset` files, the same syntax as plain (the name only
//!   records where a list came from);
//! - **ipset**: the output of `ipset save` (or an `ipset restore` file): `create NAME TYPE
//!   [options]` and `add NAME ENTRY [options]` lines.
//!
//! Common to all of them: `#` and `;` start a comment, on a line of its own or after an entry
//! (in ipset lines, not inside a quoted `comment "..."`); blank lines are ignored; CRLF line ends,
//! a leading UTF-8 byte order mark and whitespace around entries are accepted.
//!
//! Addresses are taken exactly as the CLI takes them ([`crate::parse::parse_net`]), so a list
//! file and `api-shield block` accept and refuse the same things:
//!
//! - an address is a /32 or /128; IPv6 in any textual form (compressed, full, with an embedded
//!   IPv4 tail);
//! - **a CIDR prefix with host bits set (`198.18.0.7/24`) is refused**, not masked, and the
//!   message suggests the network form. A list that means `198.18.0.0/24` but says
//!   `198.18.0.7/24` is broken, and silently blocking 256 addresses for a line that may have
//!   meant one is the worse failure; with `skip_invalid` such a line is reported and skipped;
//! - zone ids (`fe80::1%eth0`) are refused;
//! - IPv4-mapped IPv6 (`::ffff:198.18.0.7`) is refused with the IPv4 form to use instead: the
//!   kernel sees those sources as IPv4 packets, so the IPv6 entry would never match.
//!
//! ipset specifics: `timeout N` (seconds; `0` means permanent, as in ipset) becomes the entry's
//! `ttl`, and a set's `create ... timeout N` is the default for its `add` lines without one;
//! `comment "..."` becomes the entry's `reason`; `-exist` / `-!` are ignored; `packets`, `bytes`,
//! `skbmark`, `skbprio` and `skbqueue` are read and ignored. Only sets of addresses are taken:
//! `hash:ip`, `hash:net` and `bitmap:ip` (a `netmask N` option makes each address of the set a
//! /N, as ipset stores it). A set's `family` is enforced on its entries. `nomatch` entries are
//! refused: they are exceptions carved out of a set, which a blocklist cannot express. Any other
//! command (`flush`, `destroy`, `del`, `swap`, ...) is an invalid line: a list file states the
//! whole list. `add` lines for a set without a `create` line are accepted.
//!
//! Every invalid line is an error naming the file and line, or with `skip_invalid` a
//! [`Skipped`] record (one for each bad line) while the rest is still read. The same prefix given
//! twice is one entry (counted in `duplicates`): the longest `ttl` wins, a permanent entry over
//! any `ttl`, together with its `reason` when it has one. Overlapping prefixes (a /32 inside a
//! listed /24) are kept as they are: the kernel table resolves them.
//!
//! The parsers allocate nothing per line beyond the entry itself (and its `reason`), so a file
//! of a million lines parses in a fraction of a second.

mod dedup;
mod error;
mod ipset;
mod plain;

use ipnet::IpNet;

use super::ListEntry;
use dedup::collapse_duplicates;
use error::{LineError, OptionError};
use ipset::{Ipset, is_exist_flag};
use plain::plain_line;

/// The syntax of a list file.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Recognise `ipset save` output, otherwise read the file as plain.
    Auto,
    /// One address or CIDR prefix a line, `#` and `;` comments.
    Plain,
    /// FireHOL `.netset` / `.ipset`: the plain syntax.
    Netset,
    /// `ipset save` output: `create` and `add` lines.
    Ipset,
}

/// What a list file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// Distinct prefixes, in the order of their first appearance.
    pub entries: Vec<ListEntry>,
    /// The first [`MAX_SKIPPED_KEPT`] invalid lines passed over (only with `skip_invalid`), in
    /// file order: a file of junk must not cost memory per line.
    pub skipped: Vec<Skipped>,
    /// Every invalid line passed over.
    pub skipped_total: usize,
    /// The syntax actually used (never `Auto`).
    pub format: Format,
    /// Lines in the file.
    pub lines: usize,
    /// Entries that repeated a prefix already listed, collapsed into it.
    pub duplicates: usize,
}

/// An invalid line passed over with `skip_invalid`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// 1-based line number.
    pub line: usize,
    /// The line, trimmed (shortened if very long).
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

/// An invalid line that stopped the parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ListError {
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

/// Longest text of a line repeated in a message or a [`Skipped`] record.
const MAX_SHOWN: usize = 120;
/// Most entries reserved up front; a longer list grows the vector as it goes.
const MAX_RESERVED: usize = 1 << 20;
/// Skipped lines reported by name; the rest are counted.
pub const MAX_SKIPPED_KEPT: usize = 100;
/// Longest message about one line, in characters.
const MAX_MESSAGE_CHARS: usize = 400;

/// The syntax of `text`: [`Format::Ipset`] when its first line that is not blank or a comment
/// is an ipset `create` or `add` command, otherwise [`Format::Plain`].
pub fn detect(text: &str) -> Format {
    let text = strip_bom(text);
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        let command = line
            .split_ascii_whitespace()
            .find(|t| !is_exist_flag(t))
            .unwrap_or("");
        return if matches!(command, "create" | "add") {
            Format::Ipset
        } else {
            Format::Plain
        };
    }
    Format::Plain
}

/// Parses a list file. `file` names it in errors. With `skip_invalid`, invalid lines are
/// recorded in [`Parsed::skipped`] and the rest is read; without it the first one is the error.
pub fn parse(
    text: &str,
    file: &str,
    format: Format,
    skip_invalid: bool,
) -> Result<Parsed, ListError> {
    let format = match format {
        Format::Auto => detect(text),
        other => other,
    };
    let text = strip_bom(text);
    // About one entry for every 16 bytes, up to what a large list needs: a huge file must not
    // reserve gigabytes before it is even read.
    let capacity = (text.len() / 16).min(MAX_RESERVED);
    let mut out = Collector::new(capacity, file, skip_invalid);
    let mut lines = 0;
    match format {
        Format::Ipset => {
            let mut ipset = Ipset::default();
            for (i, raw) in text.lines().enumerate() {
                lines = i + 1;
                match ipset.line(raw, lines) {
                    Ok(Some(entry)) => out.push(entry),
                    Ok(None) => {}
                    Err(error) => out.invalid(lines, raw, &error)?,
                }
            }
        }
        Format::Auto | Format::Plain | Format::Netset => {
            for (i, raw) in text.lines().enumerate() {
                lines = i + 1;
                match plain_line(raw) {
                    Ok(Some(net)) => out.push(ListEntry {
                        net,
                        ttl: None,
                        reason: None,
                    }),
                    Ok(None) => {}
                    Err(error) => out.invalid(lines, raw, &error)?,
                }
            }
        }
    }
    let mut entries = out.entries;
    let duplicates = collapse_duplicates(&mut entries);
    entries.shrink_to_fit();
    Ok(Parsed {
        entries,
        skipped: out.skipped,
        skipped_total: out.skipped_total,
        format,
        lines,
        duplicates,
    })
}

/// The 1-based line of `text` holding `net` (the first, if several do), to name an entry
/// refused after the parse, by the lockout guard. `None` if no line holds it.
pub fn line_of(text: &str, format: Format, net: &IpNet) -> Option<usize> {
    let format = match format {
        Format::Auto => detect(text),
        other => other,
    };
    let mut ipset = Ipset::default();
    strip_bom(text).lines().enumerate().find_map(|(i, raw)| {
        let line = i + 1;
        let found = match format {
            Format::Ipset => ipset.line(raw, line).ok().flatten().map(|e| e.net),
            Format::Auto | Format::Plain | Format::Netset => plain_line(raw).ok().flatten(),
        };
        (found == Some(*net)).then_some(line)
    })
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Gathers entries and invalid lines.
struct Collector<'f> {
    entries: Vec<ListEntry>,
    skipped: Vec<Skipped>,
    skipped_total: usize,
    file: &'f str,
    skip_invalid: bool,
}

impl<'f> Collector<'f> {
    fn new(capacity: usize, file: &'f str, skip_invalid: bool) -> Self {
        Collector {
            entries: Vec::with_capacity(capacity),
            skipped: Vec::new(),
            skipped_total: 0,
            file,
            skip_invalid,
        }
    }

    fn push(&mut self, entry: ListEntry) {
        self.entries.push(entry);
    }

    fn invalid(&mut self, line: usize, raw: &str, error: &LineError) -> Result<(), ListError> {
        // Messages quote what the line held (a token, a set name): shown to the operator's
        // terminal and kept in the audit log, so escaped and bounded whatever the line was.
        let message = bounded(&error.to_string());
        let message = bounded(&message);
        if !self.skip_invalid {
            return Err(ListError {
                file: self.file.to_owned(),
                line,
                message,
            });
        }
        self.skipped_total += 1;
        if self.skipped.len() < MAX_SKIPPED_KEPT {
            self.skipped.push(Skipped {
                line,
                text: shorten(raw.trim()),
                reason: message,
            });
        }
        Ok(())
    }
}

/// `text` cut to `MAX_SHOWN` bytes and escaped for terminals.
fn shorten(text: &str) -> String {
    if text.len() <= MAX_SHOWN {
        return crate::text::escape(text).into_owned();
    }
    let mut end = MAX_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", crate::text::escape(&text[..end]))
}

/// A message about a line, escaped and cut to `MAX_MESSAGE_CHARS`.
fn bounded(message: &str) -> String {
    let escaped = crate::text::escape(message);
    if escaped.chars().count() <= MAX_MESSAGE_CHARS {
        return escaped.into_owned();
    }
    let mut cut: String = escaped.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests;
