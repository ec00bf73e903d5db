//! Shared-memory views of `BPF_F_MMAPABLE` array maps: the big tables are filled by plain
//! memory writes instead of one syscall per slot.

use std::{io, marker::PhantomData, os::fd::AsRawFd, ptr::NonNull};

/// A writable mapping of a whole array map whose values are `T`.
pub struct MapMemory<T> {
    ptr: NonNull<T>,
    len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it between threads is
// as safe as moving a `Vec<T>`.
unsafe impl<T: Send> Send for MapMemory<T> {}

impl<T: Copy> MapMemory<T> {
    /// Maps `len` values of the array map behind `fd`.
    pub fn map(fd: &impl AsRawFd, len: usize) -> io::Result<Self> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| io::Error::other("map size overflows"))?;
        // SAFETY: a fresh shared mapping of a map fd; the kernel validates the length against
        // the map and refuses maps created without BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<T>()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Self {
            ptr,
            len,
            _owns: PhantomData,
        })
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `ptr .. ptr + len` is a live mapping for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` makes this the only userspace view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for MapMemory<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; nothing refers to it after drop.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<T>());
        }
    }
}

/// Waits for an RCU grace period: every XDP program run that started before this call has
/// finished, so a table copy packets stopped reading can be rewritten safely.
pub fn wait_for_readers() -> io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integer arguments and touches no userspace memory.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
