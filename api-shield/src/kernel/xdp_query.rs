//! What the kernel says is attached to an interface right now: the ids of its XDP programs,
//! read over rtnetlink (`RTM_GETLINK`, the `IFLA_XDP` attributes), the same answer
//! `ip link show` prints. Neither a pin nor a flag in memory: a pin outlives a detach by
//! `ip link`, and a flag does not notice anything.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

// rtnetlink uapi values (linux/if_link.h, linux/netlink.h) the libc crate does not export.
/// Nested attribute of a link: its XDP state.
const IFLA_XDP: u16 = 43;
/// Asks the kernel to leave out parts of the answer.
const IFLA_EXT_MASK: u16 = 29;
/// Inside `IFLA_XDP`: the program id when one mode is attached.
const IFLA_XDP_PROG_ID: u16 = 4;
/// Inside `IFLA_XDP`: the per-mode program ids (several modes may be attached at once).
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
/// Attribute type bits that are flags, not the type.
const NLA_TYPE_MASK: u16 = !(libc::NLA_F_NESTED as u16 | libc::NLA_F_NET_BYTEORDER as u16);
/// Netlink aligns messages and attributes to 4 bytes.
const NL_ALIGN: usize = 4;
/// `struct nlattr`: length and type, 2 bytes each.
const NLA_HEADER_LEN: usize = 4;
/// `struct nlmsgerr` starts with the negated errno.
const ERRNO_LEN: usize = 4;
/// One link's description with its attributes fits easily; stats are left out.
const RECV_BUFFER_BYTES: usize = 32 * 1024;
/// The kernel answers `RTM_GETLINK` while the request is sent; this only bounds a surprise.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// Sequence number of the one request each socket sends.
const SEQ: u32 = 1;

/// XDP programs attached to one interface, by the kernel's account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpPrograms {
    /// Every attached program id (native, generic or offloaded); empty when none.
    pub ids: Vec<u32>,
}

impl XdpPrograms {
    pub fn contains(&self, program_id: u32) -> bool {
        self.ids.contains(&program_id)
    }
}

const fn align(len: usize) -> usize {
    len.div_ceil(NL_ALIGN) * NL_ALIGN
}

/// The XDP programs the kernel has on `ifindex` in this network namespace; `None` when no
/// such interface exists (any more).
pub fn xdp_programs(ifindex: u32) -> io::Result<Option<XdpPrograms>> {
    let index = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor this call just opened and nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    set_recv_timeout(&socket)?;
    let request = request(index);
    // SAFETY: the buffer is valid for its length; an unconnected netlink socket sends to the
    // kernel.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; RECV_BUFFER_BYTES];
    // SAFETY: the buffer is valid and writable for its length.
    let got = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    parse_reply(&buf[..got])
}

fn set_recv_timeout(socket: &OwnedFd) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(RECV_TIMEOUT.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(RECV_TIMEOUT.subsec_micros() as i32),
    };
    // SAFETY: `timeout` is a valid timeval for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RTM_GETLINK` for one interface, statistics left out.
fn request(ifindex: i32) -> Vec<u8> {
    let ifinfo_len = size_of::<libc::ifinfomsg>();
    let mask_attr_len = NLA_HEADER_LEN + size_of::<u32>();
    let total = size_of::<libc::nlmsghdr>() + align(ifinfo_len) + align(mask_attr_len);
    let mut out = Vec::with_capacity(total);
    // nlmsghdr: length, type, flags, sequence, port id (0: the kernel assigns it).
    out.extend_from_slice(&(total as u32).to_ne_bytes());
    out.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
    out.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    out.extend_from_slice(&SEQ.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change.
    out.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&ifindex.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.resize(size_of::<libc::nlmsghdr>() + align(ifinfo_len), 0);
    out.extend_from_slice(&(mask_attr_len as u16).to_ne_bytes());
    out.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    out.extend_from_slice(&(libc::RTEXT_FILTER_SKIP_STATS as u32).to_ne_bytes());
    out.resize(total, 0);
    out
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed rtnetlink reply: {what}"),
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the answer to `request`: the link's XDP programs, `None` for "no such device", the
/// kernel's error otherwise.
fn parse_reply(mut buf: &[u8]) -> io::Result<Option<XdpPrograms>> {
    let header_len = size_of::<libc::nlmsghdr>();
    while buf.len() >= header_len {
        let len = u32_at(buf, 0).ok_or_else(|| malformed("header"))? as usize;
        let kind = u16_at(buf, 4).ok_or_else(|| malformed("header"))?;
        if len < header_len || len > buf.len() {
            return Err(malformed("message length"));
        }
        let body = &buf[header_len..len];
        if i32::from(kind) == libc::NLMSG_ERROR {
            let errno = body
                .get(..ERRNO_LEN)
                .and_then(|b| b.try_into().ok())
                .map(i32::from_ne_bytes)
                .ok_or_else(|| malformed("error message"))?;
            return match -errno {
                0 => Ok(Some(XdpPrograms::default())),
                libc::ENODEV => Ok(None),
                e => Err(io::Error::from_raw_os_error(e)),
            };
        }
        if kind == libc::RTM_NEWLINK {
            let attrs = body
                .get(align(size_of::<libc::ifinfomsg>())..)
                .ok_or_else(|| malformed("link message"))?;
            return Ok(Some(xdp_attrs(attrs)?));
        }
        buf = buf.get(align(len)..).unwrap_or_default();
    }
    Err(malformed("no link message"))
}

/// Walks `attrs` and calls `f` with each attribute's type and payload.
fn each_attr(mut attrs: &[u8], mut f: impl FnMut(u16, &[u8])) -> io::Result<()> {
    while attrs.len() >= NLA_HEADER_LEN {
        let len = u16_at(attrs, 0).ok_or_else(|| malformed("attribute"))? as usize;
        let kind = u16_at(attrs, 2).ok_or_else(|| malformed("attribute"))? & NLA_TYPE_MASK;
        if len < NLA_HEADER_LEN || len > attrs.len() {
            return Err(malformed("attribute length"));
        }
        f(kind, &attrs[NLA_HEADER_LEN..len]);
        attrs = attrs.get(align(len)..).unwrap_or_default();
    }
    Ok(())
}

fn xdp_attrs(attrs: &[u8]) -> io::Result<XdpPrograms> {
    let mut xdp = None;
    each_attr(attrs, |kind, payload| {
        if kind == IFLA_XDP {
            xdp = Some(payload.to_vec());
        }
    })?;
    let mut programs = XdpPrograms::default();
    let Some(xdp) = xdp else {
        return Ok(programs);
    };
    each_attr(&xdp, |kind, payload| {
        let is_id = matches!(
            kind,
            IFLA_XDP_PROG_ID | IFLA_XDP_DRV_PROG_ID | IFLA_XDP_SKB_PROG_ID | IFLA_XDP_HW_PROG_ID
        );
        if let Some(id) = u32_at(payload, 0).filter(|id| is_id && *id != 0)
            && !programs.ids.contains(&id)
        {
            programs.ids.push(id);
        }
    })?;
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLA_HEADER_LEN + payload.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(align(out.len()), 0);
        out
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = size_of::<libc::nlmsghdr>() + body.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(body);
        out
    }

    fn link(attrs: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8; align(size_of::<libc::ifinfomsg>())];
        body.extend_from_slice(attrs);
        message(libc::RTM_NEWLINK, &body)
    }

    #[test]
    fn request_is_one_whole_message() {
        let r = request(7);
        assert_eq!(r.len() % NL_ALIGN, 0);
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32));
        assert_eq!(u16_at(&r, 4), Some(libc::RTM_GETLINK));
        assert_eq!(u32_at(&r, 20), Some(7), "ifi_index");
    }

    #[test]
    fn reads_every_attached_mode() {
        let name = attr(3, b"eth0\0");
        let xdp = [
            attr(2, &[3]),
            attr(IFLA_XDP_DRV_PROG_ID, &41u32.to_ne_bytes()),
            attr(IFLA_XDP_SKB_PROG_ID, &42u32.to_ne_bytes()),
        ]
        .concat();
        let reply = link(&[name, attr(IFLA_XDP | libc::NLA_F_NESTED as u16, &xdp)].concat());
        assert_eq!(
            parse_reply(&reply).unwrap(),
            Some(XdpPrograms { ids: vec![41, 42] })
        );
    }

    #[test]
    fn nothing_attached_and_no_device() {
        let xdp = attr(2, &[0]);
        assert_eq!(
            parse_reply(&link(&attr(IFLA_XDP, &xdp))).unwrap(),
            Some(XdpPrograms::default())
        );
        assert_eq!(
            parse_reply(&link(&attr(3, b"lo\0"))).unwrap(),
            Some(XdpPrograms::default())
        );
        let enodev = message(libc::NLMSG_ERROR as u16, &(-libc::ENODEV).to_ne_bytes());
        assert_eq!(parse_reply(&enodev).unwrap(), None);
        let eperm = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_reply(&eperm).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let xdp = attr(IFLA_XDP_PROG_ID, &9u32.to_ne_bytes());
        let reply = link(&attr(IFLA_XDP, &xdp));
        for cut in 0..reply.len() {
            let mut short = reply[..cut].to_vec();
            // Keep the header's length honest where there is one, so attributes get cut too.
            if short.len() >= size_of::<libc::nlmsghdr>() {
                let len = short.len() as u32;
                short[..4].copy_from_slice(&len.to_ne_bytes());
            }
            let _ = parse_reply(&short);
        }
        assert!(parse_reply(&[]).is_err());
    }

    #[test]
    fn loopback_has_no_program() {
        // Index 1 is the loopback device of every network namespace.
        const LOOPBACK_INDEX: u32 = 1;
        assert_eq!(
            xdp_programs(LOOPBACK_INDEX).unwrap(),
            Some(XdpPrograms::default())
        );
        assert_eq!(xdp_programs(u32::MAX >> 1).unwrap(), None);
    }
}
