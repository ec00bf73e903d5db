//! Everything that touches the kernel: loading and attaching the XDP program, pins, the maps.

pub mod bpffs;
pub mod capacity;
pub mod clock;
pub mod loader;
pub mod maps;
pub mod mmap;
pub mod pins;
pub mod shield;
pub mod xdp_query;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("map {map}: {source}")]
    Map {
        map: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot map {map} into memory: {source}")]
    Mmap {
        map: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the XDP program failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("XDP link: {0}")]
    Link(#[from] aya::programs::links::LinkError),
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error(
        "pins left by an incompatible build: {0}; run `api-shield detach --iface IF` to remove them (the shield stops enforcing until the next `run`)"
    )]
    Incompatible(String),
    #[error("interface {iface}: {detail}")]
    Interface { iface: String, detail: String },
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl KernelError {
    pub fn map(name: &str, source: aya::maps::MapError) -> Self {
        Self::Map {
            map: name.to_string(),
            source,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
