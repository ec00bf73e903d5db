//! The audit log: one JSON line per control request, appended, never rewritten.
//!
//! Records carry what was asked and by whom; callers pass request arguments as JSON and must
//! keep secrets out of them (there are none in the protocol yet).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use nix::unistd::{Uid, User};
use serde::Serialize;
use serde_json::Value;

use crate::control::PeerCred;

/// Owner read/write, group read: operators in the log's group may read it, nobody else.
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "the audit log {} is a symbolic link; refusing to follow it: remove it",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("the audit log {} is not a regular file; refusing to use it", path.display())]
    NotAFile { path: PathBuf },
    #[error("handing the audit log {} to the service user: {source}", path.display())]
    HandOver { path: PathBuf, source: io::Error },
    #[error("cannot write to the audit log {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot encode an audit record: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
}

/// One audited action.
#[derive(Clone, Debug)]
pub struct AuditEvent<'a> {
    pub peer: &'a PeerCred,
    /// The request's `op`, such as `block`.
    pub op: &'a str,
    pub args: Value,
    pub result: Outcome,
    /// What happened: counts, the error message; `Value::Null` when there is nothing to add.
    pub detail: Value,
}

/// The line written for an event; field order is the order in the file.
#[derive(Serialize)]
struct Record<'a> {
    ts: String,
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    /// `None` (null) when the uid has no entry in the user database.
    user: Option<String>,
    op: &'a str,
    args: &'a Value,
    result: Outcome,
    detail: &'a Value,
}

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens `path` for appending, creating it (mode 0640) and its directories (0750).
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(open_file(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path again, so after a rotation (SIGHUP) records go to the new file.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let file = open_file(&self.path)?;
        *self.lock() = file;
        Ok(())
    }

    /// Makes `uid:gid` the owner of the open file (not of whatever the path names now), so
    /// the daemon can reopen it after giving up root.
    pub fn hand_over(&self, uid: u32, gid: u32) -> Result<(), AuditError> {
        std::os::unix::fs::fchown(&*self.lock(), Some(uid), Some(gid)).map_err(|source| {
            AuditError::HandOver {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Appends one record. The line goes out in one `write` on an `O_APPEND` file, so
    /// concurrent writers (even other processes) never interleave within a line.
    pub fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let record = Record {
            ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            uid: event.peer.uid,
            gid: event.peer.gid,
            pid: event.peer.pid,
            user: user_name(event.peer.uid),
            op: event.op,
            args: &event.args,
            result: event.result,
            detail: &event.detail,
        };
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        let mut file = self.lock();
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        // A panic while holding the lock leaves a valid file handle: keep logging.
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn open_file(path: &Path) -> Result<File, AuditError> {
    let open_error = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(open_error)?;
    }
    // O_NOFOLLOW: root opens this file at start, and a link planted in its place must not
    // make it append to (or hand over) another file. O_NONBLOCK: a FIFO cannot hang the start.
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) {
                AuditError::Symlink {
                    path: path.to_owned(),
                }
            } else {
                open_error(source)
            }
        })?;
    if !file.metadata().map_err(open_error)?.is_file() {
        return Err(AuditError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(file)
}

fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    const MODE_BITS: u32 = 0o7777;
    const THREADS: usize = 8;
    const RECORDS_PER_THREAD: usize = 50;

    const ROOT: PeerCred = PeerCred {
        uid: 0,
        gid: 0,
        pid: Some(4242),
    };

    fn event(op: &str, result: Outcome) -> AuditEvent<'_> {
        AuditEvent {
            peer: &ROOT,
            op,
            args: json!({"nets": ["198.18.0.0/24"], "force": false}),
            result,
            detail: json!("done"),
        }
    }

    fn records(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/api-shield/audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.record(&event("block", Outcome::Ok)).unwrap();
        log.record(&event("unblock", Outcome::Error)).unwrap();

        let records = records(&path);
        assert_eq!(records.len(), 2);
        let first = &records[0];
        assert_eq!(first["uid"], 0);
        assert_eq!(first["gid"], 0);
        assert_eq!(first["pid"], 4242);
        assert_eq!(first["user"], "root");
        assert_eq!(first["op"], "block");
        assert_eq!(
            first["args"],
            json!({"nets": ["198.18.0.0/24"], "force": false})
        );
        assert_eq!(first["result"], "ok");
        assert_eq!(first["detail"], "done");
        assert_eq!(records[1]["op"], "unblock");
        assert_eq!(records[1]["result"], "error");

        let ts = first["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z'), "{ts}");
        humantime::parse_rfc3339(ts).unwrap();
        // Field order is part of the format.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"ts\":"), "{text}");
    }

    #[test]
    fn file_is_0640_and_opening_again_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        AuditLog::open(&path)
            .unwrap()
            .record(&event("allow", Outcome::Ok))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & MODE_BITS;
        assert_eq!(mode, FILE_MODE);
        AuditLog::open(&path)
            .unwrap()
            .record(&event("unallow", Outcome::Ok))
            .unwrap();
        assert_eq!(records(&path).len(), 2);
    }

    #[test]
    fn unknown_user_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let stranger = PeerCred {
            uid: 4_000_000,
            gid: 4_000_000,
            pid: None,
        };
        let log = AuditLog::open(&path).unwrap();
        log.record(&AuditEvent {
            peer: &stranger,
            op: "status",
            args: Value::Null,
            result: Outcome::Error,
            detail: Value::Null,
        })
        .unwrap();
        let record = &records(&path)[0];
        assert_eq!(record["user"], Value::Null);
        assert_eq!(record["pid"], Value::Null);
        assert_eq!(record["uid"], 4_000_000);
    }

    #[test]
    fn reopen_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotated = dir.path().join("audit.jsonl.1");
        let log = AuditLog::open(&path).unwrap();
        log.record(&event("block", Outcome::Ok)).unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        // Until reopened, records follow the renamed file.
        log.record(&event("unblock", Outcome::Ok)).unwrap();
        log.reopen().unwrap();
        log.record(&event("allow", Outcome::Ok)).unwrap();
        assert_eq!(records(&rotated).len(), 2);
        let fresh = records(&path);
        assert_eq!(fresh.len(), 1);
        assert_eq!(fresh[0]["op"], "allow");
    }

    #[test]
    fn concurrent_records_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for _ in 0..RECORDS_PER_THREAD {
                        log.record(&event("block", Outcome::Ok)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(records(&path).len(), THREADS * RECORDS_PER_THREAD);
    }

    #[test]
    fn open_failure_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("audit.jsonl");
        let err = AuditLog::open(&path).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_link_in_place_of_the_log_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary");
        std::fs::write(&canary, "precious").unwrap();
        let path = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&canary, &path).unwrap();
        let err = AuditLog::open(&path).unwrap_err();
        assert!(matches!(err, AuditError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader: a blocking open would wait forever; refused at once instead.
        assert!(AuditLog::open(&path).is_err());
    }
}
