//! The on-disk snapshot of decisions (wall-clock expiries), written before the kernel is
//! changed and restored when no pins exist (after a reboot).
//!
//! One file per origin under `origins/`, plus `index.json` naming the origins and their kernel
//! counter ids. A change rewrites only the origins it touched: a CLI block does not rewrite a
//! million-entry list. Every file is replaced atomically through `StateDir` (temporary file,
//! fsync, rename, never through a link), the origin files before the index, so a crash leaves
//! the old state or the new one. The directory belongs to the service user once the daemon has
//! given up root, so what is read back is checked like any input: names in the index must be
//! valid list names before one becomes a file name.

use super::store::{Entry, OriginList, OriginMeta, Store};
use crate::lists::valid_list_name;
use crate::model::Action;
use crate::state_dir::{StateDir, StateDirError};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf};

pub const FORMAT_VERSION: u32 = 2;
const INDEX: &str = "index.json";
const ORIGINS: &str = "origins";
/// What an origin's file name adds to its name.
const ORIGIN_SUFFIX: &str = ".json";
/// The index names a few hundred origins at most.
const MAX_INDEX_BYTES: u64 = 64 << 20;
/// About ten million entries of a hundred bytes: far beyond any kernel capacity, and a bound
/// on what a planted file can make the daemon allocate.
const MAX_ORIGIN_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub version: u32,
    pub saved_at_ms: u64,
    /// Origin names and their kernel counter ids.
    pub origin_ids: BTreeMap<String, u32>,
    /// Origins that have a file under `origins/`.
    pub lists: BTreeMap<String, OriginMeta>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginFile {
    meta: OriginMeta,
    entries: Vec<FileEntry>,
}

/// One entry on disk. Fields are spelled out (no `serde(flatten)`, which buffers every map
/// and is several times slower on million-entry lists).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    net: IpNet,
    action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<std::sync::Arc<str>>,
    created_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forced: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    State(#[from] StateDirError),
    #[error(
        "snapshot {path} is damaged ({source}); it was left untouched: move it away to start without it"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot {path} has format version {found}; this build reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("snapshot {path} names origin `{origin}` whose file is missing")]
    Missing { path: PathBuf, origin: String },
    #[error(
        "snapshot {path} is damaged: {reason}; it was left untouched: move it away to start without it"
    )]
    BadName { path: PathBuf, reason: String },
    #[error("the snapshot writer panicked")]
    Panicked,
}

/// A snapshot directory (`state_dir/<iface>`) and its `origins/`.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: StateDir,
    origins: StateDir,
}

fn parse<T: for<'de> Deserialize<'de>>(path: PathBuf, bytes: &[u8]) -> Result<T, SnapshotError> {
    serde_json::from_slice(bytes).map_err(|source| SnapshotError::Corrupt { path, source })
}

/// Writes durably and atomically; see `StateDir::write_atomic_with`.
/// Writes `value` as `name`, refusing to write more than `max` bytes: a start must be able to
/// read back whatever was written, or the next boot would find a snapshot it refuses.
fn write_json(
    dir: &StateDir,
    name: &str,
    value: &impl Serialize,
    max: u64,
) -> Result<(), SnapshotError> {
    dir.write_atomic_with(name, |out| {
        let mut capped = Capped {
            inner: out,
            left: max,
        };
        serde_json::to_writer(&mut capped, value).map_err(std::io::Error::from)
    })?;
    Ok(())
}

/// A writer that fails once more than `left` bytes were asked of it.
struct Capped<W> {
    inner: W,
    left: u64,
}

impl<W: std::io::Write> std::io::Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let len = buf.len() as u64;
        if len > self.left {
            return Err(std::io::Error::other(
                "the list is larger than a start reads back from the snapshot; nothing was \
                 applied (split it into several lists)",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn origin_file(name: &str) -> String {
    format!("{name}{ORIGIN_SUFFIX}")
}

impl SnapshotDir {
    /// Uses `dir` (an interface's directory under `state_dir`), creating `origins/` in it.
    pub fn open(dir: StateDir) -> Result<Self, SnapshotError> {
        let origins = dir.subdir(ORIGINS)?;
        Ok(Self { dir, origins })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Reads the snapshot; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<(Store, Index)>, SnapshotError> {
        let path = self.dir.name_path(INDEX)?;
        let Some(bytes) = self.dir.read(INDEX, MAX_INDEX_BYTES)? else {
            return Ok(None);
        };
        let index: Index = parse(path.clone(), &bytes)?;
        if index.version != FORMAT_VERSION {
            return Err(SnapshotError::Version {
                path,
                found: index.version,
            });
        }
        for name in index.lists.keys().chain(index.origin_ids.keys()) {
            valid_list_name(name).map_err(|e| SnapshotError::BadName {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        }
        let mut store = Store::default();
        for name in index.lists.keys() {
            let file_name = origin_file(name);
            let bytes = self
                .origins
                .read(&file_name, MAX_ORIGIN_BYTES)?
                .ok_or_else(|| SnapshotError::Missing {
                    path: path.clone(),
                    origin: name.clone(),
                })?;
            let file: OriginFile = parse(self.origins.name_path(&file_name)?, &bytes)?;
            let mut meta = file.meta;
            // Shown by `lists`: made safe whoever wrote the file (the entries are checked with
            // the input rules once the daemon knows its config).
            meta.source = crate::text::sanitize(&meta.source).into_owned();
            let mut list = OriginList {
                meta,
                entries: Default::default(),
            };
            list.entries.reserve(file.entries.len());
            for e in file.entries {
                let entry = Entry {
                    reason: e.reason,
                    created_at_ms: e.created_at_ms,
                    expires_at_ms: e.expires_at_ms,
                    forced: e.forced,
                };
                list.entries.insert((e.action, e.net), entry);
            }
            let revision = list.meta.revision;
            store.replace_origin(name, list);
            debug_assert_eq!(store.revision(name), 1);
            restore_revision(&mut store, name, revision);
        }
        Ok(Some((store, index)))
    }

    /// Writes the origins named in `changed` (removing the files of origins that are gone),
    /// then the index.
    pub fn save(
        &self,
        store: &Store,
        origin_ids: &BTreeMap<String, u32>,
        changed: &[String],
        now_ms: u64,
    ) -> Result<(), SnapshotError> {
        for name in changed {
            if let Some(list) = store.origin(name) {
                let file = OriginFile {
                    meta: list.meta.clone(),
                    entries: list
                        .entries
                        .iter()
                        .map(|((action, net), entry)| FileEntry {
                            net: *net,
                            action: *action,
                            reason: entry.reason.clone(),
                            created_at_ms: entry.created_at_ms,
                            expires_at_ms: entry.expires_at_ms,
                            forced: entry.forced,
                        })
                        .collect(),
                };
                write_json(&self.origins, &origin_file(name), &file, MAX_ORIGIN_BYTES)?;
            }
        }
        let index = Index {
            version: FORMAT_VERSION,
            saved_at_ms: now_ms,
            origin_ids: origin_ids.clone(),
            lists: store
                .origins()
                .map(|(n, l)| (n.to_string(), l.meta.clone()))
                .collect(),
        };
        write_json(&self.dir, INDEX, &index, MAX_INDEX_BYTES)?;
        for name in changed {
            if store.origin(name).is_none() {
                // A file left behind is named by no index: harmless, and replaced if the list
                // comes back.
                let _ = self.origins.remove(&origin_file(name));
            }
        }
        Ok(())
    }

    /// Writes everything (the first save of a daemon, after a restore).
    pub fn save_all(
        &self,
        store: &Store,
        origin_ids: &BTreeMap<String, u32>,
        now_ms: u64,
    ) -> Result<(), SnapshotError> {
        let names: Vec<String> = store.origins().map(|(n, _)| n.to_string()).collect();
        self.save(store, origin_ids, &names, now_ms)
    }
}

/// `replace_origin` numbers revisions from the store's view; a restored list keeps the
/// revision it had, so push clients holding it are not told of a conflict after a restart.
fn restore_revision(store: &mut Store, name: &str, revision: u64) {
    store.set_revision(name, revision);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Decision;
    use std::{fs, path::Path};

    fn open(path: &Path) -> SnapshotDir {
        SnapshotDir::open(StateDir::open(path).unwrap()).unwrap()
    }

    fn sample() -> Store {
        let mut store = Store::from_decisions([
            Decision {
                net: "2001:db8::/48".parse().unwrap(),
                action: Action::Block,
                origin: "cli".into(),
                reason: Some("test".into()),
                created_at_ms: 1,
                expires_at_ms: Some(99),
            },
            Decision {
                net: "198.18.0.0/24".parse().unwrap(),
                action: Action::Allow,
                origin: "list-a".into(),
                reason: None,
                created_at_ms: 2,
                expires_at_ms: None,
            },
        ]);
        // Forced past the lockout guard: a restore must know it.
        store.mark_forced("cli", Action::Block, &"2001:db8::/48".parse().unwrap());
        store
    }

    fn ids() -> BTreeMap<String, u32> {
        BTreeMap::from([("cli".to_string(), 1), ("list-a".to_string(), 2)])
    }

    #[test]
    fn nothing_larger_than_a_start_reads_back_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(dir.path());
        let big = vec![7u8; 1000];
        let err = write_json(&snap.origins, "big.json", &big, 100).unwrap_err();
        assert!(
            err.to_string().contains("larger than a start reads back"),
            "{err}"
        );
        assert!(snap.origins.read("big.json", u64::MAX).unwrap().is_none());
        write_json(&snap.origins, "big.json", &big, 10_000).unwrap();
        assert!(snap.origins.read("big.json", 10_000).unwrap().is_some());
    }

    #[test]
    fn round_trip_keeps_entries_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(&dir.path().join("eth0"));
        assert!(snap.load().unwrap().is_none());
        let store = sample();
        snap.save_all(&store, &ids(), 5).unwrap();
        let (loaded, index) = snap.load().unwrap().unwrap();
        assert_eq!(loaded, store);
        assert_eq!(index.origin_ids, ids());
    }

    #[test]
    fn only_changed_origins_are_rewritten_and_gone_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(dir.path());
        let store = sample();
        snap.save_all(&store, &ids(), 5).unwrap();
        let a = dir.path().join("origins/list-a.json");
        let before = fs::metadata(&a).unwrap().modified().unwrap();
        let mut next = store.clone();
        next.upsert(Decision {
            net: "198.18.1.1/32".parse().unwrap(),
            action: Action::Block,
            origin: "cli".into(),
            reason: None,
            created_at_ms: 3,
            expires_at_ms: None,
        });
        let changed = next.changed_origins(&store);
        snap.save(&next, &ids(), &changed, 6).unwrap();
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), before);
        assert_eq!(snap.load().unwrap().unwrap().0, next);
        let mut dropped = next.clone();
        dropped.drop_origin("list-a");
        snap.save(&dropped, &ids(), &dropped.changed_origins(&next), 7)
            .unwrap();
        assert!(!a.exists());
        assert_eq!(snap.load().unwrap().unwrap().0, dropped);
    }

    #[test]
    fn truncated_snapshot_is_a_clear_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(dir.path());
        snap.save_all(&sample(), &ids(), 5).unwrap();
        let path = dir.path().join("origins/cli.json");
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = snap.load().unwrap_err().to_string();
        assert!(err.contains("damaged") && err.contains("cli.json"), "{err}");
        assert_eq!(fs::read(&path).unwrap().len(), text.len() / 2);
    }

    #[test]
    fn other_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let snap = open(dir.path());
        snap.save_all(&sample(), &ids(), 5).unwrap();
        let path = dir.path().join(INDEX);
        let mut index: Index = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        index.version = FORMAT_VERSION + 1;
        fs::write(&path, serde_json::to_string(&index).unwrap()).unwrap();
        assert!(matches!(snap.load(), Err(SnapshotError::Version { .. })));
    }

    #[test]
    fn names_in_the_index_that_are_not_list_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let snap = open(&state.join("eth0"));
        snap.save_all(&sample(), &ids(), 5).unwrap();
        let outside = tmp.path().join("x.json");
        fs::write(&outside, r#"{"meta":{},"entries":[]}"#).unwrap();
        let path = state.join("eth0").join(INDEX);
        let text = fs::read_to_string(&path).unwrap();
        for evil in ["../../../x", "a/b", ".hidden"] {
            let mut index: Index = serde_json::from_str(&text).unwrap();
            let meta = index.lists.remove("cli").unwrap();
            index.lists.insert(evil.into(), meta);
            fs::write(&path, serde_json::to_string(&index).unwrap()).unwrap();
            let err = snap.load().unwrap_err();
            assert!(
                matches!(err, SnapshotError::BadName { .. }),
                "{evil}: {err}"
            );
            assert!(err.to_string().contains(evil), "{err}");
        }
        let mut index: Index = serde_json::from_str(&text).unwrap();
        index.origin_ids.insert("../x".into(), 9);
        fs::write(&path, serde_json::to_string(&index).unwrap()).unwrap();
        assert!(matches!(snap.load(), Err(SnapshotError::BadName { .. })));
    }

    #[test]
    fn a_link_in_place_of_a_snapshot_file_is_refused_on_load() {
        let tmp = tempfile::tempdir().unwrap();
        let snap = open(&tmp.path().join("eth0"));
        snap.save_all(&sample(), &ids(), 5).unwrap();
        let canary = tmp.path().join("canary");
        fs::write(&canary, "precious").unwrap();
        let origin = tmp.path().join("eth0/origins/cli.json");
        fs::remove_file(&origin).unwrap();
        std::os::unix::fs::symlink(&canary, &origin).unwrap();
        let err = snap.load().unwrap_err();
        assert!(
            matches!(err, SnapshotError::State(StateDirError::Symlink { .. })),
            "{err}"
        );
        // Saving replaces the link, not the file it points at.
        snap.save_all(&sample(), &ids(), 6).unwrap();
        assert_eq!(fs::read_to_string(&canary).unwrap(), "precious");
        assert!(fs::symlink_metadata(&origin).unwrap().is_file());
        assert_eq!(snap.load().unwrap().unwrap().0, sample());
    }
}
