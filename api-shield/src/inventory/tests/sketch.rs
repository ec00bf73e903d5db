//! The latency histogram's quantile error and the HyperLogLog's error bound.

use std::time::Duration;

use crate::inventory::sketch::{Hll, LATENCY_BUCKETS, LatencyHistogram};

/// Half a bucket is 2^(1/4)/2 ≈ 9.5% wide; allow that plus rounding.
const MAX_RELATIVE_ERROR: f64 = 0.10;

fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[test]
fn quantiles_are_within_the_bucket_error() {
    let mut histogram = LatencyHistogram::default();
    // A spread from 50 µs to ~5 s, uneven, deterministic.
    let mut samples: Vec<u64> = (0..10_000u64)
        .map(|i| 50 + (i * i * 37) % 5_000_000)
        .collect();
    for &s in &samples {
        histogram.record(Duration::from_micros(s));
    }
    samples.sort_unstable();
    for q in [0.5, 0.9, 0.99] {
        let want = exact(&samples, q) as f64;
        let got = histogram.quantile(q).expect("samples").as_micros() as f64;
        let error = (got - want).abs() / want;
        assert!(error <= MAX_RELATIVE_ERROR, "q={q}: want {want}, got {got}");
    }
    assert_eq!(histogram.count(), 10_000);
}

#[test]
fn extreme_latencies_stay_in_the_buckets() {
    let mut histogram = LatencyHistogram::default();
    histogram.record(Duration::ZERO);
    histogram.record(Duration::from_secs(u64::MAX));
    histogram.record(Duration::from_nanos(1));
    assert_eq!(histogram.count(), 3);
    assert!(histogram.heap_bytes() <= LATENCY_BUCKETS * 8);
    assert!(histogram.check().is_ok());
    assert_eq!(LatencyHistogram::default().quantile(0.5), None);
}

#[test]
fn histograms_merge_like_one() {
    let (mut a, mut b, mut both) = Default::default();
    let (a, b, both): (
        &mut LatencyHistogram,
        &mut LatencyHistogram,
        &mut LatencyHistogram,
    ) = (&mut a, &mut b, &mut both);
    for i in 1..=100u64 {
        let d = Duration::from_micros(i * 100);
        if i % 2 == 0 {
            a.record(d)
        } else {
            b.record(d)
        }
        both.record(d);
    }
    a.merge(b);
    assert_eq!(a, both);
}

/// The standard error is 1.04/√1024 ≈ 3.25%; four standard errors is a bound no seed should
/// cross, and the deterministic hash makes this test repeatable.
const HLL_BOUND: f64 = 4.0 * 0.0325;

#[test]
fn hll_estimates_within_its_error_bound() {
    for n in [1u64, 10, 100, 1_000, 10_000, 100_000] {
        let mut hll = Hll::default();
        for i in 0..n {
            hll.insert(format!("identity-{i}").as_bytes());
            // Repeats do not count.
            hll.insert(format!("identity-{}", i / 2).as_bytes());
        }
        let got = hll.estimate() as f64;
        let error = (got - n as f64).abs() / n as f64;
        assert!(error <= HLL_BOUND, "n={n}: estimated {got}");
    }
    assert_eq!(Hll::default().estimate(), 0);
}

#[test]
fn hll_merge_is_a_union() {
    let (mut a, mut b) = (Hll::default(), Hll::default());
    for i in 0..5_000u32 {
        a.insert(&i.to_le_bytes());
        b.insert(&(i + 2_500).to_le_bytes());
    }
    a.merge(&b);
    let got = a.estimate() as f64;
    assert!((got - 7_500.0).abs() / 7_500.0 <= HLL_BOUND, "{got}");
}

#[test]
fn hll_round_trips_and_refuses_bad_registers() {
    let mut hll = Hll::default();
    hll.insert(b"alice");
    let text = serde_json::to_string(&hll).expect("serialises");
    let back: Hll = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, hll);
    let short = serde_json::to_string(&"AAAA").expect("string");
    assert!(serde_json::from_str::<Hll>(&short).is_err());
    let big = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [200u8; 1024]);
    assert!(serde_json::from_str::<Hll>(&serde_json::to_string(&big).expect("s")).is_err());
}
