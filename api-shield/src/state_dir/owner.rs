//! Giving a state directory to the service user before the daemon gives up root, without
//! letting a link or hard link planted there redirect the change of owner to another file.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{Gid, Uid, fchown, fchownat};

use super::{StateDir, StateDirError, file_type};

/// Deeper than any layout the daemon writes; a deeper tree was planted.
const MAX_DEPTH: usize = 8;

impl StateDir {
    /// Makes `uid:gid` the owner of this directory and of everything under it. Links are
    /// changed themselves (never followed); a file with more than one name is refused, since
    /// its other name may be anywhere.
    pub fn chown_tree(&self, uid: Uid, gid: Gid) -> Result<(), StateDirError> {
        let stat =
            fstat(self.fd()).map_err(|e| StateDirError::io(self.path(), "inspecting", e.into()))?;
        if !owned_by(&stat, uid, gid) {
            fchown(self.fd(), Some(uid), Some(gid))
                .map_err(|e| StateDirError::io(self.path(), "changing the owner", e.into()))?;
        }
        chown_entries(self.fd(), self.path(), uid, gid, 0)
    }
}

fn owned_by(stat: &FileStat, uid: Uid, gid: Gid) -> bool {
    stat.st_uid == uid.as_raw() && stat.st_gid == gid.as_raw()
}

fn chown_entries(
    dir: BorrowedFd<'_>,
    path: &Path,
    uid: Uid,
    gid: Gid,
    depth: usize,
) -> Result<(), StateDirError> {
    if depth >= MAX_DEPTH {
        return Err(StateDirError::TooDeep {
            path: path.to_owned(),
            max: MAX_DEPTH,
        });
    }
    let listing_error = |e: nix::Error| StateDirError::io(path, "listing", e.into());
    // A descriptor of its own: reading entries moves the offset, which a dup would share.
    let listing = openat(
        dir,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(listing_error)?;
    let mut listing = Dir::from_fd(listing).map_err(listing_error)?;
    for entry in listing.iter() {
        let entry = entry.map_err(listing_error)?;
        let name: &CStr = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let child = path.join(name.to_string_lossy().as_ref());
        // The descriptor pins the inode: what is inspected is what changes owner, even if the
        // name is swapped meanwhile. O_PATH opens links and FIFOs without following them.
        let pinned = openat(
            dir,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| StateDirError::io(&child, "opening", e.into()))?;
        let stat =
            fstat(pinned.as_fd()).map_err(|e| StateDirError::io(&child, "inspecting", e.into()))?;
        let is_dir = file_type(&stat) == SFlag::S_IFDIR;
        if !is_dir && stat.st_nlink > 1 {
            return Err(StateDirError::HardLinked {
                path: child,
                links: stat.st_nlink,
            });
        }
        if !owned_by(&stat, uid, gid) {
            fchownat(
                pinned.as_fd(),
                c"",
                Some(uid),
                Some(gid),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(|e| StateDirError::io(&child, "changing the owner", e.into()))?;
        }
        if is_dir {
            chown_entries(pinned.as_fd(), &child, uid, gid, depth + 1)?;
        }
    }
    Ok(())
}
