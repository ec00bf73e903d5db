//! From bytes to a checked JSON tree: JSON or YAML, size-capped, with a node budget that
//! bounds what YAML aliases can expand to (a "billion laughs" document is refused, not
//! expanded), then every `$ref` checked once: local, pointing somewhere, no cycle of bare
//! references, no chain deeper than the cap. What comes out can be walked without limits.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::{LoadError, bounded};

/// Limits applied while loading; the defaults fit the largest public API descriptions.
#[derive(Clone, Copy, Debug)]
pub struct LoadLimits {
    /// Largest document accepted, in bytes.
    pub max_document_bytes: u64,
    /// Most JSON nodes the parsed document may have once aliases are expanded.
    pub max_nodes: usize,
    /// Most bytes of strings and keys, once aliases are expanded.
    pub max_text_bytes: usize,
    /// Longest chain of `$ref` to `$ref`.
    pub max_ref_depth: usize,
    /// Most operations compiled.
    pub max_operations: usize,
}

/// 16 MiB: the biggest public descriptions (GitHub's, Stripe's) are under that as JSON.
const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;
/// A node per 4 bytes of a full-size document: real documents have far fewer.
const DEFAULT_MAX_NODES: usize = 4 * 1024 * 1024;
/// Twice the document cap: aliases may repeat some text, not multiply it.
const DEFAULT_MAX_TEXT_BYTES: usize = 32 * 1024 * 1024;
/// Real documents chain two or three references; 32 is generous and still cheap.
const DEFAULT_MAX_REF_DEPTH: usize = 32;
/// Ten times the largest public API description's operation count.
const DEFAULT_MAX_OPERATIONS: usize = 10_000;

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_nodes: DEFAULT_MAX_NODES,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            max_ref_depth: DEFAULT_MAX_REF_DEPTH,
            max_operations: DEFAULT_MAX_OPERATIONS,
        }
    }
}

/// The OpenAPI line a document belongs to; it decides the JSON Schema dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// 3.0.x: schemas are an extended subset of draft 4 (`nullable`, boolean `exclusive*`).
    V30,
    /// 3.1.x: schemas are JSON Schema 2020-12.
    V31,
}

/// Parses `bytes` (JSON when the first non-blank byte is `{`, YAML otherwise) within `limits`
/// and checks its version and references.
pub fn parse(bytes: &[u8], limits: &LoadLimits) -> Result<(Value, Version), LoadError> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limits.max_document_bytes {
        return Err(LoadError::TooLarge {
            size,
            limit: limits.max_document_bytes,
        });
    }
    let budget = Budget::new(limits);
    let is_json = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let doc = if is_json {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let doc = BudgetSeed(&budget)
            .deserialize(&mut de)
            .map_err(|e| json_error(&e, &budget))?;
        de.end().map_err(|e| json_error(&e, &budget))?;
        doc
    } else {
        let de = serde_norway::Deserializer::from_slice(bytes);
        BudgetSeed(&budget)
            .deserialize(de)
            .map_err(|e| yaml_error(&e, &budget))?
    };
    let version = version_of(&doc)?;
    super::refs::check_all(&doc, limits.max_ref_depth)?;
    Ok((doc, version))
}

fn version_of(doc: &Value) -> Result<Version, LoadError> {
    let found = doc.get("openapi").and_then(Value::as_str);
    match found {
        Some(v) if v.starts_with("3.0.") || v == "3.0" => Ok(Version::V30),
        Some(v) if v.starts_with("3.1.") || v == "3.1" => Ok(Version::V31),
        _ => Err(LoadError::Version {
            found: found.map(bounded),
        }),
    }
}

fn json_error(e: &serde_json::Error, budget: &Budget) -> LoadError {
    budget.exceeded().unwrap_or_else(|| LoadError::Syntax {
        format: "JSON",
        line: e.line(),
        column: e.column(),
        message: bounded(&e.to_string()),
    })
}

fn yaml_error(e: &serde_norway::Error, budget: &Budget) -> LoadError {
    budget.exceeded().unwrap_or_else(|| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        LoadError::Syntax {
            format: "YAML",
            line,
            column,
            message: bounded(&e.to_string()),
        }
    })
}

/// Nodes and text bytes left; the parser's own errors cannot carry which limit tripped, so
/// the budget remembers it.
struct Budget {
    nodes: Cell<usize>,
    text: Cell<usize>,
    max_nodes: usize,
    max_text: usize,
    tripped: Cell<Option<&'static str>>,
}

impl Budget {
    fn new(limits: &LoadLimits) -> Self {
        Self {
            nodes: Cell::new(limits.max_nodes),
            text: Cell::new(limits.max_text_bytes),
            max_nodes: limits.max_nodes,
            max_text: limits.max_text_bytes,
            tripped: Cell::new(None),
        }
    }

    fn node<E: serde::de::Error>(&self) -> Result<(), E> {
        let left = self.nodes.get();
        if left == 0 {
            self.tripped.set(Some("nodes"));
            return Err(E::custom("node budget exceeded"));
        }
        self.nodes.set(left - 1);
        Ok(())
    }

    fn text<E: serde::de::Error>(&self, len: usize) -> Result<(), E> {
        let left = self.text.get();
        if len > left {
            self.tripped.set(Some("bytes of text"));
            return Err(E::custom("text budget exceeded"));
        }
        self.text.set(left - len);
        Ok(())
    }

    fn exceeded(&self) -> Option<LoadError> {
        self.tripped.get().map(|what| LoadError::Expansion {
            what,
            limit: if what == "nodes" {
                self.max_nodes
            } else {
                self.max_text
            },
        })
    }
}

/// Builds a [`Value`] like `Value::deserialize`, charging every node and string to the budget.
#[derive(Clone, Copy)]
struct BudgetSeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for BudgetSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.0.node()?;
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BudgetSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-compatible value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        // Beyond 64 bits (a real document writes -9223372036854776000): as a float, like JSON.
        #[expect(
            clippy::cast_precision_loss,
            reason = "JSON numbers past 64 bits are floats"
        )]
        self.visit_f64(v as f64)
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "JSON numbers past 64 bits are floats"
        )]
        self.visit_f64(v as f64)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // Not finite (YAML `.inf`, `.nan`) has no JSON form: null, as serde_json does.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.text(v.len())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.0.text(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A map key as text: YAML allows `200:` or `true:` as keys, JSON objects need strings.
struct KeySeed<'b>(&'b Budget);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        let key = match BudgetSeed(self.0).deserialize(de)? {
            Value::String(s) => s,
            Value::Null => "null".to_owned(),
            other @ (Value::Bool(_) | Value::Number(_)) => other.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(serde::de::Error::custom("a map key must be a scalar"));
            }
        };
        self.0.text(key.len())?;
        Ok(key)
    }
}

/// The value at a local reference (`#/a/b~1c`), `None` when absent or not local.
pub fn pointer<'d>(doc: &'d Value, reference: &str) -> Option<&'d Value> {
    let fragment = reference.strip_prefix('#')?;
    let decoded = percent_encoding::percent_decode_str(fragment)
        .decode_utf8()
        .ok()?;
    doc.pointer(&decoded)
}

/// `value`, or what its `$ref` chain ends at (checked acyclic and bounded at load).
pub fn resolve<'d>(doc: &'d Value, mut value: &'d Value) -> &'d Value {
    for _ in 0..DEFAULT_MAX_REF_DEPTH * 2 {
        match value
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| pointer(doc, r))
        {
            Some(target) => value = target,
            None => return value,
        }
    }
    value
}

/// Escapes one JSON pointer token (RFC 6901).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
