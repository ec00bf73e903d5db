//! Checks one request against the operation it matched. Every check adds to a bounded list
//! of violations; nothing here can panic or allocate in proportion to a hostile input beyond
//! the body the caller already holds (messages are cut and escaped, see [`Violation`]).

use serde::Serialize;
use serde_json::Value;

use super::operation::{Operation, ParamLocation, Parameter, RequestBody, Shape};
use super::params::{coerce, decode, query_pairs};

/// A request as the gateway or the check endpoint sees it, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method, upper-case (`GET`).
    pub method: &'a str,
    /// The normalised path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Headers as received; names in any case.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body, or what the gateway buffered of it.
    pub body: &'a [u8],
    /// `Content-Length` when the body was not buffered whole.
    pub declared_length: Option<u64>,
}

/// Where a violation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Where {
    /// No operation of the contract has this method and path.
    Operation,
    /// A path parameter.
    Path,
    /// The query string or one of its parameters.
    Query,
    /// A header (including `Content-Type`).
    Header,
    /// The body (size, syntax or schema).
    Body,
}

/// One thing wrong with a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Where it is.
    #[serde(rename = "in")]
    pub location: Where,
    /// The parameter or header name; empty for the body.
    pub name: String,
    /// JSON pointer inside the value (body or parameter); empty for the whole value.
    pub pointer: String,
    /// What failed, escaped and at most [`MAX_MESSAGE_CHARS`] characters.
    pub message: String,
}

/// Longest message kept: names the failure, never carries a whole hostile value.
pub const MAX_MESSAGE_CHARS: usize = 200;

impl Violation {
    /// A violation with `message` made safe to log and echo: control and non-ASCII characters
    /// escaped as `\u{..}`, the whole cut to [`MAX_MESSAGE_CHARS`].
    pub fn new(location: Where, name: &str, pointer: &str, message: &str) -> Self {
        Self {
            location,
            name: safe(name),
            pointer: safe(pointer),
            message: safe(message),
        }
    }
}

/// `text` escaped (anything not printable ASCII becomes `\u{hex}`) and bounded.
pub fn safe(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= MAX_MESSAGE_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    out
}

/// The violations found, bounded.
#[derive(Debug, Default)]
pub struct Collector {
    max: usize,
    /// What was found, at most `max`.
    pub list: Vec<Violation>,
    /// More were found than kept.
    pub truncated: bool,
}

impl Collector {
    /// An empty list keeping at most `max`.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            list: Vec::new(),
            truncated: false,
        }
    }

    fn full(&self) -> bool {
        self.list.len() >= self.max
    }

    /// Adds one, or marks the list truncated.
    pub fn push(&mut self, violation: Violation) {
        if self.full() {
            self.truncated = true;
        } else {
            self.list.push(violation);
        }
    }
}

/// Limits for one request, from the API's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Checks {
    /// Refuse undeclared query parameters.
    pub refuse_unknown_query: bool,
    /// Largest body.
    pub max_body_bytes: u64,
    /// The caller has the body (or its declared length); when not, the body is not checked.
    pub body_seen: bool,
}

/// Runs every check of `op` on `req`; `path_params` are the raw values the template matched.
pub fn check(
    op: &Operation,
    req: &Request<'_>,
    path_params: &[(&str, &str)],
    checks: Checks,
    out: &mut Collector,
) {
    for (name, raw) in path_params {
        let Some(param) = op
            .params
            .iter()
            .find(|p| p.location == ParamLocation::Path && p.name == *name)
        else {
            continue;
        };
        match decode(raw, false) {
            Ok(text) => check_value(param, Where::Path, &[&text], out),
            Err(e) => out.push(Violation::new(Where::Path, name, "", &e.to_string())),
        }
    }
    check_query(
        op,
        req.query.unwrap_or_default(),
        checks.refuse_unknown_query,
        out,
    );
    check_headers(op, req.headers, out);
    if checks.body_seen {
        check_body(op.body.as_ref(), req, checks.max_body_bytes, out);
    }
}

/// Validates `values` (one per occurrence) of `param` against its schema.
fn check_value(param: &Parameter, location: Where, values: &[&str], out: &mut Collector) {
    let Some(validator) = &param.validator else {
        return;
    };
    if param.shape == Shape::Other {
        return;
    }
    let value = coerce(&param.shape, values, param.explode);
    for error in validator.iter_errors(&value) {
        if out.full() {
            out.truncated = true;
            return;
        }
        let message = error.masked_with("the value").to_string();
        out.push(Violation::new(
            location,
            &param.name,
            error.instance_path().as_str(),
            &message,
        ));
    }
}

fn check_query(op: &Operation, query: &str, refuse_unknown: bool, out: &mut Collector) {
    let pairs = match query_pairs(query) {
        Ok(p) => p,
        Err(e) => {
            return out.push(Violation::new(
                Where::Query,
                "",
                "",
                &format!("the query {e}"),
            ));
        }
    };
    for param in op
        .params
        .iter()
        .filter(|p| p.location == ParamLocation::Query)
    {
        let values: Vec<&str> = pairs
            .iter()
            .filter(|(n, _)| *n == param.name)
            .map(|(_, v)| v.as_ref())
            .collect();
        if values.is_empty() {
            if param.required {
                out.push(Violation::new(Where::Query, &param.name, "", "is required"));
            }
            continue;
        }
        if values.len() > 1 && !matches!(param.shape, Shape::Array(_)) {
            // Parameter pollution: the upstream may read the first or the last.
            out.push(Violation::new(
                Where::Query,
                &param.name,
                "",
                &format!("is given {} times", values.len()),
            ));
            continue;
        }
        check_value(param, Where::Query, &values, out);
    }
    if refuse_unknown {
        let mut reported: Vec<&str> = Vec::new();
        for (name, _) in &pairs {
            let known = op
                .params
                .iter()
                .any(|p| p.location == ParamLocation::Query && p.name == *name);
            if !known && !reported.contains(&name.as_ref()) {
                reported.push(name);
                out.push(Violation::new(
                    Where::Query,
                    name,
                    "",
                    "is not declared by the operation",
                ));
            }
        }
    }
}

/// OpenAPI says header parameters with these names are ignored (the HTTP layer owns them).
const RESERVED_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

fn check_headers(op: &Operation, headers: &[(&str, &[u8])], out: &mut Collector) {
    for param in op
        .params
        .iter()
        .filter(|p| p.location == ParamLocation::Header)
    {
        if RESERVED_HEADERS.contains(&param.name.as_str()) {
            continue;
        }
        let found: Vec<&[u8]> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&param.name))
            .map(|(_, v)| *v)
            .collect();
        let Some(first) = found.first() else {
            if param.required {
                out.push(Violation::new(
                    Where::Header,
                    &param.name,
                    "",
                    "is required",
                ));
            }
            continue;
        };
        match std::str::from_utf8(first) {
            Ok(text) => check_value(param, Where::Header, &[text.trim()], out),
            Err(_) => out.push(Violation::new(
                Where::Header,
                &param.name,
                "",
                "is not valid UTF-8",
            )),
        }
    }
}

fn header<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn check_body(body: Option<&RequestBody>, req: &Request<'_>, max_bytes: u64, out: &mut Collector) {
    let size = req
        .declared_length
        .unwrap_or(0)
        .max(u64::try_from(req.body.len()).unwrap_or(u64::MAX));
    if size > max_bytes {
        return out.push(Violation::new(
            Where::Body,
            "",
            "",
            &format!("is {size} bytes, over the limit of {max_bytes}"),
        ));
    }
    let Some(body) = body else { return };
    if size == 0 {
        if body.required {
            out.push(Violation::new(Where::Body, "", "", "is required"));
        }
        return;
    }
    if body.media.is_empty() {
        return;
    }
    let essence = header(req.headers, "content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let Some(essence) = essence else {
        return out.push(Violation::new(
            Where::Header,
            "content-type",
            "",
            "is required with a body",
        ));
    };
    let Some(media) = body
        .media
        .iter()
        .find(|m| media_matches(&m.range, &essence))
    else {
        return out.push(Violation::new(
            Where::Header,
            "content-type",
            "",
            &format!("{essence} is not accepted"),
        ));
    };
    let Some(validator) = media.validator.as_ref().filter(|_| media.json) else {
        return;
    };
    let value: Value = match serde_json::from_slice(req.body) {
        Ok(v) => v,
        Err(e) => {
            let message = format!(
                "is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            );
            return out.push(Violation::new(Where::Body, "", "", &message));
        }
    };
    for error in validator.iter_errors(&value) {
        if out.full() {
            out.truncated = true;
            return;
        }
        let message = error.masked_with("the value").to_string();
        out.push(Violation::new(
            Where::Body,
            "",
            error.instance_path().as_str(),
            &message,
        ));
    }
}

/// `essence` (`type/subtype`) against a range key: exact, `type/*` or `*/*`.
fn media_matches(range: &str, essence: &str) -> bool {
    range == essence
        || range == "*/*"
        || range
            .strip_suffix("/*")
            .is_some_and(|t| essence.split('/').next() == Some(t))
}
