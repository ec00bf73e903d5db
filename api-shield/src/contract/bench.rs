//! Cost of validating typical requests against a compiled contract. The measurement is
//! ignored by default (run it with
//! `cargo test --release -p api-shield --lib contract::bench -- --ignored --nocapture`);
//! the smoke test keeps the code path compiled and fast enough in every run.

use std::time::{Duration, Instant};

use super::tests::{JSON, load};
use super::{Contract, Request};

/// The requests measured: a path parameter, a query with an array, a JSON body.
fn run(c: &Contract) -> usize {
    let get_one = Request {
        method: "GET",
        path: "/v2/pets/12345",
        query: None,
        headers: &[],
        body: b"",
        declared_length: None,
    };
    let list = Request {
        method: "GET",
        path: "/v2/pets",
        query: Some("limit=20&tags=a&tags=b"),
        ..get_one
    };
    let post = Request {
        method: "POST",
        path: "/v2/pets",
        headers: &JSON,
        body: br#"{"name":"Rex","tag":"dog"}"#,
        ..get_one
    };
    [get_one, list, post]
        .iter()
        .map(|r| c.validate(r).violations.len())
        .sum()
}

#[test]
fn smoke_typical_requests_validate_clean_and_fast() {
    let c = load("petstore-expanded-3.0.yaml");
    let started = Instant::now();
    for _ in 0..300 {
        assert_eq!(run(&c), 0);
    }
    // 900 validations; even a debug build on a loaded machine does this in well under this.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn bench_validation_per_request() {
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 20_000;
    let c = load("petstore-expanded-3.0.yaml");
    let mut per_request_ns: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..PER_ROUND {
                std::hint::black_box(run(std::hint::black_box(&c)));
            }
            started.elapsed().as_nanos() as f64 / (PER_ROUND * 3) as f64
        })
        .collect();
    per_request_ns.sort_by(f64::total_cmp);
    let median = per_request_ns[ROUNDS / 2];
    let (low, high) = (per_request_ns[0], per_request_ns[ROUNDS - 1]);
    println!(
        "contract validation: median {median:.0} ns/request, spread {low:.0}..{high:.0} ns over {ROUNDS} rounds of {} requests",
        PER_ROUND * 3
    );
    let started = Instant::now();
    let large = load("openai-2024-12-3.0.yaml");
    println!(
        "large document: {} operations loaded in {:?}",
        large.operations().len(),
        started.elapsed()
    );
}
