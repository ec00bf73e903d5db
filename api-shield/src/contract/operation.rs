//! The operations of a document, compiled: parameters with their validators, the request
//! body's media types, and the security requirements, with every `$ref` already followed.

use jsonschema::Validator;
use serde_json::{Map, Value};

use super::document::{Version, escape_token, resolve};
use super::error::{LoadError, bounded};
use super::schema::SchemaCompiler;
use super::security::{SecurityRequirement, requirements};
use super::template::Template;

/// The HTTP methods an OpenAPI path item can hold.
pub const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where a parameter is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    /// A path segment.
    Path,
    /// The query string.
    Query,
    /// A request header.
    Header,
    /// A cookie (declared, not validated).
    Cookie,
}

/// What a parameter's text is converted to before schema validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Left as text.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// Several values (repeated, or comma-separated when not exploded).
    Array(Box<Shape>),
    /// Objects and anything else: not validated.
    Other,
}

/// One declared parameter.
#[derive(Debug)]
pub struct Parameter {
    /// Its name (lower-cased for headers, which are case-insensitive).
    pub name: String,
    /// Where it is sent.
    pub location: ParamLocation,
    /// Must be present.
    pub required: bool,
    /// What its text converts to.
    pub shape: Shape,
    /// Arrays: one value per repetition (`true`) or comma-separated (`false`).
    pub explode: bool,
    /// Its schema, compiled; `None` when it has none or uses `content`.
    pub validator: Option<Validator>,
}

/// One media type a request body may have.
#[derive(Debug)]
pub struct MediaType {
    /// The key in `content`, lower-cased (`application/json`, `application/*`, `*/*`).
    pub range: String,
    /// The body is JSON (`application/json` or `+json`) and is parsed and validated.
    pub json: bool,
    /// Its schema, compiled.
    pub validator: Option<Validator>,
}

/// The request body an operation takes.
#[derive(Debug)]
pub struct RequestBody {
    /// A body must be sent.
    pub required: bool,
    /// Accepted media types, in document order.
    pub media: Vec<MediaType>,
}

/// One operation of the contract.
#[derive(Debug)]
pub struct Operation {
    /// Upper-case method (`GET`).
    pub method: String,
    /// Its path template, without the base path.
    pub template: Template,
    /// `operationId`, when the document gives one.
    pub operation_id: Option<String>,
    /// Parameters, path-level ones merged under operation-level ones.
    pub params: Vec<Parameter>,
    /// The request body, if the operation takes one.
    pub body: Option<RequestBody>,
    /// Alternatives (any one suffices); empty when the operation needs none.
    pub security: Vec<SecurityRequirement>,
}

/// Compiles every operation under `paths`.
pub fn compile_all(
    doc: &Value,
    version: Version,
    max_operations: usize,
) -> Result<Vec<Operation>, LoadError> {
    let compiler = SchemaCompiler::new(doc, version);
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths") else {
        return Ok(out);
    };
    let paths = paths
        .as_object()
        .ok_or_else(|| invalid("/paths", "must be an object"))?;
    for (text, item) in paths {
        let at = format!("/paths/{}", escape_token(text));
        let template = Template::parse(text, &at)?;
        let item = resolve(doc, item);
        let shared = params_list(doc, item.get("parameters"), &format!("{at}/parameters"))?;
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            if out.len() >= max_operations {
                return Err(LoadError::TooManyOperations {
                    limit: max_operations,
                });
            }
            let op_at = format!("{at}/{method}");
            out.push(compile_one(
                doc,
                &compiler,
                method,
                template.clone(),
                op,
                &shared,
                &op_at,
            )?);
        }
    }
    Ok(out)
}

fn compile_one(
    doc: &Value,
    compiler: &SchemaCompiler<'_>,
    method: &str,
    template: Template,
    op: &Value,
    shared: &[(String, &Value)],
    at: &str,
) -> Result<Operation, LoadError> {
    let own = params_list(doc, op.get("parameters"), &format!("{at}/parameters"))?;
    let mut merged: Vec<(String, &Value)> = shared
        .iter()
        .filter(|(key, _)| !own.iter().any(|(k, _)| k == key))
        .cloned()
        .collect();
    merged.extend(own);
    let mut params = Vec::new();
    for (pointer, value) in merged {
        params.push(compile_param(doc, compiler, value, &pointer)?);
    }
    let body = match op.get("requestBody") {
        Some(b) => Some(compile_body(
            doc,
            compiler,
            resolve(doc, b),
            &format!("{at}/requestBody"),
        )?),
        None => None,
    };
    let security = requirements(doc, op.get("security").or_else(|| doc.get("security")));
    Ok(Operation {
        method: method.to_ascii_uppercase(),
        template,
        operation_id: op
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        params,
        body,
        security,
    })
}

/// A `parameters` array resolved: (pointer, parameter object) pairs, refusing duplicates
/// (same name and location), which OpenAPI forbids and which would make validation ambiguous.
fn params_list<'d>(
    doc: &'d Value,
    list: Option<&'d Value>,
    at: &str,
) -> Result<Vec<(String, &'d Value)>, LoadError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| invalid(at, "must be an array"))?;
    let mut out: Vec<(String, &Value)> = Vec::new();
    let mut keys: Vec<(String, String)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let param = resolve(doc, item);
        let pointer = format!("{at}/{index}");
        let name = param
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&pointer, "a parameter needs a name"))?;
        let location = param
            .get("in")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&pointer, "a parameter needs 'in'"))?;
        let key = (key_name(name, location), location.to_owned());
        if keys.contains(&key) {
            return Err(invalid(
                &pointer,
                &format!("duplicate parameter {:?} in {location}", bounded(name)),
            ));
        }
        keys.push(key);
        out.push((pointer, param));
    }
    Ok(out)
}

/// Header names compare case-insensitively; other names exactly.
fn key_name(name: &str, location: &str) -> String {
    if location == "header" {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

fn compile_param(
    doc: &Value,
    compiler: &SchemaCompiler<'_>,
    param: &Value,
    at: &str,
) -> Result<Parameter, LoadError> {
    let name = param
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let location = match param.get("in").and_then(Value::as_str) {
        Some("path") => ParamLocation::Path,
        Some("query") => ParamLocation::Query,
        Some("header") => ParamLocation::Header,
        Some("cookie") => ParamLocation::Cookie,
        _ => return Err(invalid(at, "'in' must be path, query, header or cookie")),
    };
    let schema = param.get("schema");
    let style_is_form = param
        .get("style")
        .and_then(Value::as_str)
        .is_none_or(|s| s == "form");
    let explode = param
        .get("explode")
        .and_then(Value::as_bool)
        .unwrap_or(location == ParamLocation::Query && style_is_form);
    let validator = match schema {
        Some(s) => Some(compiler.compile(s, &format!("{at}/schema"))?),
        None => None,
    };
    Ok(Parameter {
        name: key_name(
            name,
            param.get("in").and_then(Value::as_str).unwrap_or_default(),
        ),
        location,
        required: location == ParamLocation::Path
            || param.get("required") == Some(&Value::Bool(true)),
        shape: schema.map_or(Shape::String, |s| shape_of(doc, s, 0)),
        explode,
        validator,
    })
}

/// Nesting followed to find a type through `allOf`/`items`; deeper is [`Shape::Other`].
const MAX_SHAPE_DEPTH: usize = 8;

/// The shape a schema's text converts to: its first non-null `type`, looking through `$ref`
/// and the first `allOf`/`anyOf`/`oneOf` branch when it has none.
fn shape_of(doc: &Value, schema: &Value, depth: usize) -> Shape {
    let schema = resolve(doc, schema);
    if depth > MAX_SHAPE_DEPTH {
        return Shape::Other;
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    match ty {
        Some("string") => Shape::String,
        Some("integer") => Shape::Integer,
        Some("number") => Shape::Number,
        Some("boolean") => Shape::Boolean,
        Some("array") => Shape::Array(Box::new(
            schema
                .get("items")
                .map_or(Shape::String, |i| shape_of(doc, i, depth + 1)),
        )),
        Some(_) => Shape::Other,
        None => ["allOf", "anyOf", "oneOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(|v| v.get(0)))
            .map_or(Shape::String, |first| shape_of(doc, first, depth + 1)),
    }
}

fn compile_body(
    doc: &Value,
    compiler: &SchemaCompiler<'_>,
    body: &Value,
    at: &str,
) -> Result<RequestBody, LoadError> {
    let empty = Map::new();
    let content = body
        .get("content")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut media = Vec::new();
    for (range, entry) in content {
        let entry = resolve(doc, entry);
        let range = range.to_ascii_lowercase();
        let essence = range
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let json = essence == "application/json" || essence.ends_with("+json");
        let validator = match (json, entry.get("schema")) {
            (true, Some(s)) => Some(
                compiler.compile(s, &format!("{at}/content/{}/schema", escape_token(&range)))?,
            ),
            _ => None,
        };
        media.push(MediaType {
            range: essence,
            json,
            validator,
        });
    }
    Ok(RequestBody {
        required: body.get("required") == Some(&Value::Bool(true)),
        media,
    })
}

fn invalid(pointer: &str, message: &str) -> LoadError {
    LoadError::Invalid {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    }
}
