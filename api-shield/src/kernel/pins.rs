//! The pin directory of one interface: the XDP link, every map, and a metadata file saying
//! which build left them.

use super::KernelError;
use serde::{Deserialize, Serialize};
use std::{
    fs,
    path::{Path, PathBuf},
};

pub const LINK: &str = "link";
const META: &str = "meta.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinMeta {
    pub abi: u32,
    /// Identifies the exact program; a different one is swapped in atomically on adopt.
    pub object_id: String,
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: String,
    pub attached_at_ms: u64,
}

#[derive(Clone, Debug)]
pub struct PinDir {
    pub dir: PathBuf,
}

impl PinDir {
    pub fn new(pin_root: &Path, iface: &str) -> Self {
        Self {
            dir: pin_root.join(iface),
        }
    }

    pub fn link(&self) -> PathBuf {
        self.dir.join(LINK)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn meta_path(&self) -> PathBuf {
        self.dir.join(META)
    }

    pub fn exists(&self) -> bool {
        self.link().exists()
    }

    pub fn read_meta(&self) -> Result<PinMeta, KernelError> {
        let path = self.meta_path();
        let text = fs::read_to_string(&path).map_err(|e| {
            KernelError::Incompatible(format!(
                "{}: {e} (left by another tool or build?)",
                path.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| KernelError::Incompatible(format!("{}: {e}", path.display())))
    }

    /// Written last, with an atomic rename, so a half-made pin directory has no metadata.
    pub fn write_meta(&self, meta: &PinMeta) -> Result<(), KernelError> {
        let path = self.meta_path();
        let tmp = self.dir.join(".meta.json.tmp");
        let text = serde_json::to_string_pretty(meta).expect("serialisable");
        fs::write(&tmp, text).map_err(|e| KernelError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| KernelError::io(&path, e))
    }

    /// Removes every pin (which detaches the program once no process holds the link).
    pub fn remove_all(&self) -> Result<(), KernelError> {
        if !self.dir.exists() {
            return Ok(());
        }
        for entry in fs::read_dir(&self.dir).map_err(|e| KernelError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| KernelError::io(&self.dir, e))?;
            fs::remove_file(entry.path()).map_err(|e| KernelError::io(entry.path(), e))?;
        }
        fs::remove_dir(&self.dir).map_err(|e| KernelError::io(&self.dir, e))
    }
}
