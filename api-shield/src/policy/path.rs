//! The one normalisation of a request path (RFC 3986 section 6.2.2), done before anything
//! routes, authenticates, limits or forwards the request, so the path a route is matched on is
//! byte for byte the path the upstream is sent.
//!
//! What it does, in one pass:
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded (`/%61dmin` is
//!   `/admin`); every other escape is kept, its hex digits upper-cased;
//! - dot segments (`.`, `..`, also as `%2e`) are resolved, never above the root;
//! - repeated slashes are merged; a trailing slash is kept;
//! - printable characters RFC 3986 does not allow in a path (space, `"`, `<`, `>`, `^`, `` ` ``,
//!   `{`, `|`, `}`) are percent-encoded.
//!
//! What it refuses (the caller answers 400), because some upstream would read it differently
//! from the route that was matched: an encoded `/` or `\` (`%2F`, `%5C`), a raw `\`, NUL and
//! other control characters raw or encoded, `;` path parameters (Tomcat and Spring strip them,
//! others do not), an encoded `%` that starts another escape (`%252e`: double encoding), a
//! malformed escape (`%G1`, `%2`), raw bytes outside ASCII, and a path that does not start
//! with `/`.

use std::fmt::Write as _;

/// Longest path accepted, in bytes, before or after normalisation; longer ones are refused
/// rather than scanned (the header-size limit usually refuses them first).
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Why a path was refused. The text names the offending character and its byte offset, never
/// more of the path (it may carry a token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not origin-form (`*`, an empty path, a relative path).
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// Over [`MAX_PATH_BYTES`].
    #[error("the path is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding at byte {at}")]
    BadEscape {
        /// Offset of the `%`.
        at: usize,
    },
    /// `%2F` or `%5C`: a separator hidden from the router.
    #[error("encoded '{ch}' at byte {at} is not accepted in a path")]
    EncodedSeparator {
        /// `/` or `\`.
        ch: char,
        /// Offset of the `%`.
        at: usize,
    },
    /// `%25` followed by two hex digits, in the path or once decoded (offset in the path as
    /// decoded so far).
    #[error("double percent-encoding at byte {at} is not accepted")]
    DoubleEncoded {
        /// Offset of the `%`.
        at: usize,
    },
    /// NUL or another control character, raw or encoded.
    #[error("control character 0x{byte:02X} at byte {at}")]
    ControlCharacter {
        /// The character's value.
        byte: u8,
        /// Offset of the character or its escape.
        at: usize,
    },
    /// A raw `\` (a separator on some servers).
    #[error("'\\' at byte {at} is not accepted in a path")]
    Backslash {
        /// Offset of the `\`.
        at: usize,
    },
    /// `;`: matrix / path parameters, read differently by different servers.
    #[error("';' path parameters are not accepted (byte {at})")]
    PathParameter {
        /// Offset of the `;`.
        at: usize,
    },
    /// A raw byte outside ASCII.
    #[error("raw non-ASCII byte at {at}: percent-encode it")]
    NonAscii {
        /// Offset of the byte.
        at: usize,
    },
}

/// `raw` normalised, or why it is refused. Normalising a normalised path changes nothing.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(bytes)?;
    let out = remove_dot_segments(&decoded);
    if out.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    Ok(out)
}

/// RFC 3986 `unreserved`: safe to decode, the meaning does not change.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` less `%` and `;` (handled apart), plus `/`: kept as they are.
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'/' | b':'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
        )
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Decodes escapes of unreserved characters, upper-cases the others, encodes the printable
/// characters a path may not hold raw, and refuses what [`PathError`] lists.
fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::BadEscape { at: i });
                };
                let v = hi << 4 | lo;
                match v {
                    b'/' | b'\\' => {
                        return Err(PathError::EncodedSeparator {
                            ch: char::from(v),
                            at: i,
                        });
                    }
                    b'%' if bytes.get(i + 3).copied().and_then(hex_value).is_some()
                        && bytes.get(i + 4).copied().and_then(hex_value).is_some() =>
                    {
                        return Err(PathError::DoubleEncoded { at: i });
                    }
                    v if is_control(v) => {
                        return Err(PathError::ControlCharacter { byte: v, at: i });
                    }
                    v if is_unreserved(v) => out.push(char::from(v)),
                    v => {
                        let _ = write!(out, "%{v:02X}");
                    }
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash { at: i }),
            b';' => return Err(PathError::PathParameter { at: i }),
            b if is_control(b) => return Err(PathError::ControlCharacter { byte: b, at: i }),
            b if !b.is_ascii() => return Err(PathError::NonAscii { at: i }),
            b if is_path_char(b) => out.push(char::from(b)),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        i += 1;
    }
    // Decoding can assemble a double encoding the raw scan did not see (`%25%32%65` becomes
    // `%252e`): the forwarded path must hold none.
    if let Some(at) = double_encoded_at(out.as_bytes()) {
        return Err(PathError::DoubleEncoded { at });
    }
    Ok(out)
}

/// Offset of a `%25` followed by two hex digits in `bytes`, if any.
fn double_encoded_at(bytes: &[u8]) -> Option<usize> {
    bytes.windows(5).position(|w| {
        w[..3].eq_ignore_ascii_case(b"%25")
            && hex_value(w[3]).is_some()
            && hex_value(w[4]).is_some()
    })
}

/// Resolves `.` and `..` (never above the root) and merges empty segments.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut ends_in_directory = false;
    for seg in path.split('/') {
        match seg {
            "" => {}
            "." => ends_in_directory = true,
            ".." => {
                segments.pop();
                ends_in_directory = true;
            }
            s => {
                segments.push(s);
                ends_in_directory = false;
            }
        }
    }
    // `/a/b/..` names the directory `/a/`, as RFC 3986's algorithm gives.
    let ends_in_directory = ends_in_directory || path.ends_with('/');
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (ends_in_directory && !segments.is_empty()) {
        out.push('/');
    }
    out
}

/// Whether `path` (normalised) falls under `prefix` (normalised, no trailing slash) on a
/// segment boundary: `/admin` covers `/admin` and `/admin/x`, not `/administrator`.
pub fn prefix_matches(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(head) = path.get(..prefix.len()) else {
        return false;
    };
    let same = if case_insensitive {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    same && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

#[cfg(test)]
mod tests;
