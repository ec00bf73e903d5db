//! Wire layouts of the headers the program reads. Byte arrays only: no alignment, no
//! implicit padding, big-endian decoding at the point of use.

/// A wire header the cursor may hand out as a reference into the frame.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` structs whose fields are all `u8` or `[u8; N]`: such a type
/// has alignment 1, no padding, and every bit pattern is a valid value, so a reference to it may
/// point anywhere inside the frame. [`header!`] implements it and checks the alignment and size
/// at compile time; the trait is sealed so no other module can implement it.
pub unsafe trait Header: sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

/// Declares `#[repr(C)]` wire headers of `u8` / `[u8; N]` fields and implements [`Header`] for
/// them, with compile-time checks that each has alignment 1 and no padding.
macro_rules! header {
    ($(
        $(#[$attr:meta])*
        pub struct $name:ident { $(pub $field:ident: $ty:ty,)* }
    )*) => {$(
        $(#[$attr])*
        #[repr(C)]
        pub struct $name { $(pub $field: $ty,)* }

        impl sealed::Sealed for $name {}
        // SAFETY: every field is `u8` or a byte array (the `Bytes` bound below), so the type is
        // valid for any bit pattern; alignment 1 and no padding are asserted here.
        unsafe impl Header for $name {}
        const _: () = {
            assert!(core::mem::align_of::<$name>() == 1);
            assert!(core::mem::size_of::<$name>() == 0 $(+ core::mem::size_of::<$ty>())*);
            $(assert_bytes::<$ty>();)*
        };
    )*};
}

/// Field types a [`Header`] may hold: every bit pattern of them is a value.
trait Bytes {}
impl Bytes for u8 {}
impl<const N: usize> Bytes for [u8; N] {}

/// Compiles only for [`Bytes`] field types.
const fn assert_bytes<T: Bytes>() {}

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// VLAN tags parsed before the frame counts as malformed (802.1Q inside 802.1ad).
pub const MAX_VLAN_TAGS: usize = 2;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;
pub const IPV6_NO_NEXT: u8 = 59;
/// Extension headers followed before giving up: real traffic uses two or three; a longer
/// chain is treated as malformed so it cannot hide the transport header.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Bits 64..96 of an IPv4-mapped IPv6 address (`::ffff:0:0/96`); the first 64 are zero.
pub const V4_MAPPED_MARKER: u32 = 0x0000_FFFF;

pub const IPV4_MIN_IHL: u8 = 5;
pub const IPV4_WORD: usize = 4;
pub const IPV4_MF: u16 = 0x2000;
pub const IPV4_OFFSET_MASK: u16 = 0x1FFF;
pub const IPV6_FRAG_OFFSET_MASK: u16 = 0xFFF8;
/// Extension header lengths count 8-byte units, not including the first 8 bytes.
pub const IPV6_EXT_UNIT: usize = 8;
/// The authentication header counts 4-byte units, not including the first 8 bytes.
pub const IPV6_AUTH_UNIT: usize = 4;

pub const TCP_MIN_DOFF: u8 = 5;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_ACK: u8 = 0x10;

header! {
    pub struct EthHdr {
        pub dst: [u8; 6],
        pub src: [u8; 6],
        pub proto: [u8; 2],
    }

    pub struct VlanHdr {
        pub tci: [u8; 2],
        pub proto: [u8; 2],
    }

    pub struct Ipv4Hdr {
        pub version_ihl: u8,
        pub tos: u8,
        pub total_len: [u8; 2],
        pub id: [u8; 2],
        pub frag: [u8; 2],
        pub ttl: u8,
        pub proto: u8,
        pub check: [u8; 2],
        pub src: [u8; 4],
        pub dst: [u8; 4],
    }

    pub struct Ipv6Hdr {
        pub version_class_flow: [u8; 4],
        pub payload_len: [u8; 2],
        pub next: u8,
        pub hop_limit: u8,
        pub src: [u8; 16],
        pub dst: [u8; 16],
    }

    /// The first 8 bytes every IPv6 extension header (and the fragment header) starts with.
    pub struct Ipv6ExtHdr {
        pub next: u8,
        pub len: u8,
        pub rest: [u8; 6],
    }

    pub struct TcpHdr {
        pub src_port: [u8; 2],
        pub dst_port: [u8; 2],
        pub seq: [u8; 4],
        pub ack: [u8; 4],
        pub doff_res: u8,
        pub flags: u8,
        pub window: [u8; 2],
        pub check: [u8; 2],
        pub urg: [u8; 2],
    }

    pub struct UdpHdr {
        pub src_port: [u8; 2],
        pub dst_port: [u8; 2],
        pub len: [u8; 2],
        pub check: [u8; 2],
    }

    pub struct IcmpHdr {
        pub kind: u8,
        pub code: u8,
        pub check: [u8; 2],
    }
}

#[inline(always)]
pub fn be16(b: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*b)
}
