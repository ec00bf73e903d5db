//! Making sure a BPF filesystem is mounted where the pins go.

use super::KernelError;
use std::{ffi::CString, fs, path::Path};

const BPF_FS_MAGIC: i64 = 0xCAFE_4A11;
/// Where the kernel expects bpffs; a fresh machine here does not mount it.
const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Ensures `pin_root` lies on a bpffs, mounting one at /sys/fs/bpf if needed, then creates it.
pub fn ensure(pin_root: &Path) -> Result<(), KernelError> {
    let probe = pin_root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(probe) {
        let mount_point = Path::new(DEFAULT_MOUNT);
        if !pin_root.starts_with(mount_point) {
            return Err(KernelError::Bpffs {
                path: pin_root.to_path_buf(),
                source: std::io::Error::other(format!(
                    "not on a BPF filesystem, and not under {DEFAULT_MOUNT} where one could be mounted"
                )),
            });
        }
        if !is_bpffs(mount_point) {
            tracing::info!(path = DEFAULT_MOUNT, "mounting bpffs");
            fs::create_dir_all(mount_point).map_err(|e| KernelError::io(mount_point, e))?;
            let src = CString::new("bpf").expect("static");
            let target = CString::new(DEFAULT_MOUNT).expect("static");
            // SAFETY: all pointers are NUL-terminated strings that outlive the call.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    src.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(KernelError::Bpffs {
                    path: mount_point.to_path_buf(),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
    }
    fs::create_dir_all(pin_root).map_err(|e| KernelError::io(pin_root, e))
}
