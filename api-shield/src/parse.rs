//! Parsing of the addresses, prefixes and durations that operators type, shared by the CLI,
//! the control protocol and the config file so all three accept and refuse the same things.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Length of the IPv4-mapped prefix `::ffff:0:0/96`.
const V4_MAPPED_PREFIX: u8 = 96;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("empty address")]
    EmptyAddress,
    #[error("`{0}` contains whitespace")]
    Whitespace(String),
    #[error("`{0}` has a zone id (`%...`); zone ids are not accepted")]
    ZoneId(String),
    #[error("`{0}` is not an IP address or CIDR prefix")]
    BadAddress(String),
    #[error("`{token}` has host bits set; did you mean `{suggestion}`?")]
    HostBits { token: String, suggestion: IpNet },
    // The kernel sees such sources as IPv4 packets, so an IPv6 rule for them would never match.
    #[error("`{token}` is an IPv4-mapped IPv6 address; use `{suggestion}`")]
    V4Mapped { token: String, suggestion: IpNet },
    #[error("empty duration")]
    EmptyDuration,
    #[error("`{token}` is not a duration (like `90s`, `10m`, `24h`): {reason}")]
    BadDuration { token: String, reason: String },
    #[error("`{0}` is not a positive duration")]
    ZeroDuration(String),
}

/// Longest TTL an entry may have unless the config's `max_ttl` says otherwise: ten years. An
/// entry meant to stay has no TTL; a longer one is a unit mistake (milliseconds for seconds)
/// or an attempt at a date no formatter can print.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400 + 2 * 86_400);

/// Why a TTL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl must be positive; give no ttl for an entry that stays")]
    Zero,
    #[error(
        "ttl of {secs} s is longer than max_ttl ({}); give no ttl for an entry that stays",
        humantime::format_duration(*max)
    )]
    TooLong { secs: u64, max: Duration },
}

/// A TTL of `secs` seconds, refused when it is zero or longer than `max`.
pub fn check_ttl(secs: u64, max: Duration) -> Result<Duration, TtlError> {
    match secs {
        0 => Err(TtlError::Zero),
        s if s > max.as_secs() => Err(TtlError::TooLong { secs: s, max }),
        s => Ok(Duration::from_secs(s)),
    }
}

/// An address (taken as a /32 or /128) or a CIDR prefix whose host bits are zero.
///
/// Host bits are refused rather than masked: `198.18.0.7/24` is more likely a typo for
/// `198.18.0.7/32` than a wish to block 256 addresses.
pub fn parse_net(token: &str) -> Result<IpNet, InputError> {
    if token.is_empty() {
        return Err(InputError::EmptyAddress);
    }
    if token.chars().any(char::is_whitespace) {
        return Err(InputError::Whitespace(token.to_owned()));
    }
    if token.contains('%') {
        return Err(InputError::ZoneId(token.to_owned()));
    }
    let net = if token.contains('/') {
        token
            .parse::<IpNet>()
            .map_err(|_| InputError::BadAddress(token.to_owned()))?
    } else {
        token
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| InputError::BadAddress(token.to_owned()))?
    };
    if net.trunc() != net {
        return Err(InputError::HostBits {
            token: token.to_owned(),
            suggestion: net.trunc(),
        });
    }
    if let Some(v4) = v4_mapped(&net) {
        return Err(InputError::V4Mapped {
            token: token.to_owned(),
            suggestion: v4,
        });
    }
    Ok(net)
}

/// What `parse_net` checks past the syntax, for a net that arrives typed (a gateway
/// escalation): no host bits, not an IPv4-mapped prefix.
pub fn check_net(net: IpNet) -> Result<IpNet, InputError> {
    if net.trunc() != net {
        return Err(InputError::HostBits {
            token: net.to_string(),
            suggestion: net.trunc(),
        });
    }
    if let Some(v4) = v4_mapped(&net) {
        return Err(InputError::V4Mapped {
            token: net.to_string(),
            suggestion: v4,
        });
    }
    Ok(net)
}

/// The IPv4 prefix an IPv4-mapped IPv6 prefix stands for, if it is one.
fn v4_mapped(net: &IpNet) -> Option<IpNet> {
    let IpNet::V6(v6) = net else { return None };
    let len = v6.prefix_len().checked_sub(V4_MAPPED_PREFIX)?;
    let addr = v6.network().to_ipv4_mapped()?;
    Ipv4Net::new(addr, len).ok().map(IpNet::V4)
}

/// A positive duration in `humantime` syntax (`90s`, `10m`, `24h`, `1h 30m`).
pub fn parse_duration(token: &str) -> Result<Duration, InputError> {
    if token.trim().is_empty() {
        return Err(InputError::EmptyDuration);
    }
    let duration = humantime::parse_duration(token).map_err(|e| InputError::BadDuration {
        token: token.to_owned(),
        reason: e.to_string(),
    })?;
    if duration.is_zero() {
        return Err(InputError::ZeroDuration(token.to_owned()));
    }
    Ok(duration)
}

/// Converts an address to the prefix holding only it (kept beside `parse_net` so callers do not
/// reach for `IpNet::from` and forget the v4-mapped rule).
pub fn host_net(addr: IpAddr) -> IpNet {
    match addr {
        IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::from(v4)),
            None => IpNet::V6(Ipv6Net::from(a)),
        },
    }
}

/// Deserializes a value and refuses it outside `min..=max`, naming the range, so a config key
/// out of bounds is reported at its own line.
pub fn deserialize_in_range<'de, D, T>(d: D, min: T, max: T) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + PartialOrd + std::fmt::Display,
{
    use serde::de::Error as _;
    let value = T::deserialize(d)?;
    if value < min || value > max {
        return Err(D::Error::custom(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_positive_and_bounded_for_every_value() {
        let max = DEFAULT_MAX_TTL;
        assert!(check_ttl(0, max).is_err());
        assert_eq!(check_ttl(1, max), Ok(Duration::from_secs(1)));
        assert_eq!(check_ttl(max.as_secs(), max), Ok(max));
        let err = check_ttl(max.as_secs() + 1, max).unwrap_err().to_string();
        assert!(err.contains("max_ttl"), "{err}");
        // Every magnitude up to u64::MAX: no overflow, no panic, and the expiry a daemon
        // computes from an accepted ttl is representable.
        let now_ms = 1_800_000_000_000_u64;
        let mut secs = 1_u64;
        loop {
            for s in [secs - 1, secs, secs.saturating_add(1)] {
                if let Ok(t) = check_ttl(s, max) {
                    let expiry = now_ms.checked_add(t.as_secs() * 1000).expect("fits");
                    assert!(expiry > now_ms);
                }
            }
            let Some(next) = secs.checked_mul(3) else {
                break;
            };
            secs = next;
        }
        for ttl in ["20000y", "11y", "292277026596y", "18446744073709551615s"] {
            if let Ok(d) = parse_duration(ttl) {
                assert!(check_ttl(d.as_secs(), max).is_err(), "{ttl}");
            }
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_become_host_prefixes() {
        assert_eq!(parse_net("198.18.0.7").unwrap(), net("198.18.0.7/32"));
        assert_eq!(parse_net("2001:db8::1").unwrap(), net("2001:db8::1/128"));
    }

    #[test]
    fn prefixes_are_accepted() {
        assert_eq!(parse_net("198.18.0.0/24").unwrap(), net("198.18.0.0/24"));
        assert_eq!(parse_net("2001:db8::/32").unwrap(), net("2001:db8::/32"));
        assert_eq!(parse_net("0.0.0.0/0").unwrap(), net("0.0.0.0/0"));
    }

    #[test]
    fn host_bits_are_refused_with_a_suggestion() {
        let err = parse_net("198.18.0.7/24").unwrap_err();
        assert_eq!(
            err,
            InputError::HostBits {
                token: "198.18.0.7/24".into(),
                suggestion: net("198.18.0.0/24"),
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("198.18.0.7/24") && msg.contains("198.18.0.0/24"),
            "{msg}"
        );
        assert!(matches!(
            parse_net("2001:db8::1/64"),
            Err(InputError::HostBits { .. })
        ));
    }

    #[test]
    fn zone_ids_whitespace_and_empty_are_refused() {
        assert_eq!(
            parse_net("fe80::1%eth0"),
            Err(InputError::ZoneId("fe80::1%eth0".into()))
        );
        assert_eq!(
            parse_net(" 10.0.0.1"),
            Err(InputError::Whitespace(" 10.0.0.1".into()))
        );
        assert_eq!(
            parse_net("10.0.0.1 "),
            Err(InputError::Whitespace("10.0.0.1 ".into()))
        );
        assert_eq!(parse_net(""), Err(InputError::EmptyAddress));
    }

    #[test]
    fn garbage_is_refused_naming_the_token() {
        for token in [
            "example.com",
            "10.0.0.256",
            "10.0.0.0/33",
            "010.0.0.1",
            "10.0.0.0/",
        ] {
            let err = parse_net(token).unwrap_err();
            assert_eq!(err, InputError::BadAddress(token.into()));
            assert!(err.to_string().contains(token));
        }
    }

    #[test]
    fn v4_mapped_is_refused_with_the_ipv4_form() {
        assert_eq!(
            parse_net("::ffff:198.18.0.7"),
            Err(InputError::V4Mapped {
                token: "::ffff:198.18.0.7".into(),
                suggestion: net("198.18.0.7/32"),
            })
        );
        assert!(matches!(
            parse_net("::ffff:198.18.0.0/120"),
            Err(InputError::V4Mapped { suggestion, .. }) if suggestion == net("198.18.0.0/24")
        ));
        // Shorter than the mapped prefix: a genuine IPv6 range.
        assert!(parse_net("::/64").is_ok());
    }

    #[test]
    fn host_net_unmaps_v4_mapped_addresses() {
        assert_eq!(
            host_net("::ffff:10.0.0.1".parse().unwrap()),
            net("10.0.0.1/32")
        );
        assert_eq!(
            host_net("2001:db8::1".parse().unwrap()),
            net("2001:db8::1/128")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("0s"),
            Err(InputError::ZeroDuration("0s".into()))
        );
        assert_eq!(parse_duration(""), Err(InputError::EmptyDuration));
        let err = parse_duration("ten minutes").unwrap_err();
        assert!(matches!(err, InputError::BadDuration { .. }));
        assert!(err.to_string().contains("ten minutes"));
        assert!(parse_duration("10").is_err(), "a unit is required");
    }
}
