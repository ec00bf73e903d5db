//! Why a contract could not be loaded. Every variant names where in the document the problem
//! is (a line and column while parsing, a JSON pointer after), so an operator can fix the file
//! without guessing; none of them quotes more of the document than a reference or a name.

use std::path::PathBuf;

/// A contract that cannot be loaded: the daemon refuses the configuration rather than run
/// with half a contract.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file named in the configuration.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Over the size cap: refused before parsing, so a huge file costs no memory.
    #[error("the document is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Bytes in the document (at least; reading stops past the limit).
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// Not valid JSON or YAML.
    #[error("{format} syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// 1-based line, 0 when the parser did not say.
        line: usize,
        /// 1-based column, 0 when the parser did not say.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// More nodes or text than the budget allows once aliases are expanded (a YAML bomb).
    #[error("the document expands to more than {limit} {what} (YAML aliases?)")]
    Expansion {
        /// `nodes` or `bytes of text`.
        what: &'static str,
        /// The budget in force.
        limit: usize,
    },
    /// `openapi` missing or not a 3.0.x / 3.1.x version.
    #[error("unsupported OpenAPI version {found:?}: 3.0.x and 3.1.x are supported")]
    Version {
        /// The value of the `openapi` field, if any.
        found: Option<String>,
    },
    /// A part of the document has the wrong shape.
    #[error("at {pointer}: {message}")]
    Invalid {
        /// JSON pointer of the offending value.
        pointer: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `$ref` to another file or a URL: the contract is one self-contained document.
    #[error(
        "at {pointer}: external $ref {reference:?} is not supported (bundle the document first)"
    )]
    ExternalRef {
        /// JSON pointer of the `$ref`.
        pointer: String,
        /// The reference, bounded.
        reference: String,
    },
    /// A `$ref` whose target does not exist.
    #[error("at {pointer}: $ref {reference:?} points to nothing")]
    DanglingRef {
        /// JSON pointer of the `$ref`.
        pointer: String,
        /// The reference, bounded.
        reference: String,
    },
    /// A chain of `$ref`s that comes back to itself, or is longer than the depth cap.
    #[error("at {pointer}: $ref chain {reason}")]
    RefChain {
        /// JSON pointer of the first `$ref` of the chain.
        pointer: String,
        /// `is cyclic` or `is longer than N`.
        reason: String,
    },
    /// A schema the JSON Schema compiler refused (a bad regular expression, say).
    #[error("at {pointer}: invalid schema: {message}")]
    Schema {
        /// JSON pointer of the schema.
        pointer: String,
        /// The compiler's message.
        message: String,
    },
    /// More operations than the cap.
    #[error("the document has more than {limit} operations")]
    TooManyOperations {
        /// The cap in force.
        limit: usize,
    },
}

/// Longest reference or name quoted in an error: enough to find it, never a whole document.
pub(crate) const MAX_QUOTED: usize = 120;

/// `text` cut to [`MAX_QUOTED`] characters, marked when cut.
pub(crate) fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_QUOTED).collect();
    out.push('…');
    out
}
