use super::super::{ApiConfig, Contract, LoadLimits, Mode, OperationConfig, SchemeKind, Version};
use super::{JSON, get, load, place, places, send};

#[test]
fn petstore_30_loads_with_its_four_operations_under_the_servers_base_path() {
    let c = load("petstore-expanded-3.0.yaml");
    assert_eq!(c.version(), Version::V30);
    assert_eq!(c.base_path(), "/v2");
    let mut templates = c.spec_templates();
    templates.sort();
    let expected = [
        ("DELETE", "/v2/pets/{id}"),
        ("GET", "/v2/pets"),
        ("GET", "/v2/pets/{id}"),
        ("POST", "/v2/pets"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, t)| ((*m).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(templates, expected);
    let found = c.lookup("get", "/v2/pets/12").expect("matches");
    assert_eq!(found.template, "/v2/pets/{id}");
    assert_eq!(found.params, vec![("id", "12")]);
    assert!(
        c.lookup("GET", "/pets/12").is_none(),
        "outside the base path"
    );
    assert!(
        c.lookup("PUT", "/v2/pets/12").is_none(),
        "method not in the document"
    );
}

#[test]
fn petstore_valid_requests_pass() {
    let c = load("petstore-expanded-3.0.yaml");
    for ok in [
        "/v2/pets",
        "/v2/pets?limit=5&tags=a&tags=b",
        "/v2/pets/9223372036854775807",
    ] {
        let report = get(&c, ok);
        assert!(
            report.violations.is_empty(),
            "{ok}: {:?}",
            report.violations
        );
    }
    let report = send(
        &c,
        "POST",
        "/v2/pets",
        &JSON,
        br#"{"name":"Rex","tag":"dog"}"#,
    );
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[test]
fn petstore_invalid_requests_name_the_failing_place() {
    let c = load("petstore-expanded-3.0.yaml");
    assert_eq!(places(&get(&c, "/v2/pets/abc")), [place("path", "id", "")]);
    assert_eq!(
        places(&get(&c, "/v2/pets?limit=x")),
        [place("query", "limit", "")]
    );
    assert_eq!(
        places(&get(&c, "/v2/pets?limit=1&limit=2")),
        [place("query", "limit", "")]
    );
    type Case<'a> = (
        &'a [(&'a str, &'a [u8])],
        &'a [u8],
        (&'a str, &'a str, &'a str),
    );
    let cases: [Case<'_>; 5] = [
        (&JSON, br#"{"tag":"x"}"#, ("body", "", "")),
        (&JSON, br#"{"name":5}"#, ("body", "", "/name")),
        (&JSON, br#"{"name":"#, ("body", "", "")),
        (
            &[("content-type", b"text/plain")],
            br#"{"name":"x"}"#,
            ("header", "content-type", ""),
        ),
        (&JSON, b"", ("body", "", "")),
    ];
    for (headers, body, (l, n, p)) in cases {
        let report = send(&c, "POST", "/v2/pets", headers, body);
        assert_eq!(
            places(&report),
            [place(l, n, p)],
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let report = send(&c, "POST", "/v2/pets", &JSON, big.as_bytes());
    assert_eq!(places(&report), [place("body", "", "")]);
    assert!(
        report.violations[0].message.contains("over the limit"),
        "{:?}",
        report.violations
    );
}

#[test]
fn tictactoe_31_checks_ranges_enums_and_exposes_security() {
    let c = load("tictactoe-3.1.yaml");
    assert_eq!(c.version(), Version::V31);
    assert_eq!(c.operations().len(), 3);
    assert!(get(&c, "/board/1/3").violations.is_empty());
    assert_eq!(places(&get(&c, "/board/4/1")), [place("path", "row", "")]);
    assert_eq!(
        places(&get(&c, "/board/1/x")),
        [place("path", "column", "")]
    );
    assert!(
        send(&c, "PUT", "/board/1/1", &JSON, br#""X""#)
            .violations
            .is_empty()
    );
    assert_eq!(
        places(&send(&c, "PUT", "/board/1/1", &JSON, br#""Z""#)),
        [place("body", "", "")]
    );
    let board = c.lookup("GET", "/board").expect("matches").operation;
    assert_eq!(board.security.len(), 2, "two alternatives");
    let api_key = &board.security[0].schemes[0];
    assert_eq!(
        api_key.kind,
        SchemeKind::ApiKey {
            location: "header".into(),
            name: "api-key".into()
        }
    );
    assert_eq!(board.security[1].schemes[0].kind, SchemeKind::OAuth2);
    assert_eq!(board.security[1].schemes[0].scopes, ["board:read"]);
}

#[test]
fn non_oauth_scopes_31_are_exposed_for_http_bearer() {
    let c = load("non-oauth-scopes-3.1.yaml");
    let op = c.lookup("GET", "/users").expect("matches").operation;
    let scheme = &op.security[0].schemes[0];
    assert_eq!(
        scheme.kind,
        SchemeKind::Http {
            scheme: "bearer".into()
        }
    );
    assert_eq!(scheme.scopes, ["read:users", "public"]);
}

#[test]
fn webhook_only_31_document_loads_with_no_operations() {
    let c = load("webhook-example-3.1.json");
    assert_eq!(c.version(), Version::V31);
    assert!(c.operations().is_empty());
}

#[test]
fn large_public_description_loads_and_validates() {
    let started = std::time::Instant::now();
    let c = load("openai-2024-12-3.0.yaml");
    eprintln!(
        "large document: {} operations compiled in {:?}",
        c.operations().len(),
        started.elapsed()
    );
    assert!(c.operations().len() >= 100, "{}", c.operations().len());
    assert_eq!(c.base_path(), "/v1");
    let ok = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let report = send(&c, "POST", "/v1/chat/completions", &JSON, ok);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    let report = send(
        &c,
        "POST",
        "/v1/chat/completions",
        &JSON,
        br#"{"model":"gpt-4o","messages":"hi"}"#,
    );
    assert!(
        report.violations.iter().any(|v| v.pointer == "/messages"),
        "{:?}",
        report.violations
    );
    let found = c.lookup("GET", "/v1/models/gpt-4o").expect("matches");
    assert_eq!(found.template, "/v1/models/{model}");
}

#[test]
fn modes_apply_per_api_and_per_operation() {
    let mut config = ApiConfig::new(super::fixture("petstore-expanded-3.0.yaml"));
    config.mode = Mode::Enforce;
    config.operations.insert(
        "deletePet".into(),
        OperationConfig {
            mode: Some(Mode::Off),
        },
    );
    config.operations.insert(
        "GET /pets".into(),
        OperationConfig {
            mode: Some(Mode::Monitor),
        },
    );
    let c = Contract::from_config(config, &LoadLimits::default()).expect("loads");
    let bad_get_one = get(&c, "/v2/pets/x");
    assert!(bad_get_one.refuse(), "enforce by default");
    let bad_list = get(&c, "/v2/pets?limit=x");
    assert_eq!(bad_list.mode, Mode::Monitor);
    assert!(
        !bad_list.refuse() && !bad_list.violations.is_empty(),
        "counted, not refused"
    );
    let off = send(&c, "DELETE", "/v2/pets/x", &[], b"");
    assert!(
        off.violations.is_empty() && off.operation.is_some(),
        "off: matched, not checked"
    );
}

#[test]
fn problem_body_is_rfc_9457_with_the_violations() {
    let mut config = ApiConfig::new(super::fixture("petstore-expanded-3.0.yaml"));
    config.mode = Mode::Enforce;
    let c = Contract::from_config(config, &LoadLimits::default()).expect("loads");
    let report = send(&c, "POST", "/v2/pets", &JSON, br#"{"name":5}"#);
    let body: serde_json::Value = serde_json::from_slice(&report.problem_body()).expect("JSON");
    assert_eq!(body["status"], 400);
    assert_eq!(body["type"], super::super::PROBLEM_TYPE);
    assert_eq!(body["operation"], "addPet");
    assert!(body["title"].is_string() && body["detail"].is_string());
    assert_eq!(body["errors"][0]["in"], "body");
    assert_eq!(body["errors"][0]["pointer"], "/name");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("string")),
        "{body}"
    );
}

const ORDERS: &str = "openapi: 3.0.3
info: {title: orders, version: '1'}
paths:
  /orders:
    get:
      parameters:
        - {name: status, in: query, required: true, schema: {type: string, enum: [open, closed]}}
        - {name: ids, in: query, explode: false, schema: {type: array, items: {type: integer}}}
        - {name: X-Request-Id, in: header, required: true, schema: {type: string, pattern: '^[0-9a-f]{8}$'}}
        - {name: Accept, in: header, required: true, schema: {type: string, enum: [never]}}
      responses: {}
";

#[test]
fn required_query_enum_arrays_and_headers_are_checked() {
    let c = super::inline(ORDERS);
    let check = |query: &str, headers: &[(&str, &[u8])]| {
        let req = super::super::Request {
            method: "GET",
            path: "/orders",
            query: Some(query),
            headers,
            body: b"",
            declared_length: None,
        };
        places(&c.validate(&req))
    };
    let id: [(&str, &[u8]); 1] = [("x-request-id", b"0123abcd")];
    assert_eq!(
        check("status=open&ids=1,2,3", &id),
        [],
        "Accept is the HTTP layer's, ignored"
    );
    assert_eq!(check("status=pending", &id), [place("query", "status", "")]);
    assert_eq!(check("ids=1", &id), [place("query", "status", "")]);
    assert_eq!(
        check("status=open&ids=1,x", &id),
        [place("query", "ids", "/1")]
    );
    assert_eq!(
        check("status=open", &[]),
        [place("header", "x-request-id", "")]
    );
    assert_eq!(
        check("status=open", &[("X-Request-ID", b"nothex!!")]),
        [place("header", "x-request-id", "")]
    );
    assert_eq!(
        check("status=open", &[("x-request-id", b"\xff")]),
        [place("header", "x-request-id", "")]
    );
}

#[test]
fn unknown_operations_are_violations_only_when_asked() {
    let mut config = ApiConfig::new("orders.yaml");
    assert!(get(&super::inline(ORDERS), "/nope").violations.is_empty());
    config.refuse_unknown_operations = true;
    let c = Contract::from_bytes(ORDERS.as_bytes(), config, &LoadLimits::default()).expect("loads");
    let report = get(&c, "/nope");
    assert!(report.operation.is_none());
    assert_eq!(places(&report), [place("operation", "", "")]);
    assert_eq!(
        places(&send(&c, "DELETE", "/orders", &[], b"")),
        [place("operation", "", "")]
    );
}

#[test]
fn api_config_reads_from_toml_with_defaults() {
    let config: ApiConfig = toml::from_str(
        "spec = \"/etc/api-shield/orders.yaml\"\nmode = \"enforce\"\n[operations.\"GET /orders\"]\nmode = \"off\"\n",
    )
    .expect("parses");
    assert_eq!(config.mode, Mode::Enforce);
    assert_eq!(config.max_body_bytes, super::super::DEFAULT_MAX_BODY_BYTES);
    assert_eq!(config.operations["GET /orders"].mode, Some(Mode::Off));
    assert!(toml::from_str::<ApiConfig>("spec = \"x\"\nmode = \"block\"\n").is_err());
    assert_eq!(
        ApiConfig::new("x").mode,
        Mode::Monitor,
        "monitor unless told"
    );
}
