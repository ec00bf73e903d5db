//! The gateway's OpenAPI contracts (`[[gateway.apis]]`): loaded with the rest of the gateway
//! at start and on every SIGHUP (a document that cannot be loaded refuses the start or the
//! reload, naming the file and the place in it, and a refused reload keeps the contracts in
//! force), found per request by host and base path, and judged the same way for the gateway
//! ([`super::proxy::validation`]) and the check endpoint ([`check_head`]).
//!
//! Judging counts the outcome (`api_shield_gateway_contract_validations_total`) and logs each
//! refusal with the places that failed. Nothing logged comes raw from the request: the API is
//! named by its configuration, the operation by the document, and the violations went through
//! the contract's escaping and bounds.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

use super::authz::{Dialect, STATUS_HEADER};
use super::contract_metrics::{ContractOutcome, NO_OPERATION};
use super::metrics::GatewayMetrics;
use crate::contract::{
    ApiConfig, Contract, LoadLimits, Mode, PROBLEM_CONTENT_TYPE, PROBLEM_STATUS, Report, Request,
};
use crate::policy::RequestMeta;

/// One API of `[[gateway.apis]]`, compiled.
#[derive(Debug)]
pub struct Api {
    pub contract: Contract,
    /// The `api` label and log name: the document's file name (`petstore.yaml`).
    pub label: String,
    /// Lower case, without a port; `None` serves every host.
    host: Option<String>,
}

/// Every API of the gateway, in configuration order (the first that fits a request wins).
#[derive(Debug, Default)]
pub struct Contracts {
    apis: Vec<Api>,
}

/// Problems of the `[[gateway.apis]]` settings themselves (the documents are read by
/// [`Contracts::load`]).
pub fn config_problems(apis: &[ApiConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, api) in apis.iter().enumerate() {
        let at = format!("gateway.apis[{i}] ({})", api.spec.display());
        if !api.spec.is_absolute() {
            problems.push(format!("{at}: spec must be an absolute path"));
        }
        if api
            .base_path
            .as_deref()
            .is_some_and(|b| !b.starts_with('/'))
        {
            problems.push(format!("{at}: base_path must start with `/`"));
        }
        if api
            .host
            .as_deref()
            .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
        {
            problems.push(format!(
                "{at}: host must be a host name (`api.example.com`)"
            ));
        }
        if api.max_violations == 0 {
            problems.push(format!("{at}: max_violations must be at least 1"));
        }
    }
    problems
}

impl Contracts {
    /// Reads and compiles every document; every one that fails is named with its place.
    pub fn load(apis: &[ApiConfig]) -> Result<Self, Vec<String>> {
        let limits = LoadLimits::default();
        let mut loaded = Vec::with_capacity(apis.len());
        let mut problems = Vec::new();
        for (i, config) in apis.iter().enumerate() {
            let label = config.spec.file_name().map_or_else(
                || config.spec.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let host = config.host.as_deref().map(normalise_host);
            match Contract::from_config(config.clone(), &limits) {
                Ok(contract) => loaded.push(Api {
                    contract,
                    label,
                    host,
                }),
                Err(e) => problems.push(format!(
                    "gateway.apis[{i}] spec {}: {e}",
                    config.spec.display()
                )),
            }
        }
        if problems.is_empty() {
            Ok(Self { apis: loaded })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.apis.is_empty()
    }

    /// Each API's host (`None`: every host) with the path templates its document declares,
    /// base path included: the inventory's known paths, which win over learned templates.
    pub fn spec_paths(&self) -> Vec<(Option<&str>, Vec<String>)> {
        self.apis
            .iter()
            .map(|api| {
                let mut templates: Vec<String> = api
                    .contract
                    .spec_templates()
                    .into_iter()
                    .map(|(_, template)| template)
                    .collect();
                templates.sort_unstable();
                templates.dedup();
                (api.host.as_deref(), templates)
            })
            .collect()
    }

    /// The API serving `host` (as the request named it, port or not) under whose base path
    /// `path` (normalised, no query) lies.
    pub fn find(&self, host: &str, path: &str) -> Option<&Api> {
        if self.apis.is_empty() {
            return None;
        }
        let host = normalise_host(host);
        self.apis.iter().find(|api| {
            api.host.as_ref().is_none_or(|h| *h == host) && under(path, api.contract.base_path())
        })
    }
}

/// `path` is `base` or below it (segment-wise: `/v1` holds `/v1/x`, not `/v10`).
fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `API.Example:8443` → `api.example`, `[2001:db8::1]:443` → `[2001:db8::1]`.
fn normalise_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Counts `report`'s outcome and logs a refusal; `Some(problem body)` when the request must
/// be refused.
pub fn judge(
    api: &Api,
    report: &Report<'_>,
    metrics: &GatewayMetrics,
    client: IpAddr,
) -> Option<Vec<u8>> {
    let operation = report.operation.map_or(NO_OPERATION, |op| {
        op.operation_id.as_deref().unwrap_or(op.template.text())
    });
    let outcome = match (report.operation, report.mode) {
        (_, Mode::Off) => return None,
        (None, _) => ContractOutcome::UnknownOperation,
        _ if report.violations.is_empty() => ContractOutcome::Passed,
        _ if report.refuse() => ContractOutcome::FailedEnforced,
        _ => ContractOutcome::FailedMonitored,
    };
    metrics.contract.record(&api.label, operation, outcome);
    if !report.refuse() {
        return None;
    }
    let places: Vec<String> = report
        .violations
        .iter()
        .map(|v| format!("{}:{}{} {}", as_str(v), v.name, v.pointer, v.message))
        .collect();
    tracing::warn!(
        api = %api.label,
        operation,
        %client,
        truncated = report.truncated,
        violations = %places.join("; "),
        "contract: request refused"
    );
    Some(report.problem_body())
}

fn as_str(v: &crate::contract::Violation) -> &'static str {
    use crate::contract::Where;
    match v.location {
        Where::Operation => "operation",
        Where::Path => "path",
        Where::Query => "query",
        Where::Header => "header",
        Where::Body => "body",
    }
}

/// The check endpoint's validation: the original request's head (the check endpoint never
/// sees the body). `Some(answer)` refuses it: 400 with the problem body, or for nginx (which
/// turns a 400 from `auth_request` into a 500) 403, `X-Shield-Status: 400` and no body.
pub fn check_head(
    contracts: &Contracts,
    dialect: Dialect,
    meta: &RequestMeta,
    metrics: &GatewayMetrics,
) -> Option<Response<Full<Bytes>>> {
    let api = contracts.find(&meta.host, &meta.path)?;
    let headers: Vec<(&str, &[u8])> = meta
        .headers
        .iter()
        .map(|(n, v)| (n, v.as_bytes()))
        .collect();
    let req = Request {
        method: &meta.method,
        path: &meta.path,
        query: meta.query.as_deref(),
        headers: &headers,
        body: &[],
        declared_length: None,
    };
    let report = api.contract.validate_head(&req);
    let body = judge(api, &report, metrics, meta.client_ip)?;
    let (status, body) = if dialect == Dialect::Nginx {
        (StatusCode::FORBIDDEN, Vec::new())
    } else {
        (StatusCode::BAD_REQUEST, body)
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(STATUS_HEADER, HeaderValue::from(PROBLEM_STATUS));
    if dialect != Dialect::Nginx {
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_port_case_and_final_dot() {
        assert_eq!(normalise_host("API.Example.com:8443"), "api.example.com");
        assert_eq!(normalise_host("api.example.com."), "api.example.com");
        assert_eq!(normalise_host("[2001:db8::1]:443"), "[2001:db8::1]");
        assert_eq!(normalise_host("198.18.0.1"), "198.18.0.1");
    }

    const SPEC: &str = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /items/{id}:\n    get:\n      operationId: getItem\n      parameters:\n        - {name: id, in: path, required: true, schema: {type: integer}}\n      responses: {'200': {description: ok}}\n";

    #[test]
    fn a_bad_document_is_named_with_its_place_and_good_ones_load() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(&good, SPEC).unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "openapi: 3.0.3\ninfo: {title: t\npaths: {}\n").unwrap();
        let mut api = ApiConfig::new(&good);
        api.host = Some("API.test".into());
        let loaded = Contracts::load(std::slice::from_ref(&api)).unwrap();
        assert!(loaded.find("api.test:8080", "/items/7").is_some());
        assert!(loaded.find("other.test", "/items/7").is_none());
        let err = Contracts::load(&[api, ApiConfig::new(&bad)])
            .unwrap_err()
            .join("; ");
        assert!(
            err.contains("gateway.apis[1]") && err.contains("bad.yaml"),
            "{err}"
        );
        assert!(err.contains("line"), "{err}");
        assert!(!err.contains("good.yaml"), "{err}");
        let dangling = dir.path().join("dangling.yaml");
        std::fs::write(
            &dangling,
            SPEC.replace("{type: integer}", "{$ref: '#/nope'}"),
        )
        .unwrap();
        let err = Contracts::load(&[ApiConfig::new(&dangling)])
            .unwrap_err()
            .join("; ");
        assert!(
            err.contains("dangling.yaml") && err.contains("/paths/"),
            "{err}"
        );
    }

    #[test]
    fn outcomes_are_counted_and_only_enforced_failures_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("items.yaml");
        std::fs::write(&spec, SPEC).unwrap();
        let metrics = GatewayMetrics::new();
        let client: IpAddr = "198.18.0.1".parse().unwrap();
        for (mode, path, outcome, refused) in [
            (Mode::Enforce, "/items/7", ContractOutcome::Passed, false),
            (
                Mode::Enforce,
                "/items/x",
                ContractOutcome::FailedEnforced,
                true,
            ),
            (
                Mode::Monitor,
                "/items/x",
                ContractOutcome::FailedMonitored,
                false,
            ),
            (
                Mode::Monitor,
                "/nothing",
                ContractOutcome::UnknownOperation,
                false,
            ),
        ] {
            let mut api = ApiConfig::new(&spec);
            api.mode = mode;
            let contracts = Contracts::load(&[api]).unwrap();
            let api = contracts.find("h", path).unwrap();
            let req = Request {
                method: "GET",
                path,
                query: None,
                headers: &[],
                body: &[],
                declared_length: None,
            };
            let report = api.contract.validate(&req);
            let before = metrics
                .contract
                .get("items.yaml", op_label(&report), outcome);
            let problem = judge(api, &report, &metrics, client);
            assert_eq!(problem.is_some(), refused, "{path} {mode:?}");
            let after = metrics
                .contract
                .get("items.yaml", op_label(&report), outcome);
            assert_eq!(after, before + 1, "{path} {mode:?}");
            if let Some(body) = problem {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["status"], 400);
                assert_eq!(v["errors"][0]["in"], "path");
                assert_eq!(v["errors"][0]["name"], "id");
            }
        }
    }

    fn op_label<'a>(report: &'a Report<'_>) -> &'a str {
        report.operation.map_or(NO_OPERATION, |op| {
            op.operation_id.as_deref().unwrap_or(op.template.text())
        })
    }

    #[test]
    fn base_paths_hold_whole_segments_only() {
        assert!(under("/v1/pets", "/v1"));
        assert!(under("/v1", "/v1"));
        assert!(!under("/v10/pets", "/v1"));
        assert!(under("/anything", ""));
    }
}
