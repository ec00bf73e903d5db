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

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;

use super::ListEntry;
use crate::parse::{InputError, parse_net};

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
/// Longer than any address or prefix in any textual form
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128` is 49 characters).
const MAX_TOKEN: usize = 64;
/// Most entries reserved up front; a longer list grows the vector as it goes.
const MAX_RESERVED: usize = 1 << 20;
/// ipset's own upper bound for a timeout, in seconds.
const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

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
                    Err(message) => out.invalid(lines, raw, message)?,
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
                    Err(message) => out.invalid(lines, raw, message)?,
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

    fn invalid(&mut self, line: usize, raw: &str, message: String) -> Result<(), ListError> {
        // Messages quote what the line held (a token, a set name): shown to the operator's
        // terminal and kept in the audit log, so escaped and bounded whatever the line was.
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

/// Collapses the entries of the same prefix into the first one, merging them in file order;
/// returns how many were collapsed.
///
/// By sorting (prefix, position) pairs rather than with a hash set: a million lookups in a
/// table of a million entries miss the cache on almost every one, while the sort runs through
/// memory in order (and is linear for the sorted files most publishers produce).
fn collapse_duplicates(entries: &mut Vec<ListEntry>) -> usize {
    // [address high, address low, family and length << 48 | position]: 24 bytes a key, equal
    // prefixes adjacent after sorting, in file order among themselves.
    const POSITION_BITS: u32 = 48;
    let mut keys: Vec<[u64; 3]> = entries
        .iter()
        .enumerate()
        .map(|(at, e)| {
            let (bits, kind) = match e.net {
                IpNet::V4(n) => (u128::from(n.addr().to_bits()), u64::from(n.prefix_len())),
                IpNet::V6(n) => (n.addr().to_bits(), 0x100 | u64::from(n.prefix_len())),
            };
            // Truncation intended: the two halves of the address. A list has far fewer than
            // 2^48 entries.
            [
                (bits >> 64) as u64,
                bits as u64,
                kind << POSITION_BITS | at as u64,
            ]
        })
        .collect();
    keys.sort_unstable();
    let mut removed: Vec<bool> = Vec::new();
    let position = |key: &[u64; 3]| (key[2] & ((1 << POSITION_BITS) - 1)) as usize;
    for run in
        keys.chunk_by(|a, b| a[..2] == b[..2] && a[2] >> POSITION_BITS == b[2] >> POSITION_BITS)
    {
        let [first, rest @ ..] = run else {
            continue;
        };
        let first = position(first);
        for key in rest {
            let at = position(key);
            if removed.is_empty() {
                removed.resize(entries.len(), false);
            }
            removed[at] = true;
            let repeat = ListEntry {
                net: entries[at].net,
                ttl: entries[at].ttl,
                reason: entries[at].reason.take(),
            };
            merge(&mut entries[first], repeat);
        }
    }
    if removed.is_empty() {
        return 0;
    }
    let mut at = 0;
    entries.retain(|_| {
        at += 1;
        !removed[at - 1]
    });
    removed.iter().filter(|&&r| r).count()
}

/// Folds a repeated entry into the one kept: the longer `ttl` (`None`, permanent, is the
/// longest) wins with its reason; a reason missing on the kept entry is taken from the other.
fn merge(kept: &mut ListEntry, new: ListEntry) {
    let longer = match (new.ttl, kept.ttl) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => a > b,
        (_, None) => false,
    };
    if longer {
        kept.ttl = new.ttl;
        if new.reason.is_some() {
            kept.reason = new.reason;
        }
    } else if kept.reason.is_none() {
        kept.reason = new.reason;
    }
}

/// The line up to its first `#` or `;`.
fn strip_comment(line: &str) -> &str {
    match line.bytes().position(|b| b == b'#' || b == b';') {
        Some(at) => &line[..at],
        None => line,
    }
}

/// A plain / netset line: `Ok(None)` when it holds no entry.
fn plain_line(raw: &str) -> Result<Option<IpNet>, String> {
    let content = strip_comment(raw).trim();
    if content.is_empty() {
        return Ok(None);
    }
    parse_token(content).map(Some)
}

/// One address or prefix, with the CLI's rules and messages.
fn parse_token(token: &str) -> Result<IpNet, String> {
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
        InputError::Whitespace(_) => format!(
            "expected one address or CIDR prefix, found `{}`",
            shorten(token)
        ),
        InputError::BadAddress(_) if token.contains('-') && token.len() <= MAX_TOKEN => format!(
            "`{token}` is not an IP address or CIDR prefix (ranges are not accepted; list the \
             CIDR prefixes that cover it)"
        ),
        InputError::BadAddress(_) => {
            format!("`{}` is not an IP address or CIDR prefix", shorten(token))
        }
        other => other.to_string(),
    })
}

/// Skipped lines reported by name; the rest are counted.
pub const MAX_SKIPPED_KEPT: usize = 100;
/// Longest message about one line, in characters.
const MAX_MESSAGE_CHARS: usize = 400;

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

fn is_exist_flag(token: &str) -> bool {
    matches!(token, "-exist" | "-!")
}

/// Address family of an ipset set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Inet,
    Inet6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }

    fn max_len(self) -> u8 {
        match self {
            Family::Inet => 32,
            Family::Inet6 => 128,
        }
    }

    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Inet,
            IpNet::V6(_) => Family::Inet6,
        }
    }
}

/// What a `create` line said about a set.
#[derive(Clone, Copy, Debug)]
struct SetInfo {
    family: Family,
    /// `netmask N`: every address of the set stands for its /N.
    netmask: Option<u8>,
    /// `timeout N`: the default timeout of the set's entries, in seconds.
    timeout: Option<u64>,
    /// The line of a refused `create`, so its `add` lines can say why they are refused too.
    refused_at: Option<usize>,
}

/// The state of an ipset file being read: the sets created so far.
#[derive(Default)]
struct Ipset<'a> {
    sets: HashMap<&'a str, SetInfo>,
    /// The fields of the current line; reused so lines allocate nothing.
    tokens: Vec<&'a str>,
}

impl<'a> Ipset<'a> {
    fn line(&mut self, raw: &'a str, line_no: usize) -> Result<Option<ListEntry>, String> {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        let result = tokenize(raw, &mut tokens).and_then(|()| match tokens.first() {
            None => Ok(None),
            Some(&"create") => self.create(&tokens[1..], line_no).map(|()| None),
            Some(&"add") => self.add(&tokens[1..]).map(Some),
            Some(other) => Err(format!(
                "`{}` is not accepted in an ipset file: only `create` and `add` lines are (a list \
                 file states the whole list)",
                shorten(other)
            )),
        });
        self.tokens = tokens;
        result
    }

    /// `create NAME TYPE [options]`.
    fn create(&mut self, args: &[&'a str], line_no: usize) -> Result<(), String> {
        let (Some(&name), Some(&kind)) = (args.first(), args.get(1)) else {
            return Err("`create` needs a set name and a type".to_owned());
        };
        let refuse = |sets: &mut HashMap<&'a str, SetInfo>, message: String| {
            sets.insert(
                name,
                SetInfo {
                    family: Family::Inet,
                    netmask: None,
                    timeout: None,
                    refused_at: Some(line_no),
                },
            );
            Err(message)
        };
        let bitmap = match kind {
            "hash:ip" | "hash:net" => false,
            "bitmap:ip" => true,
            other => {
                return refuse(
                    &mut self.sets,
                    format!(
                        "set `{name}` is of type `{}`, whose entries are not plain addresses; \
                         only `hash:ip`, `hash:net` and `bitmap:ip` sets are read",
                        shorten(other)
                    ),
                );
            }
        };
        let mut family = None;
        let mut netmask = None;
        let mut timeout = None;
        let mut options = args[2..].iter();
        while let Some(&option) = options.next() {
            let mut value = || {
                options
                    .next()
                    .copied()
                    .ok_or_else(|| format!("`{option}` needs a value"))
            };
            let result = match option {
                "family" => match value() {
                    Ok("inet") => {
                        family = Some(Family::Inet);
                        Ok(())
                    }
                    Ok("inet6") if !bitmap => {
                        family = Some(Family::Inet6);
                        Ok(())
                    }
                    Ok(other) => Err(format!(
                        "`family {}` is not a family of a `{kind}` set",
                        shorten(other)
                    )),
                    Err(e) => Err(e),
                },
                "timeout" => value().and_then(parse_seconds).map(|t| timeout = Some(t)),
                "netmask" => value().and_then(|v| {
                    v.parse::<u8>()
                        .map(|n| netmask = Some(n))
                        .map_err(|_| format!("`netmask {}` is not a prefix length", shorten(v)))
                }),
                "hashsize" | "maxelem" | "range" | "bucketsize" | "initval" | "markmask" => {
                    value().map(drop)
                }
                "counters" | "comment" | "skbinfo" | "forceadd" => Ok(()),
                "bitmask" => Err(
                    "`bitmask` sets are not read: their entries stand for non-contiguous masks"
                        .to_owned(),
                ),
                other => Err(format!("unknown `create` option `{}`", shorten(other))),
            };
            if let Err(message) = result {
                return refuse(&mut self.sets, format!("set `{name}`: {message}"));
            }
        }
        let family = family.unwrap_or(Family::Inet);
        if let Some(n) = netmask
            && (n == 0 || n > family.max_len())
        {
            return refuse(
                &mut self.sets,
                format!(
                    "set `{name}`: `netmask {n}` is not a prefix length of family {}",
                    family.name()
                ),
            );
        }
        self.sets.insert(
            name,
            SetInfo {
                family,
                netmask,
                timeout,
                refused_at: None,
            },
        );
        Ok(())
    }

    /// `add NAME ENTRY [options]`.
    fn add(&self, args: &[&'a str]) -> Result<ListEntry, String> {
        let (Some(&name), Some(&token)) = (args.first(), args.get(1)) else {
            return Err("`add` needs a set name and an entry".to_owned());
        };
        let set = self.sets.get(name);
        if let Some(SetInfo {
            refused_at: Some(at),
            ..
        }) = set
        {
            return Err(format!(
                "set `{name}` was refused on line {at}, so its entries are too"
            ));
        }
        let mut ttl = set.and_then(|s| s.timeout).and_then(seconds);
        let mut reason = None;
        let mut options = args[2..].iter();
        while let Some(&option) = options.next() {
            let mut value = || {
                options
                    .next()
                    .copied()
                    .ok_or_else(|| format!("`{option}` needs a value"))
            };
            match option {
                "timeout" => ttl = seconds(parse_seconds(value()?)?),
                "comment" => {
                    let text = value()?;
                    // Refused like a reason typed on the command line: it is shown by `list`.
                    crate::text::check("comment", text).map_err(|e| e.to_string())?;
                    reason = (!text.is_empty()).then(|| text.to_owned());
                }
                "packets" | "bytes" => {
                    let v = value()?;
                    v.parse::<u64>()
                        .map_err(|_| format!("`{option} {}` is not a count", shorten(v)))?;
                }
                "skbmark" | "skbprio" | "skbqueue" => {
                    value()?;
                }
                "nomatch" => {
                    return Err(format!(
                        "`{}` is a `nomatch` entry, an exception carved out of the set; a \
                         blocklist cannot express it (allow the prefix instead, or remove the line)",
                        shorten(token)
                    ));
                }
                other => return Err(format!("unknown `add` option `{}`", shorten(other))),
            }
        }
        let mut net = parse_token(token)?;
        if let Some(set) = set {
            if Family::of(&net) != set.family {
                return Err(format!(
                    "`{token}` does not belong in set `{name}` of family {}",
                    set.family.name()
                ));
            }
            if let Some(mask) = set.netmask
                && mask < net.prefix_len()
            {
                let masked = IpNet::new(net.addr(), mask).map_err(|e| e.to_string())?;
                if masked.trunc() != masked {
                    return Err(format!(
                        "`{token}` has host bits set for the /{mask} netmask of set `{name}`; did \
                         you mean `{}`?",
                        masked.trunc()
                    ));
                }
                net = masked;
            }
        }
        Ok(ListEntry { net, ttl, reason })
    }
}

/// `Some` duration for a positive timeout, `None` (permanent) for 0, as ipset reads them.
fn seconds(timeout: u64) -> Option<Duration> {
    (timeout > 0).then(|| Duration::from_secs(timeout))
}

fn parse_seconds(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(t) if t <= IPSET_MAX_TIMEOUT => Ok(t),
        _ => Err(format!(
            "`timeout {}` is not a number of seconds from 0 to {IPSET_MAX_TIMEOUT}",
            shorten(value)
        )),
    }
}

/// Splits an ipset line into fields: whitespace separates them, a field starting with `"` runs
/// to the next `"` (and is given without the quotes), `#` or `;` outside quotes starts a
/// comment, and `-exist` / `-!` are dropped.
fn tokenize<'a>(line: &'a str, tokens: &mut Vec<&'a str>) -> Result<(), String> {
    let bytes = line.as_bytes();
    let mut at = 0;
    loop {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if at == bytes.len() || bytes[at] == b'#' || bytes[at] == b';' {
            return Ok(());
        }
        let token = if bytes[at] == b'"' {
            let start = at + 1;
            let Some(len) = bytes[start..].iter().position(|&b| b == b'"') else {
                return Err("unterminated quoted field".to_owned());
            };
            at = start + len + 1;
            if at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                return Err(format!(
                    "`{}`: a quoted field must end at a space",
                    shorten(&line[start - 1..])
                ));
            }
            &line[start..start + len]
        } else {
            let start = at;
            while at < bytes.len()
                && !bytes[at].is_ascii_whitespace()
                && bytes[at] != b'#'
                && bytes[at] != b';'
            {
                at += 1;
            }
            let token = &line[start..at];
            if is_exist_flag(token) {
                continue;
            }
            token
        };
        tokens.push(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ok(text: &str, format: Format) -> Parsed {
        parse(text, "test.list", format, false).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_file_of_junk_costs_a_counter_not_a_record_per_line() {
        let junk = "x y\n".repeat(10_000);
        let parsed = parse(&junk, "junk", Format::Plain, true).unwrap();
        assert_eq!(parsed.skipped_total, 10_000);
        assert_eq!(parsed.skipped.len(), MAX_SKIPPED_KEPT);
        assert!(parsed.entries.is_empty());
    }

    #[test]
    fn messages_quoting_a_line_are_escaped_and_bounded() {
        let set_name = format!("\u{1b}[2J{}", "n".repeat(100_000));
        let text = format!("create {set_name} list:set\n");
        let err = parse(&text, "evil", Format::Ipset, false).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.chars().any(crate::text::is_unsafe), "{shown:?}");
        assert!(shown.len() < 1_000, "{} bytes", shown.len());
        let skipped = parse("a\u{9b}31m b\n", "evil", Format::Plain, true).unwrap();
        let s = &skipped.skipped[0];
        assert!(!s.text.chars().any(crate::text::is_unsafe), "{s:?}");
        assert!(!s.reason.chars().any(crate::text::is_unsafe), "{s:?}");
    }

    #[test]
    fn line_of_names_where_an_entry_is() {
        let plain = "\u{feff}# header\n198.18.0.0/24\r\n\n::/0 # all of IPv6\n::/0\n";
        assert_eq!(line_of(plain, Format::Auto, &net("::/0")), Some(4));
        assert_eq!(
            line_of(plain, Format::Netset, &net("198.18.0.0/24")),
            Some(2)
        );
        assert_eq!(line_of(plain, Format::Plain, &net("0.0.0.0/0")), None);
        let ipset =
            "create s hash:net family inet\nadd s 198.18.0.0/24\nadd s 0.0.0.0/0 timeout 5\n";
        assert_eq!(line_of(ipset, Format::Auto, &net("0.0.0.0/0")), Some(3));
        // A CRLF ipset file whose entry repeats: the first line holding it.
        let repeated = "add s 2001:db8::/32\r\nadd s ::/0\r\nadd s ::/0 timeout 9\r\n";
        assert_eq!(line_of(repeated, Format::Ipset, &net("::/0")), Some(2));
    }

    fn err(text: &str, format: Format) -> ListError {
        match parse(text, "test.list", format, false) {
            Ok(p) => panic!("parsed: {p:?}"),
            Err(e) => e,
        }
    }

    fn nets(parsed: &Parsed) -> Vec<String> {
        parsed.entries.iter().map(|e| e.net.to_string()).collect()
    }

    fn entry(n: &str, ttl: Option<u64>, reason: Option<&str>) -> ListEntry {
        ListEntry {
            net: net(n),
            ttl: ttl.map(Duration::from_secs),
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn plain_addresses_and_prefixes() {
        let p = ok(
            "198.18.0.7\n198.18.4.0/24\n2001:db8::1\n2001:db8:bad::/48\n",
            Format::Plain,
        );
        assert_eq!(
            nets(&p),
            [
                "198.18.0.7/32",
                "198.18.4.0/24",
                "2001:db8::1/128",
                "2001:db8:bad::/48"
            ]
        );
        assert!(
            p.entries
                .iter()
                .all(|e| e.ttl.is_none() && e.reason.is_none())
        );
        assert_eq!((p.format, p.lines, p.duplicates), (Format::Plain, 4, 0));
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn comments_blank_lines_whitespace_and_crlf() {
        let text = "# FireHOL level1\r\n\
                    ; another comment style\r\n\
                    \r\n\
                    \t  \r\n\
                    198.18.0.1   # trailing comment\r\n\
                    \t198.18.0.2;trailing too\r\n\
                    \x20 198.18.1.0/24 \t\r\n\
                    2001:db8::5#no space\r\n\
                    198.18.0.3";
        let p = ok(text, Format::Netset);
        assert_eq!(
            nets(&p),
            [
                "198.18.0.1/32",
                "198.18.0.2/32",
                "198.18.1.0/24",
                "2001:db8::5/128",
                "198.18.0.3/32"
            ]
        );
        assert_eq!(p.lines, 9);
        assert_eq!(p.format, Format::Netset);
    }

    #[test]
    fn lone_cr_and_bom_are_accepted() {
        let p = ok("\u{feff}198.18.0.1\n198.18.0.2\r", Format::Auto);
        assert_eq!(nets(&p), ["198.18.0.1/32", "198.18.0.2/32"]);
        assert_eq!(p.format, Format::Plain);
    }

    #[test]
    fn empty_and_comment_only_files() {
        for text in ["", "\n\n", "# nothing here\n; nor here\n   # indented\n"] {
            for format in [Format::Auto, Format::Plain, Format::Netset, Format::Ipset] {
                let p = ok(text, format);
                assert!(p.entries.is_empty(), "{text:?} {format:?}");
                assert!(p.skipped.is_empty());
                assert_eq!(p.duplicates, 0);
            }
        }
        assert_eq!(ok("", Format::Plain).lines, 0);
        assert_eq!(ok("# a\n# b\n# c\n", Format::Plain).lines, 3);
    }

    #[test]
    fn ipv6_textual_forms() {
        let p = ok(
            "2001:0db8:0000:0000:0000:0000:0000:0001\n\
             2001:DB8:0:0:0:0:0:2\n\
             2001:db8::3\n\
             2001:db8:0:0::/64\n\
             64:ff9b::198.18.0.1\n\
             ::\n\
             ::/0\n",
            Format::Plain,
        );
        assert_eq!(
            nets(&p),
            [
                "2001:db8::1/128",
                "2001:db8::2/128",
                "2001:db8::3/128",
                "2001:db8::/64",
                "64:ff9b::c612:1/128",
                "::/128",
                "::/0"
            ]
        );
        // The full and compressed forms of one address are one entry.
        let p = ok(
            "2001:db8::1\n2001:0db8:0000:0000:0000:0000:0000:0001\n",
            Format::Plain,
        );
        assert_eq!((p.entries.len(), p.duplicates), (1, 1));
    }

    #[test]
    fn zone_ids_are_refused() {
        let e = err("198.18.0.1\nfe80::1%eth0\n", Format::Plain);
        assert_eq!((e.file.as_str(), e.line), ("test.list", 2));
        assert!(
            e.message.contains("fe80::1%eth0") && e.message.contains("zone"),
            "{e}"
        );
        assert!(e.to_string().starts_with("test.list:2: "), "{e}");
    }

    #[test]
    fn host_bits_are_refused_with_the_network_form() {
        let e = err("198.18.0.7/24\n", Format::Plain);
        assert_eq!(e.line, 1);
        assert!(
            e.message.contains("host bits") && e.message.contains("198.18.0.0/24"),
            "{e}"
        );
        let e = err("# x\n2001:db8::1/64\n", Format::Netset);
        assert_eq!(e.line, 2);
        assert!(e.message.contains("2001:db8::/64"), "{e}");
    }

    #[test]
    fn v4_mapped_is_refused_with_the_ipv4_form() {
        let e = err("::ffff:198.18.0.7\n", Format::Plain);
        assert!(
            e.message.contains("IPv4-mapped") && e.message.contains("198.18.0.7/32"),
            "{e}"
        );
        let e = err("::ffff:198.18.0.0/120\n", Format::Plain);
        assert!(e.message.contains("198.18.0.0/24"), "{e}");
        let e = err("0:0:0:0:0:ffff:c612:7\n", Format::Plain);
        assert!(e.message.contains("198.18.0.7/32"), "{e}");
    }

    #[test]
    fn garbage_is_refused_naming_the_token() {
        for (text, named) in [
            ("example.com\n", "example.com"),
            ("198.18.0.300\n", "198.18.0.300"),
            ("198.18.0.0/33\n", "198.18.0.0/33"),
            ("010.0.0.1\n", "010.0.0.1"),
            ("198.18.0.1 198.18.0.2\n", "198.18.0.1 198.18.0.2"),
            (
                "198.18.0.1 is a scanner and so is everyone in its /24\n",
                "expected one",
            ),
            ("198.18.0.1-198.18.0.9\n", "ranges"),
        ] {
            let e = err(text, Format::Plain);
            assert_eq!(e.line, 1);
            assert!(e.message.contains(named), "{text:?}: {e}");
        }
        // A huge line is not repeated whole in the message.
        let long = "x".repeat(10_000);
        let e = err(&long, Format::Plain);
        assert!(e.message.len() < 300, "{}", e.message.len());
    }

    #[test]
    fn duplicates_collapse_keeping_the_longest_ttl() {
        let p = ok(
            "create s hash:net timeout 600\n\
             add s 198.18.0.0/24 timeout 60 comment \"short\"\n\
             add s 198.18.0.0/24 timeout 300 comment \"long\"\n\
             add s 198.18.0.0/24 timeout 120\n\
             add s 198.18.1.1 timeout 30\n\
             add s 198.18.1.1 timeout 0\n\
             add s 198.18.1.1 timeout 90 comment \"late\"\n\
             add s 198.18.2.2 timeout 10\n\
             add s 198.18.2.2 comment \"default ttl, longer\"\n",
            Format::Ipset,
        );
        assert_eq!(
            p.entries,
            [
                entry("198.18.0.0/24", Some(300), Some("long")),
                entry("198.18.1.1/32", None, Some("late")),
                entry("198.18.2.2/32", Some(600), Some("default ttl, longer")),
            ]
        );
        assert_eq!(p.duplicates, 5);

        let p = ok("198.18.0.1\n198.18.0.1/32\n198.18.0.1\n", Format::Plain);
        assert_eq!((nets(&p), p.duplicates), (vec!["198.18.0.1/32".into()], 2));
    }

    #[test]
    fn overlaps_are_kept() {
        let p = ok(
            "198.18.0.0/24\n198.18.0.7\n198.18.0.0/16\n2001:db8::/32\n2001:db8::1\n",
            Format::Plain,
        );
        assert_eq!(p.entries.len(), 5);
        assert_eq!(p.duplicates, 0);
    }

    #[test]
    fn ipset_save_output() {
        let text = "create blocklist hash:net family inet hashsize 1024 maxelem 65536 timeout 300 counters comment\n\
                    add blocklist 198.18.0.0/24 timeout 120 packets 12 bytes 960 comment \"scanner; see #42\"\n\
                    add blocklist 198.18.9.9 timeout 0\n\
                    add blocklist 198.18.7.7\n\
                    create six hash:ip family inet6 timeout 300\n\
                    add six 2001:db8::1 timeout 250\n\
                    add -exist six 2001:db8::2 timeout 100 -exist\n\
                    create plainset hash:ip family inet hashsize 64 maxelem 10 bucketsize 12 initval 0x1234abcd\n\
                    add plainset 198.18.3.3 skbmark 0x1/0xff skbprio 1:10 skbqueue 2\n";
        let p = ok(text, Format::Auto);
        assert_eq!(p.format, Format::Ipset);
        assert_eq!(
            p.entries,
            [
                entry("198.18.0.0/24", Some(120), Some("scanner; see #42")),
                entry("198.18.9.9/32", None, None),
                entry("198.18.7.7/32", Some(300), None),
                entry("2001:db8::1/128", Some(250), None),
                entry("2001:db8::2/128", Some(100), None),
                entry("198.18.3.3/32", None, None),
            ]
        );
        assert_eq!(p.lines, 9);
    }

    #[test]
    fn ipset_comments_blank_lines_and_crlf() {
        let p = ok(
            "# saved\r\n\r\ncreate s hash:ip\r\n  add s 198.18.0.1   # trailing\r\nadd s 198.18.0.2 ; too\r\n",
            Format::Ipset,
        );
        assert_eq!(nets(&p), ["198.18.0.1/32", "198.18.0.2/32"]);
    }

    #[test]
    fn ipset_adds_without_create_are_taken() {
        let p = ok(
            "add s 198.18.0.1\nadd t 2001:db8::/48 timeout 5\n",
            Format::Ipset,
        );
        assert_eq!(
            p.entries,
            [
                entry("198.18.0.1/32", None, None),
                entry("2001:db8::/48", Some(5), None)
            ]
        );
    }

    #[test]
    fn ipset_netmask_widens_addresses() {
        let p = ok(
            "create m hash:ip family inet netmask 24\nadd m 198.18.5.0\nadd m 198.18.0.0/16\n\
             create b bitmap:ip range 198.18.0.0-198.18.255.255 netmask 28\nadd b 198.18.6.16\n",
            Format::Ipset,
        );
        assert_eq!(
            nets(&p),
            ["198.18.5.0/24", "198.18.0.0/16", "198.18.6.16/28"]
        );
        let e = err(
            "create m hash:ip netmask 24\nadd m 198.18.5.7\n",
            Format::Ipset,
        );
        assert_eq!(e.line, 2);
        assert!(e.message.contains("198.18.5.0/24"), "{e}");
    }

    #[test]
    fn ipset_family_is_enforced() {
        let e = err(
            "create s hash:net family inet\nadd s 2001:db8::/32\n",
            Format::Ipset,
        );
        assert_eq!(e.line, 2);
        assert!(e.message.contains("family inet"), "{e}");
        // hash sets default to inet, as in ipset.
        let e = err("create s hash:ip\nadd s 2001:db8::1\n", Format::Ipset);
        assert_eq!(e.line, 2);
        let e = err(
            "create s hash:ip family inet6\nadd s 198.18.0.1\n",
            Format::Ipset,
        );
        assert!(e.message.contains("inet6"), "{e}");
    }

    #[test]
    fn ipset_nomatch_is_refused() {
        let e = err(
            "create s hash:net\nadd s 198.18.0.0/16\nadd s 198.18.3.0/24 nomatch\n",
            Format::Ipset,
        );
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("nomatch") && e.message.contains("198.18.3.0/24"),
            "{e}"
        );
    }

    #[test]
    fn ipset_unknown_commands_and_options_are_refused() {
        for (text, line, named) in [
            ("create s hash:ip\nflush s\n", 2, "flush"),
            ("destroy s\n", 1, "destroy"),
            ("create s hash:ip\ndel s 198.18.0.1\n", 2, "del"),
            (
                "create s hash:ip\nadd s 198.18.0.1 frobnicate 3\n",
                2,
                "frobnicate",
            ),
            ("create s hash:ip wibble\n", 1, "wibble"),
            ("create s hash:ip,port\n", 1, "hash:ip,port"),
            ("create s list:set\n", 1, "list:set"),
            ("create s hash:ip bitmask 255.255.0.255\n", 1, "bitmask"),
            ("create s bitmap:ip family inet6\n", 1, "inet6"),
            ("create s hash:ip netmask 33\n", 1, "netmask 33"),
            (
                "create s hash:ip\nadd s 198.18.0.1 timeout soon\n",
                2,
                "soon",
            ),
            (
                "create s hash:ip\nadd s 198.18.0.1 timeout 9999999999\n",
                2,
                "timeout",
            ),
            ("create s hash:ip\nadd s 198.18.0.1 timeout\n", 2, "timeout"),
            (
                "create s hash:ip\nadd s 198.18.0.1 packets many\n",
                2,
                "many",
            ),
            (
                "create s hash:ip\nadd s 198.18.0.1 comment \"open\n",
                2,
                "unterminated",
            ),
            ("create s hash:ip\nadd s\n", 2, "add"),
            ("create s\n", 1, "create"),
            (
                "create s hash:ip\nadd s 198.18.0.1/24\n",
                2,
                "198.18.0.0/24",
            ),
            ("create s hash:ip\n198.18.0.1\n", 2, "198.18.0.1"),
        ] {
            let e = err(text, Format::Ipset);
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(named), "{text:?}: {e}");
        }
    }

    #[test]
    fn ipset_entries_of_a_refused_set_are_refused_too() {
        let p = parse(
            "create ports hash:ip,port\nadd ports 198.18.0.1,tcp:80\ncreate s hash:ip\nadd s 198.18.0.2\n",
            "f",
            Format::Ipset,
            true,
        )
        .unwrap();
        assert_eq!(nets(&p), ["198.18.0.2/32"]);
        assert_eq!(p.skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 2]);
        assert!(p.skipped[1].reason.contains("line 1"), "{:?}", p.skipped);
    }

    #[test]
    fn detect_recognises_ipset_only() {
        assert_eq!(
            detect("create s hash:net family inet\nadd s 198.18.0.0/24\n"),
            Format::Ipset
        );
        assert_eq!(
            detect("# saved by ipset\n\n  add s 198.18.0.1\n"),
            Format::Ipset
        );
        assert_eq!(detect("-exist create s hash:ip\n"), Format::Ipset);
        assert_eq!(detect("\u{feff}create s hash:ip\n"), Format::Ipset);
        assert_eq!(detect("198.18.0.1\nadd s 198.18.0.2\n"), Format::Plain);
        assert_eq!(detect("# create s hash:ip\n198.18.0.1\n"), Format::Plain);
        assert_eq!(detect("add::1\n"), Format::Plain);
        assert_eq!(detect(""), Format::Plain);
        assert_eq!(detect("# only comments\n"), Format::Plain);
        // An explicit format is used as given.
        assert_eq!(ok("198.18.0.1\n", Format::Netset).format, Format::Netset);
        assert_eq!(err("198.18.0.1\n", Format::Ipset).line, 1);
    }

    #[test]
    fn skip_invalid_reports_every_bad_line() {
        let text = "198.18.0.1\n\
                    nonsense\n\
                    # fine\n\
                    198.18.0.7/24\n\
                    fe80::1%eth0\n\
                    2001:db8::1\n\
                    ::ffff:198.18.0.9\n\
                    \x20 also bad  \n\
                    198.18.0.1\n";
        let e = err(text, Format::Plain);
        assert_eq!(
            e.line, 2,
            "without skip_invalid the first bad line is the error"
        );

        let p = parse(text, "f", Format::Plain, true).unwrap();
        assert_eq!(nets(&p), ["198.18.0.1/32", "2001:db8::1/128"]);
        assert_eq!(p.duplicates, 1);
        assert_eq!(p.lines, 9);
        let lines: Vec<usize> = p.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4, 5, 7, 8]);
        assert_eq!(p.skipped[0].text, "nonsense");
        assert_eq!(p.skipped[4].text, "also bad");
        assert!(p.skipped[1].reason.contains("198.18.0.0/24"));
        assert!(p.skipped[2].reason.contains("zone"));
        assert!(p.skipped[3].reason.contains("198.18.0.9/32"));
    }

    #[test]
    fn format_names() {
        use clap::ValueEnum;
        let names: Vec<String> = Format::value_variants()
            .iter()
            .map(|f| f.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(names, ["auto", "plain", "netset", "ipset"]);
        assert_eq!(
            serde_json::to_string(&Format::Netset).unwrap(),
            "\"netset\""
        );
        let f: Format = serde_json::from_str("\"ipset\"").unwrap();
        assert_eq!(f, Format::Ipset);
    }
}
