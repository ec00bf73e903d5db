//! The engine end to end, without sockets: a TOML policy, requests in, decisions out.

use std::{net::IpAddr, sync::Arc, time::Duration};

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::*;
use crate::policy::{
    AccessDecision, DenyReason, Engine, NoFetcher, PolicyConfig, RequestMeta, Rule, Verdict,
    apikey::hash_api_key,
    basic::tests::{argon2id_hash, bcrypt_hash},
    config::AuthMethod,
};

const ALICE_KEY: &str = "ak_live_alice_4f9c2e7a1b";
const ADMIN_KEY: &str = "ak_live_admin_88d1e0c3f2";
const BETA_KEY: &str = "ak_live_beta_0000000001";

pub(super) fn policy_toml() -> String {
    format!(
        r#"
realm = "orders"

[[api_keys]]
hash = "{alice}"
identity = "alice"
plan = "free"
scopes = ["orders:read"]

[[api_keys]]
hash = "{admin}"
identity = "admin"
plan = "gold"
roles = ["admin"]

[[api_keys]]
hash = "{beta}"
identity = "beta-tester"

[[basic_users]]
username = "ann"
password_hash = "{ann}"
plan = "free"

[[basic_users]]
username = "bob"
password_hash = "{bob}"

[[jwt_issuers]]
issuer = "{iss}"
audiences = ["{aud}"]
algorithms = ["ES256"]
plan = "free"
plan_claim = "plan"
[[jwt_issuers.keys]]
pem = """{pem}"""

[plans.free]
rate = [{{ name = "burst", rate = 5, per = "1s" }}]
quota = [{{ name = "daily", limit = 8, window = "day" }}]

[plans.gold]
rate = [{{ name = "burst", rate = 100, per = "1s" }}]

[[routes]]
name = "public"
path_prefix = "/public"
rate = [{{ name = "per-ip", rate = 2, per = "1m", key = ["ip"] }}]

[[routes]]
name = "orders"
path_prefix = "/v1/orders"
auth = ["jwt", "api_key", "basic"]
default_plan = "free"
api_key_query = "api_key"
plan_header = "x-auth-plan"

[[routes]]
name = "orders-write"
path_prefix = "/v1/orders"
methods = ["POST", "DELETE"]
auth = ["jwt", "api_key"]
require_scopes = ["orders:write"]

[[routes]]
name = "admin"
host = "admin.example"
auth = ["api_key"]
require_roles = ["admin"]

[[routes]]
name = "beta"
host = "*.beta.example"
auth = ["api_key"]
default_plan = "free"
dry_run = true

[detector]
auth_failures = {{ count = 3, within = "1m", ttl = "10m" }}
not_found_paths = {{ count = 3, within = "1m", ttl = "1h" }}
"#,
        alice = hash_api_key(ALICE_KEY),
        admin = hash_api_key(ADMIN_KEY),
        beta = hash_api_key(BETA_KEY),
        ann = argon2id_hash("ann's passphrase"),
        bob = bcrypt_hash("bob's passphrase"),
        iss = ISS,
        aud = AUD,
        pem = EC256A_PUB,
    )
}

pub(super) fn engine_with(edit: impl FnOnce(&mut PolicyConfig)) -> Engine {
    let mut cfg = PolicyConfig::from_toml_str(&policy_toml()).unwrap();
    edit(&mut cfg);
    Engine::new(cfg, Arc::new(NoFetcher)).unwrap()
}

fn engine() -> Engine {
    engine_with(|_| {})
}

pub(super) const CLIENT: &str = "203.0.113.9";

pub(super) fn get(path: &str) -> RequestMeta {
    RequestMeta::new(CLIENT.parse().unwrap(), "GET", "api.example", path)
}

fn status(d: &AccessDecision) -> u16 {
    d.status()
}

pub(super) fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", b64(format!("{user}:{pass}").as_bytes()))
}

fn bearer(extra: serde_json::Value) -> String {
    format!("Bearer {}", sign(Algorithm::ES256, None, &claims(extra)))
}

#[test]
fn api_key_in_header_or_query_identity_upstream_credentials_stripped() {
    let e = engine();
    let d = e.check(
        &get("/v1/orders")
            .header("X-Api-Key", ALICE_KEY)
            .header("X-Auth-Identity", "root"),
        now(),
    );
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.route.as_deref(), Some("orders"));
    let id = d.identity.as_ref().unwrap();
    assert_eq!((id.id.as_str(), id.method), ("alice", AuthMethod::ApiKey));
    assert_eq!(d.plan.as_deref(), Some("free"));
    assert_eq!(d.upstream_header("x-auth-identity"), Some("alice"));
    assert_eq!(d.upstream_header("x-auth-plan"), Some("free"));
    // The client's own X-Auth-Identity and the credentials go before ours are set.
    for h in [
        "x-auth-identity",
        "x-auth-plan",
        "authorization",
        "x-api-key",
    ] {
        assert!(
            d.strip_headers.iter().any(|s| s.eq_ignore_ascii_case(h)),
            "{h}"
        );
    }
    assert_eq!(d.strip_query_params, vec!["api_key".to_owned()]);

    let d = e.check(
        &get("/v1/orders/7").query(&format!("api_key={ALICE_KEY}")),
        now(),
    );
    assert_eq!(d.identity.unwrap().id, "alice");
}

#[test]
fn missing_or_invalid_credentials_are_401_with_challenges() {
    let e = engine();
    let d = e.check(&get("/v1/orders"), now());
    assert_eq!(d.reason, Some(DenyReason::MissingCredentials));
    let Verdict::Deny {
        status: 401,
        www_authenticate: Some(c),
        retry_after: None,
    } = &d.verdict
    else {
        panic!("{:?}", d.verdict)
    };
    assert_eq!(
        c,
        r#"Bearer realm="orders", ApiKey realm="orders", header="x-api-key", Basic realm="orders", charset="UTF-8""#
    );
    assert_eq!(d.response_header("www-authenticate"), Some(c.as_str()));
    assert!(d.upstream_headers.is_empty());

    let d = e.check(
        &get("/v1/orders").header("x-api-key", "ak_live_guess"),
        now(),
    );
    assert_eq!(status(&d), 401);
    assert!(matches!(
        d.reason,
        Some(DenyReason::InvalidCredentials {
            method: AuthMethod::ApiKey,
            ..
        })
    ));
    let d = e.check(
        &get("/v1/orders").header("authorization", "Bearer x.y.z"),
        now(),
    );
    assert_eq!(status(&d), 401);
    assert!(
        d.response_header("www-authenticate")
            .unwrap()
            .starts_with(r#"Bearer realm="orders", error="invalid_token""#)
    );
}

#[test]
fn basic_users_with_argon2id_and_bcrypt() {
    let e = engine();
    let ok = |user, pass| {
        e.check(
            &get("/v1/orders").header("Authorization", &basic(user, pass)),
            now(),
        )
    };
    let d = ok("ann", "ann's passphrase");
    assert_eq!(
        d.identity.as_ref().map(|i| (i.id.as_str(), i.method)),
        Some(("ann", AuthMethod::Basic))
    );
    assert_eq!(d.identity.unwrap().id, "ann");
    let d = ok("bob", "bob's passphrase");
    assert_eq!(d.identity.unwrap().id, "bob");
    assert_eq!(d.plan.as_deref(), Some("free"), "route default plan");
    for (u, p) in [
        ("ann", "bob's passphrase"),
        ("bob", "x"),
        ("carol", "ann's passphrase"),
    ] {
        assert_eq!(status(&ok(u, p)), 401, "{u}");
    }
    let d = e.check(
        &get("/v1/orders").header("Authorization", "Basic %%%"),
        now(),
    );
    assert_eq!(status(&d), 401);
}

#[test]
fn jwt_valid_expired_early_wrong_aud_wrong_iss_tampered_none_confusion() {
    let e = engine();
    let run = |auth: &str| e.check(&get("/v1/orders").header("Authorization", auth), now());
    let d = run(&bearer(json!({})));
    let id = d.identity.clone().unwrap();
    assert_eq!(
        (id.id.as_str(), id.issuer.as_deref()),
        ("user-1", Some(ISS))
    );
    assert_eq!(id.scopes, vec!["orders:read", "orders:write"]);
    assert_eq!(d.plan.as_deref(), Some("free"));
    assert_eq!(
        run(&bearer(json!({"plan": "gold"}))).plan.as_deref(),
        Some("gold")
    );
    assert_eq!(
        run(&bearer(json!({"plan": "platinum"}))).plan.as_deref(),
        Some("free")
    );

    let good = sign(Algorithm::ES256, None, &claims(json!({})));
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_body = b64url(claims(json!({"sub": "admin"})).to_string().as_bytes());
    parts[1] = &forged_body;
    let none_header = b64url(br#"{"alg":"none"}"#);
    let none = format!("{none_header}.{forged_body}.");
    let confused = sign_with(
        Algorithm::HS256,
        None,
        &claims(json!({})),
        &jsonwebtoken::EncodingKey::from_secret(EC256A_PUB.as_bytes()).unwrap(),
    );
    for (case, token, detail) in [
        (
            "expired",
            sign(Algorithm::ES256, None, &claims(json!({"exp": T0 - 60}))),
            "token expired",
        ),
        (
            "early",
            sign(Algorithm::ES256, None, &claims(json!({"nbf": T0 + 60}))),
            "token not yet valid",
        ),
        (
            "aud",
            sign(Algorithm::ES256, None, &claims(json!({"aud": "api://x"}))),
            "wrong audience",
        ),
        (
            "iss",
            sign(Algorithm::ES256, None, &claims(json!({"iss": "https://x"}))),
            "unknown issuer",
        ),
        ("tampered", parts.join("."), "bad signature"),
        ("none", none, "algorithm not allowed"),
        ("confusion", confused, "algorithm not allowed"),
    ] {
        let d = run(&format!("Bearer {token}"));
        assert_eq!(status(&d), 401, "{case}");
        assert_eq!(
            d.reason,
            Some(DenyReason::InvalidCredentials {
                method: AuthMethod::Jwt,
                detail: detail.into()
            }),
            "{case}"
        );
    }
}

#[test]
fn valid_but_not_allowed_is_403() {
    let e = engine();
    let post = |auth: (&str, &str)| {
        let mut r = get("/v1/orders").header(auth.0, auth.1);
        r.method = "POST".into();
        e.check(&r, now())
    };
    let d = post(("x-api-key", ALICE_KEY));
    assert_eq!(d.route.as_deref(), Some("orders-write"));
    assert_eq!(status(&d), 403);
    assert!(matches!(d.reason, Some(DenyReason::Forbidden { .. })));
    assert_eq!(d.response_header("www-authenticate"), None);
    assert_eq!(status(&post(("authorization", &bearer(json!({}))))), 200);
    let d = post(("authorization", &bearer(json!({"scope": "orders:read"}))));
    assert_eq!(status(&d), 403);
    assert_eq!(
        d.response_header("www-authenticate"),
        Some(r#"Bearer realm="orders", error="insufficient_scope", scope="orders:write""#)
    );
    // Roles, on a host-specific route.
    let admin = |key| {
        let mut r = get("/anything").header("x-api-key", key);
        r.host = "Admin.Example:443".into();
        e.check(&r, now())
    };
    assert_eq!(status(&admin(ALICE_KEY)), 403);
    assert_eq!(status(&admin(ADMIN_KEY)), 200);
}

#[test]
fn quota_429_headers_are_exact() {
    let e = engine();
    let t = now(); // midnight UTC: the daily window has 86400 s left
    let req = get("/v1/orders").header("x-api-key", ALICE_KEY);
    let d = e.check(&req, t);
    assert_eq!(
        d.response_header("RateLimit-Policy"),
        Some(r#""burst";q=5;w=1, "daily";q=8;w=86400"#)
    );
    assert_eq!(
        d.response_header("RateLimit"),
        Some(r#""burst";r=4;t=1, "daily";r=7;t=86400"#)
    );
    assert_eq!(
        d.response_header("RateLimit-Limit"),
        None,
        "legacy headers are opt-in"
    );
    for _ in 0..4 {
        assert!(e.check(&req, t).is_allowed());
    }
    let d = e.check(&req, t);
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            status: 429,
            www_authenticate: None,
            retry_after: Some(1)
        }
    );
    assert_eq!(
        d.reason,
        Some(DenyReason::RateLimited {
            limit: "burst".into()
        })
    );
    assert_eq!(d.response_header("Retry-After"), Some("1"));
    assert_eq!(
        d.response_header("RateLimit"),
        Some(r#""burst";r=0;t=1, "daily";r=3;t=86400"#)
    );
    // A second later the bucket is full again; the day allows three more.
    let t1 = t.after(Duration::from_secs(1));
    for r in [2, 1, 0] {
        let d = e.check(&req, t1);
        assert!(d.is_allowed());
        assert_eq!(d.limits[1].remaining, r);
    }
    let d = e.check(&req, t1);
    assert_eq!(
        d.reason,
        Some(DenyReason::RateLimited {
            limit: "daily".into()
        })
    );
    // 86399 s to midnight, clamped to the configured maximum (1 h by default).
    assert_eq!(d.response_header("Retry-After"), Some("3600"));
    assert_eq!(
        d.response_header("RateLimit"),
        Some(r#""burst";r=2;t=1, "daily";r=0;t=86399"#)
    );
    assert_eq!(e.stats().throttled, 2);

    let legacy = engine_with(|c| c.headers.legacy = true);
    let d = legacy.check(&req, t);
    assert_eq!(d.response_header("RateLimit-Limit"), Some("5"));
    assert_eq!(d.response_header("RateLimit-Remaining"), Some("4"));
    assert_eq!(d.response_header("RateLimit-Reset"), Some("1"));
}

#[test]
fn anonymous_route_limits_per_ip() {
    let e = engine();
    let t = now();
    for _ in 0..2 {
        let d = e.check(&get("/public/doc").header("x-auth-identity", "root"), t);
        assert!(d.is_allowed());
        assert!(d.identity.is_none() && d.upstream_headers.is_empty());
        assert!(d.strip_headers.contains(&"x-auth-identity".to_owned()));
    }
    let d = e.check(&get("/public/doc"), t);
    assert_eq!(d.response_header("Retry-After"), Some("30"));
    let mut other = get("/public/doc");
    other.client_ip = "203.0.113.10".parse().unwrap();
    assert!(e.check(&other, t).is_allowed());
}

#[test]
fn routes_normalise_paths_and_unmatched_requests_are_denied() {
    let e = engine();
    let d = e.check(&get("/elsewhere"), now());
    assert_eq!((status(&d), d.reason), (403, Some(DenyReason::NoRoute)));
    // A dot-segment cannot turn a protected path into a public one.
    let d = e.check(&get("/public/../v1/orders"), now());
    assert_eq!((d.route.as_deref(), status(&d)), (Some("orders"), 401));
    let d = e.check(&get("/public%2F..%2Fv1/orders"), now());
    assert_ne!(
        status(&d),
        200,
        "encoded slashes do not match the public prefix either"
    );
    // Segment boundaries: /v1/ordersX is not /v1/orders.
    assert_eq!(
        e.check(&get("/v1/ordersX"), now()).reason,
        Some(DenyReason::NoRoute)
    );
    let open = engine_with(|c| c.unmatched = crate::policy::config::Unmatched::Allow);
    assert!(open.check(&get("/elsewhere"), now()).is_allowed());
}

#[test]
fn dry_run_counts_but_lets_through() {
    let e = engine();
    let mut r = get("/x").header("x-api-key", "ak_wrong");
    r.host = "eu.beta.example".into();
    let d = e.check(&r, now());
    assert!(d.is_allowed());
    assert!(matches!(
        d.dry_run_would_deny,
        Some(Verdict::Deny { status: 401, .. })
    ));
    assert!(matches!(
        d.reason,
        Some(DenyReason::InvalidCredentials { .. })
    ));
    assert_eq!(d.response_header("www-authenticate"), None);
    assert!(d.upstream_headers.is_empty());
    // Over quota in dry-run: let through and not counted against the quota.
    let mut good = get("/x").header("x-api-key", BETA_KEY);
    good.host = "eu.beta.example".into();
    let t = now();
    for i in 0..8 {
        let d = e.check(&good, t.after(Duration::from_secs(i)));
        assert!(d.dry_run_would_deny.is_none(), "request {i}");
    }
    let d = e.check(&good, t.after(Duration::from_secs(8)));
    assert!(d.is_allowed());
    assert!(matches!(
        d.dry_run_would_deny,
        Some(Verdict::Deny { status: 429, .. })
    ));
    assert_eq!(e.stats().dry_run_would_deny, 2);
    assert_eq!(e.stats().throttled, 0);
}

#[test]
fn several_methods_on_one_route_follow_the_route_order() {
    let e = engine();
    let d = e.check(
        &get("/v1/orders")
            .header("x-api-key", ALICE_KEY)
            .header("authorization", &bearer(json!({"sub": "jwt-user"}))),
        now(),
    );
    assert_eq!(d.identity.unwrap().id, "jwt-user", "jwt is listed first");
}

#[test]
fn detector_escalates_auth_failures_and_404_probing() {
    let e = engine();
    let t = now();
    let ip: IpAddr = CLIENT.parse().unwrap();
    let bad = get("/v1/orders").header("x-api-key", "ak_guess");
    assert!(e.check(&bad, t).escalations.is_empty());
    // Missing credentials are not failures.
    assert!(e.check(&get("/v1/orders"), t).escalations.is_empty());
    assert!(
        e.check(&bad, t.after(Duration::from_secs(1)))
            .escalations
            .is_empty()
    );
    let d = e.check(&bad, t.after(Duration::from_secs(2)));
    let esc = &d.escalations[0];
    assert_eq!(
        (esc.ip, esc.rule, esc.ttl),
        (ip, Rule::AuthFailures, Duration::from_secs(600))
    );
    assert!(!esc.dry_run);

    assert!(e.observe_response(ip, "/a", 404, t.mono).is_none());
    assert!(e.observe_response(ip, "/a", 404, t.mono).is_none());
    assert!(e.observe_response(ip, "/b", 200, t.mono).is_none());
    assert!(e.observe_response(ip, "/b", 404, t.mono).is_none());
    let esc = e.observe_response(ip, "/c", 404, t.mono).unwrap();
    assert_eq!(esc.rule, Rule::NotFoundPaths);
    assert_eq!(e.stats().escalations, 2);
}

#[test]
fn reload_keeps_counters_so_it_never_refills_a_bucket() {
    let e = engine();
    let t = now();
    for _ in 0..2 {
        assert!(e.check(&get("/public/x"), t).is_allowed());
    }
    let reloaded = e
        .reload(PolicyConfig::from_toml_str(&policy_toml()).unwrap())
        .unwrap();
    assert_eq!(status(&reloaded.check(&get("/public/x"), t)), 429);
    // A changed limiter section starts afresh (documented).
    let mut cfg = PolicyConfig::from_toml_str(&policy_toml()).unwrap();
    cfg.limiter.max_tracked_keys = 50;
    assert!(
        e.reload(cfg)
            .unwrap()
            .check(&get("/public/x"), t)
            .is_allowed()
    );
}

#[test]
fn config_problems_are_all_named() {
    let err = PolicyConfig::from_toml_str("realm = \"x\"\nfrobnicate = 1\n").unwrap_err();
    assert!(err.to_string().contains("frobnicate"), "{err}");
    let err =
        PolicyConfig::from_toml_str("[[routes]]\nname = \"a\"\nauth = [\"oauth\"]\n").unwrap_err();
    assert!(err.to_string().contains("oauth"), "{err}");

    let text = r#"
[[api_keys]]
hash = "plain-key-oops"
identity = "a"
plan = "nope"

[[jwt_issuers]]
issuer = "https://idp"
audiences = []
algorithms = ["RS256", "HS256"]

[[routes]]
name = "r"
path_prefix = "v1"
auth = ["basic"]
rate = [{ name = "x", rate = 0, per = "1s" }]
"#;
    let cfg = PolicyConfig::from_toml_str(text).unwrap();
    let err = Engine::new(cfg, Arc::new(NoFetcher)).unwrap_err();
    let all = err.problems.join("\n");
    for expected in [
        "api_keys[0].plan: unknown plan \"nope\"",
        "jwt_issuers[0].audiences",
        "jwt_issuers[0]: give `keys`, `jwks`, or both",
        "routes[0].path_prefix",
        "routes[0].auth: basic accepted but none is configured",
        "routes[0].rate[0].rate: must be positive",
        "api_keys[0].hash: must start with \"sha256:\"",
        "jwt_issuers[0].algorithms: HMAC and public-key algorithms may not be mixed",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in\n{all}");
    }
}

#[test]
fn no_secret_in_debug_output() {
    let e = engine();
    let token = sign(Algorithm::ES256, None, &claims(json!({})));
    let req = get("/v1/orders")
        .header("x-api-key", ALICE_KEY)
        .header("authorization", &format!("Bearer {token}"))
        .query(&format!("api_key={ALICE_KEY}"));
    let d = e.check(&req, now());
    let cfg = PolicyConfig::from_toml_str(&policy_toml()).unwrap();
    for text in [
        format!("{e:?}"),
        format!("{req:?}"),
        format!("{d:?}"),
        format!("{cfg:?}"),
        serde_json::to_string(&d).unwrap(),
    ] {
        assert!(!text.contains(ALICE_KEY), "{text}");
        assert!(!text.contains(&token), "{text}");
        assert!(
            !text.contains("$argon2id$") && !text.contains("$2b$"),
            "{text}"
        );
    }
}

#[test]
fn the_engine_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
    let e = Arc::new(engine());
    let t = now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| {
                        e.check(&get("/v1/orders").header("x-api-key", ADMIN_KEY), t)
                            .is_allowed()
                    })
                    .count()
            })
        })
        .collect();
    let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // gold: burst 100 at one instant, exactly.
    assert_eq!(allowed, 100);
}

/// A request whose client is known only as a trusted proxy's address (no untrusted hop).
fn via_proxy_only(path: &str) -> RequestMeta {
    let mut req = get(path);
    req.client_is_proxy = true;
    req
}

#[test]
fn nothing_is_decided_about_a_trusted_proxy_address() {
    let e = engine();
    let t = now();
    // `public` is limited per IP to 2 a minute: a trusted proxy's address is not limited, or
    // everyone behind the proxy would share one bucket.
    for i in 0..5 {
        let d = e.check(&via_proxy_only("/public/x"), t);
        assert!(d.is_allowed(), "request {i}: {d:?}");
    }
    // The same address when it is the client's is limited.
    assert!(e.check(&get("/public/x"), t).is_allowed());
    assert!(e.check(&get("/public/x"), t).is_allowed());
    assert_eq!(status(&e.check(&get("/public/x"), t)), 429);

    // Bad credentials are answered 401 but not counted against the address.
    let tracked = e.detector().tracked_ips();
    let bad = via_proxy_only("/v1/orders").header("x-api-key", "ak_guess");
    for i in 0..10 {
        let d = e.check(&bad, t);
        assert_eq!(status(&d), 401, "attempt {i}");
        assert!(d.escalations.is_empty(), "attempt {i}: {:?}", d.escalations);
    }
    assert_eq!(e.detector().tracked_ips(), tracked);

    // The identity is still limited: alice's plan allows a burst of 5.
    let alice = via_proxy_only("/v1/orders").header("x-api-key", ALICE_KEY);
    let allowed = (0..8).filter(|_| e.check(&alice, t).is_allowed()).count();
    assert_eq!(allowed, 5);
}

#[test]
fn ipv6_auth_failures_count_and_escalate_per_prefix() {
    let e = engine();
    let t = now();
    // Three addresses of one /64 (the rule's count is 3) each guess once.
    let mut escalations = Vec::new();
    for host in 1..=3u16 {
        let ip = IpAddr::from([0x2001, 0xdb8, 0x77, 0x1, 0, 0, 0, host]);
        let mut bad = RequestMeta::new(ip, "GET", "api.example", "/v1/orders");
        bad = bad.header("x-api-key", "ak_guess");
        escalations.extend(e.check(&bad, t).escalations);
    }
    assert_eq!(escalations.len(), 1, "{escalations:?}");
    assert_eq!(escalations[0].net, "2001:db8:77:1::/64".parse().unwrap());
    assert_eq!(escalations[0].rule, Rule::AuthFailures);
}
