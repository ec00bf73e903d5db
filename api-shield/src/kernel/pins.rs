//! The pin directory of one interface: the XDP link and every map, among them `META`, which
//! says which build left them (bpffs holds only BPF objects, so the record is a map).

use super::KernelError;
use api_shield_common::{maps as names, state::PinRecord};
use aya::maps::{Array, Map, MapData};
use std::{
    fs,
    path::{Path, PathBuf},
};

pub const LINK: &str = "link";

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

    pub fn exists(&self) -> bool {
        self.link().exists()
    }

    /// Reads the record of the build that left these pins. Its size is checked before it is
    /// read, so an older layout is named, not misread.
    pub fn read_meta(&self) -> Result<PinRecord, KernelError> {
        let path = self.map(names::META);
        let data = MapData::from_pin(&path).map_err(|e| {
            KernelError::Incompatible(format!(
                "{}: {e} (pins left by another tool or an older build?)",
                path.display()
            ))
        })?;
        let info = data.info().map_err(|e| KernelError::map(names::META, e))?;
        if info.value_size() as usize != size_of::<PinRecord>() {
            return Err(KernelError::Incompatible(format!(
                "{} has a {}-byte record; this build writes {}",
                path.display(),
                info.value_size(),
                size_of::<PinRecord>()
            )));
        }
        let meta: Array<MapData, PinRecord> =
            Array::try_from(Map::Array(data)).map_err(|e| KernelError::map(names::META, e))?;
        meta.get(&0, 0)
            .map_err(|e| KernelError::map(names::META, e))
    }

    /// Removes every pin (which detaches the program once no process holds the link).
    pub fn remove_all(&self) -> Result<(), KernelError> {
        if !self.dir.exists() {
            return Ok(());
        }
        // The link first: the program stops the moment it goes, before its maps do.
        let link = self.link();
        if link.exists() {
            fs::remove_file(&link).map_err(|e| KernelError::io(&link, e))?;
        }
        for entry in fs::read_dir(&self.dir).map_err(|e| KernelError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| KernelError::io(&self.dir, e))?;
            fs::remove_file(entry.path()).map_err(|e| KernelError::io(entry.path(), e))?;
        }
        fs::remove_dir(&self.dir).map_err(|e| KernelError::io(&self.dir, e))
    }
}
