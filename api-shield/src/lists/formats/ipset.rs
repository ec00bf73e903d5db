//! The `ipset save` syntax: `create NAME TYPE [options]` and `add NAME ENTRY [options]` lines.

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;

use super::plain::parse_token;
use super::{LineError, ListEntry, OptionError, shorten};

/// ipset's own upper bound for a timeout, in seconds.
pub(super) const IPSET_MAX_TIMEOUT: u64 = 2_147_483;

pub(super) fn is_exist_flag(token: &str) -> bool {
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

/// The options a `create` line gave.
#[derive(Default)]
struct CreateOptions {
    family: Option<Family>,
    netmask: Option<u8>,
    timeout: Option<u64>,
}

/// The state of an ipset file being read: the sets created so far.
#[derive(Default)]
pub(super) struct Ipset<'a> {
    sets: HashMap<&'a str, SetInfo>,
    /// The fields of the current line; reused so lines allocate nothing.
    tokens: Vec<&'a str>,
}

impl<'a> Ipset<'a> {
    pub(super) fn line(
        &mut self,
        raw: &'a str,
        line_no: usize,
    ) -> Result<Option<ListEntry>, LineError> {
        let mut tokens = std::mem::take(&mut self.tokens);
        tokens.clear();
        let result = tokenize(raw, &mut tokens).and_then(|()| match tokens.first() {
            None => Ok(None),
            Some(&"create") => self.create(&tokens[1..], line_no).map(|()| None),
            Some(&"add") => self.add(&tokens[1..]).map(Some),
            Some(other) => Err(LineError::Command(shorten(other))),
        });
        self.tokens = tokens;
        result
    }

    /// `create NAME TYPE [options]`. A refused set is remembered as such, so its `add` lines
    /// are refused with a pointer to why.
    fn create(&mut self, args: &[&'a str], line_no: usize) -> Result<(), LineError> {
        let (Some(&name), Some(&kind)) = (args.first(), args.get(1)) else {
            return Err(LineError::CreateArgs);
        };
        match set_info(name, kind, &args[2..]) {
            Ok(info) => {
                self.sets.insert(name, info);
                Ok(())
            }
            Err(error) => {
                let refused = SetInfo {
                    family: Family::Inet,
                    netmask: None,
                    timeout: None,
                    refused_at: Some(line_no),
                };
                self.sets.insert(name, refused);
                Err(error)
            }
        }
    }

    /// `add NAME ENTRY [options]`.
    fn add(&self, args: &[&'a str]) -> Result<ListEntry, LineError> {
        let (Some(&name), Some(&token)) = (args.first(), args.get(1)) else {
            return Err(LineError::AddArgs);
        };
        let set = self.sets.get(name);
        if let Some(SetInfo {
            refused_at: Some(at),
            ..
        }) = set
        {
            return Err(LineError::SetRefused {
                name: name.to_owned(),
                line: *at,
            });
        }
        let mut ttl = set.and_then(|s| s.timeout).and_then(seconds);
        let mut reason = None;
        let mut options = args[2..].iter();
        while let Some(&option) = options.next() {
            let mut value = || {
                options
                    .next()
                    .copied()
                    .ok_or_else(|| OptionError::NeedsValue(option.to_owned()))
            };
            match option {
                "timeout" => ttl = seconds(parse_seconds(value()?)?),
                "comment" => {
                    let text = value()?;
                    // Refused like a reason typed on the command line: it is shown by `list`.
                    crate::text::check("comment", text)?;
                    reason = (!text.is_empty()).then(|| text.to_owned());
                }
                "packets" | "bytes" => {
                    let v = value()?;
                    v.parse::<u64>().map_err(|_| OptionError::Count {
                        option: option.to_owned(),
                        value: shorten(v),
                    })?;
                }
                "skbmark" | "skbprio" | "skbqueue" => {
                    value()?;
                }
                "nomatch" => return Err(LineError::Nomatch(shorten(token))),
                other => {
                    return Err(OptionError::Unknown {
                        command: "add",
                        option: shorten(other),
                    }
                    .into());
                }
            }
        }
        let net = parse_token(token)?;
        let net = match set {
            Some(set) => in_set(net, token, name, set)?,
            None => net,
        };
        Ok(ListEntry { net, ttl, reason })
    }
}

/// What a `create` line says about its set, or why the set is refused.
fn set_info(name: &str, kind: &str, options: &[&str]) -> Result<SetInfo, LineError> {
    let bitmap = match kind {
        "hash:ip" | "hash:net" => false,
        "bitmap:ip" => true,
        other => {
            return Err(LineError::SetType {
                name: name.to_owned(),
                kind: shorten(other),
            });
        }
    };
    let options = create_options(kind, bitmap, options).map_err(|error| LineError::Create {
        name: name.to_owned(),
        error,
    })?;
    let family = options.family.unwrap_or(Family::Inet);
    if let Some(n) = options.netmask
        && (n == 0 || n > family.max_len())
    {
        return Err(LineError::NetmaskFamily {
            name: name.to_owned(),
            netmask: n,
            family: family.name(),
        });
    }
    Ok(SetInfo {
        family,
        netmask: options.netmask,
        timeout: options.timeout,
        refused_at: None,
    })
}

/// The options of a `create` line of a `kind` set.
fn create_options(kind: &str, bitmap: bool, args: &[&str]) -> Result<CreateOptions, OptionError> {
    let mut out = CreateOptions::default();
    let mut options = args.iter();
    while let Some(&option) = options.next() {
        let mut value = || {
            options
                .next()
                .copied()
                .ok_or_else(|| OptionError::NeedsValue(option.to_owned()))
        };
        match option {
            "family" => {
                out.family = Some(match value()? {
                    "inet" => Family::Inet,
                    "inet6" if !bitmap => Family::Inet6,
                    other => {
                        return Err(OptionError::Family {
                            family: shorten(other),
                            kind: kind.to_owned(),
                        });
                    }
                });
            }
            "timeout" => out.timeout = Some(parse_seconds(value()?)?),
            "netmask" => {
                let v = value()?;
                let n = v
                    .parse::<u8>()
                    .map_err(|_| OptionError::Netmask(shorten(v)))?;
                out.netmask = Some(n);
            }
            "hashsize" | "maxelem" | "range" | "bucketsize" | "initval" | "markmask" => {
                value()?;
            }
            "counters" | "comment" | "skbinfo" | "forceadd" => {}
            "bitmask" => return Err(OptionError::Bitmask),
            other => {
                return Err(OptionError::Unknown {
                    command: "create",
                    option: shorten(other),
                });
            }
        }
    }
    Ok(out)
}

/// `net`, given as `token` in an `add` line of set `name`, checked against the set's family
/// and widened to its netmask.
fn in_set(net: IpNet, token: &str, name: &str, set: &SetInfo) -> Result<IpNet, LineError> {
    if Family::of(&net) != set.family {
        return Err(LineError::WrongFamily {
            token: token.to_owned(),
            name: name.to_owned(),
            family: set.family.name(),
        });
    }
    match set.netmask {
        Some(mask) if mask < net.prefix_len() => {
            let masked = IpNet::new(net.addr(), mask)?;
            if masked.trunc() != masked {
                return Err(LineError::NetmaskHostBits {
                    token: token.to_owned(),
                    netmask: mask,
                    name: name.to_owned(),
                    network: masked.trunc(),
                });
            }
            Ok(masked)
        }
        _ => Ok(net),
    }
}

/// `Some` duration for a positive timeout, `None` (permanent) for 0, as ipset reads them.
fn seconds(timeout: u64) -> Option<Duration> {
    (timeout > 0).then(|| Duration::from_secs(timeout))
}

fn parse_seconds(value: &str) -> Result<u64, OptionError> {
    match value.parse::<u64>() {
        Ok(t) if t <= IPSET_MAX_TIMEOUT => Ok(t),
        _ => Err(OptionError::Timeout(shorten(value))),
    }
}

/// Splits an ipset line into fields: whitespace separates them, a field starting with `"` runs
/// to the next `"` (and is given without the quotes), `#` or `;` outside quotes starts a
/// comment, and `-exist` / `-!` are dropped.
fn tokenize<'a>(line: &'a str, tokens: &mut Vec<&'a str>) -> Result<(), LineError> {
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
                return Err(LineError::Unterminated);
            };
            at = start + len + 1;
            if at < bytes.len() && !bytes[at].is_ascii_whitespace() {
                return Err(LineError::QuoteEnd(shorten(&line[start - 1..])));
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
