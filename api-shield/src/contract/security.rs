//! Security requirements of an operation, as the policy will map them to its auth methods:
//! which schemes (by name and kind) and which scopes. The contract does not check
//! credentials itself; the policy's authenticators do.

use serde::Serialize;
use serde_json::Value;

use super::document::resolve;

/// The kind of a security scheme, from `components.securitySchemes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum SchemeKind {
    /// An API key in a header, query parameter or cookie.
    ApiKey {
        /// `header`, `query` or `cookie`.
        location: String,
        /// The header, parameter or cookie name.
        name: String,
    },
    /// HTTP authentication (`basic`, `bearer`, ...), scheme lower-cased.
    Http {
        /// The scheme.
        scheme: String,
    },
    /// OAuth 2.
    OAuth2,
    /// OpenID Connect.
    OpenIdConnect,
    /// Mutual TLS.
    MutualTls,
    /// Declared with a type this code does not know, or not declared at all.
    Unknown,
}

/// One scheme of a requirement with the scopes it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchemeRequirement {
    /// The scheme's name in `components.securitySchemes`.
    pub name: String,
    /// Its kind.
    pub kind: SchemeKind,
    /// Scopes (OAuth 2 / OpenID Connect), or roles for other kinds in 3.1.
    pub scopes: Vec<String>,
}

/// One alternative: every scheme in it must be satisfied. An empty one means "anonymous
/// allowed".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecurityRequirement {
    /// The schemes, all required together.
    pub schemes: Vec<SchemeRequirement>,
}

/// The requirements of a `security` array (the operation's, else the document's).
pub fn requirements(doc: &Value, security: Option<&Value>) -> Vec<SecurityRequirement> {
    let Some(Value::Array(alternatives)) = security else {
        return Vec::new();
    };
    alternatives
        .iter()
        .filter_map(Value::as_object)
        .map(|requirement| SecurityRequirement {
            schemes: requirement
                .iter()
                .map(|(name, scopes)| SchemeRequirement {
                    name: name.clone(),
                    kind: kind_of(doc, name),
                    scopes: scopes
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect(),
        })
        .collect()
}

fn kind_of(doc: &Value, name: &str) -> SchemeKind {
    let Some(scheme) = doc
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .and_then(|s| s.get(name))
    else {
        return SchemeKind::Unknown;
    };
    let scheme = resolve(doc, scheme);
    let text = |key: &str| {
        scheme
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match scheme.get("type").and_then(Value::as_str) {
        Some("apiKey") => SchemeKind::ApiKey {
            location: text("in"),
            name: text("name"),
        },
        Some("http") => SchemeKind::Http {
            scheme: text("scheme").to_ascii_lowercase(),
        },
        Some("oauth2") => SchemeKind::OAuth2,
        Some("openIdConnect") => SchemeKind::OpenIdConnect,
        Some("mutualTLS") => SchemeKind::MutualTls,
        _ => SchemeKind::Unknown,
    }
}
