//! One pass over the whole document that checks every `$ref` before anything follows one:
//! after it, resolving a reference cannot loop, recurse without end or leave the document.
//! Schemas may still refer to themselves through properties (a tree of nodes is legal JSON
//! Schema); only chains of bare `$ref` to `$ref` are refused, as they never reach a schema.

use std::collections::HashSet;

use serde_json::Value;

use super::document::{escape_token, pointer};
use super::error::{LoadError, bounded};

/// Keys whose values are free-form data, not OpenAPI objects: a `$ref` in there is text.
const DATA_KEYS: [&str; 2] = ["example", "const"];

/// Checks every `$ref` in `doc`; see the module documentation.
pub fn check_all(doc: &Value, max_depth: usize) -> Result<(), LoadError> {
    let mut path = String::new();
    walk(doc, doc, &mut path, max_depth)
}

/// Depth-first over `node`; `path` is its JSON pointer, grown and cut back in place. The
/// parsers' own nesting limit (128) bounds the recursion.
fn walk(doc: &Value, node: &Value, path: &mut String, max_depth: usize) -> Result<(), LoadError> {
    let len = path.len();
    match node {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                check_one(doc, reference, path, max_depth)?;
            }
            for (key, child) in map {
                if DATA_KEYS.contains(&key.as_str()) {
                    continue;
                }
                path.push('/');
                path.push_str(&escape_token(key));
                walk(doc, child, path, max_depth)?;
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push('/');
                path.push_str(&index.to_string());
                walk(doc, child, path, max_depth)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// One reference: local, resolvable, and its chain of bare references ends within the cap.
fn check_one(doc: &Value, reference: &str, at: &str, max_depth: usize) -> Result<(), LoadError> {
    let at = if at.is_empty() {
        "/".to_owned()
    } else {
        at.to_owned()
    };
    if !reference.starts_with('#') {
        return Err(LoadError::ExternalRef {
            pointer: at,
            reference: bounded(reference),
        });
    }
    let mut seen = HashSet::new();
    let mut current = reference;
    loop {
        if !seen.insert(current) {
            return Err(LoadError::RefChain {
                pointer: at,
                reason: "is cyclic".to_owned(),
            });
        }
        if seen.len() > max_depth {
            return Err(LoadError::RefChain {
                pointer: at,
                reason: format!("is longer than {max_depth}"),
            });
        }
        let Some(target) = pointer(doc, current) else {
            return Err(LoadError::DanglingRef {
                pointer: at,
                reference: bounded(current),
            });
        };
        match target.get("$ref") {
            Some(Value::String(next)) if next.starts_with('#') => current = next,
            Some(Value::String(next)) => {
                return Err(LoadError::ExternalRef {
                    pointer: at,
                    reference: bounded(next),
                });
            }
            _ => return Ok(()),
        }
    }
}
