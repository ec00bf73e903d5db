//! The engine decides on the normalised path and hands that path to the transport.

use std::sync::Arc;

use crate::policy::{DenyReason, Engine, NoFetcher, Now, PolicyConfig, RequestMeta};

const POLICY: &str = r#"
unmatched = "allow"
[[api_keys]]
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
identity = "nobody-has-this"
[[routes]]
name = "admin"
path_prefix = "/admin"
auth = ["api_key"]
identity_header = "x-admin-identity"
plan_header = "x-admin-plan"
[[routes]]
name = "reports"
path_prefix = "/reports"
case_insensitive = true
auth = ["api_key"]
"#;

fn engine() -> Engine {
    Engine::new(
        PolicyConfig::from_toml_str(POLICY).unwrap(),
        Arc::new(NoFetcher),
    )
    .unwrap()
}

fn get(path: &str) -> RequestMeta {
    RequestMeta::new("198.18.0.2".parse().unwrap(), "GET", "api.test", path)
}

#[test]
fn the_decision_carries_the_normalised_path_it_was_routed_on() {
    let e = engine();
    for (raw, norm) in [
        ("/%61dmin/x", "/admin/x"),
        ("/x/%2e%2e/admin", "/admin"),
        ("//admin//", "/admin/"),
    ] {
        let d = e.check(&get(raw), Now::system());
        assert_eq!(
            (d.route.as_deref(), d.status(), d.path.as_str()),
            (Some("admin"), 401, norm),
            "{raw}"
        );
    }
    let d = e.check(&get("/administrator"), Now::system());
    assert_eq!((d.route.as_deref(), d.status()), (None, 200));
}

#[test]
fn unsafe_paths_are_400_before_any_route_and_name_the_problem() {
    let e = engine();
    for raw in [
        "/admin%2fx",
        "/admin;a=b",
        "/%252e%252e/admin",
        "/a%zz",
        "*",
    ] {
        let d = e.check(&get(raw), Now::system());
        assert_eq!((d.status(), d.route.as_deref()), (400, None), "{raw}");
        assert!(
            matches!(&d.reason, Some(DenyReason::BadPath { detail }) if !detail.is_empty()),
            "{raw}: {:?}",
            d.reason
        );
        assert!(!d.is_allowed());
    }
}

#[test]
fn case_insensitive_routes_match_every_spelling() {
    let e = engine();
    for raw in ["/REPORTS", "/Reports/q1", "/%52eports"] {
        assert_eq!(e.check(&get(raw), Now::system()).status(), 401, "{raw}");
    }
    // `/admin` stays case-sensitive.
    assert_eq!(e.check(&get("/ADMIN"), Now::system()).status(), 200);
}

#[test]
fn every_identity_header_is_stripped_on_every_request() {
    let e = engine();
    for raw in ["/unrouted", "/admin", "/%zz"] {
        let d = e.check(&get(raw), Now::system());
        for h in ["x-admin-identity", "x-admin-plan", "x-auth-identity"] {
            assert!(
                d.strip_headers.iter().any(|s| s == h),
                "{raw}: {h} not in {:?}",
                d.strip_headers
            );
        }
    }
}

#[test]
fn a_route_prefix_must_be_in_normal_form() {
    for bad in ["/%61dmin", "/a/../b", "/a;b", "//a", "admin"] {
        let toml = format!("[[routes]]\nname = \"r\"\npath_prefix = \"{bad}\"\n");
        let err = PolicyConfig::from_toml_str(&toml)
            .and_then(|c| c.validate().map(|()| c))
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(err.to_string().contains("path_prefix"), "{bad}: {err}");
    }
}
