//! The PROXY protocol v2 header a load balancer sends before the client's bytes, read only
//! from peers in `trusted_proxies`. Parsing is `ppp`'s; this module reads exactly the header's
//! bytes off the socket so nothing of the client's stream is consumed.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Signature (12 bytes), version/command, family/protocol, then a big-endian u16 length.
const FIXED_LEN: usize = 16;
const LENGTH_AT: usize = 14;

/// What the header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A proxied connection from this client.
    Client(SocketAddr),
    /// `LOCAL` (a health check of the proxy itself) or an address family without IP: the
    /// peer is the client.
    Local,
}

/// Reads one v2 header from `stream`. Anything else (a v1 text header, HTTP, TLS) is an
/// error: a listener that expects the header from this peer must not guess.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Origin> {
    let mut fixed = [0u8; FIXED_LEN];
    stream.read_exact(&mut fixed).await?;
    if &fixed[..PROTOCOL_PREFIX.len()] != PROTOCOL_PREFIX {
        return Err(invalid("no PROXY protocol v2 signature"));
    }
    let len = usize::from(u16::from_be_bytes([fixed[LENGTH_AT], fixed[LENGTH_AT + 1]]));
    let mut whole = Vec::with_capacity(FIXED_LEN + len);
    whole.extend_from_slice(&fixed);
    whole.resize(FIXED_LEN + len, 0);
    stream.read_exact(&mut whole[FIXED_LEN..]).await?;
    let header = Header::try_from(whole.as_slice())
        .map_err(|e| invalid(&format!("bad PROXY protocol v2 header: {e}")))?;
    Ok(match (header.command, header.addresses) {
        (Command::Local, _) => Origin::Local,
        (Command::Proxy, Addresses::IPv4(a)) => {
            Origin::Client(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (Command::Proxy, Addresses::IPv6(a)) => {
            Origin::Client(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        (Command::Proxy, _) => Origin::Local,
    })
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Protocol, Version};

    fn header(client: &str, server: &str) -> Vec<u8> {
        let c: SocketAddr = client.parse().unwrap();
        let s: SocketAddr = server.parse().unwrap();
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (c, s))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        let mut bytes = header("198.51.100.7:4242", "192.0.2.1:443");
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut stream = bytes.as_slice();
        assert_eq!(
            read(&mut stream).await.unwrap(),
            Origin::Client("198.51.100.7:4242".parse().unwrap())
        );
        assert_eq!(
            stream, b"GET / HTTP/1.1\r\n",
            "the client's bytes are untouched"
        );
        let mut v6 = header("[2001:db8::7]:1", "[2001:db8::1]:443");
        v6.extend_from_slice(b"x");
        assert_eq!(
            read(&mut v6.as_slice()).await.unwrap(),
            Origin::Client("[2001:db8::7]:1".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_v2_header() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 198.51.100.7 192.0.2.1 1 2\r\n",
            &PROTOCOL_PREFIX[..8],
        ] {
            assert!(read(&mut &bad[..]).await.is_err());
        }
        // A header whose length runs past the bytes sent.
        let mut cut = header("198.51.100.7:1", "192.0.2.1:2");
        cut.truncate(cut.len() - 3);
        assert!(read(&mut cut.as_slice()).await.is_err());
    }
}
