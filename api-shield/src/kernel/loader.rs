//! Loading, attaching, adopting and detaching the XDP program of one interface.

use super::{
    KernelError, bpffs, clock,
    maps::{Capacity, ShieldMaps},
    pins::PinDir,
};
use api_shield_common::{
    ABI_VERSION, maps as names,
    state::{PinRecord, XDP_MODE_NATIVE, XDP_MODE_SKB},
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use std::path::Path;

/// How to attach: `Auto` tries the driver's native XDP and falls back to generic (SKB) mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Auto,
    Native,
    Skb,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: String,
    pub program_id: u32,
    /// The daemon found the program already attached and took it over.
    pub adopted: bool,
}

pub struct Kernel {
    pub maps: ShieldMaps,
    pub pins: Option<PinDir>,
    pub attachment: Option<Attachment>,
    /// The loaded object, while this process owns a program not yet attached (or under test).
    ebpf: Option<Ebpf>,
    iface: String,
}

/// A short identifier of the embedded object, so a different build is noticed on adopt.
pub fn object_id() -> u64 {
    // FNV-1a: stable for the same object and cheap; not a security measure.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    crate::BPF_OBJECT
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

fn mode_name(mode: u32) -> &'static str {
    match mode {
        XDP_MODE_NATIVE => "native",
        XDP_MODE_SKB => "skb",
        _ => "unknown",
    }
}

fn loader<'a>(caps: &Capacity) -> EbpfLoader<'a> {
    let mut l = EbpfLoader::new();
    l.map_max_entries(
        names::V4_TBL8,
        caps.v4_nodes * names::NODE_ELEMENTS * names::TABLE_COPIES,
    )
    .map_max_entries(names::RULES, caps.rules)
    .map_max_entries(names::V6_LIST0, caps.v6_entries)
    .map_max_entries(names::V6_LIST1, caps.v6_entries)
    .map_max_entries(names::BUCKETS, caps.sketch_width * names::SKETCH_ROWS)
    .map_max_entries(names::OFFENDERS, caps.offenders)
    .map_max_entries(names::AUTO_BLOCKS, caps.auto_blocks);
    l
}

fn load_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, KernelError> {
    let prog: &mut Xdp = ebpf
        .program_mut(names::PROGRAM)
        .ok_or_else(|| {
            KernelError::Incompatible(format!("object has no program {}", names::PROGRAM))
        })?
        .try_into()?;
    prog.load()?;
    Ok(prog)
}

fn ifindex(iface: &str) -> Result<u32, KernelError> {
    let c = std::ffi::CString::new(iface).map_err(|_| KernelError::Interface {
        iface: iface.into(),
        detail: "name contains NUL".into(),
    })?;
    // SAFETY: a NUL-terminated name that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(KernelError::Interface {
            iface: iface.into(),
            detail: format!("no such interface ({})", std::io::Error::last_os_error()),
        });
    }
    Ok(index)
}

impl Kernel {
    /// Loads the program and its maps without attaching or pinning anything: for tests and
    /// benchmarks through BPF_PROG_TEST_RUN.
    pub fn load_detached(caps: &Capacity) -> Result<Self, KernelError> {
        let mut ebpf = loader(caps).load(crate::BPF_OBJECT)?;
        load_program(&mut ebpf)?;
        let maps = ShieldMaps::open(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| KernelError::Incompatible(format!("object has no map {name}")))
        })?;
        Ok(Self {
            maps,
            pins: None,
            attachment: None,
            ebpf: Some(ebpf),
            iface: String::new(),
        })
    }

    /// Opens the shield of `iface`. Pins left by this build are adopted (no gap in enforcement,
    /// no second attach); pins of another object with the same layout are adopted and the
    /// program swapped atomically on the existing link; anything else is refused. Without pins,
    /// the program is loaded, its maps pinned, but it is not attached until `attach`, so the
    /// caller can restore decisions first.
    pub fn open(iface: &str, pin_root: &Path, caps: &Capacity) -> Result<Self, KernelError> {
        bpffs::ensure(pin_root)?;
        let pins = PinDir::new(pin_root, iface);
        let index = ifindex(iface)?;
        if pins.exists() {
            return Self::adopt(iface, index, pins);
        }
        // Map pins without a link are the remains of an interrupted start: nothing enforced
        // them, so they hold nothing the snapshot does not.
        pins.remove_all()?;
        std::fs::create_dir_all(&pins.dir).map_err(|e| KernelError::io(&pins.dir, e))?;
        let mut l = loader(caps);
        for name in names::ALL {
            l.map_pin_path(name, pins.map(name));
        }
        let mut ebpf = l.load(crate::BPF_OBJECT)?;
        load_program(&mut ebpf)?;
        let maps = ShieldMaps::open(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| KernelError::Incompatible(format!("object has no map {name}")))
        })?;
        Ok(Self {
            maps,
            pins: Some(pins),
            attachment: None,
            ebpf: Some(ebpf),
            iface: iface.to_string(),
        })
    }

    fn adopt(iface: &str, index: u32, pins: PinDir) -> Result<Self, KernelError> {
        let meta = pins.read_meta()?;
        if meta.abi != ABI_VERSION {
            return Err(KernelError::Incompatible(format!(
                "{} holds layout version {}, this build uses {ABI_VERSION}",
                pins.dir.display(),
                meta.abi
            )));
        }
        if meta.ifindex != index {
            return Err(KernelError::Incompatible(format!(
                "{} belongs to ifindex {}, but {iface} is now ifindex {index} (interface recreated?)",
                pins.dir.display(),
                meta.ifindex
            )));
        }
        let maps = ShieldMaps::open(|name| {
            let data = MapData::from_pin(pins.map(name)).map_err(|e| KernelError::map(name, e))?;
            Map::from_map_data(data).map_err(|e| KernelError::map(name, e))
        })?;
        let link: FdLink = PinnedLink::from_pin(pins.link())?.into();
        let mut program_id = link.info()?.program_id();
        let current = object_id();
        let mut maps = maps;
        if meta.object_id != current {
            // Same layout, different program: load it on the pinned maps and swap it in on the
            // existing link, which the kernel does atomically.
            let mut l = EbpfLoader::new();
            for name in names::ALL {
                l.map_pin_path(name, pins.map(name));
            }
            let mut ebpf = l.load(crate::BPF_OBJECT)?;
            let prog = load_program(&mut ebpf)?;
            let xdp_link = XdpLink::try_from(link)?;
            let id = prog.attach_to_link(xdp_link)?;
            let owned = prog.take_link(id)?;
            let fd_link = FdLink::try_from(owned)?;
            program_id = fd_link.info()?.program_id();
            // The pin still names the same link; dropping our fd leaves it attached.
            drop(fd_link);
            let record = PinRecord {
                object_id: current,
                ..meta
            };
            maps.meta
                .set(0, record, 0)
                .map_err(|e| KernelError::map(names::META, e))?;
            tracing::info!(
                iface,
                program_id,
                "replaced the pinned program with this build's"
            );
        }
        Ok(Self {
            maps,
            attachment: Some(Attachment {
                iface: iface.to_string(),
                ifindex: index,
                xdp_mode: mode_name(meta.xdp_mode).to_string(),
                program_id,
                adopted: true,
            }),
            pins: Some(pins),
            ebpf: None,
            iface: iface.to_string(),
        })
    }

    /// Attaches a freshly loaded program and pins the link; does nothing if adopted.
    pub fn attach(&mut self, mode: AttachMode) -> Result<&Attachment, KernelError> {
        if self.attachment.is_none() {
            let attachment = self.attach_fresh(mode)?;
            self.attachment = Some(attachment);
        }
        Ok(self.attachment.as_ref().expect("set above"))
    }

    fn attach_fresh(&mut self, mode: AttachMode) -> Result<Attachment, KernelError> {
        let iface = self.iface.clone();
        let pins = self.pins.clone().ok_or_else(|| KernelError::Interface {
            iface: iface.clone(),
            detail: "a detached test load cannot be attached".into(),
        })?;
        let index = ifindex(&iface)?;
        let ebpf = self.ebpf.as_mut().expect("fresh loads keep their object");
        let prog: &mut Xdp = ebpf
            .program_mut(names::PROGRAM)
            .expect("loaded above")
            .try_into()?;
        let (id, used) = match mode {
            AttachMode::Native => (prog.attach(&iface, XdpMode::Driver)?, XDP_MODE_NATIVE),
            AttachMode::Skb => (prog.attach(&iface, XdpMode::Skb)?, XDP_MODE_SKB),
            AttachMode::Auto => match prog.attach(&iface, XdpMode::Driver) {
                Ok(id) => (id, XDP_MODE_NATIVE),
                Err(e) => {
                    tracing::warn!(iface, error = %e, "native XDP unavailable; falling back to generic (skb) mode");
                    (prog.attach(&iface, XdpMode::Skb)?, XDP_MODE_SKB)
                }
            },
        };
        let fd_link = FdLink::try_from(prog.take_link(id)?)?;
        let program_id = fd_link.info()?.program_id();
        // The record goes in before the link is pinned: pins with a link always say who left them.
        let record = PinRecord {
            abi: ABI_VERSION,
            ifindex: index,
            object_id: object_id(),
            attached_at_ms: clock::now_unix_ms(),
            xdp_mode: used,
            _pad: 0,
        };
        self.maps
            .meta
            .set(0, record, 0)
            .map_err(|e| KernelError::map(names::META, e))?;
        let link_path = pins.link();
        fd_link.pin(&link_path).map_err(|source| KernelError::Pin {
            path: link_path.clone(),
            source,
        })?;
        tracing::info!(
            iface,
            mode = mode_name(used),
            program_id,
            "XDP program attached and pinned"
        );
        Ok(Attachment {
            iface,
            ifindex: index,
            xdp_mode: mode_name(used).to_string(),
            program_id,
            adopted: false,
        })
    }

    /// The loaded program, for BPF_PROG_TEST_RUN (only for loads this process made).
    pub fn program(&self) -> Option<&Xdp> {
        self.ebpf.as_ref()?.program(names::PROGRAM)?.try_into().ok()
    }
}

/// Removes the shield from `iface`: unpinning the link detaches the program. Returns false
/// when there was nothing to remove.
pub fn detach(iface: &str, pin_root: &Path) -> Result<bool, KernelError> {
    let pins = PinDir::new(pin_root, iface);
    if !pins.dir.exists() {
        return Ok(false);
    }
    pins.remove_all()?;
    Ok(true)
}
