//! Response header values: the IETF httpapi `RateLimit-Policy` / `RateLimit` structured fields
//! (draft-ietf-httpapi-ratelimit-headers), the older `RateLimit-Limit/-Remaining/-Reset`,
//! `Retry-After` and `WWW-Authenticate` challenges.

use std::time::Duration;

use super::quota::LimitStatus;

/// A structured-field string: `"..."` with `\` and `"` escaped. Policy names are validated to a
/// safe alphabet; this is the second line of defence.
pub fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400`.
pub fn ratelimit_policy(statuses: &[LimitStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("{};q={};w={}", sf_string(&s.name), s.quota, s.window_secs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `RateLimit: "burst";r=42;t=17, "daily";r=998;t=3600`.
pub fn ratelimit(statuses: &[LimitStatus]) -> String {
    statuses
        .iter()
        .map(|s| {
            format!(
                "{};r={};t={}",
                sf_string(&s.name),
                s.remaining,
                s.reset_secs
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most restrictive status: fewest remaining, then longest reset.
pub fn most_restrictive(statuses: &[LimitStatus]) -> Option<&LimitStatus> {
    statuses.iter().min_by(|a, b| {
        a.remaining
            .cmp(&b.remaining)
            .then(b.reset_secs.cmp(&a.reset_secs))
    })
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` of the most restrictive limit.
pub fn legacy(statuses: &[LimitStatus]) -> Vec<(String, String)> {
    most_restrictive(statuses)
        .map(|s| {
            vec![
                ("RateLimit-Limit".to_owned(), s.quota.to_string()),
                ("RateLimit-Remaining".to_owned(), s.remaining.to_string()),
                ("RateLimit-Reset".to_owned(), s.reset_secs.to_string()),
            ]
        })
        .unwrap_or_default()
}

/// `Retry-After` delta-seconds: rounded up, at least 1, at most `max` (a monthly quota would
/// otherwise tell a client to sleep for weeks; it can ask again sooner and read `RateLimit`).
pub fn retry_after_secs(wait: Duration, max: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.clamp(1, max.as_secs().max(1))
}

/// `Bearer realm="api"`, with `error="invalid_token"` when a token was presented and refused
/// (RFC 6750 §3), or `error="insufficient_scope"` and the needed scopes on a 403.
pub fn bearer_challenge(realm: &str, error: Option<&str>, scope: Option<&str>) -> String {
    let mut c = format!("Bearer realm={}", sf_string(realm));
    if let Some(e) = error {
        c.push_str(&format!(", error={}", sf_string(e)));
    }
    if let Some(s) = scope {
        c.push_str(&format!(", scope={}", sf_string(s)));
    }
    c
}

/// `Basic realm="api", charset="UTF-8"` (RFC 7617).
pub fn basic_challenge(realm: &str) -> String {
    format!("Basic realm={}, charset=\"UTF-8\"", sf_string(realm))
}

/// API keys have no registered scheme; this names the header a client should use.
pub fn api_key_challenge(realm: &str, header: &str) -> String {
    format!(
        "ApiKey realm={}, header={}",
        sf_string(realm),
        sf_string(header)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, q: u64, w: u64, r: u64, t: u64) -> LimitStatus {
        LimitStatus {
            name: name.into(),
            quota: q,
            window_secs: w,
            remaining: r,
            reset_secs: t,
            allowed: true,
            retry_after: Duration::ZERO,
            untracked: false,
        }
    }

    #[test]
    fn structured_fields_match_the_draft_examples() {
        let one = [st("default", 100, 60, 42, 17)];
        assert_eq!(ratelimit_policy(&one), r#""default";q=100;w=60"#);
        assert_eq!(ratelimit(&one), r#""default";r=42;t=17"#);
        let two = [st("burst", 10, 1, 9, 1), st("daily", 1000, 86400, 3, 3600)];
        assert_eq!(
            ratelimit_policy(&two),
            r#""burst";q=10;w=1, "daily";q=1000;w=86400"#
        );
        assert_eq!(ratelimit(&two), r#""burst";r=9;t=1, "daily";r=3;t=3600"#);
        assert_eq!(
            legacy(&two),
            vec![
                ("RateLimit-Limit".to_owned(), "1000".to_owned()),
                ("RateLimit-Remaining".to_owned(), "3".to_owned()),
                ("RateLimit-Reset".to_owned(), "3600".to_owned()),
            ]
        );
        assert_eq!(sf_string("a\"b\\c\n"), r#""a\"b\\c""#);
    }

    #[test]
    fn retry_after_rounds_up_and_clamps() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_after_secs(Duration::from_millis(1), hour), 1);
        assert_eq!(retry_after_secs(Duration::ZERO, hour), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500), hour), 2);
        assert_eq!(
            retry_after_secs(Duration::from_secs(30 * 86400), hour),
            3600
        );
    }

    #[test]
    fn challenges() {
        assert_eq!(bearer_challenge("api", None, None), r#"Bearer realm="api""#);
        assert_eq!(
            bearer_challenge("api", Some("insufficient_scope"), Some("read write")),
            r#"Bearer realm="api", error="insufficient_scope", scope="read write""#
        );
        assert_eq!(
            basic_challenge("api"),
            r#"Basic realm="api", charset="UTF-8""#
        );
    }
}
