//! Scraping the daemon's Prometheus endpoint over real HTTP from inside a namespace, and
//! reading the scrape with a Prometheus text parser (`prometheus-parse`).

use crate::netns::in_netns;
use prometheus_parse::{Sample, Scrape, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Suffixes of the sample names of a histogram family.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// `GET path` over HTTP/1.1 to `addr` from inside `netns`, retried while the listener comes
/// up. Returns the status, the content type and the body.
pub fn http_get(netns: &str, addr: &'static str, path: &'static str) -> (u16, String, String) {
    in_netns(netns, move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("connect to the metrics listener {addr}: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        )
        .expect("send the request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the response");
        let text = String::from_utf8(raw).expect("a UTF-8 response");
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in: {text}"));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in: {head}"));
        let mut content_type = String::new();
        let mut length = None;
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header line");
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.trim().to_owned(),
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => panic!("unexpected transfer-encoding: {value}"),
                _ => {}
            }
        }
        assert_eq!(length, Some(body.len()), "content-length of: {head}");
        (status, content_type, body.to_owned())
    })
    .join()
    .expect("scraper thread")
}

/// A parsed scrape.
pub struct Metrics {
    pub text: String,
    pub scrape: Scrape,
}

/// `GET /metrics` from `addr` in `netns`: a 200 in the text format 0.0.4, parsed.
pub fn scrape(netns: &str, addr: &'static str) -> Metrics {
    let (status, content_type, body) = http_get(netns, addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type}"
    );
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse the scrape");
    assert!(!scrape.samples.is_empty(), "an empty scrape: {body}");
    Metrics { text: body, scrape }
}

/// The value of a counter, gauge or untyped sample.
pub fn number(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} is not a plain number: {other:?}", sample.metric),
    }
}

fn whole(name: &str, labels: &[(&str, &str)], v: f64) -> u64 {
    assert!(v >= 0.0 && v.fract() == 0.0, "{name}{labels:?} = {v}");
    v as u64
}

impl Metrics {
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The first sample `name{labels}` (other labels may have any value).
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.matching(name, labels).into_iter().next()
    }

    /// The value of the sample `name{labels}`, panicking if there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels)
            .map(number)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape:\n{}", self.text))
    }

    /// The value as a whole count.
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        whole(name, labels, self.get(name, labels))
    }

    /// The sum over every sample `name{labels}`, 0 when there is none (a counter family
    /// shows a label set only once it has counted).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        whole(
            name,
            labels,
            self.matching(name, labels).into_iter().map(number).sum(),
        )
    }

    /// Observations of the histogram `name{labels}`: its `+Inf` bucket, checked against
    /// its `_count`.
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let sample = self
            .find(name, labels)
            .unwrap_or_else(|| panic!("no histogram {name}{labels:?} in:\n{}", self.text));
        let Value::Histogram(buckets) = &sample.value else {
            panic!("{name} is not a histogram: {:?}", sample.value);
        };
        assert!(
            buckets.windows(2).all(|w| w[0].count <= w[1].count),
            "{name}{labels:?}: buckets not cumulative: {buckets:?}"
        );
        let inf = buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .unwrap_or_else(|| panic!("{name}{labels:?} has no +Inf bucket"));
        let count = self.count(&format!("{name}_count"), labels);
        assert_eq!(whole(name, labels, inf.count), count, "{name}{labels:?}");
        count
    }

    /// Every sample name as a query names it: histograms by their `_bucket`, `_sum` and
    /// `_count` series.
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for s in &self.scrape.samples {
            if matches!(s.value, Value::Histogram(_)) {
                names.insert(format!("{}_bucket", s.metric));
            } else {
                names.insert(s.metric.clone());
            }
        }
        names
    }

    /// `TYPE` of the family a sample name belongs to, read from the text.
    pub fn kind(&self, name: &str) -> Option<&str> {
        let of = |family: &str| {
            let prefix = format!("# TYPE {family} ");
            self.text
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
        };
        of(name).or_else(|| {
            HISTOGRAM_SUFFIXES
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find_map(|family| of(family).filter(|k| *k == "histogram"))
        })
    }
}
