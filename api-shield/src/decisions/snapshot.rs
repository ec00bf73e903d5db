//! The on-disk snapshot of decisions (wall-clock expiries), written before the kernel is
//! changed and restored when no pins exist (after a reboot).

use crate::model::Decision;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub saved_at_ms: u64,
    /// Origin names and their kernel counter ids.
    pub origins: BTreeMap<String, u32>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading snapshot {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    #[error("writing snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the snapshot at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let snap: Snapshot = serde_json::from_str(&text).map_err(|source| SnapshotError::Corrupt {
        path: path.into(),
        source,
    })?;
    if snap.version != FORMAT_VERSION {
        return Err(SnapshotError::Version {
            path: path.into(),
            found: snap.version,
        });
    }
    Ok(Some(snap))
}

/// Writes `snap` durably: a temporary file, fsync, rename over the old one, fsync the folder.
/// A crash at any point leaves either the old snapshot or the new one.
pub fn save(path: &Path, snap: &Snapshot) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Write {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp).map_err(err)?;
        let text = serde_json::to_vec(snap).expect("serialisable");
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    fs::rename(&tmp, path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;

    fn sample() -> Snapshot {
        Snapshot {
            version: FORMAT_VERSION,
            saved_at_ms: 7,
            origins: BTreeMap::from([("cli".to_string(), 1)]),
            decisions: vec![Decision {
                net: "2001:db8::/48".parse().unwrap(),
                action: Action::Block,
                origin: "cli".into(),
                reason: Some("test".into()),
                created_at_ms: 1,
                expires_at_ms: Some(99),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
    }

    #[test]
    fn truncated_snapshot_is_a_clear_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample()).unwrap();
        let text = fs::read(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("state.json"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap().len(), text.len() / 2);
    }

    #[test]
    fn other_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = sample();
        s.version = FORMAT_VERSION + 1;
        save(&path, &s).unwrap();
        assert!(matches!(load(&path), Err(SnapshotError::Version { .. })));
    }
}
