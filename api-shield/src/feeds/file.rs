//! List files the daemon watches (`[[feeds]]` in the config): re-read when they change (and
//! have stopped changing for one interval), each replacing its named list atomically. A file
//! that fails to parse changes nothing; the last good content stays enforced and the feed
//! reports the error. Writers should still replace files by rename, the usual way.
//!
//! The daemon reads these files as root, from directories other users may write, so a file is
//! opened without following a symlink (unless root owns the link), must be a regular file
//! (a FIFO or a device is refused without blocking), is read up to `max_bytes`, and an error
//! never quotes its content. An update that empties the list or removes more than
//! `max_shrink_percent` of it is held back (the last good version stays enforced, the refusal is
//! reported and audited) unless the feed says `allow_shrink = true`.

use super::{FeedSink, SharedHealth, SinkError};
use crate::kernel::clock;
use crate::lists::formats::{self, Format};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a watched file's metadata is checked when the config does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

/// Largest file read, unless the feed says otherwise: generous for a million-entry list.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Share of the list (percent) an update may remove before it is held back.
pub const DEFAULT_MAX_SHRINK_PERCENT: u8 = 50;
const PERCENT: usize = 100;
/// Longest error message a feed reports.
const MAX_ERROR_CHARS: usize = 200;

fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}

fn default_max_shrink() -> u8 {
    DEFAULT_MAX_SHRINK_PERCENT
}

/// One watched list file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFeed {
    /// The list (origin) the file's entries make up.
    pub name: String,
    pub path: PathBuf,
    #[serde(default = "default_format")]
    pub format: Format,
    /// Skip malformed lines (each one is logged) instead of refusing the whole file.
    #[serde(default)]
    pub skip_invalid: bool,
    /// How often the file is checked for changes.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Files larger than this are refused.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Accept an update that empties the list or shrinks it by more than `max_shrink_percent`.
    #[serde(default)]
    pub allow_shrink: bool,
    /// Largest share of the list (percent, 0-100) one update may remove.
    #[serde(default = "default_max_shrink")]
    pub max_shrink_percent: u8,
}

fn default_format() -> Format {
    Format::Auto
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    modified: SystemTime,
    len: u64,
}

fn version(feed: &FileFeed) -> Option<Version> {
    let meta = std::fs::metadata(&feed.path).ok()?;
    Some(Version {
        modified: meta.modified().ok()?,
        len: meta.len(),
    })
}

/// Loads the file now and then whenever it changes, until `shutdown`.
pub async fn watch(
    feed: FileFeed,
    sink: Arc<dyn FeedSink>,
    health: SharedHealth,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut seen: Option<Version> = None;
    // A version is loaded only once it has stayed the same for a whole interval: a writer that
    // truncates and rewrites in place must not get a half-written list enforced.
    let mut pending: Option<Version> = None;
    let mut first = true;
    let mut tick = tokio::time::interval(feed.interval);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let current = version(&feed);
        if current.is_some() && current == seen {
            continue;
        }
        if !first && current != pending {
            pending = current;
            continue;
        }
        first = false;
        let result = load(&feed, sink.as_ref());
        let mut h = health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        h.syncs_total += 1;
        match result {
            Ok(count) => {
                seen = current;
                h.last_success_ms = Some(clock::now_unix_ms());
                h.degraded = false;
                h.last_error = None;
                tracing::info!(list = feed.name, path = %feed.path.display(), entries = count, "list file loaded");
            }
            Err(e) => {
                // Remember the failed version too: retrying the same bytes cannot succeed.
                seen = current;
                h.errors_total += 1;
                h.degraded = true;
                let error = e.to_string();
                tracing::error!(
                    list = feed.name,
                    error,
                    "list file refused; the previous content stays enforced"
                );
                h.last_error = Some(error);
            }
        }
    }
}

/// Why a feed file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path} is a symlink not owned by root; point the feed at the file itself")]
    ForeignSymlink { path: String },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("{path} is larger than max_bytes ({max} bytes)")]
    TooLarge { path: String, max: u64 },
    #[error("{path} is not UTF-8 text")]
    NotText { path: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The file's text, read as [`watch`] promises: no symlink followed unless root owns it, a
/// regular file only, never blocking on open, at most `max_bytes`.
pub fn read_feed_file(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    let shown = path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown.clone(),
        source,
    };
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    let follow = link.file_type().is_symlink();
    if follow && link.uid() != 0 {
        return Err(ReadError::ForeignSymlink { path: shown });
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // O_NONBLOCK: opening a FIFO returns at once (and is then refused as not regular).
    let flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    options.custom_flags(if follow {
        flags
    } else {
        flags | libc::O_NOFOLLOW
    });
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular { path: shown });
    }
    if meta.len() > max_bytes {
        return Err(ReadError::TooLarge {
            path: shown,
            max: max_bytes,
        });
    }
    let mut bytes = Vec::new();
    // The file may grow between the check and the read.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            path: shown,
            max: max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: shown })
}

/// `message` with every `quoted` span replaced, and cut short: a parse error about a file the
/// daemon read as root must not carry the file's content to whoever reads `lists`.
///
/// Everything from the first backtick to the last goes: the file's content only ever appears
/// between backticks, and a backtick inside that content must not end the redaction early.
pub fn without_content(message: &str) -> String {
    let mut out = match (message.find('`'), message.rfind('`')) {
        (Some(first), Some(last)) if first < last => {
            format!("{}`…`{}", &message[..first], &message[last + 1..])
        }
        (Some(first), _) => format!("{}`…`", &message[..first]),
        _ => message.to_owned(),
    };
    if out.chars().count() > MAX_ERROR_CHARS {
        out = out.chars().take(MAX_ERROR_CHARS).collect::<String>() + "…";
    }
    out
}

/// Whether going from `current` to `next` entries removes more than `max_percent` of the list.
pub fn shrinks_too_much(current: usize, next: usize, max_percent: u8) -> bool {
    if current == 0 || next >= current {
        return false;
    }
    next == 0 || (current - next) * PERCENT > current * usize::from(max_percent)
}

/// Why a list file was not loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The parse error with the file's content left out (see [`without_content`]).
    #[error("{0}")]
    Parse(String),
    #[error(
        "update held back: {current} entries would become {count} (more than {max_percent}% \
         removed); the previous content stays enforced; set allow_shrink = true to accept such \
         updates"
    )]
    Shrinks {
        current: usize,
        count: usize,
        max_percent: u8,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

fn load(feed: &FileFeed, sink: &dyn FeedSink) -> Result<usize, LoadError> {
    let file = feed.path.display().to_string();
    let text = read_feed_file(&feed.path, feed.max_bytes)?;
    let parsed = formats::parse(&text, &file, feed.format, feed.skip_invalid)
        .map_err(|e| LoadError::Parse(without_content(&e.to_string())))?;
    for s in &parsed.skipped {
        tracing::warn!(
            list = feed.name,
            line = s.line,
            reason = without_content(&s.reason),
            "skipped a malformed line"
        );
    }
    if parsed.skipped_total > parsed.skipped.len() {
        tracing::warn!(
            list = feed.name,
            skipped = parsed.skipped_total,
            "skipped malformed lines (the first {} are logged)",
            parsed.skipped.len()
        );
    }
    let count = parsed.entries.len();
    if !feed.allow_shrink
        && let Some(current) = sink.current_len(&feed.name)
        && shrinks_too_much(current, count, feed.max_shrink_percent)
    {
        let why = LoadError::Shrinks {
            current,
            count,
            max_percent: feed.max_shrink_percent,
        };
        sink.refused(&feed.name, &file, &why.to_string());
        return Err(why);
    }
    sink.replace(&feed.name, &file, parsed.entries)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    use std::time::Instant;

    const NOBODY: u32 = 65_534;

    #[test]
    fn a_symlink_not_owned_by_root_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:$y$j9T$hash:19000:0:99999:7:::\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let feed = dir.path().join("feed.netset");
        symlink(&secret, &feed).unwrap();
        lchown(&feed, Some(NOBODY), Some(NOBODY)).unwrap();
        let err = read_feed_file(&feed, DEFAULT_MAX_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::ForeignSymlink { .. }), "{err}");
        assert!(!err.to_string().contains("root:"), "{err}");
        // Root's own symlink (a `current -> v42.netset` switch) is followed.
        lchown(&feed, Some(0), Some(0)).unwrap();
        assert!(read_feed_file(&feed, DEFAULT_MAX_BYTES).is_ok());
    }

    #[test]
    fn fifos_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("feed.fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let err = read_feed_file(&fifo, DEFAULT_MAX_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let err = read_feed_file(Path::new("/dev/zero"), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular { .. }), "{err}");
        let err = read_feed_file(dir.path(), DEFAULT_MAX_BYTES).unwrap_err();
        assert!(!matches!(err, ReadError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn oversize_and_binary_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("feed.netset");
        std::fs::write(&feed, "198.18.0.1\n198.18.0.2\n").unwrap();
        assert!(read_feed_file(&feed, 22).is_ok());
        let err = read_feed_file(&feed, 21).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { max: 21, .. }), "{err}");
        std::fs::write(&feed, [0xff, 0xfe, b'\n']).unwrap();
        let err = read_feed_file(&feed, 100).unwrap_err();
        assert!(matches!(err, ReadError::NotText { .. }), "{err}");
    }

    #[test]
    fn errors_do_not_quote_content() {
        let shown = without_content("f:3: `root:$y$j9T$hash` is not an IP address or CIDR prefix");
        assert_eq!(shown, "f:3: `…` is not an IP address or CIDR prefix");
        let long = format!("x{}", "y".repeat(1000));
        assert!(without_content(&long).chars().count() <= MAX_ERROR_CHARS + 1);
        // An unbalanced backtick hides the rest.
        assert_eq!(without_content("a `secret"), "a `…`");
        // A backtick inside the content does not end the redaction.
        assert_eq!(
            without_content("f:3: `x`SECRET` is not an IP address"),
            "f:3: `…` is not an IP address"
        );
        assert_eq!(
            without_content("f:1: set `s` is of type `x`SECRET`, whose entries are not plain"),
            "f:1: set `…`, whose entries are not plain"
        );
    }

    #[test]
    fn shrinking_past_the_share_is_detected() {
        assert!(shrinks_too_much(100_000, 0, 50));
        assert!(shrinks_too_much(100, 49, 50));
        assert!(!shrinks_too_much(100, 50, 50));
        assert!(!shrinks_too_much(100, 150, 50));
        assert!(!shrinks_too_much(0, 0, 50));
        assert!(shrinks_too_much(1, 0, 100));
        assert!(!shrinks_too_much(10, 1, 100));
        assert!(shrinks_too_much(10, 9, 0));
    }
}
