//! Templating whole paths: classification, sibling collapse, spec paths, limits.

use crate::inventory::{Source, SpecPathError, TemplateConfig, Templater};

fn templater() -> Templater {
    Templater::new(TemplateConfig::default())
}

#[test]
fn real_world_paths_template_as_expected() {
    let t = templater();
    let table = [
        ("/", "/"),
        ("", "/"),
        ("/users/42", "/users/{id}"),
        ("/users/42/orders/7", "/users/{id}/orders/{id}"),
        (
            "/v1/users/123e4567-e89b-12d3-a456-426614174000/avatar",
            "/v1/users/{uuid}/avatar",
        ),
        (
            "/api/v2/invoices/INV00042X/pdf",
            "/api/v2/invoices/{key}/pdf",
        ),
        ("/files/d41d8cd98f00b204e9800998ecf8427e", "/files/{hex}"),
        ("/reset/dGhpcyBpcyBhIHRva2Vu", "/reset/{token}"),
        ("/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/events/{ulid}"),
        ("/accounts/alice@example.com/keys", "/accounts/{email}/keys"),
        (
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
        ("/users/42?expand=1", "/users/{id}"),
        ("/users/", "/users/"),
        ("/a//b", "/a//b"),
        ("/a/../b", "/a/../b"),
        ("/caf\u{e9}/42", "/caf\u{e9}/{id}"),
        ("/search/%E2%9C%93", "/search/%E2%9C%93"),
        ("users/42", "/users/{id}"),
    ];
    for (path, want) in table {
        assert_eq!(t.template(path), want, "{path:?}");
    }
}

#[test]
fn templating_a_template_changes_nothing() {
    let t = templater();
    for path in [
        "/users/42/orders/7",
        "/a/{name}/b",
        "/x/{rest}",
        "/{segment}",
    ] {
        let once = t.template(path);
        assert_eq!(t.template(&once), once);
    }
}

#[test]
fn many_distinct_siblings_collapse_into_a_parameter() {
    let mut t = templater();
    let threshold = t.config().sibling_threshold;
    for i in 0..threshold {
        let path = format!("/files/name{}", char::from(b'a' + i as u8));
        assert!(!t.learn(&path), "{path} is within the threshold");
        assert_eq!(t.template(&path), path);
    }
    assert!(
        t.learn("/files/onemore"),
        "one more sibling collapses the position"
    );
    assert_eq!(t.template("/files/readme"), "/files/{name}");
    assert_eq!(t.template("/files/namea"), "/files/{name}");
    // Other positions are untouched.
    assert_eq!(t.template("/other/readme"), "/other/readme");
}

#[test]
fn collapse_merges_what_was_below_and_collapses_again() {
    let config = TemplateConfig {
        sibling_threshold: 2,
        ..TemplateConfig::default()
    };
    let mut t = Templater::new(config);
    // Each parent has two children: within the threshold.
    for (p, c) in [("a", "x"), ("a", "y"), ("b", "z"), ("b", "w")] {
        t.learn(&format!("/{p}/{c}"));
    }
    // A third parent collapses the first position; its children merge to four, which
    // collapses the second one too.
    assert!(t.learn("/c/v"));
    assert_eq!(t.template("/q/r"), "/{name}/{name}");
}

#[test]
fn spec_paths_win_over_learning_and_classification() {
    let mut t = templater();
    t.register_spec_paths(&["/users/{userId}", "/users/me", "/files/{path}/raw"])
        .expect("valid");
    let mut out = String::new();
    assert_eq!(t.template_into("/users/42", &mut out), Source::Spec);
    assert_eq!(out, "/users/{userId}");
    assert_eq!(t.template("/users/me"), "/users/me");
    assert_eq!(t.template("/users/alice"), "/users/{userId}");
    assert_eq!(t.template("/files/readme/raw"), "/files/{path}/raw");
    // Not a spec path: learned as usual.
    assert_eq!(t.template("/users/42/orders"), "/users/{id}/orders");
    // A parameter does not match an empty segment.
    assert_eq!(t.template("/users/"), "/users/");
    assert_eq!(t.template("/users/{userId}"), "/users/{userId}");
}

#[test]
fn spec_literal_branch_backtracks_to_the_parameter() {
    let mut t = templater();
    t.register_spec_paths(&["/users/me/settings", "/users/{id}/orders"])
        .expect("valid");
    assert_eq!(t.template("/users/me/orders"), "/users/{id}/orders");
}

#[test]
fn invalid_spec_paths_are_refused() {
    let mut t = templater();
    assert_eq!(
        t.register_spec_paths(&["users/{id}"]),
        Err(SpecPathError::NotAbsolute("users/{id}".into()))
    );
    let deep = "/a".repeat(t.config().max_segments + 1);
    assert!(matches!(
        t.register_spec_paths(&[&deep]),
        Err(SpecPathError::TooManySegments { .. })
    ));
}

#[test]
fn long_and_deep_paths_are_bounded() {
    let t = templater();
    let c = t.config();
    let deep = "/x".repeat(10_000);
    let template = t.template(&deep);
    assert_eq!(template.split('/').count(), c.max_segments + 2);
    assert!(template.ends_with("/{rest}"));
    let long = format!("/blob/{}", "q".repeat(1 << 20));
    assert_eq!(t.template(&long), "/blob/{segment}");
}
