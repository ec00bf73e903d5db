//! Parameter text to JSON values: the query string split and decoded, and each value
//! converted to the type its schema declares, so one JSON Schema validator checks type,
//! range, pattern and enum alike. Text that does not convert stays text, and the validator
//! then says it is not of the declared type.

use std::borrow::Cow;

use percent_encoding::percent_decode;
use serde_json::Value;

use super::operation::Shape;

/// Most `name=value` pairs read from one query string; past it the query is refused rather
/// than scanned (a flood of parameters is a probe or a hash-collision attempt).
pub const MAX_QUERY_PAIRS: usize = 256;

/// Why a piece of text could not be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The decoded bytes are not UTF-8.
    #[error("is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    /// A `%` not followed by two hex digits: left as is by some servers, refused or
    /// decoded otherwise by others, so the value the upstream reads is not the one checked.
    #[error("has a malformed percent-escape")]
    BadEscape,
    /// More pairs than [`MAX_QUERY_PAIRS`].
    #[error("has more than {MAX_QUERY_PAIRS} parameters")]
    TooManyPairs,
}

/// Percent-decodes `raw` (and `+` as a space for the query, as HTML forms send it).
pub fn decode(raw: &str, plus_is_space: bool) -> Result<Cow<'_, str>, TextError> {
    let needs_work = raw.contains('%') || (plus_is_space && raw.contains('+'));
    if !needs_work {
        return Ok(Cow::Borrowed(raw));
    }
    if !escapes_well_formed(raw) {
        return Err(TextError::BadEscape);
    }
    let spaced = if plus_is_space {
        raw.replace('+', " ")
    } else {
        raw.to_owned()
    };
    let decoded = percent_decode(spaced.as_bytes())
        .decode_utf8()
        .map_err(|_| TextError::NotUtf8)?;
    Ok(Cow::Owned(decoded.into_owned()))
}

/// Every `%` starts `%XX` with two hex digits.
fn escapes_well_formed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    })
}

/// A decoded `name=value` pair, borrowed from the query when nothing needed decoding.
pub type Pair<'q> = (Cow<'q, str>, Cow<'q, str>);

/// The decoded `name=value` pairs of `query`, in order; empty pieces (`a=1&&b=2`) skipped.
pub fn query_pairs(query: &str) -> Result<Vec<Pair<'_>>, TextError> {
    let mut out = Vec::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_QUERY_PAIRS {
            return Err(TextError::TooManyPairs);
        }
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        out.push((decode(name, true)?, decode(value, true)?));
    }
    Ok(out)
}

/// `values` as the JSON value `shape` describes: the first value for a scalar, all of them
/// (or the first split on commas when `explode` is off) for an array.
pub fn coerce(shape: &Shape, values: &[&str], explode: bool) -> Value {
    match shape {
        Shape::Array(item) => {
            let items: Vec<&str> = if explode || values.len() != 1 {
                values.to_vec()
            } else {
                values[0].split(',').collect()
            };
            Value::Array(items.iter().map(|v| scalar(item, v)).collect())
        }
        _ => values.first().map_or(Value::Null, |v| scalar(shape, v)),
    }
}

fn scalar(shape: &Shape, text: &str) -> Value {
    let parsed = match shape {
        Shape::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .ok(),
        Shape::Number => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Shape::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Shape::String | Shape::Array(_) | Shape::Other => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_text_is_decoded_and_typed() {
        let pairs = query_pairs("a=1&b=x+y&c=%C3%A9&&d").expect("valid");
        let flat: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(flat, [("a", "1"), ("b", "x y"), ("c", "é"), ("d", "")]);
        assert_eq!(coerce(&Shape::Integer, &["12"], false), Value::from(12));
        assert_eq!(coerce(&Shape::Integer, &["1.5"], false), Value::from("1.5"));
        assert_eq!(coerce(&Shape::Number, &["NaN"], false), Value::from("NaN"));
        let arr = Shape::Array(Box::new(Shape::Integer));
        assert_eq!(coerce(&arr, &["1,2"], false), serde_json::json!([1, 2]));
        assert_eq!(coerce(&arr, &["1", "x"], true), serde_json::json!([1, "x"]));
    }

    #[test]
    fn bad_utf8_and_floods_are_refused() {
        assert_eq!(query_pairs("a=%FF").unwrap_err(), TextError::NotUtf8);
        let flood = "a=1&".repeat(MAX_QUERY_PAIRS + 1);
        assert_eq!(query_pairs(&flood).unwrap_err(), TextError::TooManyPairs);
    }

    #[test]
    fn malformed_escapes_are_refused_not_kept_literally() {
        for raw in ["%zz", "a%", "a%4", "%G1", "ok%2", "%%41"] {
            assert_eq!(decode(raw, true), Err(TextError::BadEscape), "{raw}");
            assert_eq!(decode(raw, false), Err(TextError::BadEscape), "{raw}");
        }
        assert_eq!(decode("%41%62+c", true).unwrap(), "Ab c");
        assert_eq!(decode("100%25", false).unwrap(), "100%");
        assert!(query_pairs("q=%zz").is_err());
    }
}
