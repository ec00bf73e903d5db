//! The numbers of the wire formats the frame builder writes: header lengths, field values and
//! the fixed addresses and ports every built frame uses.

use std::net::{Ipv4Addr, Ipv6Addr};

// ---- Ethernet ----------------------------------------------------------------------------

/// Destination, source, EtherType.
pub const ETH_HEADER_LEN: usize = 14;
pub const MAC_LEN: usize = 6;
/// A VLAN tag: TCI, then the EtherType of what follows.
pub const VLAN_TAG_LEN: usize = 4;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q customer tag.
pub const ETHERTYPE_8021Q: u16 = 0x8100;
/// 802.1ad service (outer, "QinQ") tag.
pub const ETHERTYPE_8021AD: u16 = 0x88A8;
/// The 12-bit VLAN id inside the TCI.
pub const VLAN_VID_MASK: u16 = 0x0FFF;

/// Locally administered unicast addresses, so no frame names a real vendor's card.
pub const DST_MAC: [u8; MAC_LEN] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const SRC_MAC: [u8; MAC_LEN] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

// ---- ARP ---------------------------------------------------------------------------------

pub const ARP_LEN: usize = 28;
pub const ARP_HTYPE_ETHERNET: u16 = 1;
pub const ARP_OP_REQUEST: u16 = 1;
pub const IPV4_ADDR_LEN: usize = 4;

// ---- IPv4 --------------------------------------------------------------------------------

pub const IPV4_VERSION: u8 = 4;
/// IHL of a header without options, in 32-bit words.
pub const IPV4_MIN_IHL: u8 = 5;
/// Largest IHL the 4-bit field can carry.
pub const IPV4_MAX_IHL: u8 = 15;
/// IHL and option lengths count 32-bit words.
pub const IPV4_WORD: usize = 4;
pub const IPV4_HEADER_LEN: usize = IPV4_MIN_IHL as usize * IPV4_WORD;
pub const IPV4_DEFAULT_TTL: u8 = 64;
/// "More fragments" flag in the flags / fragment offset word.
pub const IPV4_FLAG_MF: u16 = 0x2000;
/// Fragment offsets count 8-byte units.
pub const IPV4_OFFSET_MASK: u16 = 0x1FFF;
/// The no-operation option: options are padded with it.
pub const IPV4_OPT_NOP: u8 = 1;

// ---- IPv6 --------------------------------------------------------------------------------

pub const IPV6_VERSION: u8 = 6;
pub const IPV6_HEADER_LEN: usize = 40;
pub const IPV6_DEFAULT_HOP_LIMIT: u8 = 64;
pub const IPV6_NEXT_HOP_BY_HOP: u8 = 0;
pub const IPV6_NEXT_ROUTING: u8 = 43;
pub const IPV6_NEXT_FRAGMENT: u8 = 44;
pub const IPV6_NEXT_AUTH: u8 = 51;
pub const IPV6_NEXT_NONE: u8 = 59;
pub const IPV6_NEXT_DEST_OPTS: u8 = 60;
/// Every extension header starts with 8 bytes (next header, length, six more bytes).
pub const IPV6_EXT_MIN_LEN: usize = 8;
/// Hop-by-hop, routing and destination options lengths count 8-byte units beyond the first 8.
pub const IPV6_EXT_UNIT: usize = 8;
/// The authentication header's length counts 4-byte units, minus two.
pub const IPV6_AUTH_UNIT: usize = 4;
/// Offset bits of the fragment header's offset / flags word (offset in 8-byte units, << 3).
pub const IPV6_FRAG_OFFSET_SHIFT: u16 = 3;
pub const IPV6_FRAG_MF: u16 = 0x0001;
/// Option type PadN: fills extension headers to their length.
pub const IPV6_OPT_PADN: u8 = 1;
/// Routing type 4 (segment routing) with zero segments left, so any router would skip it.
pub const IPV6_ROUTING_TYPE_SRH: u8 = 4;

// ---- Transport ---------------------------------------------------------------------------

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const TCP_HEADER_LEN: usize = 20;
/// TCP data offset of a header without options, in 32-bit words.
pub const TCP_MIN_DOFF: u8 = 5;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_DEFAULT_WINDOW: u16 = 65_535;
pub const UDP_HEADER_LEN: usize = 8;
/// Type, code, checksum, and the 4-byte rest of header (echo id and sequence).
pub const ICMP_HEADER_LEN: usize = 8;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// Source port of every built TCP and UDP header.
pub const SRC_PORT: u16 = 40_000;

/// Documentation / benchmarking destinations (never a real host).
pub const DST_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
pub const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
