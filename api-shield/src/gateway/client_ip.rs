//! Who the client is: the TCP peer, unless the peer is a trusted proxy, whose forwarding
//! headers are then believed: `X-Real-IP`, else the right-most `X-Forwarded-For` or
//! `Forwarded: for=` hop that is not itself a trusted proxy. From anyone else those headers
//! are ignored, so a client cannot pick an address to be rate-limited or blocked as.
//!
//! A header never makes a trusted proxy the client: an `X-Real-IP` naming one is ignored (a
//! proxy that passes the client's own copy on would otherwise let it name the proxy, and have
//! everyone behind it blocked), and when every hop is a trusted proxy the client is not known
//! ([`Client::is_proxy`]): nothing is then decided about its address.

use std::net::IpAddr;

use hyper::HeaderMap;

use super::config::GatewayConfig;

/// The client of one request, as far as can be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// `ip` is a trusted proxy's own address: no untrusted hop named the client.
    pub is_proxy: bool,
}

impl Client {
    fn named(ip: IpAddr) -> Self {
        Self {
            ip,
            is_proxy: false,
        }
    }

    /// The client a PROXY protocol header named (read only from trusted proxies).
    pub fn proxied(cfg: &GatewayConfig, ip: IpAddr) -> Self {
        Self {
            ip,
            is_proxy: cfg.trusts(ip),
        }
    }
}

pub fn client_ip(cfg: &GatewayConfig, peer: IpAddr, headers: &HeaderMap) -> Client {
    let peer = peer.to_canonical();
    if !cfg.trusts(peer) {
        return Client::named(peer);
    }
    if let Some(ip) = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_ip)
        .filter(|ip| !cfg.trusts(*ip))
    {
        return Client::named(ip);
    }
    let mut hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse_ip)
        .collect();
    if hops.is_empty() {
        hops = headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(forwarded_for)
            .collect();
    }
    // Right to left: each trusted hop appended the address it saw; the first untrusted one
    // is the client as far as can be known.
    for ip in hops.iter().rev() {
        if !cfg.trusts(*ip) {
            return Client::named(*ip);
        }
    }
    Client {
        ip: hops.first().copied().unwrap_or(peer),
        is_proxy: true,
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The address of one RFC 7239 element's `for=` pair: `for=192.0.2.1`, `for="[2001:db8::1]:80"`,
/// `for="192.0.2.1:4711"`. Obfuscated identifiers (`_hidden`, `unknown`) give none.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
    })?;
    let value = value.trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return parse_ip(rest.split(']').next()?);
    }
    parse_ip(value).or_else(|| parse_ip(value.rsplit_once(':')?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn cfg() -> GatewayConfig {
        GatewayConfig {
            trusted_proxies: vec!["192.0.2.0/24".parse().unwrap()],
            ..GatewayConfig::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_elements() {
        let h = headers(&[(
            "forwarded",
            "for=198.51.100.1;proto=https, for=\"[2001:db8::7]:4711\", for=192.0.2.3",
        )]);
        assert_eq!(client_ip(&cfg(), ip("192.0.2.9"), &h).ip, ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=\"198.51.100.4:80\";by=x, for=_hidden")]);
        assert_eq!(
            client_ip(&cfg(), ip("192.0.2.9"), &h).ip,
            ip("198.51.100.4")
        );
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_address() {
        let h = headers(&[
            ("x-real-ip", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("forwarded", "for=198.51.100.3"),
        ]);
        assert_eq!(
            client_ip(&cfg(), ip("203.0.113.5"), &h),
            Client::named(ip("203.0.113.5"))
        );
        assert_eq!(
            client_ip(&cfg(), ip("192.0.2.1"), &h),
            Client::named(ip("198.51.100.1"))
        );
    }

    #[test]
    fn x_real_ip_naming_a_trusted_proxy_is_ignored() {
        // The proxy passed the client's own X-Real-IP on: the client named the proxy.
        let h = headers(&[
            ("x-real-ip", "192.0.2.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(
            client_ip(&cfg(), ip("192.0.2.1"), &h),
            Client::named(ip("198.51.100.2"))
        );
        // IPv4-mapped spelling of a trusted proxy is the proxy too.
        let h = headers(&[
            ("x-real-ip", "::ffff:192.0.2.7"),
            ("x-forwarded-for", "198.51.100.3"),
        ]);
        assert_eq!(
            client_ip(&cfg(), ip("192.0.2.1"), &h),
            Client::named(ip("198.51.100.3"))
        );
    }

    #[test]
    fn without_an_untrusted_hop_the_client_is_not_known() {
        for h in [
            headers(&[]),
            headers(&[("x-real-ip", "192.0.2.1")]),
            headers(&[("x-forwarded-for", "192.0.2.3, 192.0.2.4")]),
            headers(&[("forwarded", "for=192.0.2.5")]),
            headers(&[("x-real-ip", "not an address")]),
        ] {
            let client = client_ip(&cfg(), ip("192.0.2.1"), &h);
            assert!(client.is_proxy, "{h:?} gave {client:?}");
            assert!(cfg().trusts(client.ip), "{h:?} gave {client:?}");
        }
    }
}
