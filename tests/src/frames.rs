//! Hand-built Ethernet frames for the kernel verdict tests and the data-path benchmark.
//!
//! Every length field (IPv4 total length and IHL, IPv6 payload length, extension header
//! lengths, UDP length, TCP data offset) is computed from what is actually emitted, unless a
//! test overrides it on purpose to build a malformed frame. Checksums are left at zero: XDP
//! never checks them.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use tests::frames::{Frame, TCP_SYN};
//! let bytes = Frame::ipv4(Ipv4Addr::new(198, 18, 0, 1)).vlan(100).tcp(443, TCP_SYN).build();
//! assert_eq!(bytes.len(), 14 + 4 + 20 + 20);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

mod consts;

pub use consts::*;

/// One VLAN tag; its variant decides the TPID written before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// 802.1Q (TPID 0x8100), the customer tag.
    Dot1Q(u16),
    /// 802.1ad (TPID 0x88A8), the service tag of QinQ.
    Dot1Ad(u16),
}

impl Tag {
    const fn tpid(self) -> u16 {
        match self {
            Tag::Dot1Q(_) => ETHERTYPE_8021Q,
            Tag::Dot1Ad(_) => ETHERTYPE_8021AD,
        }
    }

    const fn vid(self) -> u16 {
        match self {
            Tag::Dot1Q(v) | Tag::Dot1Ad(v) => v & VLAN_VID_MASK,
        }
    }
}

/// An IPv4 header. Lengths are derived; the overrides build malformed headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// 32-bit words of options (NOP padding) after the fixed header: IHL = 5 + this.
    pub option_words: u8,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    pub more_fragments: bool,
    /// Written instead of the computed IHL.
    pub ihl_override: Option<u8>,
    /// Written instead of the computed total length.
    pub total_len_override: Option<u16>,
    pub version: u8,
}

/// One IPv6 extension header. Lengths are in the header's own units (see the constants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options; `units` 8-byte units beyond the first 8 bytes (PadN filled).
    HopByHop { units: u8 },
    /// Routing header (type 4, no segments left); `units` as above.
    Routing { units: u8 },
    /// Destination options; `units` as above.
    DestOpts { units: u8 },
    /// Fragment header; `offset` in 8-byte units.
    Fragment { offset: u16, more: bool },
    /// Authentication header carrying `icv_words` 32-bit words of integrity check value.
    Auth { icv_words: u8 },
}

impl Ext {
    pub const fn next_header_value(self) -> u8 {
        match self {
            Ext::HopByHop { .. } => IPV6_NEXT_HOP_BY_HOP,
            Ext::Routing { .. } => IPV6_NEXT_ROUTING,
            Ext::DestOpts { .. } => IPV6_NEXT_DEST_OPTS,
            Ext::Fragment { .. } => IPV6_NEXT_FRAGMENT,
            Ext::Auth { .. } => IPV6_NEXT_AUTH,
        }
    }

    /// Bytes this header occupies on the wire.
    pub const fn wire_len(self) -> usize {
        match self {
            Ext::HopByHop { units } | Ext::Routing { units } | Ext::DestOpts { units } => {
                IPV6_EXT_MIN_LEN + units as usize * IPV6_EXT_UNIT
            }
            Ext::Fragment { .. } => IPV6_EXT_MIN_LEN,
            // Fixed part (next, len, reserved, SPI, sequence) is 12 bytes = 3 words.
            Ext::Auth { icv_words } => (AUTH_FIXED_WORDS + icv_words as usize) * IPV6_AUTH_UNIT,
        }
    }

    fn write(self, next: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Ext::HopByHop { units } | Ext::DestOpts { units } => {
                out.extend_from_slice(&[next, units]);
                pad_n(out, self.wire_len() - 2);
            }
            Ext::Routing { units } => {
                // next, length, routing type, segments left, then type-specific data.
                out.extend_from_slice(&[next, units, IPV6_ROUTING_TYPE_SRH, 0]);
                out.resize(start + self.wire_len(), 0);
            }
            Ext::Fragment { offset, more } => {
                let word = (offset << IPV6_FRAG_OFFSET_SHIFT) | if more { IPV6_FRAG_MF } else { 0 };
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&word.to_be_bytes());
                out.extend_from_slice(&FRAGMENT_ID.to_be_bytes());
            }
            Ext::Auth { icv_words } => {
                // Payload length is the header length in 4-byte words minus 2.
                let len_field = (AUTH_FIXED_WORDS + icv_words as usize - AUTH_LEN_BIAS_WORDS) as u8;
                out.extend_from_slice(&[next, len_field, 0, 0]);
                out.extend_from_slice(&AUTH_SPI.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes());
                out.resize(start + self.wire_len(), 0);
            }
        }
        debug_assert_eq!(out.len() - start, self.wire_len());
    }
}

const AUTH_FIXED_WORDS: usize = 3;
const AUTH_LEN_BIAS_WORDS: usize = 2;
const AUTH_SPI: u32 = 0x0000_1000;
const FRAGMENT_ID: u32 = 0x1234_5678;
const IPV4_ID: u16 = 0x4242;

/// Fills `len` bytes of an options area with one PadN option (or Pad1 bytes if too short).
fn pad_n(out: &mut Vec<u8>, len: usize) {
    const PAD1: u8 = 0;
    const PADN_HEADER: usize = 2;
    if len < PADN_HEADER {
        out.resize(out.len() + len, PAD1);
        return;
    }
    out.extend_from_slice(&[IPV6_OPT_PADN, (len - PADN_HEADER) as u8]);
    out.resize(out.len() + len - PADN_HEADER, 0);
}

/// An IPv6 header and its chain of extension headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub exts: Vec<Ext>,
}

/// What follows the Ethernet header (and tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Net {
    V4(Ipv4),
    V6(Ipv6),
    /// An ARP request from `SRC_MAC` / the given address.
    Arp(Ipv4Addr),
    /// Any other EtherType with `len` zero bytes.
    Other {
        ethertype: u16,
        len: usize,
    },
}

/// The transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        dst_port: u16,
        flags: u8,
    },
    Udp {
        dst_port: u16,
    },
    /// ICMP (over IPv4) or ICMPv6 (over IPv6) echo request.
    Icmp,
    /// `len` bytes of opaque data with this protocol number (e.g. a later fragment's data).
    Raw {
        proto: u8,
        len: usize,
    },
    /// No transport at all (IPv6 next header "none"; IPv4 protocol 0 with no data).
    None,
}

impl Transport {
    fn proto(self, v6: bool) -> u8 {
        match self {
            Transport::Tcp { .. } => IPPROTO_TCP,
            Transport::Udp { .. } => IPPROTO_UDP,
            Transport::Icmp if v6 => IPPROTO_ICMPV6,
            Transport::Icmp => IPPROTO_ICMP,
            Transport::Raw { proto, .. } => proto,
            Transport::None if v6 => IPV6_NEXT_NONE,
            Transport::None => 0,
        }
    }

    /// Length of the header (or opaque data) this writes, before any payload.
    pub fn header_len(self) -> usize {
        match self {
            Transport::Tcp { .. } => TCP_HEADER_LEN,
            Transport::Udp { .. } => UDP_HEADER_LEN,
            Transport::Icmp => ICMP_HEADER_LEN,
            Transport::Raw { len, .. } => len,
            Transport::None => 0,
        }
    }

    fn write(self, v6: bool, payload: usize, out: &mut Vec<u8>) {
        match self {
            Transport::Tcp { dst_port, flags } => {
                out.extend_from_slice(&SRC_PORT.to_be_bytes());
                out.extend_from_slice(&dst_port.to_be_bytes());
                out.extend_from_slice(&1u32.to_be_bytes()); // sequence
                let ack = if flags & TCP_ACK != 0 { 1u32 } else { 0 };
                out.extend_from_slice(&ack.to_be_bytes());
                out.push(TCP_MIN_DOFF << 4);
                out.push(flags);
                out.extend_from_slice(&TCP_DEFAULT_WINDOW.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
            }
            Transport::Udp { dst_port } => {
                out.extend_from_slice(&SRC_PORT.to_be_bytes());
                out.extend_from_slice(&dst_port.to_be_bytes());
                out.extend_from_slice(&((UDP_HEADER_LEN + payload) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]); // checksum
            }
            Transport::Icmp => {
                let kind = if v6 {
                    ICMPV6_ECHO_REQUEST
                } else {
                    ICMP_ECHO_REQUEST
                };
                out.extend_from_slice(&[kind, 0, 0, 0]);
                out.extend_from_slice(&[0, 1, 0, 1]); // identifier, sequence
            }
            Transport::Raw { len, .. } => out.resize(out.len() + len, 0),
            Transport::None => {}
        }
    }
}

/// A whole frame, described; `build` emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Outermost first.
    pub tags: Vec<Tag>,
    pub net: Net,
    pub transport: Transport,
    /// Zero bytes after the transport header.
    pub payload: usize,
}

impl Frame {
    /// An IPv4 frame from `src` to `DST_V4`, with no transport yet.
    pub fn ipv4(src: Ipv4Addr) -> Self {
        Self::with_net(Net::V4(Ipv4 {
            src,
            dst: DST_V4,
            option_words: 0,
            frag_offset: 0,
            more_fragments: false,
            ihl_override: None,
            total_len_override: None,
            version: IPV4_VERSION,
        }))
    }

    /// An IPv6 frame from `src` to `DST_V6`, with no extension headers and no transport yet.
    pub fn ipv6(src: Ipv6Addr) -> Self {
        Self::with_net(Net::V6(Ipv6 {
            src,
            dst: DST_V6,
            exts: Vec::new(),
        }))
    }

    /// An ARP request (not IP).
    pub fn arp(sender: Ipv4Addr) -> Self {
        Self::with_net(Net::Arp(sender))
    }

    pub fn with_net(net: Net) -> Self {
        Self {
            tags: Vec::new(),
            net,
            transport: Transport::None,
            payload: 0,
        }
    }

    // ---- VLAN tags ----

    /// Adds an 802.1Q tag inside the ones already present.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.tags.push(Tag::Dot1Q(vid));
        self
    }

    /// 802.1ad outer tag, 802.1Q inner tag.
    pub fn qinq(mut self, outer: u16, inner: u16) -> Self {
        self.tags.push(Tag::Dot1Ad(outer));
        self.tags.push(Tag::Dot1Q(inner));
        self
    }

    pub fn tags(mut self, tags: &[Tag]) -> Self {
        self.tags.extend_from_slice(tags);
        self
    }

    // ---- transport ----

    pub fn tcp(mut self, dst_port: u16, flags: u8) -> Self {
        self.transport = Transport::Tcp { dst_port, flags };
        self
    }

    pub fn udp(mut self, dst_port: u16) -> Self {
        self.transport = Transport::Udp { dst_port };
        self
    }

    pub fn icmp(mut self) -> Self {
        self.transport = Transport::Icmp;
        self
    }

    pub fn raw(mut self, proto: u8, len: usize) -> Self {
        self.transport = Transport::Raw { proto, len };
        self
    }

    pub fn payload(mut self, len: usize) -> Self {
        self.payload = len;
        self
    }

    // ---- IPv4 details ----

    fn v4_mut(&mut self) -> &mut Ipv4 {
        match &mut self.net {
            Net::V4(ip) => ip,
            other => panic!("an IPv4 setting on a non-IPv4 frame ({other:?})"),
        }
    }

    pub fn v4_dst(mut self, dst: Ipv4Addr) -> Self {
        self.v4_mut().dst = dst;
        self
    }

    /// Adds `words` 32-bit words of options (IHL = 5 + words).
    pub fn ipv4_options(mut self, words: u8) -> Self {
        assert!(words <= IPV4_MAX_IHL - IPV4_MIN_IHL, "IHL is a 4-bit field");
        self.v4_mut().option_words = words;
        self
    }

    /// Fragment offset in 8-byte units, and the more-fragments flag.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        assert!(offset <= IPV4_OFFSET_MASK, "fragment offset is 13 bits");
        let ip = self.v4_mut();
        ip.frag_offset = offset;
        ip.more_fragments = more;
        self
    }

    pub fn ipv4_ihl(mut self, ihl: u8) -> Self {
        self.v4_mut().ihl_override = Some(ihl);
        self
    }

    pub fn ipv4_total_len(mut self, len: u16) -> Self {
        self.v4_mut().total_len_override = Some(len);
        self
    }

    pub fn ip_version(mut self, version: u8) -> Self {
        self.v4_mut().version = version;
        self
    }

    // ---- IPv6 details ----

    fn v6_mut(&mut self) -> &mut Ipv6 {
        match &mut self.net {
            Net::V6(ip) => ip,
            other => panic!("an IPv6 setting on a non-IPv6 frame ({other:?})"),
        }
    }

    pub fn v6_dst(mut self, dst: Ipv6Addr) -> Self {
        self.v6_mut().dst = dst;
        self
    }

    /// Appends one extension header to the chain.
    pub fn ext(mut self, ext: Ext) -> Self {
        self.v6_mut().exts.push(ext);
        self
    }

    pub fn exts(mut self, exts: &[Ext]) -> Self {
        self.v6_mut().exts.extend_from_slice(exts);
        self
    }

    /// Appends `n` destination-options headers (the smallest, 8 bytes each): a chain of a
    /// chosen length.
    pub fn ext_chain(mut self, n: usize) -> Self {
        let exts = &mut self.v6_mut().exts;
        exts.extend(std::iter::repeat_n(Ext::DestOpts { units: 0 }, n));
        self
    }

    // ---- offsets, for truncation ----

    /// Offset of the IP (or ARP) header: after Ethernet and tags.
    pub fn l3_offset(&self) -> usize {
        ETH_HEADER_LEN + self.tags.len() * VLAN_TAG_LEN
    }

    /// Length of the IP header including IPv4 options or the IPv6 extension chain.
    pub fn l3_len(&self) -> usize {
        match &self.net {
            Net::V4(ip) => IPV4_HEADER_LEN + ip.option_words as usize * IPV4_WORD,
            Net::V6(ip) => IPV6_HEADER_LEN + ip.exts.iter().map(|e| e.wire_len()).sum::<usize>(),
            Net::Arp(_) => ARP_LEN,
            Net::Other { len, .. } => *len,
        }
    }

    /// Offset of the transport header.
    pub fn l4_offset(&self) -> usize {
        self.l3_offset() + self.l3_len()
    }

    /// Total length `build` returns.
    pub fn len(&self) -> usize {
        self.l4_offset() + self.transport.header_len() + self.payload
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // ---- emitting ----

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&DST_MAC);
        out.extend_from_slice(&SRC_MAC);
        // Each tag is its TPID then its TCI; the EtherType of the payload comes last.
        for tag in &self.tags {
            out.extend_from_slice(&tag.tpid().to_be_bytes());
            out.extend_from_slice(&tag.vid().to_be_bytes());
        }
        out.extend_from_slice(&self.ethertype().to_be_bytes());
        debug_assert_eq!(out.len(), self.l3_offset());

        let l4_len = self.transport.header_len() + self.payload;
        match &self.net {
            Net::V4(ip) => self.write_ipv4(ip, l4_len, &mut out),
            Net::V6(ip) => self.write_ipv6(ip, l4_len, &mut out),
            Net::Arp(sender) => write_arp(*sender, &mut out),
            Net::Other { len, .. } => out.resize(out.len() + len, 0),
        }
        debug_assert_eq!(out.len(), self.l4_offset());
        let v6 = matches!(self.net, Net::V6(_));
        self.transport.write(v6, self.payload, &mut out);
        out.resize(out.len() + self.payload, 0);
        debug_assert_eq!(out.len(), self.len());
        out
    }

    fn ethertype(&self) -> u16 {
        match &self.net {
            Net::V4(_) => ETHERTYPE_IPV4,
            Net::V6(_) => ETHERTYPE_IPV6,
            Net::Arp(_) => ETHERTYPE_ARP,
            Net::Other { ethertype, .. } => *ethertype,
        }
    }

    fn write_ipv4(&self, ip: &Ipv4, l4_len: usize, out: &mut Vec<u8>) {
        let header_len = IPV4_HEADER_LEN + ip.option_words as usize * IPV4_WORD;
        let ihl = ip.ihl_override.unwrap_or(IPV4_MIN_IHL + ip.option_words);
        let total = ip
            .total_len_override
            .unwrap_or((header_len + l4_len) as u16);
        let frag =
            (ip.frag_offset & IPV4_OFFSET_MASK) | if ip.more_fragments { IPV4_FLAG_MF } else { 0 };
        out.push((ip.version << 4) | (ihl & 0x0F));
        out.push(0); // DSCP / ECN
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&IPV4_ID.to_be_bytes());
        out.extend_from_slice(&frag.to_be_bytes());
        out.push(IPV4_DEFAULT_TTL);
        out.push(self.transport.proto(false));
        out.extend_from_slice(&[0, 0]); // checksum
        out.extend_from_slice(&ip.src.octets());
        out.extend_from_slice(&ip.dst.octets());
        out.resize(
            out.len() + ip.option_words as usize * IPV4_WORD,
            IPV4_OPT_NOP,
        );
    }

    fn write_ipv6(&self, ip: &Ipv6, l4_len: usize, out: &mut Vec<u8>) {
        let ext_len: usize = ip.exts.iter().map(|e| e.wire_len()).sum();
        let first_next = ip
            .exts
            .first()
            .map_or(self.transport.proto(true), |e| e.next_header_value());
        out.extend_from_slice(&[IPV6_VERSION << 4, 0, 0, 0]); // version, class, flow label
        out.extend_from_slice(&((ext_len + l4_len) as u16).to_be_bytes());
        out.push(first_next);
        out.push(IPV6_DEFAULT_HOP_LIMIT);
        out.extend_from_slice(&ip.src.octets());
        out.extend_from_slice(&ip.dst.octets());
        for (i, ext) in ip.exts.iter().enumerate() {
            let next = ip
                .exts
                .get(i + 1)
                .map_or(self.transport.proto(true), |e| e.next_header_value());
            ext.write(next, out);
        }
    }
}

fn write_arp(sender: Ipv4Addr, out: &mut Vec<u8>) {
    out.extend_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    out.push(MAC_LEN as u8);
    out.push(IPV4_ADDR_LEN as u8);
    out.extend_from_slice(&ARP_OP_REQUEST.to_be_bytes());
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&sender.octets());
    out.extend_from_slice(&[0; MAC_LEN]);
    out.extend_from_slice(&DST_V4.octets());
}

/// The first `len` bytes of `frame`: a frame cut short inside some header.
pub fn truncate(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(
        len <= frame.len(),
        "cannot cut {} bytes to {len}",
        frame.len()
    );
    frame.truncate(len);
    frame
}

impl Frame {
    /// Builds the frame and cuts it at `len` bytes.
    pub fn build_truncated(&self, len: usize) -> Vec<u8> {
        truncate(self.build(), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn plain_udp_v4_lengths() {
        let f = Frame::ipv4(SRC4).udp(53).payload(10);
        let b = f.build();
        assert_eq!(
            b.len(),
            ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + 10
        );
        assert_eq!(be16(&b, 12), ETHERTYPE_IPV4);
        assert_eq!(b[14], 0x45);
        assert_eq!(be16(&b, 16) as usize, IPV4_HEADER_LEN + UDP_HEADER_LEN + 10);
        assert_eq!(b[14 + 9], IPPROTO_UDP);
        assert_eq!(&b[26..30], &SRC4.octets());
        assert_eq!(be16(&b, 34 + 2), 53);
        assert_eq!(be16(&b, 34 + 4) as usize, UDP_HEADER_LEN + 10);
    }

    #[test]
    fn vlan_tags_are_in_order() {
        let b = Frame::ipv4(SRC4).qinq(10, 20).udp(1).build();
        assert_eq!(be16(&b, 12), ETHERTYPE_8021AD);
        assert_eq!(be16(&b, 14), 10);
        assert_eq!(be16(&b, 16), ETHERTYPE_8021Q);
        assert_eq!(be16(&b, 18), 20);
        assert_eq!(be16(&b, 20), ETHERTYPE_IPV4);
        assert_eq!(b[22] >> 4, IPV4_VERSION);
    }

    #[test]
    fn ipv4_options_and_fragments() {
        let f = Frame::ipv4(SRC4)
            .ipv4_options(2)
            .ipv4_fragment(3, true)
            .tcp(80, TCP_SYN);
        let b = f.build();
        assert_eq!(b[14] & 0x0F, 7);
        assert_eq!(be16(&b, 20), IPV4_FLAG_MF | 3);
        assert_eq!(f.l4_offset(), 14 + 28);
        assert_eq!(be16(&b, f.l4_offset() + 2), 80);
        assert_eq!(b[f.l4_offset() + 13], TCP_SYN);
        assert_eq!(b[f.l4_offset() + 12] >> 4, TCP_MIN_DOFF);
    }

    #[test]
    fn ipv6_chain_links_next_headers() {
        let f = Frame::ipv6(SRC6)
            .exts(&[
                Ext::HopByHop { units: 0 },
                Ext::Routing { units: 1 },
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                Ext::Auth { icv_words: 3 },
                Ext::DestOpts { units: 2 },
            ])
            .udp(53);
        let b = f.build();
        let ip = ETH_HEADER_LEN;
        assert_eq!(b[ip + 6], IPV6_NEXT_HOP_BY_HOP);
        assert_eq!(
            be16(&b, ip + 4) as usize,
            8 + 16 + 8 + 24 + 24 + UDP_HEADER_LEN
        );
        let mut at = ip + IPV6_HEADER_LEN;
        // hop-by-hop -> routing
        assert_eq!(b[at], IPV6_NEXT_ROUTING);
        at += 8;
        // routing (16) -> fragment
        assert_eq!((b[at], b[at + 1]), (IPV6_NEXT_FRAGMENT, 1));
        at += 16;
        // fragment -> auth
        assert_eq!(b[at], IPV6_NEXT_AUTH);
        assert_eq!(be16(&b, at + 2), IPV6_FRAG_MF);
        at += 8;
        // auth: (3 + 3 words) * 4 = 24 bytes, length field 6 - 2 = 4
        assert_eq!((b[at], b[at + 1]), (IPV6_NEXT_DEST_OPTS, 4));
        at += 8 + b[at + 1] as usize * IPV6_AUTH_UNIT;
        assert_eq!((b[at], b[at + 1]), (IPPROTO_UDP, 2));
        at += 8 + b[at + 1] as usize * IPV6_EXT_UNIT;
        assert_eq!(at, f.l4_offset());
        assert_eq!(be16(&b, at + 2), 53);
    }

    #[test]
    fn arp_and_truncation() {
        let f = Frame::arp(SRC4);
        let b = f.build();
        assert_eq!(b.len(), ETH_HEADER_LEN + ARP_LEN);
        assert_eq!(be16(&b, 12), ETHERTYPE_ARP);
        assert_eq!(truncate(b, 20).len(), 20);
    }
}
