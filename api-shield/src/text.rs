//! One rule for every piece of outside text the daemon keeps and shows again (block reasons,
//! list comments, CrowdSec scenarios, push reasons, source names), and one escape for output.
//!
//! Such text ends up in terminals (`list`, `top --plain`) and logs, where a control character
//! can forge a line, move the cursor or recolour the screen (ANSI escapes start with ESC), and
//! a bidirectional override can make text read differently from what it holds. Input with any
//! of these is refused where a person typed it (CLI, push API) and escaped where a feed sent it;
//! output escapes whatever is left, so text restored from older state is safe too.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest text kept, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// Why a text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{field} is {chars} characters long; at most {MAX_TEXT_CHARS}")]
    TooLong { field: &'static str, chars: usize },
    #[error("{field} holds a control character at position {position} ({code})")]
    Control {
        field: &'static str,
        position: usize,
        code: String,
    },
}

/// True for characters that change how a terminal or log shows what follows: C0 and C1 controls,
/// DEL, and the Unicode bidirectional and invisible formatting marks.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width spaces and joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}' // zero-width no-break space
        )
}

/// `text` if it is at most [`MAX_TEXT_CHARS`] characters with nothing [`is_unsafe`]; else an
/// error naming `field` and what is wrong.
pub fn check(field: &'static str, text: &str) -> Result<(), TextError> {
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(TextError::TooLong { field, chars });
    }
    if let Some((position, c)) = text.chars().enumerate().find(|(_, c)| is_unsafe(*c)) {
        return Err(TextError::Control {
            field,
            position,
            code: format!("U+{:04X}", u32::from(c)),
        });
    }
    Ok(())
}

/// `text` made safe to keep from a feed that cannot be asked again: unsafe characters escaped
/// (as [`escape`] does) and the result cut to [`MAX_TEXT_CHARS`] characters, marked with `…`.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    let escaped = escape(text);
    if escaped.chars().count() <= MAX_TEXT_CHARS {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(MAX_TEXT_CHARS - 1).collect();
    cut.push('…');
    Cow::Owned(cut)
}

/// `text` with every unsafe character written as `\u{XXXX}`, for terminals and logs.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:04X}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with unsafe characters escaped as [`escape`] does, line breaks kept: for multi-line
/// messages (a refused reload lists one problem a line).
pub fn escape_keeping_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| escape(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serialized JSON with every unsafe character that serde leaves raw (DEL, C1 controls,
/// bidirectional and invisible marks) written as a `\uXXXX` escape: the same JSON value, safe
/// for a terminal.
pub fn escape_json(json: &str) -> Cow<'_, str> {
    // serde escapes C0 controls inside strings; raw line breaks and tabs are only the
    // whitespace of pretty output, and stay.
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t');
    if !json.chars().any(unsafe_in_json) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if unsafe_in_json(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one escape suffices.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged() {
        assert_eq!(check("reason", "ssh brute force — 5 tries"), Ok(()));
        assert!(matches!(escape("crowdsecurity/ssh-bf"), Cow::Borrowed(_)));
        assert_eq!(check("reason", &"é".repeat(MAX_TEXT_CHARS)), Ok(()));
    }

    #[test]
    fn long_text_is_refused_by_characters_not_bytes() {
        let err = check("comment", &"x".repeat(MAX_TEXT_CHARS + 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "comment is {} characters long; at most {MAX_TEXT_CHARS}",
                MAX_TEXT_CHARS + 1
            )
        );
    }

    #[test]
    fn controls_escapes_and_bidi_marks_are_refused_and_named() {
        for (text, position, code) in [
            ("red\u{1b}[31m", 3, "U+001B"),
            ("a\nforged line", 1, "U+000A"),
            ("tab\t", 3, "U+0009"),
            ("del\u{7f}", 3, "U+007F"),
            ("c1\u{9b}31m", 2, "U+009B"),
            ("abc\u{202E}fdp.exe", 3, "U+202E"),
            ("\u{2066}x", 0, "U+2066"),
            ("zero\u{200B}width", 4, "U+200B"),
        ] {
            let err = check("reason", text).unwrap_err();
            assert_eq!(
                err,
                TextError::Control {
                    field: "reason",
                    position,
                    code: code.into()
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn escape_leaves_no_unsafe_character() {
        let out = escape("\u{1b}]0;pwned\u{7}\nnext\u{202E}");
        assert_eq!(out, "\\u{001B}]0;pwned\\u{0007}\\u{000A}next\\u{202E}");
        assert!(!out.chars().any(is_unsafe));
    }

    #[test]
    fn json_escapes_keep_the_value() {
        let value = serde_json::json!({"reason": "a\u{9b}31m\u{202E}b\u{7f}", "n": 1});
        let text = serde_json::to_string_pretty(&value).unwrap();
        let safe = escape_json(&text);
        assert!(!safe.chars().any(|c| is_unsafe(c) && c != '\n'), "{safe}");
        assert!(safe.contains('\n'), "pretty output keeps its lines");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value);
        assert_eq!(escape_keeping_lines("a\u{1b}\nb"), "a\\u{001B}\nb");
    }

    #[test]
    fn sanitize_escapes_then_cuts() {
        let long = format!("\u{1b}{}", "y".repeat(1000));
        let out = sanitize(&long);
        assert_eq!(out.chars().count(), MAX_TEXT_CHARS);
        assert!(out.starts_with("\\u{001B}yyy"));
        assert!(out.ends_with('…'));
        assert!(check("s", &out).is_ok());
        assert_eq!(sanitize("fine"), "fine");
    }
}
