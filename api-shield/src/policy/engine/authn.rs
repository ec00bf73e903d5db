//! Authentication inside the engine: which credential a request presents, whether it is
//! good, and the challenge to answer when it is not. Basic passwords never get hashed here:
//! a password the success cache does not know is handed back as a [`PasswordCheck`] (unless
//! its source has spent its failure budget), and its verdict comes back in a second pass.

use std::net::IpAddr;
use std::time::Duration;

use super::super::basic::{self, Lookup};
use super::super::config::{AuthMethod, RouteConfig};
use super::super::decision::AccessDecision;
use super::super::headers;
use super::super::identity::{Grant, Identity};
use super::super::jwt::JwtError;
use super::super::password::{PasswordCheck, PasswordOutcome, PasswordVerdict};
use super::super::request::RequestMeta;
use super::super::time::Now;
use super::Engine;

/// A presented credential.
pub(super) enum Presented {
    ApiKey(String),
    Basic(Option<(String, String)>),
    Bearer(String),
}

/// Why authentication did not produce an identity (yet).
pub(super) enum AuthStop {
    /// Refused; the detail says why (never a secret).
    Invalid(&'static str),
    /// A Basic password from a source out of failure budget: refused unhashed, try after.
    BudgetSpent(Duration),
    /// A Basic password to hash before deciding.
    Hash(PasswordCheck),
}

const BAD_PASSWORD: &str = "bad user name or password";

impl Engine {
    /// The first credential present, in the route's order of methods.
    pub(super) fn presented(
        &self,
        cfg: &RouteConfig,
        req: &RequestMeta,
    ) -> Option<(AuthMethod, Presented)> {
        let authz = req.headers.get("authorization").map(str::trim);
        let scheme = |s: &str| {
            authz.and_then(|a| {
                let (scheme, rest) = a.split_once(' ')?;
                scheme.eq_ignore_ascii_case(s).then(|| rest.trim())
            })
        };
        cfg.auth.iter().find_map(|m| match m {
            AuthMethod::ApiKey => req
                .headers
                .get(&cfg.api_key_header)
                .map(|k| k.trim().to_owned())
                .or_else(|| cfg.api_key_query.as_ref().and_then(|q| req.query_param(q)))
                .map(|k| (*m, Presented::ApiKey(k))),
            AuthMethod::Basic => scheme("basic").map(|_| {
                (
                    *m,
                    Presented::Basic(authz.and_then(basic::parse_authorization)),
                )
            }),
            AuthMethod::Jwt => scheme("bearer").map(|t| (*m, Presented::Bearer(t.to_owned()))),
        })
    }

    /// The identity and plan of `presented`. `verdict` is the outcome of the password check
    /// an earlier pass handed out for this request, if any.
    pub(super) fn authenticate(
        &self,
        presented: Presented,
        client: Option<IpAddr>,
        now: Now,
        verdict: Option<PasswordVerdict>,
        d: &mut AccessDecision,
    ) -> Result<(Identity, Option<String>), AuthStop> {
        let from_grant = |g: &Grant, m| (Identity::from_grant(g, m), g.plan.clone());
        match presented {
            Presented::ApiKey(key) => self
                .api_keys
                .verify(&key)
                .map(|g| from_grant(g, AuthMethod::ApiKey))
                .ok_or(AuthStop::Invalid("unknown API key")),
            Presented::Basic(None) => Err(AuthStop::Invalid("malformed Basic credentials")),
            Presented::Basic(Some((user, pass))) => {
                let grant = self.password(&user, &pass, client, now, verdict, d)?;
                Ok(from_grant(grant, AuthMethod::Basic))
            }
            Presented::Bearer(token) => {
                let has_plan = |p: &str| self.has_plan(p);
                match self.jwt.verify(&token, now, &has_plan) {
                    Ok(j) => {
                        let mut identity = Identity::from_grant(&j.grant, AuthMethod::Jwt);
                        identity.issuer = Some(j.issuer);
                        Ok((identity, j.grant.plan))
                    }
                    Err(e) => Err(AuthStop::Invalid(jwt_detail(e))),
                }
            }
        }
    }

    /// A Basic user and password: the success cache first (a good client never waits for a
    /// hash, nor pays for its neighbours' failures), then the source's failure budget, then
    /// the hash (handed out, or its verdict taken).
    fn password(
        &self,
        user: &str,
        pass: &str,
        client: Option<IpAddr>,
        now: Now,
        verdict: Option<PasswordVerdict>,
        d: &mut AccessDecision,
    ) -> Result<&Grant, AuthStop> {
        let mut failed = || {
            // A client known only as a trusted proxy has no budget of its own: spending the
            // proxy's would lock out everyone behind it.
            if let Some(client) = client {
                self.password_budget.record_failure(client, now.mono);
            }
            d.password = Some(PasswordOutcome::Rejected);
            Err(AuthStop::Invalid(BAD_PASSWORD))
        };
        if let Some(verdict) = verdict {
            return match self.basic.complete(user, pass, verdict, now.mono) {
                Some(grant) => {
                    d.password = Some(PasswordOutcome::Verified);
                    Ok(grant)
                }
                None => failed(),
            };
        }
        match self.basic.lookup(user, pass, now.mono) {
            Lookup::Refused => failed(),
            Lookup::Cached(grant) => {
                d.password = Some(PasswordOutcome::Cached);
                Ok(grant)
            }
            Lookup::Hash(check) => {
                match client.and_then(|c| self.password_budget.spent(c, now.mono)) {
                    Some(wait) => {
                        d.password = Some(PasswordOutcome::BudgetSpent);
                        Err(AuthStop::BudgetSpent(wait))
                    }
                    None => Err(AuthStop::Hash(check)),
                }
            }
        }
    }

    /// `WWW-Authenticate` for the route's methods; `invalid` marks which one was refused.
    pub(super) fn challenges(&self, cfg: &RouteConfig, invalid: Option<AuthMethod>) -> String {
        let realm = &self.config.realm;
        cfg.auth
            .iter()
            .map(|m| match m {
                AuthMethod::Jwt => headers::bearer_challenge(
                    realm,
                    (invalid == Some(AuthMethod::Jwt)).then_some("invalid_token"),
                    None,
                ),
                AuthMethod::Basic => headers::basic_challenge(realm),
                AuthMethod::ApiKey => headers::api_key_challenge(realm, &cfg.api_key_header),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn jwt_detail(e: JwtError) -> &'static str {
    match e {
        JwtError::Malformed => "malformed token",
        JwtError::AlgorithmNotAllowed => "algorithm not allowed",
        JwtError::WrongIssuer => "unknown issuer",
        JwtError::UnknownKey => "no key for this token",
        JwtError::BadSignature => "bad signature",
        JwtError::Expired => "token expired",
        JwtError::NotYetValid => "token not yet valid",
        JwtError::MissingExp => "token has no exp",
        JwtError::WrongAudience => "wrong audience",
        JwtError::BadIdentity => "bad identity claim",
    }
}
