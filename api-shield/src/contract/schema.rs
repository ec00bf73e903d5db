//! Compiles the schemas of an operation into JSON Schema validators once, at load, so a
//! request costs a walk of compiled nodes and no parsing of the document.
//!
//! Each schema becomes its own small root document: the schema, plus a copy of every part of
//! the OpenAPI document it refers to (transitively) at the same pointer, so a `$ref` such as
//! `#/components/schemas/Pet` resolves inside it. Only what is referenced is copied: a large
//! document with hundreds of operations compiles in time proportional to what each one uses.
//!
//! OpenAPI 3.0 schemas are draft 4 plus `nullable`, rewritten here into a `null` type; 3.1
//! schemas are JSON Schema 2020-12 as they are. Patterns run on the linear-time `regex`
//! engine (a request cannot make a pattern backtrack); a pattern that engine cannot compile
//! (look-around) falls back to `fancy-regex` with a backtracking cap.

use std::collections::BTreeSet;

use jsonschema::{Draft, PatternOptions, Validator};
use serde_json::{Map, Value};

use super::document::{Version, pointer};
use super::error::{LoadError, bounded};

/// Steps `fancy-regex` may take on one match before giving up (the match then fails).
const FANCY_BACKTRACK_LIMIT: usize = 10_000;

/// Compiles schemas found in `doc`.
pub struct SchemaCompiler<'d> {
    doc: &'d Value,
    version: Version,
}

impl<'d> SchemaCompiler<'d> {
    /// A compiler for schemas of `doc`, a document of `version`.
    pub fn new(doc: &'d Value, version: Version) -> Self {
        Self { doc, version }
    }

    /// The validator for `schema`, found at `at` (a JSON pointer, for errors).
    pub fn compile(&self, schema: &Value, at: &str) -> Result<Validator, LoadError> {
        let root = self.standalone(schema);
        let draft = match self.version {
            Version::V30 => Draft::Draft4,
            Version::V31 => Draft::Draft202012,
        };
        let linear = jsonschema::options()
            .with_draft(draft)
            .should_validate_formats(true)
            .with_pattern_options(PatternOptions::regex())
            .build(&root);
        match linear {
            Ok(v) => Ok(v),
            Err(_) => jsonschema::options()
                .with_draft(draft)
                .should_validate_formats(true)
                .with_pattern_options(
                    PatternOptions::fancy_regex().backtrack_limit(FANCY_BACKTRACK_LIMIT),
                )
                .build(&root)
                .map_err(|e| LoadError::Schema {
                    pointer: at.to_owned(),
                    message: bounded(&e.to_string()),
                }),
        }
    }

    /// `schema` with every part of the document it refers to copied in at its own pointer.
    fn standalone(&self, schema: &Value) -> Value {
        let mut refs = BTreeSet::new();
        let mut pending = vec![schema];
        while let Some(node) = pending.pop() {
            collect_refs(node, &mut |reference| {
                if refs.insert(reference.to_owned())
                    && let Some(target) = pointer(self.doc, reference)
                {
                    pending.push(target);
                }
            });
        }
        let mut root = self.dialect_copy(schema);
        let Value::Object(root_map) = &mut root else {
            return root;
        };
        for reference in &refs {
            if let Some(target) = pointer(self.doc, reference) {
                insert_at(root_map, reference, self.dialect_copy(target));
            }
        }
        root
    }

    /// A copy of `schema` in the validator's dialect (each part rewritten on its own, so a
    /// rewrite of the root cannot move the copied parts away from their pointers).
    fn dialect_copy(&self, schema: &Value) -> Value {
        let mut copy = schema.clone();
        if self.version == Version::V30 {
            rewrite_nullable(&mut copy);
        }
        copy
    }
}

/// Calls `found` with every `$ref` string under `node`.
fn collect_refs<'v>(node: &'v Value, found: &mut impl FnMut(&'v str)) {
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => found(reference),
                    ("example" | "const" | "enum" | "default", _) => {}
                    _ => collect_refs(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, found)),
        _ => {}
    }
}

/// Places a copy of `target` in `root` at the pointer `reference` (`#/a/b`), creating the
/// objects on the way.
fn insert_at(root: &mut Map<String, Value>, reference: &str, target: Value) {
    let Some(fragment) = reference.strip_prefix("#/") else {
        return;
    };
    let decoded = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
    let tokens: Vec<String> = decoded
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut here = root;
    for token in parents {
        let slot = here
            .entry(token.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            // A pointer through an array or a scalar: the copy above already holds it.
            return;
        }
        let Value::Object(next) = slot else { return };
        here = next;
    }
    here.insert(last.clone(), target);
}

/// OpenAPI 3.0 `nullable: true` as draft 4 understands it: `null` added to `type` (and to
/// `enum`, which would refuse it otherwise); without a `type`, `anyOf` the schema or null.
fn rewrite_nullable(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) && !map.contains_key("$ref") {
                map.remove("nullable");
                make_nullable(map);
            }
            for (key, child) in map.iter_mut() {
                if !matches!(key.as_str(), "example" | "enum" | "default") {
                    rewrite_nullable(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_nullable),
        _ => {}
    }
}

fn make_nullable(map: &mut Map<String, Value>) {
    if let Some(Value::Array(options)) = map.get_mut("enum")
        && !options.contains(&Value::Null)
    {
        options.push(Value::Null);
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            map.insert(
                "type".to_owned(),
                Value::Array(vec![Value::String(t), "null".into()]),
            );
        }
        Some(_) => {}
        None => {
            let inner = Value::Object(std::mem::take(map));
            map.insert(
                "anyOf".to_owned(),
                Value::Array(vec![serde_json::json!({"type": "null"}), inner]),
            );
        }
    }
}
