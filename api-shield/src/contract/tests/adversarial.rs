use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::super::{ApiConfig, Contract, LoadError, LoadLimits, MAX_MESSAGE_CHARS, Mode, Request};
use super::{JSON, get, inline, place, places, send};

fn load_err(text: &str) -> LoadError {
    Contract::from_bytes(
        text.as_bytes(),
        ApiConfig::new("x.yaml"),
        &LoadLimits::default(),
    )
    .expect_err("refused")
}

const HEAD: &str = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\n";

#[test]
fn cyclic_and_overlong_ref_chains_are_refused_naming_the_ref() {
    let cyclic = format!(
        "{HEAD}paths: {{}}\ncomponents:\n  schemas:\n    A: {{$ref: '#/components/schemas/B'}}\n    B: {{$ref: '#/components/schemas/A'}}\n"
    );
    let err = load_err(&cyclic);
    assert!(
        matches!(&err, LoadError::RefChain { pointer, reason } if pointer == "/components/schemas/A" && reason == "is cyclic"),
        "{err}"
    );
    let mut long = format!("{HEAD}paths: {{}}\ncomponents:\n  schemas:\n");
    for i in 0..40 {
        writeln!(
            long,
            "    S{i}: {{$ref: '#/components/schemas/S{}'}}",
            i + 1
        )
        .expect("string");
    }
    long.push_str("    S40: {type: string}\n");
    assert!(
        matches!(load_err(&long), LoadError::RefChain { reason, .. } if reason.contains("longer"))
    );
    let to_self = format!(
        "{HEAD}paths: {{}}\ncomponents: {{schemas: {{A: {{$ref: '#/components/schemas/A'}}}}}}\n"
    );
    assert!(matches!(load_err(&to_self), LoadError::RefChain { .. }));
}

#[test]
fn external_and_dangling_refs_are_refused() {
    let external = format!(
        "{HEAD}paths:\n  /a:\n    get:\n      parameters: [{{$ref: 'other.yaml#/p'}}]\n      responses: {{}}\n"
    );
    let err = load_err(&external);
    assert!(
        matches!(&err, LoadError::ExternalRef { pointer, .. } if pointer == "/paths/~1a/get/parameters/0"),
        "{err}"
    );
    let url = format!(
        "{HEAD}paths: {{}}\ncomponents: {{schemas: {{A: {{$ref: 'https://evil.example/s.json'}}}}}}\n"
    );
    assert!(matches!(load_err(&url), LoadError::ExternalRef { .. }));
    let dangling = format!(
        "{HEAD}paths: {{}}\ncomponents: {{schemas: {{A: {{$ref: '#/components/schemas/Nope'}}}}}}\n"
    );
    assert!(matches!(load_err(&dangling), LoadError::DanglingRef { .. }));
}

#[test]
fn recursive_schemas_through_properties_are_legal_and_validate() {
    let c = inline(&format!(
        "{HEAD}paths:\n  /t:\n    post:\n      requestBody: {{content: {{application/json: {{schema: {{$ref: '#/components/schemas/Node'}}}}}}}}\n      responses: {{}}\ncomponents:\n  schemas:\n    Node:\n      type: object\n      properties:\n        child: {{$ref: '#/components/schemas/Node'}}\n        v: {{type: integer}}\n"
    ));
    assert!(
        send(&c, "POST", "/t", &JSON, br#"{"child":{"child":{"v":1}}}"#)
            .violations
            .is_empty()
    );
    assert_eq!(
        places(&send(
            &c,
            "POST",
            "/t",
            &JSON,
            br#"{"child":{"child":{"v":"x"}}}"#
        )),
        [place("body", "", "/child/child/v")]
    );
}

#[test]
fn yaml_alias_bombs_are_refused_quickly() {
    let mut bomb = String::from(
        "openapi: 3.0.3\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for name in ['b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] {
        writeln!(bomb, "{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]").expect("string");
        prev = name;
    }
    let started = Instant::now();
    let err = load_err(&bomb);
    assert!(
        matches!(err, LoadError::Expansion { .. } | LoadError::Syntax { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The node budget holds even where the parser's own alias limit would not trip.
    let limits = LoadLimits {
        max_nodes: 1000,
        ..LoadLimits::default()
    };
    let wide = format!(
        "{HEAD}x: &x [{}]\ny: [{}]\n",
        vec!["1"; 400].join(","),
        ["*x"; 10].join(",")
    );
    let err = Contract::from_bytes(wide.as_bytes(), ApiConfig::new("x"), &limits)
        .expect_err("over budget");
    assert!(
        matches!(
            err,
            LoadError::Expansion {
                what: "nodes",
                limit: 1000
            }
        ),
        "{err}"
    );
}

#[test]
fn oversize_deep_and_malformed_documents_are_refused_with_a_place() {
    let limits = LoadLimits {
        max_document_bytes: 1000,
        ..LoadLimits::default()
    };
    let big = format!("{HEAD}x: '{}'\n", "a".repeat(2000));
    assert!(matches!(
        Contract::from_bytes(big.as_bytes(), ApiConfig::new("x"), &limits),
        Err(LoadError::TooLarge { .. })
    ));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep = format!("{{\"openapi\":\"3.1.0\",\"x\":{deep}}}");
    assert!(matches!(
        load_err(&deep),
        LoadError::Syntax { format: "JSON", .. }
    ));
    let err = load_err("openapi: 3.0.3\ninfo: [\n");
    assert!(
        matches!(
            err,
            LoadError::Syntax {
                format: "YAML",
                line: 3..,
                ..
            }
        ),
        "{err}"
    );
    let err = load_err("{\"openapi\": \"3.1.0\",\n \"paths\": {,}}");
    assert!(
        matches!(
            err,
            LoadError::Syntax {
                format: "JSON",
                line: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        load_err("swagger: '2.0'\n"),
        LoadError::Version { .. }
    ));
    assert!(matches!(
        load_err(&format!("{HEAD}paths: {{'no-slash': {{}}}}\n")),
        LoadError::Invalid { .. }
    ));
}

#[test]
fn duplicate_parameters_in_the_document_are_refused() {
    let doc = format!(
        "{HEAD}paths:\n  /a:\n    get:\n      parameters:\n        - {{name: q, in: query}}\n        - {{name: q, in: query}}\n      responses: {{}}\n"
    );
    let err = load_err(&doc);
    assert!(
        matches!(&err, LoadError::Invalid { pointer, message } if pointer.ends_with("/parameters/1") && message.contains("duplicate")),
        "{err}"
    );
}

const USERS: &str = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /users/{id}:\n    get:\n      parameters: [{name: id, in: path, required: true, schema: {type: string, pattern: '^[a-z✓]+$', maxLength: 8}}]\n      responses: {}\n  /users/me:\n    get: {responses: {}}\n";

#[test]
fn literal_segments_win_whatever_the_document_order() {
    let c = inline(USERS);
    assert_eq!(
        c.lookup("GET", "/users/me").expect("matches").template,
        "/users/me"
    );
    assert_eq!(
        c.lookup("GET", "/users/bob").expect("matches").template,
        "/users/{id}"
    );
    // Paths are kept in key order, and `{` sorts before `~` and after `.`: both orders occur.
    let c = inline(&format!(
        "{HEAD}paths:\n  /items/{{id}}: {{get: {{responses: {{}}}}}}\n  /items/~latest: {{get: {{responses: {{}}}}}}\n  /files/{{name}}: {{get: {{responses: {{}}}}}}\n  /files/{{name}}.json: {{get: {{responses: {{}}}}}}\n"
    ));
    let template = |path: &str| c.lookup("GET", path).expect("matches").template;
    assert_eq!(template("/items/~latest"), "/items/~latest");
    assert_eq!(template("/items/7"), "/items/{id}");
    assert_eq!(template("/files/a.json"), "/files/{name}.json");
    assert_eq!(template("/files/a.txt"), "/files/{name}");
    let mixed = c.lookup("GET", "/files/a.json").expect("matches");
    assert_eq!(mixed.params, [("name", "a")]);
}

#[test]
fn path_parameters_are_percent_decoded_before_checks() {
    let c = inline(USERS);
    assert!(
        get(&c, "/users/ab%E2%9C%93").violations.is_empty(),
        "decoded to a pattern match"
    );
    assert_eq!(places(&get(&c, "/users/%FF")), [place("path", "id", "")]);
    assert_eq!(places(&get(&c, "/users/AB")), [place("path", "id", "")]);
}

#[test]
fn hostile_values_are_not_echoed_unbounded() {
    let mut config = ApiConfig::new("x");
    config.refuse_unknown_query = true;
    config.mode = Mode::Enforce;
    let c = Contract::from_bytes(USERS.as_bytes(), config, &LoadLimits::default()).expect("loads");
    let name = format!("<script>{}%00%0a", "x".repeat(5000));
    let query = format!("{name}=1");
    let report = c.validate(&Request {
        method: "GET",
        path: "/users/me",
        query: Some(&query),
        headers: &[],
        body: b"",
        declared_length: None,
    });
    assert!(report.refuse());
    let v = &report.violations[0];
    assert!(v.name.len() <= MAX_MESSAGE_CHARS + 3, "{}", v.name.len());
    assert!(!v.name.chars().any(char::is_control), "{:?}", v.name);
    let body = report.problem_body();
    assert!(body.len() < 2 * 1024, "{}", body.len());
}

#[test]
fn nullable_30_accepts_null_only_where_declared() {
    let c = inline(&format!(
        "{HEAD}paths:\n  /n:\n    post:\n      requestBody: {{content: {{application/json: {{schema: {{type: object, properties: {{a: {{type: string, nullable: true, enum: [x]}}, b: {{type: string}}}}}}}}}}}}\n      responses: {{}}\n"
    ));
    assert!(
        send(&c, "POST", "/n", &JSON, br#"{"a":null,"b":"y"}"#)
            .violations
            .is_empty()
    );
    assert_eq!(
        places(&send(&c, "POST", "/n", &JSON, br#"{"b":null}"#)),
        [place("body", "", "/b")]
    );
}

#[test]
fn unicode_and_malformed_bodies_are_violations_not_errors() {
    let c = super::load("petstore-expanded-3.0.yaml");
    assert!(
        send(
            &c,
            "POST",
            "/v2/pets",
            &JSON,
            "{\"name\":\"Ünïcødé 🐕\"}".as_bytes()
        )
        .violations
        .is_empty()
    );
    for body in [
        &b"\xff\xfe"[..],
        b"{\"name\":\"x\"",
        b"[[[[",
        b"{\"name\":\"\\ud800\"}",
    ] {
        let report = send(&c, "POST", "/v2/pets", &JSON, body);
        assert_eq!(places(&report), [place("body", "", "")], "{body:?}");
    }
    // Nesting past the JSON parser's depth limit is malformed, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let report = send(&c, "POST", "/v2/pets", &JSON, deep.as_bytes());
    assert_eq!(places(&report), [place("body", "", "")]);
    // Deep but parseable: the schema walk copes too.
    let nested = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let report = send(&c, "POST", "/v2/pets", &JSON, nested.as_bytes());
    assert_eq!(places(&report), [place("body", "", "")]);
}

#[test]
fn violations_are_bounded_per_request() {
    let mut config = ApiConfig::new("x");
    config.refuse_unknown_query = true;
    config.max_violations = 3;
    let c = Contract::from_bytes(USERS.as_bytes(), config, &LoadLimits::default()).expect("loads");
    let query: String = (0..50).map(|i| format!("p{i}=1&")).collect();
    let report = c.validate(&Request {
        method: "GET",
        path: "/users/me",
        query: Some(&query),
        headers: &[],
        body: b"",
        declared_length: None,
    });
    assert_eq!(report.violations.len(), 3);
    assert!(report.truncated);
}
