//! The OpenAPI export of the learned API.

use super::{answered, get, with_body};
use crate::inventory::{Inventory, InventoryConfig};

#[test]
fn export_is_an_openapi_document_of_the_learned_paths() {
    let mut inv = Inventory::default();
    inv.register_spec_paths(&["/orgs/{org}/members"])
        .expect("valid");
    let mut listed = get("/users/42/orders/7");
    listed.query_names = vec!["page".into()];
    inv.record(&listed);
    inv.record(&get("/orgs/acme/members"));
    inv.record(&with_body(
        answered("api.example", "POST", "/users", 201),
        r#"{"name":"a","age":3,"score":1.5,"tags":["x"]}"#,
    ));
    inv.record(&answered("api.example", "BREW", "/pot", 200));
    let text = inv.openapi_text(Some("api.example"));
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the text is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["servers"][0]["url"], "https://api.example");
    let paths = doc["paths"].as_object().expect("paths");
    let mut keys: Vec<_> = paths.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["/orgs/{org}/members", "/users", "/users/{id}/orders/{id2}"]
    );

    let op = &paths["/users/{id}/orders/{id2}"]["get"];
    let params = op["parameters"].as_array().expect("parameters");
    let names: Vec<_> = params
        .iter()
        .map(|p| (p["name"].as_str(), p["in"].as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (Some("id"), Some("path")),
            (Some("id2"), Some("path")),
            (Some("page"), Some("query"))
        ]
    );
    assert_eq!(op["responses"]["2XX"]["description"], "answered 1 times");
    assert_eq!(op["x-api-shield"]["requests"], 1);

    let schema = &paths["/users"]["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["age"]["type"], "integer");
    assert_eq!(schema["properties"]["score"]["type"], "number");
    assert_eq!(schema["properties"]["tags"]["items"]["type"], "string");
}

#[test]
fn export_of_all_hosts_merges_and_skips_overflow() {
    let mut inv = Inventory::new(InventoryConfig {
        max_endpoints_per_host: 1,
        ..InventoryConfig::default()
    });
    inv.record(&answered("a.example", "GET", "/x/1", 200));
    inv.record(&answered("b.example", "GET", "/x/2", 200));
    inv.record(&answered("b.example", "GET", "/y", 200));
    let doc = inv.openapi(None);
    assert_eq!(doc["servers"].as_array().expect("servers").len(), 2);
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 1, "{paths:?}");
    assert_eq!(paths["/x/{id}"]["get"]["x-api-shield"]["requests"], 2);
    assert_eq!(doc["x-api-shield-saturated-hosts"][0], "b.example");
}
