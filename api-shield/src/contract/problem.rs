//! RFC 9457 `application/problem+json` answers for a refused request: the standard members
//! and an `errors` extension listing the violations. Everything taken from the request went
//! through [`super::validate::safe`] (escaped, bounded) and the list is bounded, so the answer
//! stays small whatever the request held.

use serde::Serialize;

use super::validate::Violation;

/// The media type of the answer.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// The status of a request that breaks the contract.
pub const PROBLEM_STATUS: u16 = 400;
/// A stable identifier of this problem type (RFC 9457 section 3.1.1: a URI, need not resolve).
pub const PROBLEM_TYPE: &str = "urn:api-shield:problem:request-validation";

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<&'a str>,
    errors: &'a [Violation],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// The body of a 400 answer for `violations` (already bounded), naming the operation by its
/// `operationId` or template when known.
pub fn problem_body(violations: &[Violation], truncated: bool, operation: Option<&str>) -> Vec<u8> {
    let more = if truncated { " or more" } else { "" };
    let problem = Problem {
        kind: PROBLEM_TYPE,
        title: "Request does not match the API contract",
        status: PROBLEM_STATUS,
        detail: format!(
            "{} violation(s){more} of the API's OpenAPI description",
            violations.len()
        ),
        operation,
        errors: violations,
        truncated,
    };
    // Serialising owned strings and numbers cannot fail; an empty body would still be a 400.
    serde_json::to_vec(&problem).unwrap_or_default()
}
