//! Files under `state_dir`, read and written so that whoever can write there cannot make the
//! daemon (root at start) touch anything else.
//!
//! `state_dir` belongs to the service user (`run_as`) once the daemon has given up root, so
//! anything in it may have been planted by that user: a symlink at a file's name or at its
//! temporary name, a FIFO, a directory swapped for a link, a hard link. Every access goes
//! through a directory file descriptor opened `O_NOFOLLOW | O_DIRECTORY` and `*at()` calls
//! relative to it, never through a path:
//! - a write creates `<name>.tmp` with `O_CREAT | O_EXCL | O_NOFOLLOW` (a leftover of any kind,
//!   from a crash or planted, is unlinked, which never follows it, and the create retried
//!   once), fsyncs it, `renameat`s it over `<name>` (which replaces a link there instead of
//!   writing through it) and fsyncs the directory: a crash leaves the old file or the new one;
//! - a read opens `O_NOFOLLOW | O_NONBLOCK` (a planted FIFO cannot hang the start), refuses
//!   anything but a regular file and reads at most a stated size;
//! - subdirectories are opened the same way, so a link in place of one is refused.
//!
//! One writer per name at a time: two concurrent writes of one name in one directory share the
//! temporary name. The daemon serialises its snapshot writes; other writers use their own names.

mod error;
mod lock;
mod owner;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

pub use error::StateDirError;
pub use lock::StateLock;

/// Directories: the owner writes, its group may look.
const DIR_MODE: u32 = 0o750;
/// Files: the owner writes, its group may read.
const FILE_MODE: u32 = 0o640;
/// What a temporary file's name adds to the name it replaces.
const TEMP_SUFFIX: &str = ".tmp";

/// An open directory under `state_dir`. Clones share the descriptor.
#[derive(Clone, Debug)]
pub struct StateDir {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

impl StateDir {
    /// Opens the directory at `path`, creating it (and missing parents, mode 0750) first. The
    /// last component must be a real directory, not a link to one; the parents are the
    /// operator's choice and may be links.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        let fd = match open_dir(AT_FDCWD, path, path) {
            Err(StateDirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(path)
                    .map_err(|source| StateDirError::io(path, "creating the directory", source))?;
                open_dir(AT_FDCWD, path, path)?
            }
            other => other?,
        };
        Ok(Self {
            fd: Arc::new(fd),
            path: path.to_owned(),
        })
    }

    /// Opens the subdirectory `name`, creating it (mode 0750) if missing.
    pub fn subdir(&self, name: &str) -> Result<Self, StateDirError> {
        let path = self.name_path(name)?;
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(StateDirError::io(&path, "creating the directory", e.into())),
        }
        let fd = open_dir(self.fd.as_fd(), name, &path)?;
        Ok(Self {
            fd: Arc::new(fd),
            path,
        })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `name` is, for messages; checks it is a plain file name.
    pub fn name_path(&self, name: &str) -> Result<PathBuf, StateDirError> {
        check_name(&self.path, name)?;
        Ok(self.path.join(name))
    }

    /// Replaces `name` with `bytes`, durably and atomically.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateDirError> {
        self.write_atomic_with(name, |w| w.write_all(bytes))
    }

    /// Replaces `name` with what `write` produces (buffered), durably and atomically. Nothing
    /// changes under `name` if `write` fails.
    pub fn write_atomic_with(
        &self,
        name: &str,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), StateDirError> {
        let path = self.name_path(name)?;
        let temp = format!("{name}{TEMP_SUFFIX}");
        let temp_path = self.name_path(&temp)?;
        let file = self.create_exclusive(&temp, &temp_path)?;
        let written = (|| {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()
        })()
        .map_err(|source| StateDirError::io(&temp_path, "writing", source));
        let renamed = written.and_then(|()| {
            renameat(self.fd.as_fd(), temp.as_str(), self.fd.as_fd(), name)
                .map_err(|e| StateDirError::io(&path, "renaming the new file into place", e.into()))
        });
        if let Err(e) = renamed {
            // Best effort: the next write unlinks a leftover anyway.
            let _ = unlinkat(self.fd.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        fsync(self.fd.as_fd())
            .map_err(|e| StateDirError::io(&self.path, "syncing the directory", e.into()))
    }

    /// Reads `name`; `Ok(None)` when it does not exist. Refuses links, anything but a regular
    /// file, and files over `max_len` bytes.
    pub fn read(&self, name: &str, max_len: u64) -> Result<Option<Vec<u8>>, StateDirError> {
        let path = self.name_path(name)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(StateDirError::Symlink { path }),
            Err(e) => return Err(StateDirError::io(&path, "opening", e.into())),
        };
        let stat = fstat(&fd).map_err(|e| StateDirError::io(&path, "inspecting", e.into()))?;
        expect_type(&stat, SFlag::S_IFREG, &path)?;
        let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
        if size > max_len {
            return Err(StateDirError::TooLarge { path, max: max_len });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // One byte more than allowed tells a file that grew since `fstat`.
        File::from(fd)
            .take(max_len.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| StateDirError::io(&path, "reading", source))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max_len {
            return Err(StateDirError::TooLarge { path, max: max_len });
        }
        Ok(Some(bytes))
    }

    /// Renames `name` to `to` in this directory (a link is moved, never followed), replacing
    /// whatever `to` was: a damaged file kept aside for a person to look at.
    pub fn rename(&self, name: &str, to: &str) -> Result<(), StateDirError> {
        let path = self.name_path(name)?;
        self.name_path(to)?;
        renameat(self.fd.as_fd(), name, self.fd.as_fd(), to)
            .map_err(|e| StateDirError::io(&path, "renaming", e.into()))
    }

    /// Removes the file `name` (a link there is removed, never followed); a missing one is fine.
    pub fn remove(&self, name: &str) -> Result<(), StateDirError> {
        let path = self.name_path(name)?;
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(StateDirError::io(&path, "removing", e.into())),
        }
    }

    /// Creates `temp` for writing; whatever is already there (a crash's leftover, a planted
    /// link or FIFO) is unlinked first, without being followed or opened.
    fn create_exclusive(&self, temp: &str, temp_path: &Path) -> Result<File, StateDirError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::from_bits_truncate(FILE_MODE);
        let create = || openat(self.fd.as_fd(), temp, flags, mode);
        let fd = match create() {
            Err(Errno::EEXIST) => {
                unlinkat(self.fd.as_fd(), temp, UnlinkatFlags::NoRemoveDir).map_err(|e| {
                    StateDirError::io(temp_path, "removing a leftover temporary file", e.into())
                })?;
                create()
            }
            other => other,
        }
        .map_err(|e| StateDirError::io(temp_path, "creating", e.into()))?;
        Ok(File::from(fd))
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Opens a directory without following a link at its last component.
fn open_dir<Fd: AsFd + Copy>(
    at: Fd,
    name: &(impl nix::NixPath + ?Sized),
    path: &Path,
) -> Result<OwnedFd, StateDirError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(at, name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        // A link gives ELOOP (or ENOTDIR, as O_DIRECTORY is checked first): say which it is.
        Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            let opening = || StateDirError::io(path, "opening the directory", e.into());
            Err(match fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if file_type(&st) == SFlag::S_IFLNK => StateDirError::Symlink {
                    path: path.to_owned(),
                },
                Ok(st) => expect_type(&st, SFlag::S_IFDIR, path)
                    .err()
                    .unwrap_or_else(opening),
                Err(_) => opening(),
            })
        }
        Err(e) => Err(StateDirError::io(path, "opening the directory", e.into())),
    }
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

fn expect_type(stat: &FileStat, expected: SFlag, path: &Path) -> Result<(), StateDirError> {
    let found = file_type(stat);
    if found == expected {
        return Ok(());
    }
    let name = |t: SFlag| match t {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        _ => "file of unknown type",
    };
    Err(StateDirError::WrongType {
        path: path.to_owned(),
        expected: name(expected),
        found: name(found),
    })
}

/// A name directly inside a directory: no separators, not `.` or `..`, no NUL.
fn check_name(dir: &Path, name: &str) -> Result<(), StateDirError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a directory itself or its parent")
    } else if name.contains('/') {
        Some("it holds a `/`")
    } else if name.contains('\0') {
        Some("it holds a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StateDirError::InvalidName {
            dir: dir.to_owned(),
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}
