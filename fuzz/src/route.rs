//! The route a request path lands on, and the path it is forwarded with.

use std::sync::{Arc, OnceLock};

use api_shield::policy::path::{normalize_path, prefix_matches};
use api_shield::policy::{DenyReason, Engine, NoFetcher, PolicyConfig, RequestMeta};

/// Public routes (no credential decides anything here) with nested, look-alike and
/// case-insensitive prefixes; `unmatched = "allow"`, so a path that slips past every prefix is
/// still decided, not refused.
const POLICY: &str = r#"
unmatched = "allow"
[[routes]]
name = "admin"
path_prefix = "/admin"
[[routes]]
name = "admin-users"
path_prefix = "/admin/users"
[[routes]]
name = "v1"
path_prefix = "/v1"
[[routes]]
name = "reports"
path_prefix = "/reports"
case_insensitive = true
[[routes]]
name = "root"
path_prefix = "/public/"
"#;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let cfg = PolicyConfig::from_toml_str(POLICY).expect("the route fuzz policy");
        Engine::new(cfg, Arc::new(NoFetcher)).expect("the route fuzz engine")
    })
}

/// The input as a request path: a request the engine routes to route R is forwarded with a
/// path R's prefix matches, that normalises to itself and carries nothing another server
/// could read as a different path; a refused path is a 400 with no route.
pub fn route_path(data: &[u8]) {
    let Some(raw) = super::text(data) else {
        return;
    };
    let engine = engine();
    let req = RequestMeta::new(
        "198.18.0.2".parse().expect("address"),
        "GET",
        "api.test",
        raw,
    );
    let d = engine.check(&req, api_shield::policy::Now::system());
    if let Some(DenyReason::BadPath { .. }) = d.reason {
        assert_eq!((d.status(), d.route.as_deref()), (400, None), "{raw:?}");
        assert!(
            normalize_path(raw).is_err(),
            "{raw:?} refused but normalisable"
        );
        return;
    }
    let path = d.path.as_str();
    assert_eq!(
        normalize_path(path).as_deref(),
        Ok(path),
        "{raw:?} -> {path:?}"
    );
    let lower = path.to_ascii_lowercase();
    for bad in ["//", "/./", "/../", "%2f", "%5c", "%00", ";", "\\"] {
        assert!(
            !lower.contains(bad),
            "{raw:?} forwarded as {path:?} holds {bad:?}"
        );
    }
    assert!(
        !lower.ends_with("/.") && !lower.ends_with("/.."),
        "{raw:?} forwarded as {path:?}"
    );
    let route = d.route.as_deref();
    if let Some(name) = route {
        let cfg = engine
            .config()
            .routes
            .iter()
            .find(|r| r.name == name)
            .expect("a configured route");
        let prefix = cfg.path_prefix.trim_end_matches('/');
        assert!(
            prefix_matches(path, prefix, cfg.case_insensitive),
            "{raw:?} routed to {name} but forwarded as {path:?}"
        );
    }
    // The longest matching prefix wins: no other route's prefix covers more of the path.
    for other in &engine.config().routes {
        let prefix = other.path_prefix.trim_end_matches('/');
        if prefix_matches(path, prefix, other.case_insensitive) {
            let chosen = route.and_then(|n| engine.config().routes.iter().find(|r| r.name == n));
            let chosen_len = chosen.map_or(0, |r| r.path_prefix.trim_end_matches('/').len());
            assert!(
                prefix.len() <= chosen_len,
                "{raw:?}: {} matches {path:?} better than {route:?}",
                other.name
            );
        }
    }
}
