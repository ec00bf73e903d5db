use proptest::prelude::*;

use super::super::{MAX_MESSAGE_CHARS, Request};
use super::load;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever a client sends, validation returns a bounded report and never panics.
    #[test]
    fn validation_never_panics_on_arbitrary_requests(
        method in prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "get", "X"]),
        tail in "[a-z0-9%/{}.é-]{0,24}",
        query in prop::option::of(".{0,64}"),
        header in prop::collection::vec(any::<u8>(), 0..32),
        body in prop::collection::vec(any::<u8>(), 0..128),
        json_body in "\\{\"name\":(\"[^\"]{0,8}\"|[0-9]{1,4}|null|\\[\\]),\"tag\":[0-9tf\"]{0,4}\\}",
        use_json in any::<bool>(),
    ) {
        let c = load("petstore-expanded-3.0.yaml");
        let path = format!("/v2/pets/{tail}");
        let headers: [(&str, &[u8]); 2] = [("content-type", b"application/json"), ("x-any", &header)];
        let body_bytes = if use_json { json_body.as_bytes() } else { &body[..] };
        for p in [path.as_str(), "/v2/pets"] {
            let report = c.validate(&Request {
                method, path: p, query: query.as_deref(), headers: &headers, body: body_bytes, declared_length: None,
            });
            prop_assert!(report.violations.len() <= c.config().max_violations);
            for v in &report.violations {
                prop_assert!(v.message.len() <= MAX_MESSAGE_CHARS + 16);
            }
            let problem: serde_json::Value = serde_json::from_slice(&report.problem_body()).expect("JSON");
            prop_assert_eq!(&problem["status"], 400);
        }
    }
}
