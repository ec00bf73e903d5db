use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

use super::*;

const CANARY_TEXT: &str = "root's precious file\n";
/// `nobody` / `nogroup` on Debian.
const NOBODY: u32 = 65534;
const SMALL: u64 = 1 << 10;

/// A state directory and, beside it (outside it), a root-owned file a planted link points at.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: StateDir,
    canary: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary");
        fs::write(&canary, CANARY_TEXT).unwrap();
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o600)).unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        Self {
            _tmp: tmp,
            dir,
            canary,
        }
    }

    fn at(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn plant_link(&self, name: &str) {
        symlink(&self.canary, self.at(name)).unwrap();
    }

    fn assert_canary_untouched(&self) {
        assert_eq!(fs::read_to_string(&self.canary).unwrap(), CANARY_TEXT);
        let meta = fs::metadata(&self.canary).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "the canary changed owner");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_link_at_the_name_is_replaced_not_written_through() {
    let f = Fixture::new();
    f.plant_link("index.json");
    f.dir.write_atomic("index.json", b"{}").unwrap();
    f.assert_canary_untouched();
    let meta = fs::symlink_metadata(f.at("index.json")).unwrap();
    assert!(meta.is_file(), "the link is still there");
    assert_eq!(fs::read(f.at("index.json")).unwrap(), b"{}");
}

#[test]
fn a_link_at_the_temporary_name_is_removed_not_written_through() {
    let f = Fixture::new();
    f.plant_link("index.json.tmp");
    f.dir.write_atomic("index.json", b"new").unwrap();
    f.assert_canary_untouched();
    assert_eq!(fs::read(f.at("index.json")).unwrap(), b"new");
    assert!(fs::symlink_metadata(f.at("index.json.tmp")).is_err());
}

#[test]
fn a_crash_leftover_or_a_fifo_at_the_temporary_name_does_not_block_the_write() {
    let f = Fixture::new();
    fs::write(f.at("a.tmp"), "half a file from a crash").unwrap();
    f.dir.write_atomic("a", b"whole").unwrap();
    assert_eq!(fs::read(f.at("a")).unwrap(), b"whole");
    mkfifo(&f.at("b.tmp"));
    f.dir.write_atomic("b", b"whole").unwrap();
    assert_eq!(fs::read(f.at("b")).unwrap(), b"whole");
    assert!(fs::symlink_metadata(f.at("a.tmp")).is_err());
    assert!(fs::symlink_metadata(f.at("b.tmp")).is_err());
}

#[test]
fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
    let f = Fixture::new();
    f.dir.write_atomic("a", b"old").unwrap();
    let err = f
        .dir
        .write_atomic_with("a", |out| {
            out.write_all(b"partial")?;
            Err(io::Error::other("serialising failed"))
        })
        .unwrap_err();
    assert!(err.to_string().contains("serialising failed"), "{err}");
    assert_eq!(fs::read(f.at("a")).unwrap(), b"old");
    assert!(fs::symlink_metadata(f.at("a.tmp")).is_err());
}

#[test]
fn written_files_are_0640() {
    let f = Fixture::new();
    f.dir.write_atomic("a", b"x").unwrap();
    let mode = fs::metadata(f.at("a")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, FILE_MODE);
}

#[test]
fn reads_refuse_links_fifos_and_oversize_files() {
    let f = Fixture::new();
    f.plant_link("linked");
    let err = f.dir.read("linked", SMALL).unwrap_err();
    assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("linked"), "{err}");
    // A FIFO would block a plain open until a writer came: refused at once.
    mkfifo(&f.at("fifo"));
    let err = f.dir.read("fifo", SMALL).unwrap_err();
    assert!(
        matches!(err, StateDirError::WrongType { found: "FIFO", .. }),
        "{err}"
    );
    fs::write(f.at("big"), vec![b'x'; 2 * SMALL as usize]).unwrap();
    let err = f.dir.read("big", SMALL).unwrap_err();
    assert!(matches!(err, StateDirError::TooLarge { .. }), "{err}");
    assert!(f.dir.read("missing", SMALL).unwrap().is_none());
    fs::write(f.at("fine"), "ok").unwrap();
    assert_eq!(f.dir.read("fine", SMALL).unwrap().unwrap(), b"ok");
}

#[test]
fn names_that_leave_the_directory_are_refused_and_create_nothing() {
    let f = Fixture::new();
    for name in ["", ".", "..", "../escape", "a/b", "/etc/x", "nul\0byte"] {
        let err = f.dir.write_atomic(name, b"x").unwrap_err();
        assert!(
            matches!(err, StateDirError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        assert!(f.dir.read(name, SMALL).is_err(), "{name:?}");
        assert!(f.dir.subdir(name).is_err(), "{name:?}");
    }
    let parent = f.dir.path().parent().unwrap();
    assert!(!parent.join("escape").exists());
    assert_eq!(fs::read_dir(f.dir.path()).unwrap().count(), 0);
}

#[test]
fn a_link_in_place_of_a_directory_is_refused() {
    let f = Fixture::new();
    let elsewhere = f.dir.path().parent().unwrap().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, f.at("eth0")).unwrap();
    let err = f.dir.subdir("eth0").unwrap_err();
    assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
    let err = StateDir::open(&f.at("eth0")).unwrap_err();
    assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
    fs::write(f.at("file"), "").unwrap();
    let err = f.dir.subdir("file").unwrap_err();
    assert!(
        matches!(
            err,
            StateDirError::WrongType {
                found: "regular file",
                ..
            }
        ),
        "{err}"
    );
    // A real one is created, then opened again.
    let sub = f.dir.subdir("eth1").unwrap();
    sub.write_atomic("a", b"x").unwrap();
    assert_eq!(
        f.dir
            .subdir("eth1")
            .unwrap()
            .read("a", SMALL)
            .unwrap()
            .unwrap(),
        b"x"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn the_lock_is_exclusive_names_its_holder_and_is_released_on_drop() {
    let f = Fixture::new();
    let held = f.dir.lock_exclusive("daemon.lock").unwrap();
    // Another open file description, as another process would have.
    let other = StateDir::open(f.dir.path()).unwrap();
    let err = other.lock_exclusive("daemon.lock").unwrap_err();
    assert!(
        matches!(err, StateDirError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    other.lock_exclusive("daemon.lock").unwrap();
}

#[test]
fn a_link_or_a_hard_link_at_the_lock_name_is_refused() {
    let f = Fixture::new();
    f.plant_link("daemon.lock");
    let err = f.dir.lock_exclusive("daemon.lock").unwrap_err();
    assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
    f.assert_canary_untouched();
    fs::remove_file(f.at("daemon.lock")).unwrap();
    // Root may hard-link anything: the lock would truncate the canary through its second name.
    fs::hard_link(&f.canary, f.at("daemon.lock")).unwrap();
    let err = f.dir.lock_exclusive("daemon.lock").unwrap_err();
    assert!(matches!(err, StateDirError::HardLinked { .. }), "{err}");
    f.assert_canary_untouched();
}

#[test]
fn chown_tree_changes_links_themselves_and_refuses_hard_links() {
    let (nobody_uid, nobody_gid) = (Uid::from_raw(NOBODY), Gid::from_raw(NOBODY));
    let f = Fixture::new();
    let sub = f.dir.subdir("eth0").unwrap();
    sub.write_atomic("index.json", b"{}").unwrap();
    f.plant_link("index.json.tmp");
    fs::create_dir(f.at("eth0/origins")).unwrap();
    symlink(&f.canary, f.at("eth0/origins/cli.json")).unwrap();
    f.dir.chown_tree(nobody_uid, nobody_gid).unwrap();
    f.assert_canary_untouched();
    for path in [
        f.dir.path().to_owned(),
        f.at("eth0"),
        f.at("eth0/index.json"),
        f.at("index.json.tmp"),
        f.at("eth0/origins/cli.json"),
    ] {
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (NOBODY, NOBODY),
            "{}",
            path.display()
        );
    }
    // Root may hard-link anything; a second name of the canary inside the tree is refused.
    fs::hard_link(&f.canary, f.at("eth0/linked")).unwrap();
    let err = f.dir.chown_tree(nobody_uid, nobody_gid).unwrap_err();
    assert!(matches!(err, StateDirError::HardLinked { .. }), "{err}");
    fs::remove_file(f.at("eth0/linked")).unwrap();
    f.assert_canary_untouched();
}
