//! The learned API as an OpenAPI 3.1 document a team can start a spec from: paths with their
//! parameters, methods, query parameters, the JSON shapes of request bodies, the status
//! classes answered, and the figures seen under `x-api-shield`.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value, json};

use super::endpoint::EndpointStats;
use super::host::{HttpMethod, OVERFLOW_TEMPLATE};
use super::segment::Param;
use super::shape::{INTEGER, JsonShape, NUMBER, OBJECT, TYPE_NAMES};
use super::{Inventory, OTHER_HOST};

/// The OpenAPI version written.
pub const OPENAPI_VERSION: &str = "3.1.0";
const MS_PER_S: f64 = 1000.0;

impl Inventory {
    /// The learned API of `host` (all hosts when `None`; endpoints several hosts share are
    /// merged) as an OpenAPI 3.1 document. Overflow endpoints and the catch-all host are
    /// left out: they are not endpoints; saturated hosts are listed under
    /// `x-api-shield-saturated-hosts`.
    pub fn openapi(&self, host: Option<&str>) -> Value {
        let mut merged: BTreeMap<&str, BTreeMap<HttpMethod, EndpointStats>> = BTreeMap::new();
        let mut servers = Vec::new();
        let mut saturated = Vec::new();
        for (name, inventory) in self.hosts() {
            if name == OTHER_HOST || host.is_some_and(|h| h != name) {
                continue;
            }
            servers.push(json!({ "url": format!("https://{name}") }));
            if inventory.is_saturated() {
                saturated.push(name);
            }
            for endpoint in inventory.endpoints() {
                if endpoint.template == OVERFLOW_TEMPLATE {
                    continue;
                }
                let methods = merged.entry(endpoint.template).or_default();
                let stats = methods.entry(endpoint.method).or_default();
                stats.merge(endpoint.stats, &self.limits);
            }
        }
        let mut paths = Map::new();
        let mut ids = HashSet::new();
        for (template, methods) in merged {
            let (key, params) = path_parameters(template);
            let mut item = Map::new();
            for (method, stats) in methods {
                let Some(name) = method.openapi_name() else {
                    continue;
                };
                let id = operation_id(name, template, &mut ids);
                item.insert(name.to_owned(), operation(id, &params, &stats));
            }
            if !item.is_empty() {
                paths.insert(key, Value::Object(item));
            }
        }
        json!({
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "API learned from traffic by api-shield",
                "version": "learned",
            },
            "servers": servers,
            "paths": paths,
            "x-api-shield-saturated-hosts": saturated,
        })
    }

    /// The same document as text. JSON is YAML 1.2, so this serves where a YAML file is
    /// expected, pretty-printed for people to edit.
    pub fn openapi_text(&self, host: Option<&str>) -> String {
        let mut text = serde_json::to_string_pretty(&self.openapi(host)).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A path parameter: its name in the path key, and the kind the templater gave it.
struct PathParam {
    name: String,
    kind: Option<Param>,
}

/// The path key with parameter names made unique (`/a/{id}/b/{id}` becomes
/// `/a/{id}/b/{id2}`, as OpenAPI requires), and the parameters in order.
fn path_parameters(template: &str) -> (String, Vec<PathParam>) {
    let mut key = String::with_capacity(template.len());
    let mut params: Vec<PathParam> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        key.push_str(&rest[..open]);
        let inner = &rest[open + 1..open + len];
        let kind = Param::from_placeholder(&rest[open..=open + len]);
        let mut name = inner.to_owned();
        let mut n = 1;
        while params.iter().any(|p| p.name == name) {
            n += 1;
            name = format!("{inner}{n}");
        }
        key.push('{');
        key.push_str(&name);
        key.push('}');
        params.push(PathParam { name, kind });
        rest = &rest[open + len + 1..];
    }
    key.push_str(rest);
    (key, params)
}

fn param_schema(kind: Option<Param>) -> Value {
    match kind {
        Some(Param::Id) => json!({ "type": "string", "pattern": "^[0-9]+$" }),
        Some(Param::Uuid) => json!({ "type": "string", "format": "uuid" }),
        Some(Param::Email) => json!({ "type": "string", "format": "email" }),
        Some(Param::Hex) => json!({ "type": "string", "pattern": "^[0-9A-Fa-f]+$" }),
        Some(Param::Ulid) => json!({ "type": "string", "minLength": 26, "maxLength": 26 }),
        _ => json!({ "type": "string" }),
    }
}

/// A unique operation id from the method and template.
fn operation_id(method: &str, template: &str, ids: &mut HashSet<String>) -> String {
    let mut base = String::from(method);
    for c in template.chars() {
        let keep = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(keep == '_' && base.ends_with('_')) {
            base.push(keep);
        }
    }
    let base = base.trim_end_matches('_').to_owned();
    let mut id = base.clone();
    let mut n = 1;
    while !ids.insert(id.clone()) {
        n += 1;
        id = format!("{base}_{n}");
    }
    id
}

fn operation(id: String, params: &[PathParam], stats: &EndpointStats) -> Value {
    let mut parameters: Vec<Value> = params
        .iter()
        .map(|p| {
            json!({ "name": p.name, "in": "path", "required": true, "schema": param_schema(p.kind) })
        })
        .collect();
    for name in &stats.query_names.items {
        parameters.push(json!({ "name": name, "in": "query", "required": false, "schema": {} }));
    }
    let mut op = Map::new();
    op.insert("operationId".into(), id.into());
    op.insert("parameters".into(), parameters.into());
    if let Some(body) = request_body(stats) {
        op.insert("requestBody".into(), body);
    }
    op.insert("responses".into(), responses(stats));
    op.insert("x-api-shield".into(), figures(stats));
    Value::Object(op)
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

fn request_body(stats: &EndpointStats) -> Option<Value> {
    let mut content = Map::new();
    for media_type in &stats.content_types.items {
        let schema = if is_json(media_type) && stats.body.types != 0 {
            shape_schema(&stats.body)
        } else {
            json!({})
        };
        content.insert(media_type.clone(), json!({ "schema": schema }));
    }
    if content.is_empty() && stats.body.types != 0 {
        content.insert(
            "application/json".into(),
            json!({ "schema": shape_schema(&stats.body) }),
        );
    }
    (!content.is_empty()).then(|| json!({ "content": content }))
}

/// The JSON Schema of an observed shape.
fn shape_schema(shape: &JsonShape) -> Value {
    let mut types = shape.types;
    if types & NUMBER != 0 {
        // Integers are numbers: one name covers both.
        types &= !INTEGER;
    }
    let names: Vec<&str> = TYPE_NAMES
        .iter()
        .filter(|(bit, _)| types & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    let mut schema = Map::new();
    match names.as_slice() {
        [] => {}
        [one] => {
            schema.insert("type".into(), (*one).into());
        }
        many => {
            schema.insert("type".into(), many.to_vec().into());
        }
    }
    if types & OBJECT != 0 && !shape.properties.is_empty() {
        let properties: Map<String, Value> = shape
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), shape_schema(v)))
            .collect();
        schema.insert("properties".into(), properties.into());
    }
    if let Some(items) = &shape.items {
        schema.insert("items".into(), shape_schema(items));
    }
    Value::Object(schema)
}

fn responses(stats: &EndpointStats) -> Value {
    let mut responses = Map::new();
    for (i, &count) in stats.status_classes.iter().enumerate() {
        if count > 0 {
            responses.insert(
                format!("{}XX", i + 1),
                json!({ "description": format!("answered {count} times") }),
            );
        }
    }
    if responses.is_empty() {
        responses.insert(
            "default".into(),
            json!({ "description": "no answer observed" }),
        );
    }
    Value::Object(responses)
}

fn figures(stats: &EndpointStats) -> Value {
    let ms = |q| {
        stats
            .latency
            .quantile(q)
            .map(|d| d.as_secs_f64() * MS_PER_S)
    };
    json!({
        "requests": stats.requests,
        "first_seen_ms": stats.first_seen_ms,
        "last_seen_ms": stats.last_seen_ms,
        "latency_p50_ms": ms(0.5),
        "latency_p99_ms": ms(0.99),
        "distinct_identities": stats.distinct_identities(),
        "anonymous": stats.anonymous,
        "auth_methods": stats.auth_methods,
    })
}
