//! `import`: a list sent by a client over the control socket replaces a named list.
//!
//! The client reads the file with its own rights and sends the bytes (the daemon, root, never
//! opens a path a client names). Decoding and parsing happen before the state lock is taken,
//! so a large or slow import never stalls `status`, blocks, feeds or pushes; the lock is held
//! for the screening and the swap only.

use std::time::Instant;

use serde_json::{Value, json};

use super::guard::OnLockout;
use super::ops::{OpError, State, origin_of};
use crate::feeds::file::{DEFAULT_MAX_SHRINK_PERCENT, shrinks_too_much};
use crate::lists::formats::{self, Format, Parsed};
use crate::lockout::Lockout;
use crate::text;

/// Name shown for a list whose client gave no source.
const UNNAMED_SOURCE: &str = "import";

/// What the client asked, without the bytes.
#[derive(Debug)]
pub struct ImportRequest {
    pub list: String,
    pub source: Option<String>,
    pub format: Format,
    pub skip_invalid: bool,
    pub force: bool,
    pub allow_shrink: bool,
}

/// A list parsed and ready to swap in.
pub struct PreparedImport {
    request: ImportRequest,
    source: String,
    text: String,
    parsed: Parsed,
    started: Instant,
    parse_ms: u64,
}

/// Checks the request and parses the bytes, outside the state lock. Nothing is applied on error.
pub fn prepare(request: ImportRequest, bytes: Vec<u8>) -> Result<PreparedImport, OpError> {
    let started = Instant::now();
    origin_of(Some(&request.list))?;
    let source = match &request.source {
        Some(s) => {
            text::check("source", s).map_err(|e| OpError::Invalid(e.to_string()))?;
            s.clone()
        }
        None => UNNAMED_SOURCE.to_owned(),
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        OpError::Invalid(format!(
            "{source}: not UTF-8 text (invalid byte at offset {}); nothing was applied",
            e.utf8_error().valid_up_to()
        ))
    })?;
    let parsed = formats::parse(&text, &source, request.format, request.skip_invalid)
        .map_err(|e| OpError::Invalid(format!("{e}; nothing was applied")))?;
    let parse_ms = millis(started);
    Ok(PreparedImport {
        request,
        source,
        text,
        parsed,
        started,
        parse_ms,
    })
}

impl PreparedImport {
    /// Screens the entries and swaps the list in, under the state lock. A refusal is explained
    /// by [`Refusal::explained`], once the lock is released (naming lines re-reads the text).
    pub fn apply(self, state: &mut State) -> Result<Value, Refusal> {
        let Self {
            request,
            source,
            text,
            parsed,
            started,
            parse_ms,
        } = self;
        let current = state
            .store
            .origin(&request.list)
            .map_or(0, |l| l.entries.len());
        let next = parsed.entries.len();
        if !request.allow_shrink && shrinks_too_much(current, next, DEFAULT_MAX_SHRINK_PERCENT) {
            return Err(Refusal::Other(OpError::Refused(format!(
                "{source}: the list `{}` would go from {current} to {next} entries, losing more \
                 than {DEFAULT_MAX_SHRINK_PERCENT}%; nothing was applied (a source cut short \
                 looks like this; use --allow-shrink if it is meant)",
                request.list
            ))));
        }
        let on_lockout = if request.force {
            OnLockout::Force
        } else {
            OnLockout::Refuse
        };
        let applied = match state.replace_list(&request.list, &source, &parsed.entries, on_lockout)
        {
            Ok(applied) => applied,
            Err(OpError::Lockout { refused, message }) => {
                return Err(Refusal::Lockout {
                    refused,
                    message,
                    text,
                    source,
                    format: request.format,
                });
            }
            Err(other) => return Err(Refusal::Other(other)),
        };
        Ok(json!({
            "list": request.list,
            "source": source,
            "entries": parsed.entries.len(),
            "duplicates": parsed.duplicates,
            "skipped_total": parsed.skipped_total,
            "skipped": parsed.skipped.iter().map(|s| json!({"line": s.line, "text": s.text, "reason": s.reason})).collect::<Vec<_>>(),
            "format": parsed.format,
            "revision": applied.revision,
            "forced": applied.forced,
            "parse_ms": parse_ms,
            "total_ms": millis(started),
        }))
    }
}

/// Why an import was not applied.
pub enum Refusal {
    /// Entries would cut this host off; the lines are named once the lock is released.
    Lockout {
        refused: Lockout,
        message: String,
        text: String,
        source: String,
        format: Format,
    },
    Other(OpError),
}

impl Refusal {
    /// The error to answer, naming the source and line of the first refused entries.
    pub fn explained(self) -> OpError {
        match self {
            Refusal::Lockout {
                refused,
                text,
                source,
                format,
                ..
            } => {
                let message = lockout_message(&text, &source, format, &refused);
                OpError::Lockout { refused, message }
            }
            Refusal::Other(e) => e,
        }
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The refusal of an import, naming the source and line of each entry that would cut this
/// host off.
fn lockout_message(text: &str, source: &str, format: Format, refused: &Lockout) -> String {
    let named: Vec<String> = refused
        .refused
        .iter()
        .take(MAX_NAMED_LOCKOUTS)
        .map(|c| match formats::line_of(text, format, &c.net) {
            Some(line) => format!("{source}:{line}: {c}"),
            None => format!("{source}: {c}"),
        })
        .collect();
    let more = refused.refused.len().saturating_sub(named.len());
    let rest = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!(
        "refusing to import: {}{rest}; nothing was applied (use --force to import anyway)",
        named.join("; ")
    )
}

/// Entries a lockout refusal names with their line; finding a line re-reads the text, and a
/// list of a million such entries must not cost a million re-reads.
const MAX_NAMED_LOCKOUTS: usize = 20;
