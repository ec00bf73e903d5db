//! Who a request is: what a credential grants, and the identity the engine hands upstream.

use serde::Serialize;

use super::config::AuthMethod;

/// What a configured credential (API key, Basic user) or a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Identity name.
    pub identity: String,
    /// Plan, if the credential names one.
    pub plan: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
}

/// An authenticated identity. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Identity name: the API key's or Basic user's identity, or the JWT's identity claim.
    pub id: String,
    /// How it authenticated.
    pub method: AuthMethod,
    /// The JWT issuer, for tokens.
    pub issuer: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Roles.
    pub roles: Vec<String>,
}

impl Identity {
    pub(crate) fn from_grant(grant: &Grant, method: AuthMethod) -> Self {
        Self {
            id: grant.identity.clone(),
            method,
            issuer: None,
            scopes: grant.scopes.clone(),
            roles: grant.roles.clone(),
        }
    }

    /// The key under which limits count this identity. API keys and Basic users share the
    /// operator's namespace (the same `identity` shares quotas); token subjects live in their
    /// issuer's namespace.
    pub fn limit_key(&self) -> String {
        match &self.issuer {
            Some(iss) => format!("jwt:{iss}:{}", self.id),
            None => format!("id:{}", self.id),
        }
    }
}
