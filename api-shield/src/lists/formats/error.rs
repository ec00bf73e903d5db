//! Why one line of a list file was refused. Text taken from the line is already shortened
//! (`shorten`) where the message quotes it; the whole message is escaped and bounded where it is
//! reported.

use ipnet::IpNet;

use super::ipset::IPSET_MAX_TIMEOUT;
use crate::parse::InputError;
use crate::text::TextError;

/// An invalid line of a list file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected one address or CIDR prefix, found `{0}`")]
    NotOneToken(String),
    #[error(
        "`{0}` is not an IP address or CIDR prefix (ranges are not accepted; list the CIDR \
         prefixes that cover it)"
    )]
    Range(String),
    #[error("`{0}` is not an IP address or CIDR prefix")]
    NotAddress(String),
    #[error(transparent)]
    Address(InputError),
    #[error(
        "`{0}` is not accepted in an ipset file: only `create` and `add` lines are (a list file \
         states the whole list)"
    )]
    Command(String),
    #[error("unterminated quoted field")]
    Unterminated,
    #[error("`{0}`: a quoted field must end at a space")]
    QuoteEnd(String),
    #[error("`create` needs a set name and a type")]
    CreateArgs,
    #[error(
        "set `{name}` is of type `{kind}`, whose entries are not plain addresses; only \
         `hash:ip`, `hash:net` and `bitmap:ip` sets are read"
    )]
    SetType { name: String, kind: String },
    #[error("set `{name}`: {error}")]
    Create { name: String, error: OptionError },
    #[error("set `{name}`: `netmask {netmask}` is not a prefix length of family {family}")]
    NetmaskFamily {
        name: String,
        netmask: u8,
        family: &'static str,
    },
    #[error("`add` needs a set name and an entry")]
    AddArgs,
    #[error("set `{name}` was refused on line {line}, so its entries are too")]
    SetRefused { name: String, line: usize },
    #[error(transparent)]
    Add(#[from] OptionError),
    #[error(transparent)]
    Comment(#[from] TextError),
    #[error(
        "`{0}` is a `nomatch` entry, an exception carved out of the set; a blocklist cannot \
         express it (allow the prefix instead, or remove the line)"
    )]
    Nomatch(String),
    #[error("`{token}` does not belong in set `{name}` of family {family}")]
    WrongFamily {
        token: String,
        name: String,
        family: &'static str,
    },
    #[error(
        "`{token}` has host bits set for the /{netmask} netmask of set `{name}`; did you mean \
         `{network}`?"
    )]
    NetmaskHostBits {
        token: String,
        netmask: u8,
        name: String,
        network: IpNet,
    },
    #[error(transparent)]
    PrefixLen(#[from] ipnet::PrefixLenError),
}

/// An option of a `create` or `add` line that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("`{0}` needs a value")]
    NeedsValue(String),
    #[error("`family {family}` is not a family of a `{kind}` set")]
    Family { family: String, kind: String },
    #[error("`timeout {0}` is not a number of seconds from 0 to {IPSET_MAX_TIMEOUT}")]
    Timeout(String),
    #[error("`netmask {0}` is not a prefix length")]
    Netmask(String),
    #[error("`bitmask` sets are not read: their entries stand for non-contiguous masks")]
    Bitmask,
    #[error("unknown `{command}` option `{option}`")]
    Unknown {
        command: &'static str,
        option: String,
    },
    #[error("`{option} {value}` is not a count")]
    Count { option: String, value: String },
}
