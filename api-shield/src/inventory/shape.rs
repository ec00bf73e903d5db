//! The shape of the JSON request bodies an endpoint received: key names and the value types
//! seen for each, nested, within a node budget and a depth limit so a client sending huge or
//! deeply nested bodies cannot grow the inventory.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON value types, as bits of [`JsonShape::types`].
pub const NULL: u8 = 1;
pub const BOOLEAN: u8 = 1 << 1;
pub const INTEGER: u8 = 1 << 2;
pub const NUMBER: u8 = 1 << 3;
pub const STRING: u8 = 1 << 4;
pub const ARRAY: u8 = 1 << 5;
pub const OBJECT: u8 = 1 << 6;
/// The OpenAPI (JSON Schema) name of each type bit.
pub const TYPE_NAMES: [(u8, &str); 7] = [
    (NULL, "null"),
    (BOOLEAN, "boolean"),
    (INTEGER, "integer"),
    (NUMBER, "number"),
    (STRING, "string"),
    (ARRAY, "array"),
    (OBJECT, "object"),
];

/// Limits of shape learning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Nodes (values at distinct key paths) kept per endpoint.
    pub max_nodes: usize,
    /// Nesting levels looked into.
    pub max_depth: usize,
    /// Longest key name kept.
    pub max_key_len: usize,
}

/// The types seen at one place of the body, and what was inside objects and arrays there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonShape {
    #[serde(default)]
    pub types: u8,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, JsonShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<JsonShape>>,
    /// Set when something was left out for a limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn type_of(value: &Value) -> u8 {
    match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(n) if n.is_i64() || n.is_u64() => INTEGER,
        Value::Number(_) => NUMBER,
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

impl JsonShape {
    /// Adds what `value` holds. `budget` is the number of new nodes still allowed for the
    /// endpoint; it is spent as nodes are added.
    pub fn observe(&mut self, value: &Value, limits: &ShapeLimits, budget: &mut usize) {
        self.observe_at(value, limits, budget, 0);
    }

    fn observe_at(
        &mut self,
        value: &Value,
        limits: &ShapeLimits,
        budget: &mut usize,
        depth: usize,
    ) {
        self.types |= type_of(value);
        let deeper = depth + 1 < limits.max_depth;
        match value {
            Value::Object(map) if deeper => {
                for (key, inner) in map {
                    self.observe_property(key, inner, limits, budget, depth);
                }
            }
            Value::Array(items) if deeper => {
                if self.items.is_none() {
                    if *budget == 0 {
                        self.truncated = true;
                        return;
                    }
                    *budget -= 1;
                }
                let shape = self.items.get_or_insert_with(Box::default);
                for item in items {
                    shape.observe_at(item, limits, budget, depth + 1);
                }
            }
            Value::Object(_) | Value::Array(_) => self.truncated = true,
            _ => {}
        }
    }

    fn observe_property(
        &mut self,
        key: &str,
        value: &Value,
        limits: &ShapeLimits,
        budget: &mut usize,
        depth: usize,
    ) {
        if let Some(shape) = self.properties.get_mut(key) {
            shape.observe_at(value, limits, budget, depth + 1);
            return;
        }
        if *budget == 0 || key.len() > limits.max_key_len {
            self.truncated = true;
            return;
        }
        *budget -= 1;
        let mut shape = Self::default();
        shape.observe_at(value, limits, budget, depth + 1);
        self.properties.insert(key.to_owned(), shape);
    }

    /// Nodes below this one (not counting itself).
    pub fn nodes(&self) -> usize {
        self.properties
            .values()
            .map(|p| 1 + p.nodes())
            .sum::<usize>()
            + self.items.as_ref().map_or(0, |i| 1 + i.nodes())
    }

    /// Depth below this one.
    pub fn depth(&self) -> usize {
        let props = self
            .properties
            .values()
            .map(|p| 1 + p.depth())
            .max()
            .unwrap_or(0);
        let items = self.items.as_ref().map_or(0, |i| 1 + i.depth());
        props.max(items)
    }

    /// Heap bytes held, roughly: nodes and key names.
    pub fn heap_bytes(&self) -> usize {
        let props: usize = self
            .properties
            .iter()
            .map(|(k, v)| k.capacity() + size_of::<Self>() + v.heap_bytes())
            .sum();
        props
            + self
                .items
                .as_ref()
                .map_or(0, |i| size_of::<Self>() + i.heap_bytes())
    }

    /// Merges `other` in, within the node budget. Depth needs no check: both sides were
    /// built under the same limit.
    pub fn merge(&mut self, other: &Self, budget: &mut usize) {
        self.types |= other.types;
        self.truncated |= other.truncated;
        for (key, theirs) in &other.properties {
            if let Some(mine) = self.properties.get_mut(key) {
                mine.merge(theirs, budget);
            } else if *budget > theirs.nodes() {
                *budget -= 1 + theirs.nodes();
                self.properties.insert(key.clone(), theirs.clone());
            } else {
                self.truncated = true;
            }
        }
        if let Some(theirs) = &other.items {
            match &mut self.items {
                Some(mine) => mine.merge(theirs, budget),
                None if *budget > theirs.nodes() => {
                    *budget -= 1 + theirs.nodes();
                    self.items = Some(theirs.clone());
                }
                None => self.truncated = true,
            }
        }
    }
}
