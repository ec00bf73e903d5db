//! List files the daemon watches (`[[feeds]]` in the config): re-read when they change (and
//! have stopped changing for one interval), each replacing its named list atomically. A file
//! that fails to parse changes nothing; the last good content stays enforced and the feed
//! reports the error. Writers should still replace files by rename, the usual way.

use super::{FeedSink, SharedHealth};
use crate::kernel::clock;
use crate::lists::formats::{self, Format};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often a watched file's metadata is checked when the config does not say.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
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
                h.last_error = Some(e.clone());
                tracing::error!(
                    list = feed.name,
                    error = e,
                    "list file refused; the previous content stays enforced"
                );
            }
        }
    }
}

fn load(feed: &FileFeed, sink: &dyn FeedSink) -> Result<usize, String> {
    let text = std::fs::read_to_string(&feed.path)
        .map_err(|e| format!("cannot read {}: {e}", feed.path.display()))?;
    let file = feed.path.display().to_string();
    let parsed =
        formats::parse(&text, &file, feed.format, feed.skip_invalid).map_err(|e| e.to_string())?;
    for s in &parsed.skipped {
        tracing::warn!(
            list = feed.name,
            line = s.line,
            reason = s.reason,
            "skipped a malformed line"
        );
    }
    let count = parsed.entries.len();
    sink.replace(&feed.name, &file, parsed.entries)?;
    Ok(count)
}
