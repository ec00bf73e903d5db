//! Frame parsing: Ethernet (two VLAN tags), IPv4 (options, fragments), IPv6 (a bounded chain
//! of extension headers, fragments), then the TCP / UDP / ICMP header when the packet has one.

use crate::cursor::{Cursor, Truncated};
use crate::headers::*;

pub enum Source {
    /// Host byte order.
    V4(u32),
    V6([u8; 16]),
}

pub struct Packet {
    pub src: Source,
    /// Destination port of a TCP or UDP first fragment.
    pub dst_port: Option<u16>,
    /// A TCP SYN without ACK: a new connection attempt.
    pub syn: bool,
    pub fragment: bool,
    /// A non-first fragment: its transport header is in another packet.
    pub later_fragment: bool,
}

pub enum Parsed {
    NotIp,
    Ip(Packet),
    Malformed,
}

impl From<Truncated> for Parsed {
    fn from(_: Truncated) -> Self {
        Parsed::Malformed
    }
}

#[inline(always)]
pub fn parse(c: &mut Cursor<'_>) -> Parsed {
    match try_parse(c) {
        Ok(p) => p,
        Err(e) => e,
    }
}

#[inline(always)]
fn try_parse(c: &mut Cursor<'_>) -> Result<Parsed, Parsed> {
    let eth: &EthHdr = c.take()?;
    let mut proto = be16(&eth.proto);
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let vlan: &VlanHdr = c.take()?;
        proto = be16(&vlan.proto);
    }
    match proto {
        ETH_P_IPV4 => ipv4(c).map(Parsed::Ip),
        ETH_P_IPV6 => ipv6(c).map(Parsed::Ip),
        // A third tag: the IP header could hide behind it, so it is not waved through.
        ETH_P_8021Q | ETH_P_8021AD => Err(Parsed::Malformed),
        _ => Ok(Parsed::NotIp),
    }
}

#[inline(always)]
fn ipv4(c: &mut Cursor<'_>) -> Result<Packet, Parsed> {
    let ip: &Ipv4Hdr = c.take()?;
    let version = ip.version_ihl >> 4;
    let ihl = ip.version_ihl & 0x0F;
    if version != 4 || ihl < IPV4_MIN_IHL {
        return Err(Parsed::Malformed);
    }
    let header_len = ihl as usize * IPV4_WORD;
    if (be16(&ip.total_len) as usize) < header_len {
        return Err(Parsed::Malformed);
    }
    let src = u32::from_be_bytes(ip.src);
    let proto = ip.proto;
    let frag = be16(&ip.frag);
    let offset = frag & IPV4_OFFSET_MASK;
    c.skip(header_len - core::mem::size_of::<Ipv4Hdr>())?;
    let mut pkt = Packet {
        src: Source::V4(src),
        dst_port: None,
        syn: false,
        fragment: offset != 0 || frag & IPV4_MF != 0,
        later_fragment: offset != 0,
    };
    if !pkt.later_fragment {
        transport(c, proto, &mut pkt)?;
    }
    Ok(pkt)
}

#[inline(always)]
fn ipv6(c: &mut Cursor<'_>) -> Result<Packet, Parsed> {
    let ip: &Ipv6Hdr = c.take()?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Parsed::Malformed);
    }
    let mut pkt = Packet {
        src: source_v6(&ip.src),
        dst_port: None,
        syn: false,
        fragment: false,
        later_fragment: false,
    };
    let mut next = ip.next;
    let mut resolved = false;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let ext: &Ipv6ExtHdr = c.take()?;
                next = ext.next;
                c.skip(ext.len as usize * IPV6_EXT_UNIT)?;
            }
            IPV6_AUTH => {
                let ext: &Ipv6ExtHdr = c.take()?;
                next = ext.next;
                c.skip(ext.len as usize * IPV6_AUTH_UNIT)?;
            }
            IPV6_FRAGMENT => {
                let ext: &Ipv6ExtHdr = c.take()?;
                next = ext.next;
                let off_flags = u16::from_be_bytes([ext.rest[0], ext.rest[1]]);
                pkt.fragment = true;
                if off_flags & IPV6_FRAG_OFFSET_MASK != 0 {
                    pkt.later_fragment = true;
                    resolved = true;
                    break;
                }
            }
            _ => {
                resolved = true;
                break;
            }
        }
    }
    let still_extension = matches!(
        next,
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT
    );
    if !resolved && still_extension {
        return Err(Parsed::Malformed);
    }
    if !pkt.later_fragment && next != IPV6_NO_NEXT {
        transport(c, next, &mut pkt)?;
    }
    Ok(pkt)
}

/// An IPv4-mapped source (`::ffff:a.b.c.d`) is the IPv4 address it carries, for every check
/// after parsing (lists, rate limits, auto-blocks): otherwise it would slip past every IPv4
/// rule. Such sources are not valid on the wire (RFC 4291 2.5.5.2), but taking them as IPv4
/// rather than dropping them keeps one rule everywhere, the daemon's `to_canonical` included.
#[inline(always)]
fn source_v6(src: &[u8; 16]) -> Source {
    let high = u64::from_be_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let marker = u32::from_be_bytes([src[8], src[9], src[10], src[11]]);
    if high == 0 && marker == V4_MAPPED_MARKER {
        Source::V4(u32::from_be_bytes([src[12], src[13], src[14], src[15]]))
    } else {
        Source::V6(*src)
    }
}

#[inline(always)]
fn transport(c: &mut Cursor<'_>, proto: u8, pkt: &mut Packet) -> Result<(), Parsed> {
    match proto {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = c.take()?;
            if tcp.doff_res >> 4 < TCP_MIN_DOFF {
                return Err(Parsed::Malformed);
            }
            pkt.dst_port = Some(be16(&tcp.dst_port));
            pkt.syn = tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = c.take()?;
            pkt.dst_port = Some(be16(&udp.dst_port));
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let _: &IcmpHdr = c.take()?;
        }
        _ => {}
    }
    Ok(())
}
